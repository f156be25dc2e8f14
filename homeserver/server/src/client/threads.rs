//! `GET /_matrix/client/v1/rooms/{roomId}/threads`: a room's thread roots, the thread with the
//! latest reply first, each with its bundled thread summary.

use axum::{extract::State, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::extract::{parse_room_id, parse_token};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{page_limit, Auth, Path, Query},
    service::App,
};

const DEFAULT_LIMIT: usize = 5;

#[derive(Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    limit: Option<String>,
}

pub async fn list(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<ThreadsQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let participated_only = match q.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(o) => {
            return Err(ApiError::InvalidParam(format!(
                "include must be all or participated, not {o}"
            )))
        }
    };
    let limit = page_limit(q.limit.as_deref(), DEFAULT_LIMIT, app.settings.max_page)?;
    let before = q.from.as_deref().map(parse_token).transpose()?;
    let room = app.room_or_forbidden(&room_id)?;
    // Members (and anyone, in a world-readable room) may list; others get 403.
    app.visible_state_hash(&s.user_id, &room)?;

    let mut chunk = vec![];
    let mut next = None;
    for item in app.thread_activity(room.short, before.unwrap_or(u64::MAX)) {
        let (count, root) = item?;
        // A thread moves on with each reply; only its latest activity row counts.
        if app
            .thread_info(root)?
            .is_none_or(|t| t.latest_count != count)
        {
            continue;
        }
        let (Some(pdu), Some(stored)) = (app.pdu_by_short(root)?, app.pdu_json(root)?) else {
            continue;
        };
        if !app.can_see(&s.user_id, &room_id, root, &pdu)? {
            continue;
        }
        if participated_only && !app.participated(root, &stored, s.user_id.as_str())? {
            continue;
        }
        if chunk.len() == limit {
            next = Some(count + 1);
            break;
        }
        chunk.push(app.client_event(root, &stored, &room_id, Some(&s), true)?);
    }
    let mut out = json!({ "chunk": chunk });
    if let Some(t) = next {
        out["next_batch"] = json!(t.to_string());
    }
    Ok(Json(out))
}
