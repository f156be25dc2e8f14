//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its children as this server
//! knows them, for another server's users; and asking other servers the same for rooms this
//! server is not in.

use axum::{extract::State, Json};
use http::Method;
use ruma::{OwnedServerName, RoomId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{parse_room_id, Path, Query},
    service::{federation::sender::enc, spaces::Viewer, App, Services},
};

#[derive(Deserialize)]
pub struct HierarchyQuery {
    suggested_only: Option<bool>,
}

/// Whether a child event is kept under `suggested_only`.
pub fn wanted(child: &Value, suggested_only: bool) -> bool {
    !suggested_only || child["content"]["suggested"] == true
}

/// Hand-written: ruma's `RoomSummary` would drop each child's `children_state` (which our
/// client `/hierarchy` reads to walk deeper without asking again) and `"join_rule": "public"`.
pub async fn hierarchy(
    State(app): State<App>,
    Path(room_id): Path<String>,
    Query(q): Query<HierarchyQuery>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let not_found = || ApiError::NotFound("Room not found or not accessible".into());
    let room = app.resident_room(&room_id)?.ok_or_else(not_found)?;
    crate::service::federation::acl::ensure(&app, room.short, &req.origin)?;
    let viewer = Viewer::Server(&req.origin);
    let mut summary = app.room_summary(&room)?;
    if !app.may_preview(&room_id, &summary, viewer)? {
        return Err(not_found());
    }
    let suggested_only = q.suggested_only.unwrap_or(false);
    let children_state: Vec<Value> = app
        .children_state(&room)?
        .into_iter()
        .filter(|c| wanted(c, suggested_only))
        .collect();
    let (mut children, mut inaccessible) = (vec![], vec![]);
    for c in &children_state {
        let Some(id) = c["state_key"].as_str().and_then(|s| RoomId::parse(s).ok()) else {
            continue;
        };
        // Children this server is not in are for the asking server to find elsewhere.
        let Some(child) = app.resident_room(&id)? else {
            continue;
        };
        let mut s = app.room_summary(&child)?;
        if app.may_preview(&id, &s, viewer)? {
            s["children_state"] = json!(app.children_state(&child)?);
            children.push(s);
        } else {
            inaccessible.push(id);
        }
    }
    summary["children_state"] = json!(children_state);
    Ok(Json(json!({
        "room": summary,
        "children": children,
        "inaccessible_children": inaccessible,
    })))
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
