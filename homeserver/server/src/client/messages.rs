//! `/messages` and `/context`: paging the timeline with visibility and filters applied while
//! reading.

use std::collections::BTreeSet;

use axum::{extract::State, Json};
use ruma::EventId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{filter::parse_event_filter, membership::parse_room_id, sync::parse_token};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Path, Query},
    service::{accounts::Session, rooms::RoomRef, App},
};

/// Most timeline entries one request inspects, so a page of invisible history stays cheap.
const SCAN_CAP: usize = 5_000;

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

fn parse_limit(limit: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
    match limit {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| ApiError::InvalidParam("limit must be a non-negative integer".into())),
    }
}

/// The member events of `senders` in the given state, for lazy-loading clients.
pub fn member_events_for(
    app: &App,
    room: &RoomRef,
    hash: u64,
    senders: &BTreeSet<String>,
    viewer: &Session,
) -> ApiResult<Vec<Value>> {
    let mut out = vec![];
    for u in senders {
        if let Some(short) = app.state_get(hash, "m.room.member", u)? {
            if let Some(stored) = app.pdu_json(short)? {
                out.push(app.client_event(
                    short,
                    &stored,
                    &room.meta.room_id,
                    Some(viewer),
                    true,
                )?);
            }
        }
    }
    Ok(out)
}

/// Ensure the user may read the room at all (was ever in it, or it is world readable).
fn check_access(app: &App, s: &Session, room: &RoomRef) -> ApiResult<()> {
    app.visible_state_hash(&s.user_id, room).map(|_| ())
}

pub async fn messages(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    check_access(&app, &s, &room)?;
    let backwards = match q.dir.as_deref() {
        Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(ApiError::InvalidParam("dir must be b or f".into())),
        None => return Err(ApiError::MissingParam("dir is required".into())),
    };
    let limit = parse_limit(q.limit.as_deref(), 10, app.settings.max_page)?;
    let filter = parse_event_filter(q.filter.as_deref())?;
    let now = app.store.current_count();
    let from = match q.from.as_deref() {
        Some(t) => parse_token(t)?.min(now),
        None if backwards => now,
        None => 0,
    };
    let to = q.to.as_deref().map(parse_token).transpose()?;

    let (lo, hi) = if backwards {
        (to.unwrap_or(0), from)
    } else {
        (from, to.unwrap_or(now).min(now))
    };
    let mut chunk = vec![];
    let mut senders = BTreeSet::new();
    let mut last_pos = None;
    let mut exhausted = true;
    let iter: Box<dyn Iterator<Item = ApiResult<(u64, u64)>>> = if backwards {
        Box::new(app.timeline(room.short, lo, hi).rev())
    } else {
        Box::new(app.timeline(room.short, lo, hi))
    };
    for (scanned, item) in iter.enumerate() {
        if chunk.len() >= limit || scanned >= SCAN_CAP {
            exhausted = false;
            break;
        }
        let (count, short) = item?;
        last_pos = Some(count);
        let Some(pdu) = app.pdu_by_short(short)? else {
            continue;
        };
        let Some(stored) = app.pdu_json(short)? else {
            continue;
        };
        if !filter.allows(&stored) || !app.can_see(&s.user_id, &room_id, short, &pdu)? {
            continue;
        }
        senders.insert(pdu.sender.to_string());
        chunk.push(app.client_event(short, &stored, &room_id, Some(&s), true)?);
    }
    let mut out = json!({ "start": from.to_string(), "chunk": chunk });
    match (backwards, last_pos) {
        (true, Some(p)) if !exhausted => out["end"] = json!((p - 1).to_string()),
        (false, Some(p)) => out["end"] = json!(p.to_string()),
        (false, None) => out["end"] = json!(from.to_string()),
        _ => {}
    }
    if filter.lazy_load_members && !senders.is_empty() {
        let hash = app.visible_state_hash(&s.user_id, &room)?;
        out["state"] = json!(member_events_for(&app, &room, hash, &senders, &s)?);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<String>,
    filter: Option<String>,
}

pub async fn context(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(q): Query<ContextQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.room(&room_id)?.ok_or_else(not_found)?;
    let limit = parse_limit(q.limit.as_deref(), 10, app.settings.max_page)?;
    let filter = parse_event_filter(q.filter.as_deref())?;
    let short = app.short_event(&event_id)?.ok_or_else(not_found)?;
    let (r, count) = app.event_position(short)?.ok_or_else(not_found)?;
    let pdu = app.pdu_by_short(short)?.ok_or_else(not_found)?;
    if r != room.short || !app.can_see(&s.user_id, &room_id, short, &pdu)? {
        return Err(not_found());
    }
    let stored = app.pdu_json(short)?.ok_or_else(not_found)?;
    let mut senders = BTreeSet::from([pdu.sender.to_string()]);
    let half_before = limit / 2;
    let half_after = limit - half_before;

    let mut collect = |iter: Box<dyn Iterator<Item = ApiResult<(u64, u64)>> + '_>,
                       n: usize|
     -> ApiResult<(Vec<Value>, Option<u64>)> {
        let mut out = vec![];
        let mut last = None;
        for item in iter.take(SCAN_CAP) {
            if out.len() >= n {
                break;
            }
            let (c, sh) = item?;
            last = Some(c);
            let (Some(p), Some(st)) = (app.pdu_by_short(sh)?, app.pdu_json(sh)?) else {
                continue;
            };
            if filter.allows(&st) && app.can_see(&s.user_id, &room_id, sh, &p)? {
                senders.insert(p.sender.to_string());
                out.push(app.client_event(sh, &st, &room_id, Some(&s), true)?);
            }
        }
        Ok((out, last))
    };
    let now = app.store.current_count();
    let (before, first) = collect(
        Box::new(app.timeline(room.short, 0, count - 1).rev()),
        half_before,
    )?;
    let (after, last) = collect(Box::new(app.timeline(room.short, count, now)), half_after)?;
    let start = first.map(|c| c - 1).unwrap_or(count - 1);
    let end = last.unwrap_or(count);
    // State at the last event returned.
    let state_hash = app.state_at_count(room.short, end)?;
    let state = if filter.lazy_load_members {
        member_events_for(&app, &room, state_hash, &senders, &s)?
    } else {
        let mut v = vec![];
        for sh in app.state_map(state_hash)?.values() {
            if let Some(st) = app.pdu_json(*sh)? {
                v.push(app.client_event(*sh, &st, &room_id, Some(&s), true)?);
            }
        }
        v
    };
    Ok(Json(json!({
        "event": app.client_event(short, &stored, &room_id, Some(&s), true)?,
        "events_before": before,
        "events_after": after,
        "start": start.to_string(),
        "end": end.to_string(),
        "state": state,
    })))
}

/// Most timeline entries `timestamp_to_event` inspects.
const TS_SCAN_CAP: usize = 100_000;

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: Option<String>,
    dir: Option<String>,
}

/// The visible event closest to `ts` in the given direction: the first at or after it (`f`),
/// or the last at or before it (`b`).
pub async fn timestamp_to_event(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<TimestampQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    check_access(&app, &s, &room)?;
    let ts: u64 =
        q.ts.as_deref()
            .ok_or_else(|| ApiError::MissingParam("ts is required".into()))?
            .parse()
            .map_err(|_| ApiError::InvalidParam("ts must be a timestamp in milliseconds".into()))?;
    let forwards = match q.dir.as_deref() {
        Some("f") => true,
        Some("b") => false,
        Some(_) => return Err(ApiError::InvalidParam("dir must be f or b".into())),
        None => return Err(ApiError::MissingParam("dir is required".into())),
    };
    let now = app.store.current_count();
    let mut best: Option<(u64, u64, String)> = None;
    for item in app.timeline(room.short, 0, now).take(TS_SCAN_CAP) {
        let (_, short) = item?;
        let Some(pdu) = app.pdu_by_short(short)? else {
            continue;
        };
        let ev_ts = u64::from(pdu.origin_server_ts.0);
        let fits = if forwards { ev_ts >= ts } else { ev_ts <= ts };
        if !fits || !app.can_see(&s.user_id, &room_id, short, &pdu)? {
            continue;
        }
        let distance = ev_ts.abs_diff(ts);
        if best.as_ref().is_none_or(|(d, _, _)| distance < *d) {
            best = Some((distance, ev_ts, pdu.event_id.to_string()));
        }
    }
    let (_, ev_ts, event_id) =
        best.ok_or_else(|| ApiError::NotFound("No event found in that direction".into()))?;
    Ok(Json(
        json!({ "event_id": event_id, "origin_server_ts": ev_ts }),
    ))
}
