//! `GET /_matrix/client/v3/notifications`: the events the user's push rules notified them of,
//! newest first, with whether each is read yet.

use axum::{extract::State, Json};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::service::push::unread;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{page_limit, Auth, Query},
    service::App,
};

const DEFAULT_LIMIT: usize = 50;

#[derive(Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

pub async fn get(
    State(app): State<App>,
    Auth(s): Auth,
    Query(q): Query<NotificationsQuery>,
) -> ApiResult<Json<Value>> {
    let before = match q.from.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|_| ApiError::InvalidParam(format!("invalid from token {t}")))?,
        ),
    };
    let limit = page_limit(q.limit.as_deref(), DEFAULT_LIMIT, app.settings.max_page)?;
    let only_highlight = match q.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(o) => return Err(ApiError::InvalidParam(format!("unknown `only` value {o}"))),
    };
    let mut out = vec![];
    let mut next = None;
    for item in unread::notifications(&app, &s.user_id, 0, before.unwrap_or(u64::MAX)).rev() {
        let (count, n) = item?;
        if only_highlight && !n.highlight {
            continue;
        }
        if out.len() == limit {
            next = Some(count + 1);
            break;
        }
        let Some(stored) = app.pdu_json(n.event)? else {
            continue;
        };
        let room_id = OwnedRoomId::try_from(n.room_id.as_str())
            .map_err(|e| ApiError::Internal(format!("stored notification: {e}")))?;
        out.push(json!({
            "room_id": n.room_id,
            "event": app.client_event(n.event, &stored, &room_id, Some(&s), false)?,
            "actions": n.actions,
            "read": !unread::is_unread(&app, &s.user_id, n.short_room, count)?,
            "ts": n.ts,
        }));
    }
    let mut body = json!({ "notifications": out });
    if let Some(t) = next {
        body["next_token"] = json!(t.to_string());
    }
    Ok(Json(body))
}
