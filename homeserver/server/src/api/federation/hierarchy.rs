//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its children as this server
//! knows them, for another server's users. Asking other servers the same is
//! `service::federation::hierarchy`.

use axum::{extract::State, Json};
use ruma::RoomId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{parse_room_id, Path, Query},
    service::{federation::hierarchy::wanted, spaces::Viewer, App},
};

#[derive(Deserialize)]
pub struct HierarchyQuery {
    suggested_only: Option<bool>,
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
    let room = app.rooms.resident_room(&room_id)?.ok_or_else(not_found)?;
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
        let Some(child) = app.rooms.resident_room(&id)? else {
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
