//! Reading a room's events and state as a peer: `event`, `state`, `state_ids`, `event_auth`,
//! `backfill`, `get_missing_events`. A peer may read a room only while one of its users is joined
//! to it, and sees each event as the room's history visibility allows (`visibility.rs`).
//! "State at an event" is the state before it, as Synapse also answers.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ruma::{
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    },
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, UInt,
};
use serde_json::{value::RawValue as RawJsonValue, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{
        federation::{
            ingest,
            sender::federation_form,
            visibility::{room_for_peer, ServerView},
        },
        now_ms, raw_value,
        rooms::RoomRef,
        App, Services,
    },
};

const MAX_BACKFILL: usize = 100;

/// Now, as the `origin_server_ts` of an answer.
fn now() -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::new_saturating(now_ms()))
}

/// PDUs as the raw JSON ruma's responses carry.
fn raws(vs: Vec<Value>) -> ApiResult<Vec<Box<RawJsonValue>>> {
    Ok(vs.iter().map(raw_value).collect::<Result<_, _>>()?)
}

/// A `limit` a peer asked for, between 1 and [`MAX_BACKFILL`].
fn page_limit(limit: UInt) -> usize {
    usize::try_from(u64::from(limit))
        .unwrap_or(MAX_BACKFILL)
        .clamp(1, MAX_BACKFILL)
}

/// A stored event of `room` by id: its short id and stored form.
fn event_in(app: &Services, room: &RoomRef, id: &EventId) -> ApiResult<Option<(u64, Value)>> {
    let Some(short) = app.rooms.short_event(id)? else {
        return Ok(None);
    };
    let Some(pdu) = app.rooms.pdu_json(short)? else {
        return Ok(None);
    };
    let in_room = match pdu.get("room_id").and_then(Value::as_str) {
        Some(r) => r == room.meta.room_id.as_str(),
        None => ingest::in_room(None, id, &room.meta.room_id),
    };
    Ok(in_room.then_some((short, pdu)))
}

pub async fn event(
    app: App,
    req: Ruma<get_event::v1::Request>,
) -> ApiResult<get_event::v1::Response> {
    let (origin, id) = (req.caller, req.body.event_id);
    let short = app
        .rooms
        .short_event(&id)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let stored = app
        .rooms
        .pdu_json(short)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let room_id = match stored.get("room_id").and_then(Value::as_str) {
        Some(r) => r.to_owned(),
        None => format!("!{}", &id.as_str()[1..]),
    };
    let room = room_for_peer(&app, &room_id, &origin)?;
    let pdu = app
        .rooms
        .pdu_by_short(short)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let form = ServerView::new(&app, &room, &origin)?.form(short, &pdu, &stored)?;
    Ok(get_event::v1::Response::new(
        app.server_name().to_owned(),
        now(),
        raw_value(&form)?,
    ))
}

/// The state before `event_id` and its auth chain, as event ids.
pub fn state_before(
    app: &Services,
    room: &RoomRef,
    event_id: &str,
) -> ApiResult<(Vec<OwnedEventId>, HashSet<OwnedEventId>)> {
    let id = OwnedEventId::try_from(event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let (short, _) =
        event_in(app, room, &id)?.ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let (before, _) = app
        .rooms
        .event_state(short)?
        .ok_or_else(|| ApiError::NotFound("No state known at that event".into()))?;
    let mut ids = vec![];
    for ev in app.rooms.state_map(before)?.values() {
        if let Some(p) = app.rooms.pdu_by_short(*ev)? {
            ids.push(p.event_id);
        }
    }
    let chain = ingest::auth_chain(app, &ids, &mut HashMap::new())?;
    Ok((ids, chain))
}

/// Stored events by id, in federation form (unknown ids are skipped).
pub fn federation_forms(
    app: &Services,
    ids: impl IntoIterator<Item = OwnedEventId>,
) -> ApiResult<Vec<Value>> {
    let mut out = vec![];
    for id in ids {
        if let Some(short) = app.rooms.short_event(&id)? {
            if let Some(p) = app.rooms.pdu_json(short)? {
                out.push(federation_form(&p));
            }
        }
    }
    Ok(out)
}

pub async fn state(
    app: App,
    req: Ruma<get_room_state::v1::Request>,
) -> ApiResult<get_room_state::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let room = room_for_peer(&app, q.room_id.as_str(), &origin)?;
    let (ids, chain) = state_before(&app, &room, q.event_id.as_str())?;
    Ok(get_room_state::v1::Response::new(
        raws(federation_forms(&app, chain)?)?,
        raws(federation_forms(&app, ids)?)?,
    ))
}

pub async fn state_ids(
    app: App,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> ApiResult<get_room_state_ids::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let room = room_for_peer(&app, q.room_id.as_str(), &origin)?;
    let (ids, chain) = state_before(&app, &room, q.event_id.as_str())?;
    Ok(get_room_state_ids::v1::Response::new(
        chain.into_iter().collect(),
        ids,
    ))
}

pub async fn event_auth(
    app: App,
    req: Ruma<get_event_authorization::v1::Request>,
) -> ApiResult<get_event_authorization::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let room = room_for_peer(&app, q.room_id.as_str(), &origin)?;
    let id = q.event_id;
    let pdu = app
        .rooms
        .pdu(&id)?
        .filter(|_| event_in(&app, &room, &id).ok().flatten().is_some())
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let chain = ingest::auth_chain(&app, &pdu.auth_events, &mut HashMap::new())?;
    Ok(get_event_authorization::v1::Response::new(raws(
        federation_forms(&app, chain)?,
    )?))
}

/// Walk `prev_events` back from `from`, breadth first, stopping at `stop`; each event as the
/// peer may see it.
fn walk_back(
    view: &mut ServerView,
    app: &Services,
    room: &RoomRef,
    from: Vec<OwnedEventId>,
    stop: &BTreeSet<OwnedEventId>,
    limit: usize,
    min_depth: u64,
) -> ApiResult<Vec<Value>> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = from.into();
    let mut out = vec![];
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if stop.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        let Some((short, stored)) = event_in(app, room, &id)? else {
            continue;
        };
        let Some(pdu) = app.rooms.pdu_by_short(short)? else {
            continue;
        };
        if u64::from(pdu.depth) < min_depth {
            continue;
        }
        queue.extend(pdu.prev_events.iter().cloned());
        out.push(view.form(short, &pdu, &stored)?);
    }
    Ok(out)
}

pub async fn backfill(
    app: App,
    req: Ruma<get_backfill::v1::Request>,
) -> ApiResult<get_backfill::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let room = room_for_peer(&app, q.room_id.as_str(), &origin)?;
    let from = q.v;
    if from.is_empty() {
        return Err(ApiError::MissingParam("v is required".into()));
    }
    let limit = page_limit(q.limit);
    let mut view = ServerView::new(&app, &room, &origin)?;
    let pdus = walk_back(&mut view, &app, &room, from, &BTreeSet::new(), limit, 0)?;
    Ok(get_backfill::v1::Response::new(
        app.server_name().to_owned(),
        now(),
        raws(pdus)?,
    ))
}

pub async fn get_missing_events(
    app: App,
    req: Ruma<get_missing_events::v1::Request>,
) -> ApiResult<get_missing_events::v1::Response> {
    let (origin, body) = (req.caller, req.body);
    let room = room_for_peer(&app, body.room_id.as_str(), &origin)?;
    let limit = page_limit(body.limit);
    let stop: BTreeSet<OwnedEventId> = body.earliest_events.into_iter().collect();
    // The latest events themselves are what the peer has; return what lies between.
    let mut from = vec![];
    for id in &body.latest_events {
        if let Some(p) = app.rooms.pdu(id)? {
            from.extend(p.prev_events.iter().cloned());
        }
    }
    let mut view = ServerView::new(&app, &room, &origin)?;
    let min_depth = u64::from(body.min_depth);
    let mut events = walk_back(&mut view, &app, &room, from, &stop, limit, min_depth)?;
    events.reverse();
    Ok(get_missing_events::v1::Response::new(raws(events)?))
}
