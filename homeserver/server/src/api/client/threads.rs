//! `GET /_matrix/client/v1/rooms/{roomId}/threads`: a room's thread roots, the thread with the
//! latest reply first, each with its bundled thread summary.

use ruma::api::client::threads::get_threads::{self, v1::IncludeThreads};

use crate::http::extract::parse_token;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::page_limit,
        ruma::{raw_json, Ruma},
    },
    service::App,
};

const DEFAULT_LIMIT: usize = 5;

pub async fn list(
    app: App,
    req: Ruma<get_threads::v1::Request>,
) -> ApiResult<get_threads::v1::Response> {
    let (s, q) = (req.caller, req.body);
    let room_id = q.room_id;
    let participated_only = match &q.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        o => {
            return Err(ApiError::InvalidParam(format!(
                "include must be all or participated, not {}",
                o.as_str()
            )))
        }
    };
    let limit = page_limit(
        q.limit.map(|l| l.to_string()).as_deref(),
        DEFAULT_LIMIT,
        app.settings.max_page,
    )?;
    let before = q.from.as_deref().map(parse_token).transpose()?;
    let room = app.rooms.room_or_forbidden(&room_id)?;
    // Members (and anyone, in a world-readable room) may list; others get 403.
    app.visible_state_hash(&s.user_id, &room)?;

    let mut chunk = vec![];
    let mut next = None;
    for item in app
        .rooms
        .thread_activity(room.short, before.unwrap_or(u64::MAX))
    {
        let (count, root) = item?;
        // A thread moves on with each reply; only its latest activity row counts.
        if app
            .rooms
            .thread_info(root)?
            .is_none_or(|t| t.latest_count != count)
        {
            continue;
        }
        let (Some(pdu), Some(stored)) = (app.rooms.pdu_by_short(root)?, app.rooms.pdu_json(root)?)
        else {
            continue;
        };
        if !app.rooms.can_see(&s.user_id, &room_id, root, &pdu)? {
            continue;
        }
        if participated_only && !app.rooms.participated(root, &stored, s.user_id.as_str())? {
            continue;
        }
        if chunk.len() == limit {
            next = Some(count + 1);
            break;
        }
        chunk.push(raw_json(&app.client_event(
            root,
            &stored,
            &room_id,
            Some(&s),
            true,
        )?)?);
    }
    let mut res = get_threads::v1::Response::new(chunk);
    res.next_batch = next.map(|t| t.to_string());
    Ok(res)
}
