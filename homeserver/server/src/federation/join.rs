//! Joins and leaves across servers: `make_join`/`send_join` and `make_leave`/`send_leave` as the
//! resident server, and joining a room that lives elsewhere (make_join → send_join, with the
//! returned state and auth chain checked and persisted in one batch).

use std::collections::{BTreeSet, HashMap};

use axum::{extract::State, Json};
use plexus_core::{builder::NewEvent, room_version, Pdu};
use plexus_store::{Batch, StateMap, Table};
use ruma::{
    canonical_json::try_from_json_map, room_version_rules::RoomVersionRules, EventId, OwnedEventId,
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, ServerName, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    ingest::{self, Checked, IngestError, Outcome},
    sender::{enc, federation_form},
    x_matrix::FedRequest,
};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Path, Query},
    service::{
        encode,
        rooms::RoomMeta,
        writer::{member_content, membership_rows, RoomWriter},
        App, Services,
    },
};

#[derive(Deserialize, Default)]
pub struct VerQuery {
    #[serde(default)]
    ver: Vec<String>,
}

fn member_template_event(user: &UserId, membership: &str) -> NewEvent {
    NewEvent {
        kind: "m.room.member".into(),
        content: json!({ "membership": membership }),
        state_key: Some(user.to_string()),
        redacts: None,
    }
}

/// The resident side of make_join/make_leave: an unsigned event for the remote user.
async fn make_membership(
    app: &Services,
    origin: &ServerName,
    room: &str,
    user: &str,
    membership: &str,
    versions: Option<&[String]>,
) -> ApiResult<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room)
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let user = OwnedUserId::try_from(user)
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    if user.server_name() != origin {
        return Err(ApiError::Forbidden(format!(
            "{origin} cannot {membership} on behalf of {user}"
        )));
    }
    let room = app
        .room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown room".into()))?;
    if ingest::local_members(app, room.short)? == 0 {
        return Err(ApiError::NotFound("This server is not in the room".into()));
    }
    if let Some(vers) = versions {
        let v = room.meta.version.as_str();
        let offered = if vers.is_empty() {
            v == "1"
        } else {
            vers.iter().any(|x| x == v)
        };
        if !offered {
            return Err(ApiError::IncompatibleRoomVersion(format!(
                "the room is version {v}, which your server did not offer"
            )));
        }
    }
    let w = RoomWriter::open(app, &room_id).await?;
    let event = w.template(&user, &member_template_event(&user, membership))?;
    Ok(Json(json!({
        "room_version": room.meta.version,
        "event": event,
    })))
}

pub async fn make_join(
    State(app): State<App>,
    Path((room, user)): Path<(String, String)>,
    Query(q): Query<VerQuery>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    make_membership(&app, &req.origin, &room, &user, "join", Some(&q.ver)).await
}

pub async fn make_leave(
    State(app): State<App>,
    Path((room, user)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    make_membership(&app, &req.origin, &room, &user, "leave", None).await
}

/// The resident side of send_join/send_leave: check, persist and pass the event on.
async fn send_membership(
    app: &Services,
    req: &FedRequest,
    room: &str,
    event_id: &str,
    membership: &str,
) -> ApiResult<(RoomMeta, Checked)> {
    let room_id = OwnedRoomId::try_from(room)
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let room = app
        .room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown room".into()))?;
    let rules = room_version::rules(&room.meta.version)?;
    let c = ingest::check(app, &rules, &req.body)
        .await
        .map_err(|e| ApiError::BadJson(e.to_string()))?;
    if c.event_id.as_str() != event_id {
        return Err(ApiError::BadJson("event id does not match the path".into()));
    }
    let pdu = &c.pdu;
    if pdu.room_id.as_deref() != Some(&*room_id)
        || pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.membership().as_deref() != Some(membership)
        || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
        || pdu.sender.server_name() != req.origin
    {
        return Err(ApiError::BadJson(format!(
            "not a {membership} of a user of {} in this room",
            req.origin
        )));
    }
    let outcome = ingest::persist(app, &room, &rules, c.clone(), Some(&req.origin))
        .await
        .map_err(|e| match e {
            IngestError::Auth(why) => ApiError::Forbidden(why),
            IngestError::Local(e) => e,
            e => ApiError::BadJson(e.to_string()),
        })?;
    if outcome == Outcome::SoftFailed {
        return Err(ApiError::Forbidden(
            "the event is not allowed by the room's current state".into(),
        ));
    }
    Ok((room.meta, c))
}

pub async fn send_join(
    State(app): State<App>,
    Path((room, event_id)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let (meta, c) = send_membership(&app, &req, &room, &event_id, "join").await?;
    let short = app
        .short_event(&c.event_id)?
        .ok_or_else(|| ApiError::Internal("join vanished".into()))?;
    let (before, _) = app
        .event_state(short)?
        .ok_or_else(|| ApiError::Internal("join without state".into()))?;
    let state_map = app.state_map(before)?;
    let mut state = vec![];
    let mut starts = c.pdu.auth_events.clone();
    for ev in state_map.values() {
        if let Some(p) = app.pdu_json(*ev)? {
            if let Some(id) = p.get("event_id").and_then(Value::as_str) {
                if let Ok(id) = OwnedEventId::try_from(id) {
                    starts.push(id);
                }
            }
            state.push(federation_form(&p));
        }
    }
    let chain = ingest::auth_chain(&app, &starts, &mut HashMap::new())?;
    let mut auth_chain = vec![];
    for id in chain {
        if let Some(short) = app.short_event(&id)? {
            if let Some(p) = app.pdu_json(short)? {
                auth_chain.push(federation_form(&p));
            }
        }
    }
    let room = app.room_or_404(&meta.room_id)?;
    let servers: BTreeSet<String> = app
        .room_members(room.short)?
        .into_iter()
        .filter(|(_, m)| m == "join")
        .map(|(u, _)| u.server_name().to_string())
        .collect();
    Ok(Json(json!({
        "origin": app.server_name(),
        "state": state,
        "auth_chain": auth_chain,
        "event": federation_form(&c.stored),
        "members_omitted": false,
        "servers_in_room": servers,
    })))
}

pub async fn send_leave(
    State(app): State<App>,
    Path((room, event_id)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    send_membership(&app, &req, &room, &event_id, "leave").await?;
    Ok(Json(json!({})))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: not accepted yet (the invite is
/// refused rather than silently dropped).
pub async fn invite(
    State(_app): State<App>,
    Path((_room, _event_id)): Path<(String, String)>,
    _req: FedRequest,
) -> ApiResult<Json<Value>> {
    Err(ApiError::Unrecognized)
}

/// Check a set of events from another server against their own auth events, oldest first;
/// events that fail are left out (and so is anything that needs them).
async fn check_all(
    app: &Services,
    rules: &RoomVersionRules,
    raws: impl Iterator<Item = &Value>,
) -> Result<HashMap<OwnedEventId, Checked>, IngestError> {
    let mut all: Vec<Checked> = vec![];
    for raw in raws {
        match ingest::check(app, rules, raw).await {
            Ok(c) => all.push(c),
            Err(e) => tracing::info!(error = %e, "event from send_join refused"),
        }
    }
    all.sort_by_key(|c| c.pdu.depth);
    let mut ok: HashMap<OwnedEventId, Checked> = HashMap::new();
    let mut pending = all;
    // Depth order is usually enough; a few passes cover auth events with equal depths.
    for _ in 0..4 {
        let mut next = vec![];
        let before = ok.len();
        for c in pending {
            let fetch = |id: &EventId| {
                ok.get(id)
                    .map(|c| c.pdu.clone())
                    .or_else(|| app.pdu(id).ok().flatten())
            };
            match ingest::check_against_auth_events(rules, &c.pdu, fetch) {
                Ok(()) => {
                    ok.insert(c.event_id.clone(), c);
                }
                Err(_) => next.push(c),
            }
        }
        pending = next;
        if pending.is_empty() || ok.len() == before {
            break;
        }
    }
    for c in &pending {
        tracing::info!(event_id = %c.event_id, "event from send_join fails auth; left out");
    }
    Ok(ok)
}

/// Store `events` as outliers and a full snapshot of `state_ids` in `batch`; the snapshot's
/// hash, depth and map.
fn stage_state(
    app: &Services,
    events: &HashMap<OwnedEventId, Checked>,
    state_ids: &[OwnedEventId],
    batch: &mut Batch,
) -> ApiResult<(Option<(u64, u32)>, StateMap)> {
    let mut shorts: HashMap<OwnedEventId, u64> = HashMap::new();
    for c in events.values() {
        shorts.insert(c.event_id.clone(), ingest::put_outlier(app, c, batch)?);
    }
    let mut map = StateMap::new();
    for id in state_ids {
        let (Some(c), Some(short)) = (events.get(id), shorts.get(id)) else {
            continue;
        };
        if let Some(sk) = &c.pdu.state_key {
            map.insert(
                app.short_state_key_or_create(&c.pdu.kind.to_string(), sk)?,
                *short,
            );
        }
    }
    if map.is_empty() {
        return Ok((None, map));
    }
    let full = map.clone();
    let snap = app.store.state.derive(None, &[], &[], || full, batch)?;
    Ok((Some(snap), map))
}

/// A point in the room's past whose state we learned from a peer: its state and auth chain
/// as outliers, and the event itself with that state before it (not in the timeline).
pub async fn store_state_and_point(
    app: &Services,
    rules: &RoomVersionRules,
    _room_id: &RoomId,
    events: Vec<Checked>,
    state_ids: &[OwnedEventId],
    point: Checked,
) -> Result<(), IngestError> {
    let mut ok: HashMap<OwnedEventId, Checked> = HashMap::new();
    for c in events {
        ok.insert(c.event_id.clone(), c);
    }
    let fetch = |id: &EventId| {
        ok.get(id)
            .map(|c| c.pdu.clone())
            .or_else(|| app.pdu(id).ok().flatten())
    };
    ingest::check_against_auth_events(rules, &point.pdu, fetch)?;
    let mut batch = Batch::default();
    let (snap, _) = stage_state(app, &ok, state_ids, &mut batch)?;
    let short = ingest::put_outlier(app, &point, &mut batch)?;
    let mut st = snap.map(|s| s.0).unwrap_or(0).to_be_bytes().to_vec();
    st.extend_from_slice(&snap.map(|s| s.0).unwrap_or(0).to_be_bytes());
    batch.put(Table::EventState, &short.to_be_bytes(), &st);
    app.store.commit(batch)?;
    Ok(())
}

/// Join `room_id`, which this server is not in, through one of `servers`.
pub async fn join_remote(
    app: &Services,
    user: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
    reason: Option<&String>,
) -> ApiResult<()> {
    let fed = app.fed()?;
    let vers: Vec<String> = room_version::SUPPORTED
        .iter()
        .map(|v| format!("ver={v}"))
        .collect();
    let mut last: Option<ApiError> = None;
    let mut tried = BTreeSet::new();
    for server in servers {
        if server == app.server_name() || !tried.insert(server.clone()) {
            continue;
        }
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?{}",
            enc(room_id.as_str()),
            enc(user.as_str()),
            vers.join("&")
        );
        let tpl = match fed
            .request(app, server, http::Method::GET, &path, None, true)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(%server, room_id = %room_id, error = %e, "make_join failed");
                last = Some(e.into());
                continue;
            }
        };
        match finish_join(app, user, room_id, server, &tpl, reason).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(%server, room_id = %room_id, error = %e, "send_join failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ApiError::NotFound("No known servers for this room".into())))
}

async fn finish_join(
    app: &Services,
    user: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    tpl: &Value,
    reason: Option<&String>,
) -> ApiResult<()> {
    let fed = app.fed()?;
    let version = tpl
        .get("room_version")
        .and_then(Value::as_str)
        .unwrap_or("1");
    let version = RoomVersionId::try_from(version)
        .map_err(|e| ApiError::BadGateway(format!("bad room version: {e}")))?;
    let rules = room_version::rules(&version)?;
    let mut ev = tpl
        .get("event")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::BadGateway("make_join without an event".into()))?;
    if ev.get("sender").and_then(Value::as_str) != Some(user.as_str())
        || ev.get("state_key").and_then(Value::as_str) != Some(user.as_str())
        || ev.get("room_id").and_then(Value::as_str) != Some(room_id.as_str())
        || ev.get("type").and_then(Value::as_str) != Some("m.room.member")
    {
        return Err(ApiError::BadGateway(
            "make_join template is for something else".into(),
        ));
    }
    let mut content = member_content(app, user, "join")?;
    if let Some(via) = ev
        .get("content")
        .and_then(|c| c.get("join_authorised_via_users_server"))
    {
        content["join_authorised_via_users_server"] = via.clone();
    }
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    ev["content"] = content;
    ev["origin"] = json!(app.server_name());
    ev["origin_server_ts"] = json!(crate::service::now_ms());
    let obj = match ev {
        Value::Object(m) => {
            try_from_json_map(m).map_err(|e| ApiError::BadGateway(e.to_string()))?
        }
        _ => unreachable!("checked to be an object"),
    };
    let built = plexus_core::builder::sign_pdu(obj, &rules, app.server_name(), &app.key)?;
    let stored =
        serde_json::to_value(&built.stored).map_err(|e| ApiError::Internal(e.to_string()))?;
    let path = format!(
        "/_matrix/federation/v2/send_join/{}/{}",
        enc(room_id.as_str()),
        enc(built.event_id.as_str())
    );
    let resp = fed
        .request(
            app,
            server,
            http::Method::PUT,
            &path,
            Some(federation_form(&stored)),
            true,
        )
        .await?;

    // The state and auth chain: signatures, hashes, then each against its auth events.
    let raws = resp
        .get("auth_chain")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            resp.get("state")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    let ok = check_all(app, &rules, raws)
        .await
        .map_err(|e| ApiError::BadGateway(e.to_string()))?;
    let mut state_ids = vec![];
    for raw in resp
        .get("state")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(obj) = raw
            .as_object()
            .and_then(|o| try_from_json_map(o.clone()).ok())
        else {
            continue;
        };
        let mut obj = obj;
        obj.remove("unsigned");
        if !matches!(
            rules.event_id_format,
            ruma::room_version_rules::EventIdFormatVersion::V1
        ) {
            obj.remove("event_id");
        }
        if let Ok(id) = ingest::event_id_of(&obj, &rules) {
            if ok.contains_key(&id) {
                state_ids.push(id);
            }
        }
    }
    let create_ok = ok.values().any(|c| {
        c.pdu.kind == ruma::events::TimelineEventType::RoomCreate && state_ids.contains(&c.event_id)
    });
    if !create_ok {
        return Err(ApiError::BadGateway(
            "send_join state has no valid create event".into(),
        ));
    }
    // The join as the resident server countersigned it, if it did (restricted joins).
    let join = match resp.get("event").filter(|e| e.is_object()) {
        Some(e) => match ingest::check(app, &rules, e).await {
            Ok(c) if c.event_id == built.event_id => c,
            _ => local_checked(&built, stored.clone()),
        },
        None => local_checked(&built, stored.clone()),
    };
    persist_joined_room(app, room_id, &version, &rules, ok, &state_ids, join).await
}

fn local_checked(built: &plexus_core::builder::BuiltPdu, stored: Value) -> Checked {
    Checked {
        event_id: built.event_id.clone(),
        stored,
        pdu: built.pdu.clone(),
    }
}

/// One batch: the room, its state and auth chain, and our join on top of that state.
async fn persist_joined_room(
    app: &Services,
    room_id: &RoomId,
    version: &RoomVersionId,
    rules: &RoomVersionRules,
    events: HashMap<OwnedEventId, Checked>,
    state_ids: &[OwnedEventId],
    join: Checked,
) -> ApiResult<()> {
    let _guard = app.room_lock(room_id).lock_owned().await;
    {
        let fetch = |id: &EventId| {
            events
                .get(id)
                .map(|c| c.pdu.clone())
                .or_else(|| app.pdu(id).ok().flatten())
        };
        let by_key: HashMap<(String, String), Pdu> = state_ids
            .iter()
            .filter_map(|id| events.get(id))
            .filter_map(|c| {
                Some((
                    (c.pdu.kind.to_string(), c.pdu.state_key.clone()?),
                    c.pdu.clone(),
                ))
            })
            .collect();
        plexus_core::auth::check(rules, &join.pdu, fetch, |t, k| {
            by_key.get(&(t.to_string(), k.to_owned())).cloned()
        })
        .map_err(|e| {
            ApiError::Forbidden(format!("our join is not allowed by the room state: {e}"))
        })?;
    }
    let existing = app.room(room_id)?;
    let short_room = match &existing {
        Some(r) => r.short,
        None => app.store.kv.unique_id()?,
    };
    let mut pre = Batch::default();
    if existing.is_none() {
        let meta = RoomMeta {
            room_id: room_id.to_owned(),
            version: version.clone(),
        };
        pre.put(
            Table::RoomIdShort,
            room_id.as_bytes(),
            &short_room.to_be_bytes(),
        );
        pre.put(
            Table::ShortRoomId,
            &short_room.to_be_bytes(),
            room_id.as_bytes(),
        );
        pre.put(Table::RoomMeta, &short_room.to_be_bytes(), &encode(&meta));
    }
    for t in app.extremities(short_room)? {
        let mut k = short_room.to_be_bytes().to_vec();
        k.extend_from_slice(&t.to_be_bytes());
        pre.delete(Table::Extremity, &k);
    }
    let (snap, map) = stage_state(app, &events, state_ids, &mut pre)?;
    let short = ingest::put_outlier(app, &join, &mut pre)?;
    let sk = app.short_state_key_or_create("m.room.member", join.pdu.sender.as_str())?;
    let mut after = map.clone();
    after.insert(sk, short);
    let after_snap =
        app.store
            .state
            .derive(snap, &[(sk, short)], &[], || after.clone(), &mut pre)?;
    let mut st = snap.map(|s| s.0).unwrap_or(0).to_be_bytes().to_vec();
    st.extend_from_slice(&after_snap.0.to_be_bytes());
    pre.put(Table::EventState, &short.to_be_bytes(), &st);
    let mut k = short_room.to_be_bytes().to_vec();
    k.extend_from_slice(&short.to_be_bytes());
    pre.put(Table::Extremity, &k, &[]);
    let mut v = after_snap.0.to_be_bytes().to_vec();
    v.extend_from_slice(&after_snap.1.to_be_bytes());
    pre.put(Table::RoomState, &short_room.to_be_bytes(), &v);
    let members: Vec<Pdu> = state_ids
        .iter()
        .filter_map(|id| events.get(id))
        .map(|c| c.pdu.clone())
        .filter(|p| p.membership().is_some())
        .collect();
    let (last, ()) = app.store.commit_with_count(|count, batch| {
        batch.append(pre);
        let mut pos = short_room.to_be_bytes().to_vec();
        pos.extend_from_slice(&count.to_be_bytes());
        batch.put(Table::Timeline, &pos, &short.to_be_bytes());
        batch.put(Table::EventPosition, &short.to_be_bytes(), &pos);
        for m in &members {
            membership_rows(batch, short_room, room_id, m, count);
        }
        membership_rows(batch, short_room, room_id, &join.pdu, count);
        Ok(())
    })?;
    drop(_guard);
    app.store.flush().await?;
    app.notifier.wake([&*join.pdu.sender], last);
    tracing::info!(room_id = %room_id, state = map.len(), "joined a room over federation");
    Ok(())
}
