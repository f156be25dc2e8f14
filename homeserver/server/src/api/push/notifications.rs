//! `GET /_matrix/client/v3/notifications`: the events the user's push rules notified them of,
//! newest first, with whether each is read yet.

use ruma::{
    api::client::push::get_notifications::{self, v3::Notification},
    push::Action,
    MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt,
};

use crate::service::push::unread;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::page_limit,
        ruma::{raw_json, Ruma},
    },
    service::App,
};

const DEFAULT_LIMIT: usize = 50;

pub async fn get(
    app: App,
    req: Ruma<get_notifications::v3::Request>,
) -> ApiResult<get_notifications::v3::Response> {
    let (s, q) = (req.caller, req.body);
    let before = match q.from.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<u64>()
                .map_err(|_| ApiError::InvalidParam(format!("invalid from token {t}")))?,
        ),
    };
    let limit = page_limit(
        q.limit.map(|l| l.to_string()).as_deref(),
        DEFAULT_LIMIT,
        app.settings.max_page,
    )?;
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
        let Some(stored) = app.rooms.pdu_json(n.event)? else {
            continue;
        };
        let room_id = OwnedRoomId::try_from(n.room_id.as_str())
            .map_err(|e| ApiError::Internal(format!("stored notification: {e}")))?;
        let event = raw_json(&app.client_event(n.event, &stored, &room_id, Some(&s), false)?)?;
        let actions: Vec<Action> = serde_json::from_value(n.actions)
            .map_err(|e| ApiError::Internal(format!("stored notification: {e}")))?;
        let read = !unread::is_unread(&app, &s.user_id, n.short_room, count)?;
        let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(n.ts).unwrap_or(UInt::MAX));
        out.push(Notification::new(actions, event, read, room_id, ts));
    }
    let mut res = get_notifications::v3::Response::new(out);
    res.next_token = next.map(|t| t.to_string());
    Ok(res)
}
