//! `/messages` and `/context`: paging the timeline with visibility and filters applied while
//! reading.

use std::collections::BTreeSet;

use axum::{extract::State, Json};
use ruma::{
    api::{
        client::{message::get_message_events, room::get_event_by_timestamp},
        Direction,
    },
    events::AnyTimelineEvent,
    serde::Raw,
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filter::{event_filter_of, parse_event_filter};
use crate::http::extract::{parse_room_id, parse_token};
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{page_limit, Auth, Path, Query},
        ruma::{raw_json, Ruma},
    },
    service::{
        accounts::Session,
        rooms::{RoomRef, RoomsError},
        App,
    },
};

/// Most timeline entries one request inspects, so a page of invisible history stays cheap.
const SCAN_CAP: usize = 5_000;

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
        if let Some(short) = app.rooms.state_get(hash, "m.room.member", u)? {
            if let Some(stored) = app.rooms.pdu_json(short)? {
                out.push(app.client_event_inner(
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
    app.visible_state_hash(&s.user_id, room)?;
    Ok(())
}

/// A place between two events of a room as `/messages` sees it: after timeline position `n`
/// (a sync token), or after history row `h<n>` (backfilled events, older as `n` grows;
/// `h0` is the start of the timeline).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pos {
    Timeline(u64),
    History(u64),
}

impl Pos {
    fn parse(t: &str) -> ApiResult<Pos> {
        match t.strip_prefix('h') {
            Some(n) => n
                .parse()
                .map(Pos::History)
                .map_err(|_| ApiError::InvalidParam(format!("invalid token {t}"))),
            None => parse_token(t).map(Pos::Timeline),
        }
    }

    fn token(self) -> String {
        match self {
            Pos::Timeline(n) => n.to_string(),
            Pos::History(n) => format!("h{n}"),
        }
    }
}

type Entries<'a> = Box<dyn Iterator<Item = ApiResult<(Pos, u64)>> + Send + 'a>;

/// Events going back from `from` to `to`: the timeline, then backfilled history. Each comes
/// with the position just before it.
fn backwards_from<'a>(app: &'a App, short_room: u64, from: Pos, to: Option<Pos>) -> Entries<'a> {
    let history = move |after: u64, upto: u64| -> Entries<'a> {
        Box::new(
            crate::service::federation::backfill::history(app, short_room, after + 1, upto).map(
                |r| {
                    r.map(|(seq, short)| (Pos::History(seq), short))
                        .map_err(ApiError::from)
                },
            ),
        )
    };
    match (from, to) {
        (Pos::Timeline(c), Some(Pos::Timeline(lo))) => {
            Box::new(app.rooms.timeline(short_room, lo, c).rev().map(|r| {
                r.map(|(n, short)| (Pos::Timeline(n - 1), short))
                    .map_err(ApiError::from)
            }))
        }
        (Pos::Timeline(c), to) => {
            let upto = match to {
                Some(Pos::History(h)) => h,
                _ => u64::MAX - 1,
            };
            Box::new(
                app.rooms
                    .timeline(short_room, 0, c)
                    .rev()
                    .map(|r| {
                        r.map(|(n, short)| (Pos::Timeline(n - 1), short))
                            .map_err(ApiError::from)
                    })
                    .chain(history(0, upto)),
            )
        }
        (Pos::History(h), to) => {
            let upto = match to {
                Some(Pos::History(x)) => x,
                Some(Pos::Timeline(_)) => h,
                None => u64::MAX - 1,
            };
            history(h, upto)
        }
    }
}

/// Events going forward from `from` to `to`: the rest of history (newer rows), then the timeline.
fn forwards_from<'a>(app: &'a App, short_room: u64, from: Pos, to: u64) -> Entries<'a> {
    let timeline = move |after: u64| -> Entries<'a> {
        Box::new(app.rooms.timeline(short_room, after, to).map(|r| {
            r.map(|(n, short)| (Pos::Timeline(n), short))
                .map_err(ApiError::from)
        }))
    };
    match from {
        Pos::Timeline(c) => timeline(c),
        Pos::History(h) => Box::new(
            crate::service::federation::backfill::history(app, short_room, 1, h)
                .rev()
                .map(|r| {
                    r.map(|(seq, short)| (Pos::History(seq - 1), short))
                        .map_err(ApiError::from)
                })
                .chain(timeline(0)),
        ),
    }
}

/// A page of the room's timeline from `from` in direction `dir`, visibility and the filter
/// applied while reading (and, going backwards past what is stored, one round of backfill).
pub async fn messages(
    app: App,
    req: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let (s, q) = (req.caller, req.body);
    let room_id = q.room_id;
    let room = app.rooms.room_or_forbidden(&room_id)?;
    check_access(&app, &s, &room)?;
    let backwards = q.dir == Direction::Backward;
    let limit = q.limit.to_string();
    let limit = page_limit(Some(limit.as_str()), 10, app.settings.max_page)?;
    let mut filter = event_filter_of(&q.filter)?;
    filter.ignored = app.account_data.ignored_users(&s.user_id)?;
    let now = app.store.current_count();
    let from = match q.from.as_deref().map(Pos::parse).transpose()? {
        Some(Pos::Timeline(c)) => Pos::Timeline(c.min(now)),
        Some(h) => h,
        None if backwards => Pos::Timeline(now),
        None => Pos::Timeline(0),
    };
    let to = q.to.as_deref().map(Pos::parse).transpose()?;

    let mut chunk: Vec<Raw<AnyTimelineEvent>> = vec![];
    let mut senders = BTreeSet::new();
    let mut last_pos = None;
    let mut exhausted = true;
    // Whether this page fetched history from another server: when it did, what is stored
    // running out says nothing of what is left there.
    let mut backfilled = false;
    let mut scanned = 0;
    // Backwards past everything stored, one round of backfill from another server, then on.
    for round in 0..2 {
        let start = last_pos.unwrap_or(from);
        let iter = if backwards {
            backwards_from(&app, room.short, start, to)
        } else {
            let upto = match to {
                Some(Pos::Timeline(t)) => t.min(now),
                _ => now,
            };
            forwards_from(&app, room.short, start, upto)
        };
        exhausted = true;
        for item in iter {
            if chunk.len() >= limit || scanned >= SCAN_CAP {
                exhausted = false;
                break;
            }
            scanned += 1;
            let (pos, short) = item?;
            last_pos = Some(pos);
            let Some(pdu) = app.rooms.pdu_by_short(short)? else {
                continue;
            };
            let Some(stored) = app.rooms.pdu_json(short)? else {
                continue;
            };
            if !filter.allows(&stored) || !app.rooms.can_see(&s.user_id, &room_id, short, &pdu)? {
                continue;
            }
            senders.insert(pdu.sender.to_string());
            let ev = app.client_event(short, &stored, &room_id, Some(&s), true)?;
            chunk.push(raw_json(&ev)?);
        }
        let may_backfill = round == 0
            && backwards
            && exhausted
            && !matches!(to, Some(Pos::Timeline(_)))
            && app.federation.is_some();
        if !may_backfill {
            break;
        }
        let wanted = limit.saturating_sub(chunk.len()).max(1);
        match crate::service::federation::backfill::backfill(&app, &room, wanted).await {
            Ok(0) => break,
            Ok(n) => {
                backfilled = true;
                tracing::debug!(room_id = %room_id, n, "paged into backfilled history");
            }
            Err(e) => {
                tracing::info!(room_id = %room_id, error = %e, "backfill failed");
                break;
            }
        }
    }
    let mut out = get_message_events::v3::Response::new();
    out.start = from.token();
    out.chunk = chunk;
    out.end = match (backwards, last_pos) {
        (true, Some(p)) if !exhausted || backfilled => Some(p.token()),
        (false, Some(p)) => Some(p.token()),
        (false, None) => Some(from.token()),
        _ => None,
    };
    if filter.lazy_load_members && !senders.is_empty() {
        let hash = app.visible_state_hash(&s.user_id, &room)?;
        out.state = member_events_for(&app, &room, hash, &senders, &s)?
            .iter()
            .map(raw_json)
            .collect::<ApiResult<_>>()?;
    }
    Ok(out)
}

/// The visible events around timeline position `count` of a room: up to `before_n` before
/// it (nearest first) and `after_n` after it, with the tokens where they end.
pub struct Around {
    pub before: Vec<Value>,
    pub after: Vec<Value>,
    pub start: u64,
    pub end: u64,
    /// Timeline position of the last event returned after the centre (the centre's own when
    /// none is): the point whose state goes with the answer.
    pub last_returned: u64,
    pub senders: BTreeSet<String>,
}

pub fn events_around(
    app: &crate::service::Services,
    s: &Session,
    room: &RoomRef,
    count: u64,
    before_n: usize,
    after_n: usize,
    filter: &super::filter::EventFilter,
) -> ApiResult<Around> {
    let room_id = &room.meta.room_id;
    let mut senders = BTreeSet::new();
    let mut collect = |iter: Box<dyn Iterator<Item = Result<(u64, u64), RoomsError>> + '_>,
                       n: usize|
     -> ApiResult<(Vec<Value>, Option<u64>, Option<u64>)> {
        let mut out = vec![];
        let (mut last, mut last_returned) = (None, None);
        for item in iter.take(SCAN_CAP) {
            if out.len() >= n {
                break;
            }
            let (c, sh) = item?;
            last = Some(c);
            let (Some(p), Some(st)) = (app.rooms.pdu_by_short(sh)?, app.rooms.pdu_json(sh)?) else {
                continue;
            };
            if filter.allows(&st) && app.rooms.can_see(&s.user_id, room_id, sh, &p)? {
                senders.insert(p.sender.to_string());
                out.push(app.client_event(sh, &st, room_id, Some(s), true)?);
                last_returned = Some(c);
            }
        }
        Ok((out, last, last_returned))
    };
    let now = app.store.current_count();
    let (before, first, _) = collect(
        Box::new(app.rooms.timeline(room.short, 0, count - 1).rev()),
        before_n,
    )?;
    let (after, last, last_returned) = collect(
        Box::new(app.rooms.timeline(room.short, count, now)),
        after_n,
    )?;
    Ok(Around {
        before,
        after,
        start: first.map(|c| c - 1).unwrap_or(count - 1),
        end: last.unwrap_or(count),
        last_returned: last_returned.unwrap_or(count),
        senders,
    })
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<String>,
    filter: Option<String>,
}

/// Hand-written: ruma leaves out an empty `events_before`/`events_after`, which Synapse sends.
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
    let room = app.rooms.room(&room_id)?.ok_or_else(not_found)?;
    // Only someone who may read the room's state at all gets a context (with its state).
    check_access(&app, &s, &room)?;
    let limit = page_limit(q.limit.as_deref(), 10, app.settings.max_page)?;
    let mut filter = parse_event_filter(q.filter.as_deref())?;
    filter.ignored = app.account_data.ignored_users(&s.user_id)?;
    let short = app.rooms.short_event(&event_id)?.ok_or_else(not_found)?;
    let (r, count) = app.rooms.event_position(short)?.ok_or_else(not_found)?;
    let pdu = app.rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    if r != room.short || !app.rooms.can_see(&s.user_id, &room_id, short, &pdu)? {
        return Err(not_found());
    }
    let stored = app.rooms.pdu_json(short)?.ok_or_else(not_found)?;
    let half_before = limit / 2;
    let around = events_around(
        &app,
        &s,
        &room,
        count,
        half_before,
        limit - half_before,
        &filter,
    )?;
    let mut senders = around.senders;
    senders.insert(pdu.sender.to_string());
    let (before, after, start, end) = (around.before, around.after, around.start, around.end);
    // State at the last event returned, never at events the scan passed over unseen.
    let state_hash = app.rooms.state_at_count(room.short, around.last_returned)?;
    let state = if filter.lazy_load_members {
        member_events_for(&app, &room, state_hash, &senders, &s)?
    } else {
        let mut v = vec![];
        for sh in app.rooms.state_map(state_hash)?.values() {
            if let Some(st) = app.rooms.pdu_json(*sh)? {
                v.push(app.client_event_inner(*sh, &st, &room_id, Some(&s), true)?);
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

/// The visible event closest to `ts` in the given direction: the first at or after it (`f`),
/// or the last at or before it (`b`).
pub async fn timestamp_to_event(
    app: App,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> ApiResult<get_event_by_timestamp::v1::Response> {
    let (s, q) = (req.caller, req.body);
    let room_id = q.room_id;
    let room = app.rooms.room_or_forbidden(&room_id)?;
    check_access(&app, &s, &room)?;
    let ts = u64::from(q.ts.0);
    let forwards = q.dir == Direction::Forward;
    let now = app.store.current_count();
    let mut best: Option<(u64, MilliSecondsSinceUnixEpoch, OwnedEventId)> = None;
    for item in app.rooms.timeline(room.short, 0, now).take(TS_SCAN_CAP) {
        let (_, short) = item?;
        let Some(pdu) = app.rooms.pdu_by_short(short)? else {
            continue;
        };
        let ev_ts = u64::from(pdu.origin_server_ts.0);
        let fits = if forwards { ev_ts >= ts } else { ev_ts <= ts };
        if !fits || !app.rooms.can_see(&s.user_id, &room_id, short, &pdu)? {
            continue;
        }
        let distance = ev_ts.abs_diff(ts);
        if best.as_ref().is_none_or(|(d, _, _)| distance < *d) {
            best = Some((distance, pdu.origin_server_ts, pdu.event_id));
        }
    }
    let (_, ev_ts, event_id) =
        best.ok_or_else(|| ApiError::NotFound("No event found in that direction".into()))?;
    Ok(get_event_by_timestamp::v1::Response::new(event_id, ev_ts))
}
