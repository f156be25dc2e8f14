//! `/keys/changes`: which users' device lists changed between two sync tokens. The change
//! stream itself is the service's (`crate::service::e2ee::device_lists`).

use ruma::api::client::keys::get_key_changes;

use crate::{
    error::ApiResult,
    http::{extract::parse_token, ruma::Ruma},
    service::App,
};

/// `GET /keys/changes`: the same answer a sync from `from` to `to` gives in `device_lists`.
pub async fn changes(
    app: App,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let (s, q) = (req.caller, req.body);
    let from = parse_token(&q.from)?;
    let to = parse_token(&q.to)?.min(app.store.current_count());
    let (changed, left) = app.device_list_changes(&s.user_id, from, to.max(from))?;
    Ok(get_key_changes::v3::Response::new(
        changed.into_iter().collect(),
        left.into_iter().collect(),
    ))
}
