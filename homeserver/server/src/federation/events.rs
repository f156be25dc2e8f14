//! Reading a room's events and state as a peer: `event`, `state`, `state_ids`, `event_auth`,
//! `backfill`, `get_missing_events`. A peer may read a room only while one of its users is in it.
//! "State at an event" is the state before it, as Synapse also answers.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use axum::{extract::State, Json};
use ruma::{EventId, OwnedEventId, OwnedRoomId, ServerName};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ingest, sender::federation_form, x_matrix::FedRequest};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Path, Query},
    service::{now_ms, rooms::RoomRef, App, Services},
};

const MAX_BACKFILL: usize = 100;

/// The room, if `origin` has a member in it (joined, or invited and so entitled to look).
fn room_for_peer(app: &Services, room_id: &str, origin: &ServerName) -> ApiResult<RoomRef> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let room = app
        .room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown room".into()))?;
    let member = app
        .room_members(room.short)?
        .into_iter()
        .any(|(u, m)| u.server_name() == origin && (m == "join" || m == "invite"));
    if !member {
        return Err(ApiError::Forbidden(format!("{origin} is not in this room")));
    }
    super::acl::ensure(app, room.short, origin)?;
    Ok(room)
}

/// A stored event of `room` by id, in federation form.
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
    Ok(in_room.then(|| (short, federation_form(&pdu))))
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
    let pdu = app
        .pdu_json(short)?
        .ok_or_else(|| ApiError::NotFound("Unknown event".into()))?;
    let room_id = match pdu.get("room_id").and_then(Value::as_str) {
        Some(r) => r.to_owned(),
        None => format!("!{}", &id.as_str()[1..]),
    };
    room_for_peer(&app, &room_id, &req.origin)?;
    Ok(Json(json!({
        "origin": app.server_name(),
        "origin_server_ts": now_ms(),
        "pdus": [federation_form(&pdu)],
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

/// Walk `prev_events` back from `from`, breadth first, stopping at `stop`.
fn walk_back(
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
        let Some((_, pdu)) = event_in(app, room, &id)? else {
            continue;
        };
        if pdu.get("depth").and_then(Value::as_u64).unwrap_or(0) < min_depth {
            continue;
        }
        if let Some(p) = app.pdu(&id)? {
            queue.extend(p.prev_events.iter().cloned());
        }
        out.push(pdu);
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
    let pdus = walk_back(&app, &room, from, &BTreeSet::new(), limit, 0)?;
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
    let mut events = walk_back(&app, &room, from, &stop, limit, body.min_depth.unwrap_or(0))?;
    events.reverse();
    Ok(Json(json!({ "events": events })))
}
