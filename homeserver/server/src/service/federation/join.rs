//! Joining, leaving or knocking on a room that lives on another server (make_join → send_join,
//! with the returned state and auth chain checked and persisted in one batch), our membership
//! events of rooms this server is not in, and state a peer gave us for a point in a room's past.

use std::collections::{BTreeSet, HashMap};

use plexus_core::{builder::NewEvent, room_version, Pdu};
use plexus_store::{Batch, StateMap};
use ruma::{
    room_version_rules::RoomVersionRules, EventId, OwnedEventId, OwnedServerName, OwnedUserId,
    RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::{json, Value};

use super::{
    ingest::{self, Checked, IngestError},
    sender::{enc, federation_form},
    FederationError,
};
use crate::service::{
    rooms::RoomMeta,
    writer::{
        event_state_row, member_content, membership_rows, room_rows, room_state_row,
        stripped_state_row, timeline_rows, tip_rows,
    },
    Services,
};

/// The membership event of `user` before it is filled in: a make_{membership} template here, or
/// a local leave.
pub fn member_template_event(user: &UserId, membership: &str) -> NewEvent {
    NewEvent {
        kind: "m.room.member".into(),
        content: json!({ "membership": membership }),
        state_key: Some(user.to_string()),
        redacts: None,
    }
}

/// Store `events` as outliers and a full snapshot of `state_ids` in `batch`; the snapshot's
/// hash, depth and map.
fn stage_state(
    app: &Services,
    events: &HashMap<OwnedEventId, Checked>,
    state_ids: &[OwnedEventId],
    batch: &mut Batch,
) -> Result<(Option<(u64, u32)>, StateMap), FederationError> {
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
                app.rooms
                    .short_state_key_or_create(&c.pdu.kind.to_string(), sk)?,
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
    events: Vec<Checked>,
    state_ids: &[OwnedEventId],
    point: Checked,
) -> Result<(), IngestError> {
    let ok = ingest::auth_in_order(app, rules, events);
    let fetch = |id: &EventId| {
        ok.get(id)
            .map(|c| c.pdu.clone())
            .or_else(|| app.rooms.pdu(id).ok().flatten())
    };
    ingest::check_against_auth_events(rules, &point.pdu, fetch)?;
    let mut batch = Batch::default();
    let (snap, _) = stage_state(app, &ok, state_ids, &mut batch)?;
    let short = ingest::put_outlier(app, &point, &mut batch)?;
    event_state_row(&mut batch, short, snap, snap)?;
    plexus_store::schema::EVENT__GAP_POINT.put(&mut batch, short, &())?;
    app.store.commit(batch)?;
    Ok(())
}

/// Join, leave or knock on a room this server is not in, through one of `servers`:
/// make_{membership} there, fill in and sign the template here, send_{membership} back.
#[tracing::instrument(skip_all, fields(user = %user, room_id = %room_id, membership))]
pub async fn remote_membership(
    app: &Services,
    user: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
    membership: &str,
    reason: Option<&String>,
) -> Result<(), FederationError> {
    let fed = app.fed()?;
    let vers: Vec<String> = room_version::SUPPORTED
        .iter()
        .map(|v| format!("ver={v}"))
        .collect();
    let mut last: Option<FederationError> = None;
    let mut tried = BTreeSet::new();
    for server in servers {
        if server == app.server_name() || !tried.insert(server.clone()) {
            continue;
        }
        let mut path = format!(
            "/_matrix/federation/v1/make_{membership}/{}/{}",
            enc(room_id.as_str()),
            enc(user.as_str()),
        );
        if membership != "leave" {
            path = format!("{path}?{}", vers.join("&"));
        }
        let tpl = match fed
            .request(app, server, http::Method::GET, &path, None, true)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(%server, room_id = %room_id, error = %e, "make_{membership} failed");
                last = Some(e.into());
                continue;
            }
        };
        match send_remote(app, user, room_id, server, &tpl, membership, reason).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(%server, room_id = %room_id, error = %e, "send_{membership} failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| FederationError::NotFound("No known servers for this room".into())))
}

/// Fill in and sign a make_{membership} template, send it, and store what comes back.
async fn send_remote(
    app: &Services,
    user: &UserId,
    room_id: &RoomId,
    server: &ServerName,
    tpl: &Value,
    membership: &str,
    reason: Option<&String>,
) -> Result<(), FederationError> {
    let fed = app.fed()?;
    let version = tpl
        .get("room_version")
        .and_then(Value::as_str)
        .unwrap_or("1");
    let version = RoomVersionId::try_from(version)
        .map_err(|e| FederationError::BadGateway(format!("bad room version: {e}")))?;
    let rules = room_version::rules(&version)?;
    let mut ev = tpl
        .get("event")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| {
            FederationError::BadGateway(format!("make_{membership} without an event"))
        })?;
    if ev.get("sender").and_then(Value::as_str) != Some(user.as_str())
        || ev.get("state_key").and_then(Value::as_str) != Some(user.as_str())
        || ev.get("room_id").and_then(Value::as_str) != Some(room_id.as_str())
        || ev.get("type").and_then(Value::as_str) != Some("m.room.member")
    {
        return Err(FederationError::BadGateway(format!(
            "make_{membership} template is for something else"
        )));
    }
    let mut content = member_content(app, user, membership)?;
    if let Some(via) = ev
        .get("content")
        .and_then(|c| c.get("join_authorised_via_users_server"))
        .filter(|_| membership == "join")
    {
        content["join_authorised_via_users_server"] = via.clone();
    }
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    ev["content"] = content;
    ev["origin"] = json!(app.server_name());
    ev["origin_server_ts"] = json!(crate::service::now_ms());
    let obj = ingest::canonical_object(&ev).map_err(FederationError::BadGateway)?;
    let built = plexus_core::builder::sign_pdu(obj, &rules, app.server_name(), &app.key)?;
    let stored = serde_json::to_value(&built.stored)
        .map_err(|e| FederationError::Internal(e.to_string()))?;
    // Knocks were added after v2 of send_join/send_leave and only exist as v1.
    let api = if membership == "knock" { "v1" } else { "v2" };
    let path = format!(
        "/_matrix/federation/{api}/send_{membership}/{}/{}",
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
    if membership != "join" {
        let stripped = (membership == "knock").then(|| {
            resp.get("knock_room_state")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| e.is_object())
                .map(plexus_core::client_event::to_stripped)
                .collect()
        });
        let c = local_checked(&built, stored);
        return persist_out_of_room(app, room_id, &version, c, stripped).await;
    }

    // The state and auth chain: signatures, hashes, then each against its auth events.
    let list = |k: &str| resp.get(k).and_then(Value::as_array).into_iter().flatten();
    let state = ingest::check_each(app, &rules, list("state")).await;
    let state_ids: Vec<OwnedEventId> = state.iter().map(|c| c.event_id.clone()).collect();
    let mut all = ingest::check_each(app, &rules, list("auth_chain")).await;
    all.extend(state);
    let ok = ingest::auth_in_order(app, &rules, all);
    let state_ids: Vec<OwnedEventId> = state_ids
        .into_iter()
        .filter(|id| ok.contains_key(id))
        .collect();
    let create_ok = ok.values().any(|c| {
        c.pdu.kind == ruma::events::TimelineEventType::RoomCreate && state_ids.contains(&c.event_id)
    });
    if !create_ok {
        return Err(FederationError::BadGateway(
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

/// The room's short id, or a new one with the room's rows staged in `batch` for a room this
/// server has not known before.
fn room_or_new(
    app: &Services,
    room_id: &RoomId,
    version: &RoomVersionId,
    batch: &mut Batch,
) -> Result<u64, FederationError> {
    if let Some(r) = app.rooms.room(room_id)? {
        return Ok(r.short);
    }
    let short = app.store.kv.unique_id()?;
    let meta = RoomMeta {
        room_id: room_id.to_owned(),
        version: version.clone(),
    };
    room_rows(batch, short, &meta)?;
    Ok(short)
}

/// A membership event of ours in a room this server is not in (an invite we countersigned, a
/// leave or knock we sent): kept as an outlier with the user's membership and, for invites and
/// knocks, the stripped state that lets the user recognise the room.
pub async fn persist_out_of_room(
    app: &Services,
    room_id: &RoomId,
    version: &RoomVersionId,
    c: Checked,
    stripped: Option<Vec<Value>>,
) -> Result<(), FederationError> {
    let user = c
        .pdu
        .state_key
        .as_deref()
        .and_then(|k| OwnedUserId::try_from(k).ok())
        .ok_or_else(|| FederationError::Internal("membership without a user".into()))?;
    let _guard = app.room_lock(room_id).lock_owned().await;
    let mut pre = Batch::default();
    let short_room = room_or_new(app, room_id, version, &mut pre)?;
    ingest::put_outlier(app, &c, &mut pre)?;
    if let Some(events) = stripped {
        stripped_state_row(&mut pre, &user, room_id, &c.event_id, &events)?;
    }
    let (last, ()) = app.store.commit_with_count(|count, batch| {
        batch.append(pre);
        membership_rows(batch, short_room, room_id, &c.pdu, count)?;
        Ok(())
    })?;
    drop(_guard);
    app.store.flush().await?;
    app.notifier.wake([&*user], last);
    Ok(())
}

/// Turn down an invite (or withdraw a knock) when no server of the room can be reached: a
/// leave signed here that only this server knows of, so the user is not stuck with it.
pub async fn local_rejection(
    app: &Services,
    user: &UserId,
    room_id: &RoomId,
    invite: &EventId,
) -> Result<(), FederationError> {
    let room = app.rooms.room_or_404(room_id)?;
    let rules = room_version::rules(&room.meta.version)?;
    let prev = app
        .rooms
        .pdu(invite)?
        .ok_or_else(|| FederationError::NotFound("the invite is gone".into()))?;
    let refs = vec![plexus_core::builder::EventRef::of(&prev)];
    let ctx = plexus_core::builder::RoomContext {
        room_id: Some(room_id),
        rules: &rules,
        sender: user,
        origin: app.server_name(),
        prev_events: refs.clone(),
        auth_events: refs,
        depth: plexus_core::builder::next_depth(u64::from(prev.depth)),
        origin_server_ts: crate::service::now_ms(),
    };
    let built =
        plexus_core::builder::build_pdu(&member_template_event(user, "leave"), &ctx, &app.key)?;
    let stored = serde_json::to_value(&built.stored)
        .map_err(|e| FederationError::Internal(e.to_string()))?;
    let c = local_checked(&built, stored);
    persist_out_of_room(app, room_id, &room.meta.version, c, None).await
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
) -> Result<(), FederationError> {
    let _guard = app.room_lock(room_id).lock_owned().await;
    let fetch = |id: &EventId| {
        events
            .get(id)
            .map(|c| c.pdu.clone())
            .or_else(|| app.rooms.pdu(id).ok().flatten())
    };
    let state = state_ids
        .iter()
        .filter_map(|id| events.get(id))
        .map(|c| c.pdu.clone());
    ingest::check_against_events(rules, &join.pdu, fetch, state).map_err(|e| {
        FederationError::Forbidden(format!("our join is not allowed by the room state: {e}"))
    })?;
    let mut pre = Batch::default();
    let short_room = room_or_new(app, room_id, version, &mut pre)?;
    let (snap, map) = stage_state(app, &events, state_ids, &mut pre)?;
    let short = ingest::put_outlier(app, &join, &mut pre)?;
    let sk = app
        .rooms
        .short_state_key_or_create("m.room.member", join.pdu.sender.as_str())?;
    let after = || {
        let mut m = map.clone();
        m.insert(sk, short);
        m
    };
    let after_snap = app
        .store
        .state
        .derive(snap, &[(sk, short)], &[], after, &mut pre)?;
    event_state_row(&mut pre, short, snap, Some(after_snap))?;
    tip_rows(
        &mut pre,
        short_room,
        &app.rooms.extremities(short_room)?,
        short,
    )?;
    room_state_row(&mut pre, short_room, after_snap)?;
    let members: Vec<Pdu> = state_ids
        .iter()
        .filter_map(|id| events.get(id))
        .map(|c| c.pdu.clone())
        .filter(|p| p.membership().is_some())
        .collect();
    let (last, ()) = app.store.commit_with_count(|count, batch| {
        batch.append(pre);
        timeline_rows(batch, short_room, count, short)?;
        for m in &members {
            membership_rows(batch, short_room, room_id, m, count)?;
        }
        membership_rows(batch, short_room, room_id, &join.pdu, count)?;
        Ok(())
    })?;
    drop(_guard);
    app.store.flush().await?;
    app.notifier.wake([&*join.pdu.sender], last);
    app.public_users.mark_stale();
    tracing::info!(room_id = %room_id, state = map.len(), "joined a room over federation");
    Ok(())
}
