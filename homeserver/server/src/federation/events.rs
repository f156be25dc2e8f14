//! Reading a room's events and state as a peer: `event`, `state`, `state_ids`, `event_auth`,
//! `backfill`, `get_missing_events`. A peer may read a room only while one of its users is joined
//! to it, and sees each event as the room's history visibility allows (`visibility.rs`).
//! "State at an event" is the state before it, as Synapse also answers.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use axum::{extract::State, Json};
use ruma::{EventId, OwnedEventId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    ingest,
    sender::federation_form,
    visibility::{room_for_peer, ServerView},
    x_matrix::FedRequest,
};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Path, Query},
    service::{now_ms, rooms::RoomRef, App, Services},
};

const MAX_BACKFILL: usize = 100;

/// A stored event of `room` by id: its short id and stored form.
fn event_in(app: &Services, room: &RoomRef, id: &EventId) -> ApiResult<Option<(u64, Value)>> {
    let Some(short) = app.short_event(id)? else {
        return Ok(None);
    };
    let Some(pdu) = app.pdu_json(short)? else {
        return Ok(None);
    };
    let in_room = match pdu.get("room_id").and_then(Value::as_str) {
        Some(r) => r == room.meta.room_id.as_str(),
        None => ingest::in_room(None, id, &room.meta.room_id),
    };
    Ok(in_room.then_some((short, pdu)))
}

pub async fn event(
    State(app): State<App>,
    Path(event_id): Path<String>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let id = OwnedEventId::try_from(event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let short = app
        .short_event(&id)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let stored = app
        .pdu_json(short)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let room_id = match stored.get("room_id").and_then(Value::as_str) {
        Some(r) => r.to_owned(),
        None => format!("!{}", &id.as_str()[1..]),
    };
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let pdu = app
        .pdu_by_short(short)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let form = ServerView::new(&app, &room, &req.origin)?.form(short, &pdu, &stored)?;
    Ok(Json(json!({
        "origin": app.server_name(),
        "origin_server_ts": now_ms(),
        "pdus": [form],
    })))
}

#[derive(Deserialize)]
pub struct AtEvent {
    event_id: String,
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
        .event_state(short)?
        .ok_or_else(|| ApiError::NotFound("No state known at that event".into()))?;
    let mut ids = vec![];
    for ev in app.state_map(before)?.values() {
        if let Some(p) = app.pdu_by_short(*ev)? {
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
        if let Some(short) = app.short_event(&id)? {
            if let Some(p) = app.pdu_json(short)? {
                out.push(federation_form(&p));
            }
        }
    }
    Ok(out)
}

pub async fn state(
    State(app): State<App>,
    Path(room_id): Path<String>,
    Query(q): Query<AtEvent>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let (ids, chain) = state_before(&app, &room, &q.event_id)?;
    Ok(Json(json!({
        "pdus": federation_forms(&app, ids)?,
        "auth_chain": federation_forms(&app, chain)?,
    })))
}

pub async fn state_ids(
    State(app): State<App>,
    Path(room_id): Path<String>,
    Query(q): Query<AtEvent>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let (ids, chain) = state_before(&app, &room, &q.event_id)?;
    Ok(Json(json!({ "pdu_ids": ids, "auth_chain_ids": chain })))
}

pub async fn event_auth(
    State(app): State<App>,
    Path((room_id, event_id)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let id = OwnedEventId::try_from(event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let pdu = app
        .pdu(&id)?
        .filter(|_| event_in(&app, &room, &id).ok().flatten().is_some())
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let chain = ingest::auth_chain(&app, &pdu.auth_events, &mut HashMap::new())?;
    Ok(Json(
        json!({ "auth_chain": federation_forms(&app, chain)? }),
    ))
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
        let Some(pdu) = app.pdu_by_short(short)? else {
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

#[derive(Deserialize)]
pub struct BackfillQuery {
    #[serde(default)]
    v: Vec<String>,
    limit: Option<usize>,
}

pub async fn backfill(
    State(app): State<App>,
    Path(room_id): Path<String>,
    Query(q): Query<BackfillQuery>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let from: Vec<OwnedEventId> =
        q.v.iter()
            .filter_map(|v| OwnedEventId::try_from(v.as_str()).ok())
            .collect();
    if from.is_empty() {
        return Err(ApiError::MissingParam("v is required".into()));
    }
    let limit = q.limit.unwrap_or(10).clamp(1, MAX_BACKFILL);
    let mut view = ServerView::new(&app, &room, &req.origin)?;
    let pdus = walk_back(&mut view, &app, &room, from, &BTreeSet::new(), limit, 0)?;
    Ok(Json(json!({
        "origin": app.server_name(),
        "origin_server_ts": now_ms(),
        "pdus": pdus,
    })))
}

#[derive(Deserialize)]
pub struct MissingBody {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    limit: Option<usize>,
    min_depth: Option<u64>,
}

pub async fn get_missing_events(
    State(app): State<App>,
    Path(room_id): Path<String>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let room = room_for_peer(&app, &room_id, &req.origin)?;
    let body: MissingBody = req.json()?;
    let limit = body.limit.unwrap_or(10).clamp(1, MAX_BACKFILL);
    let stop: BTreeSet<OwnedEventId> = body.earliest_events.into_iter().collect();
    // The latest events themselves are what the peer has; return what lies between.
    let mut from = vec![];
    for id in &body.latest_events {
        if let Some(p) = app.pdu(id)? {
            from.extend(p.prev_events.iter().cloned());
        }
    }
    let mut view = ServerView::new(&app, &room, &req.origin)?;
    let min_depth = body.min_depth.unwrap_or(0);
    let mut events = walk_back(&mut view, &app, &room, from, &stop, limit, min_depth)?;
    events.reverse();
    Ok(Json(json!({ "events": events })))
}
