//! Asking other servers for a space's `/hierarchy`, for rooms this server is not in.

use http::Method;
use ruma::{OwnedServerName, RoomId};
use serde_json::Value;

use super::sender::enc;
use crate::service::Services;

/// Whether a child event is kept under `suggested_only`.
pub fn wanted(child: &Value, suggested_only: bool) -> bool {
    !suggested_only || child["content"]["suggested"] == true
}

/// A room's `/hierarchy` answer from the first of `via` that gives one (at most three are
/// tried); `None` if none does.
pub async fn fetch(
    app: &Services,
    room_id: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
) -> Option<Value> {
    let fed = app.fed().ok()?;
    let path = format!(
        "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
        enc(room_id.as_str())
    );
    for server in via
        .iter()
        .filter(|s| s.as_str() != app.server_name().as_str())
        .take(3)
    {
        match fed
            .request(app, server, Method::GET, &path, None, true)
            .await
        {
            Ok(v) if v["room"]["room_id"] == room_id.as_str() => return Some(v),
            Ok(_) => tracing::debug!(%server, %room_id, "hierarchy answer for another room"),
            Err(e) => tracing::debug!(%server, %room_id, error = %e, "hierarchy request failed"),
        }
    }
    None
}
