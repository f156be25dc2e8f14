//! Appending local events to a room: build from current state, authorize, and commit one or
//! many events in a single atomic, flushed batch (so createRoom either fully happens or not at all).

use std::{collections::HashMap, sync::Arc};

use plexus_core::{
    auth,
    builder::{build_pdu, next_depth, BuiltPdu, EventRef, NewEvent, RoomContext},
    room_version, CoreError, Pdu,
};
use plexus_store::{schema, Batch, StateMap, StoreError};
use ruma::{
    canonical_json::{redact, try_from_json_map},
    room_version_rules::RoomVersionRules,
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
};
use serde_json::{json, Value};
use tokio::sync::OwnedMutexGuard;

use super::{
    accounts::AccountsError,
    federation::sender::Sender,
    now_ms,
    push::PushError,
    rooms::{Membership, RoomAudience, RoomMeta, RoomsError},
    Services,
};

/// Most prev_events cited by one new event.
const MAX_PREV_EVENTS: usize = 20;

/// Why an event could not be built, authorized or committed to a room.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    /// Building or signing the event, or the room version's rules.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// Running the local members' push rules on a new event.
    #[error(transparent)]
    Push(#[from] PushError),
    /// 403: the auth rules refuse the event.
    #[error("{0}")]
    Forbidden(String),
    /// 400 `M_BAD_JSON`: content the auth rules cannot read.
    #[error("{0}")]
    BadJson(String),
    #[error("internal error: {0}")]
    Internal(String),
}

struct Pending {
    built: BuiltPdu,
    stored: Value,
    txn: Option<(String, String)>,
    redacts: Option<u64>,
}

pub struct RoomWriter<'a> {
    svc: &'a Services,
    pub room_id: Option<OwnedRoomId>,
    short_room: u64,
    pub rules: RoomVersionRules,
    version: RoomVersionId,
    /// The room's committed current state: snapshot hash and delta depth.
    base: Option<(u64, u32)>,
    pending_state: HashMap<(String, String), usize>,
    pending: Vec<Pending>,
    tips: Vec<EventRef>,
    depth: u64,
    new_room: bool,
    /// Extra records committed in the same batch as the events (aliases, directory entries).
    pub extra: Batch,
    _guard: Option<OwnedMutexGuard<()>>,
}

impl<'a> RoomWriter<'a> {
    /// Take the room's append lock and load its current state.
    pub async fn open(svc: &'a Services, room_id: &ruma::RoomId) -> Result<Self, WriteError> {
        let guard = svc.room_lock(room_id).lock_owned().await;
        let room = svc.rooms.room_or_404(room_id)?;
        let rules = room_version::rules(&room.meta.version)?;
        let base = svc.rooms.current_state(room.short)?;
        let mut tips = Vec::new();
        let mut depth = 0;
        for short in svc
            .rooms
            .extremities(room.short)?
            .into_iter()
            .take(MAX_PREV_EVENTS)
        {
            if let Some(pdu) = svc.rooms.pdu_by_short(short)? {
                depth = depth.max(u64::from(pdu.depth));
                tips.push(EventRef::of(&pdu));
            }
        }
        Ok(Self {
            svc,
            room_id: Some(room_id.to_owned()),
            short_room: room.short,
            rules,
            version: room.meta.version,
            base,
            pending_state: HashMap::new(),
            pending: vec![],
            tips,
            depth,
            new_room: false,
            extra: Batch::default(),
            _guard: Some(guard),
        })
    }

    /// A writer for a room that does not exist yet; the first event must be `m.room.create`.
    pub fn create(svc: &'a Services, version: RoomVersionId) -> Result<Self, WriteError> {
        let rules = room_version::rules(&version)?;
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let id = format!(
                "!{}:{}",
                plexus_core::signing::random_alnum(18),
                svc.server_name()
            );
            Some(OwnedRoomId::try_from(id).map_err(|e| WriteError::Internal(e.to_string()))?)
        };
        Ok(Self {
            svc,
            room_id,
            short_room: svc.store.kv.unique_id()?,
            rules,
            version,
            base: None,
            pending_state: HashMap::new(),
            pending: vec![],
            tips: vec![],
            depth: 0,
            new_room: true,
            extra: Batch::default(),
            _guard: None,
        })
    }

    /// The current state event at `(type, state_key)`, including events appended but not
    /// committed yet.
    pub fn state(&self, kind: &str, state_key: &str) -> Result<Option<Pdu>, RoomsError> {
        if let Some(i) = self
            .pending_state
            .get(&(kind.to_owned(), state_key.to_owned()))
        {
            return Ok(Some(self.pending[*i].built.pdu.clone()));
        }
        // One entry of the snapshot, read without materialising the whole room state.
        self.svc
            .rooms
            .state_pdu(self.base.map(|b| b.0).unwrap_or(0), kind, state_key)
    }

    pub fn membership_of(&self, user: &UserId) -> Result<Option<String>, RoomsError> {
        Ok(self
            .state("m.room.member", user.as_str())?
            .and_then(|p| p.membership()))
    }

    fn event(&self, id: &ruma::EventId) -> Option<Pdu> {
        self.pending
            .iter()
            .find(|p| p.built.event_id == id)
            .map(|p| p.built.pdu.clone())
            .or_else(|| self.svc.rooms.pdu(id).ok().flatten())
    }

    /// The current state events an event must cite as its `auth_events`.
    fn auth_refs(&self, sender: &UserId, ev: &NewEvent) -> Result<Vec<EventRef>, WriteError> {
        let types = auth::auth_types(
            &self.rules,
            &ev.kind,
            sender,
            ev.state_key.as_deref(),
            &ev.content,
        )
        .map_err(|e| WriteError::BadJson(e.to_string()))?;
        let mut auth_events = Vec::with_capacity(types.len());
        for (t, k) in &types {
            if let Some(p) = self.state(&t.to_string(), k)? {
                auth_events.push(EventRef::of(&p));
            }
        }
        Ok(auth_events)
    }

    /// An unsigned event on top of the room for another server to complete and sign (the
    /// make_join/make_leave template), checked against current state so a join that cannot
    /// succeed is refused up front.
    pub fn template(&self, sender: &UserId, ev: &NewEvent) -> Result<Value, WriteError> {
        let room_id = self
            .room_id
            .as_ref()
            .ok_or_else(|| WriteError::Internal("room without id".into()))?;
        let auth_events = self.auth_refs(sender, ev)?;
        let mut t = json!({
            "room_id": room_id,
            "sender": sender,
            "origin": sender.server_name(),
            "origin_server_ts": now_ms(),
            "type": ev.kind,
            "content": ev.content,
            "depth": next_depth(self.depth),
            "prev_events": plexus_core::builder::refs_json(&self.tips, &self.rules),
            "auth_events": plexus_core::builder::refs_json(&auth_events, &self.rules),
        });
        if let Some(sk) = &ev.state_key {
            t["state_key"] = json!(sk);
        }
        let mut probe = t.clone();
        probe["event_id"] = json!("$template:probe.invalid");
        let probe = serde_json::to_vec(&probe).map_err(|e| WriteError::Internal(e.to_string()))?;
        self.authorize(&Pdu::from_json(&probe)?)?;
        Ok(t)
    }

    /// Build, sign and authorize an event on top of everything appended so far.
    pub fn append(
        &mut self,
        sender: &UserId,
        ev: NewEvent,
        txn: Option<(String, String)>,
    ) -> Result<OwnedEventId, WriteError> {
        let auth_events = self.auth_refs(sender, &ev)?;
        let ctx = RoomContext {
            room_id: self.room_id.as_deref(),
            rules: &self.rules,
            sender,
            origin: self.svc.server_name(),
            prev_events: self.tips.clone(),
            auth_events,
            depth: next_depth(self.depth),
            origin_server_ts: now_ms(),
        };
        let built = build_pdu(&ev, &ctx, &self.svc.key)?;
        self.authorize(&built.pdu)?;

        if self.room_id.is_none() {
            let id = format!("!{}", &built.event_id.as_str()[1..]);
            self.room_id =
                Some(OwnedRoomId::try_from(id).map_err(|e| WriteError::Internal(e.to_string()))?);
        }

        let mut stored =
            serde_json::to_value(&built.stored).map_err(|e| WriteError::Internal(e.to_string()))?;
        if let Some(sk) = &ev.state_key {
            if let Some(prev) = self.state(&ev.kind, sk)? {
                stored["unsigned"] = json!({
                    "prev_content": prev.content_value(),
                    "prev_sender": prev.sender,
                    "replaces_state": prev.event_id,
                });
            }
        }
        let redacts = match built
            .pdu
            .redacted_event(self.rules.redaction.content_field_redacts)
        {
            Some(target) => self.redaction_target(sender, target)?,
            None => None,
        };

        let event_id = built.event_id.clone();
        self.tips = vec![EventRef::of(&built.pdu)];
        self.depth = next_depth(self.depth);
        if let Some(sk) = &ev.state_key {
            self.pending_state
                .insert((ev.kind.clone(), sk.clone()), self.pending.len());
        }
        self.pending.push(Pending {
            built,
            stored,
            txn,
            redacts,
        });
        Ok(event_id)
    }

    /// The stored form of an appended event that is not committed yet.
    pub fn pending_event(&self, id: &ruma::EventId) -> Option<&Value> {
        self.pending
            .iter()
            .find(|p| p.built.event_id == id)
            .map(|p| &p.stored)
    }

    /// Add another server's signatures to an appended event (an invitee's server countersigns
    /// the invite before it is committed and sent to the room).
    pub fn add_signatures(&mut self, id: &ruma::EventId, server: &str, sigs: Value) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.built.event_id == id) {
            p.stored["signatures"][server] = sigs;
        }
    }

    fn redaction_target(
        &self,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<Option<u64>, RoomsError> {
        redaction_target(
            self.svc,
            self.short_room,
            &self.rules,
            sender,
            target,
            |t, k| self.state(t, k),
        )
    }

    /// Auth rules against the room as this writer sees it (committed plus appended events).
    fn authorize(&self, pdu: &Pdu) -> Result<(), WriteError> {
        auth::check(
            &self.rules,
            pdu,
            |id| self.event(id),
            |t, k| self.state(&t.to_string(), k).ok().flatten(),
        )
        .map_err(|e| {
            WriteError::Forbidden(
                e.to_string()
                    .trim_start_matches("event auth failed: ")
                    .to_owned(),
            )
        })
    }

    /// Persist everything appended in one batch, flush, then wake the users it concerns.
    /// Returns the last stream position.
    #[tracing::instrument(skip_all, fields(room_id = self.room_id.as_ref().map(|r| r.as_str()), events = self.pending.len()))]
    pub async fn commit(mut self) -> Result<u64, WriteError> {
        if self.pending.is_empty() {
            return Ok(self.svc.store.current_count());
        }
        let svc = self.svc;
        let room_id = self
            .room_id
            .clone()
            .ok_or_else(|| WriteError::Internal("room without id".into()))?;
        // Allocate state keys before the batch: they are shared across rooms and written once.
        let mut state_keys = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            state_keys.push(match &p.built.pdu.state_key {
                Some(sk) => Some(
                    svc.rooms
                        .short_state_key_or_create(p.built.pdu.kind.to_string().as_str(), sk)?,
                ),
                None => None,
            });
        }
        let pending = std::mem::take(&mut self.pending);
        let n = pending.len() as u64;
        let short_room = self.short_room;
        // A full snapshot is written every FULL_EVERY links; only then is the whole map needed.
        let n_state = state_keys.iter().flatten().count() as u32;
        let needs_full = self
            .base
            .is_none_or(|(_, depth)| depth + n_state + 1 >= plexus_store::state::FULL_EVERY);
        let base_map: Arc<StateMap> = match self.base {
            Some((hash, _)) if needs_full => svc.rooms.state_map(hash)?,
            _ => Arc::default(),
        };
        let mut state = self.base;
        let new_room = self.new_room.then(|| RoomMeta {
            room_id: room_id.clone(),
            version: self.version.clone(),
        });
        let rules = self.rules.clone();
        let extra = std::mem::take(&mut self.extra);

        // Read under the room lock, so they cannot change before the batch is applied.
        let old_tips = svc.rooms.extremities(short_room)?;
        let audience = if self.new_room {
            RoomAudience::default()
        } else {
            svc.rooms.room_audience(short_room)?
        };
        // Push rules are judged against the state the events were built on.
        let judged_at = self.base.map(|b| b.0).unwrap_or(0);
        let mut notified = Vec::with_capacity(pending.len());
        for p in &pending {
            notified.push(
                crate::service::push::evaluate::evaluate(
                    svc, &room_id, &audience, judged_at, &rules, &p.stored,
                )
                .await?,
            );
        }
        let dests = if svc.federation.is_some() {
            audience.servers
        } else {
            vec![]
        };
        let mut wake = audience.local;
        let directory_changed = pending
            .iter()
            .any(|p| super::user_directory::PublicUsers::changed_by(&p.built.pdu));
        let mut plans = Vec::with_capacity(pending.len());
        for p in &pending {
            plans.push(svc.rooms.aggregation_plan(short_room, &p.stored)?);
        }
        let (last, ()) = svc.store.commit_with_counts(n, |first, batch| {
            let mut changes: Vec<(u64, u64)> = vec![];
            if let Some(meta) = &new_room {
                room_rows(batch, short_room, meta)?;
            }
            let mut last_short = 0;
            for (i, p) in pending.iter().enumerate() {
                let count = first + i as u64;
                let short = svc.store.kv.unique_id()?;
                let pdu = &p.built.pdu;
                event_rows(batch, short, &p.built.event_id, &p.stored)?;
                timeline_rows(batch, short_room, count, short)?;
                if let Some((device, txn)) = &p.txn {
                    schema::EVENT__DEVICE_TXN.put(batch, short, &(device.clone(), txn.clone()))?;
                    schema::USER_DEVICE_TXN__EVENTID.put(
                        batch,
                        (pdu.sender.as_str(), device, txn),
                        p.built.event_id.as_str(),
                    )?;
                }
                let before = state;
                if let Some(sk) = state_keys[i] {
                    changes.push((sk, short));
                    let full = || {
                        let mut m = (*base_map).clone();
                        m.extend(changes.iter().copied());
                        m
                    };
                    state =
                        Some(
                            svc.store
                                .state
                                .derive(state, &[(sk, short)], &[], full, batch)?,
                        );
                }
                event_state_row(batch, short, before, state)?;

                if pdu.membership().is_some() {
                    membership_rows(batch, short_room, &room_id, pdu, count)?;
                    wake.extend(
                        pdu.state_key
                            .as_deref()
                            .and_then(|k| OwnedUserId::try_from(k).ok()),
                    );
                }
                relation_row(batch, short_room, &p.stored, count, short)?;
                plans[i].rows(batch, short_room, count, short)?;
                crate::service::push::unread::notification_rows(
                    batch,
                    &room_id,
                    short_room,
                    count,
                    short,
                    pdu.origin_server_ts.get().into(),
                    crate::service::push::evaluate::thread_of(&p.stored),
                    &notified[i],
                )?;
                // Our own events are all by local users: sending reads up to the event.
                crate::service::push::unread::clear_through(
                    svc,
                    batch,
                    &pdu.sender,
                    short_room,
                    count,
                    crate::service::push::unread::ReadScope::of_event(&p.stored),
                )?;
                Sender::stage_pdus(batch, &dests, count, short)?;
                if let Some(target) = p.redacts {
                    if let Some(redacted) = redacted_form(svc, target, &p.stored, &room_id, &rules)
                    {
                        redacted_row(batch, target, &redacted)?;
                    }
                }
                last_short = short;
            }
            tip_rows(batch, short_room, &old_tips, last_short)?;
            batch.append(extra);
            if let Some(snap) = state {
                room_state_row(batch, short_room, snap)?;
            }
            Ok(())
        })?;
        drop(self._guard.take());
        svc.store.flush().await?;
        if directory_changed {
            svc.public_users.mark_stale();
        }
        svc.after_room_write(&wake, last, &dests);
        svc.pushers
            .wake(notified.iter().flatten().map(|n| n.user.as_ref()));
        Ok(last)
    }
}

impl Services {
    /// After a room write is durable: wake the local users it concerns and the senders of the
    /// destinations it was queued for.
    pub fn after_room_write(
        &self,
        wake: &[OwnedUserId],
        last: u64,
        dests: &[ruma::OwnedServerName],
    ) {
        self.notifier.wake(wake.iter().map(|u| u.as_ref()), last);
        if let Some(fed) = &self.federation {
            for d in dests {
                fed.sender.wake(d);
            }
        }
    }
}

/// A room this server has not known before: its short id both ways and its metadata.
pub fn room_rows(batch: &mut Batch, short_room: u64, meta: &RoomMeta) -> Result<(), StoreError> {
    schema::ROOMID__SHORT.put(batch, meta.room_id.as_str(), &short_room)?;
    schema::SHORT__ROOMID.put(batch, short_room, meta.room_id.as_str())?;
    schema::ROOM__META.put(batch, short_room, meta)
}

/// A stored event: its short id both ways and its JSON.
pub fn event_rows(
    batch: &mut Batch,
    short: u64,
    event_id: &ruma::EventId,
    stored: &Value,
) -> Result<(), StoreError> {
    schema::EVENTID__SHORT.put(batch, event_id.as_str(), &short)?;
    schema::SHORT__EVENTID.put(batch, short, event_id.as_str())?;
    schema::EVENT__PDU.put(batch, short, stored)
}

/// An event's place in the room timeline (both directions).
pub fn timeline_rows(
    batch: &mut Batch,
    short_room: u64,
    count: u64,
    short: u64,
) -> Result<(), StoreError> {
    schema::ROOM_COUNT__EVENT.put(batch, (short_room, count), &short)?;
    schema::COUNT__EVENT.put(batch, count, &short)?;
    schema::EVENT__ROOM_COUNT.put(batch, short, &(short_room, count))
}

/// The state snapshots before an event and of the room right after it was persisted.
pub fn event_state_row(
    batch: &mut Batch,
    short: u64,
    before: Option<(u64, u32)>,
    after: Option<(u64, u32)>,
) -> Result<(), StoreError> {
    let hashes = (before.map_or(0, |s| s.0), after.map_or(0, |s| s.0));
    schema::EVENT__STATE_BEFORE_AFTER.put(batch, short, &hashes)
}

/// The room's current state snapshot (hash and delta depth).
pub fn room_state_row(
    batch: &mut Batch,
    short_room: u64,
    snapshot: (u64, u32),
) -> Result<(), StoreError> {
    schema::ROOM__STATEHASH_DEPTH.put(batch, short_room, &snapshot)
}

/// The forward extremities `gone` are replaced by `tip`.
pub fn tip_rows(
    batch: &mut Batch,
    short_room: u64,
    gone: &[u64],
    tip: u64,
) -> Result<(), StoreError> {
    for t in gone {
        schema::ROOM_EVENT__EXTREMITY.delete(batch, (short_room, *t));
    }
    schema::ROOM_EVENT__EXTREMITY.put(batch, (short_room, tip), &())
}

/// A redacted event's stored form (see [`redacted_form`]) in place of the original.
pub fn redacted_row(batch: &mut Batch, target: u64, redacted: &Value) -> Result<(), StoreError> {
    schema::EVENT__PDU.put(batch, target, redacted)
}

/// The stripped state another server gave with `event_id` (an invite, or the answer to a
/// knock), by which `user` recognises a room this server is not in
/// ([`super::rooms::Rooms::stored_stripped_state`] reads it).
pub fn stripped_state_row(
    batch: &mut Batch,
    user: &UserId,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
    events: &[Value],
) -> Result<(), StoreError> {
    schema::USER_ROOM__STRIPPED_STATE.put(
        batch,
        (user.as_str(), room_id.as_str()),
        &json!({ "event_id": event_id, "events": events }),
    )
}

/// The events backfill placed in a room's history, at stream position `count`: they have no
/// timeline position, and the consumers that follow the write path (the search indexer) read
/// them here after the timeline.
pub fn backfilled_row(batch: &mut Batch, count: u64, events: Vec<u64>) -> Result<(), StoreError> {
    schema::COUNT__BACKFILLED_EVENTS.put(batch, count, &events)
}

/// The short id of an event `sender`'s redaction may actually redact: one in the same room
/// that the sender sent, or that another server's user sent with the sender on the same server
/// (that server vouches for it), or any when the sender has the redact power level.
pub fn redaction_target(
    svc: &Services,
    short_room: u64,
    rules: &RoomVersionRules,
    sender: &UserId,
    target: &ruma::EventId,
    state: impl Fn(&str, &str) -> Result<Option<Pdu>, RoomsError>,
) -> Result<Option<u64>, RoomsError> {
    let Some(short) = svc.rooms.short_event(target)? else {
        return Ok(None);
    };
    if svc.rooms.event_position(short)?.map(|p| p.0) != Some(short_room) {
        return Ok(None);
    }
    let Some(orig) = svc.rooms.pdu_by_short(short)? else {
        return Ok(None);
    };
    let remote_same_server = orig.sender.server_name() == sender.server_name()
        && sender.server_name() != svc.server_name();
    if orig.sender == sender || remote_same_server {
        return Ok(Some(short));
    }
    let pl = state("m.room.power_levels", "")?
        .map(|p| p.content_value())
        .unwrap_or(Value::Null);
    let level = |v: Option<&Value>, d: i64| v.and_then(Value::as_i64).unwrap_or(d);
    let redact_level = level(pl.get("redact"), 50);
    let sender_level = if is_creator(rules, sender, &state)? {
        i64::MAX
    } else {
        level(
            pl.get("users").and_then(|u| u.get(sender.as_str())),
            level(pl.get("users_default"), 0),
        )
    };
    Ok((sender_level >= redact_level).then_some(short))
}

/// v12 creators (the create event's sender and `additional_creators`) outrank everyone.
fn is_creator(
    rules: &RoomVersionRules,
    user: &UserId,
    state: impl Fn(&str, &str) -> Result<Option<Pdu>, RoomsError>,
) -> Result<bool, RoomsError> {
    if !rules.authorization.explicitly_privilege_room_creators {
        return Ok(false);
    }
    let Some(create) = state("m.room.create", "")? else {
        return Ok(false);
    };
    let extra = create.content_value();
    let extra = extra.get("additional_creators").and_then(Value::as_array);
    Ok(create.sender == user
        || extra.is_some_and(|a| a.iter().any(|u| u.as_str() == Some(user.as_str()))))
}

/// The membership records of a member event that became current state.
pub fn membership_rows(
    batch: &mut Batch,
    short_room: u64,
    room_id: &ruma::RoomId,
    pdu: &Pdu,
    count: u64,
) -> Result<(), StoreError> {
    let (Some(target), Some(membership)) = (&pdu.state_key, pdu.membership()) else {
        return Ok(());
    };
    let Ok(user) = OwnedUserId::try_from(target.as_str()) else {
        return Ok(());
    };
    let m = Membership {
        membership: membership.clone(),
        count,
        event_id: pdu.event_id.clone(),
        sender: pdu.sender.clone(),
        forgotten: false,
    };
    schema::USER_ROOM__MEMBERSHIP.put(batch, (user.as_str(), room_id.as_str()), &m)?;
    schema::ROOM_USER__MEMBERSHIP.put(batch, (short_room, user.as_str()), membership.as_str())?;
    schema::ROOM_COUNT_USER__MEMBERSHIP.put(
        batch,
        (short_room, count, user.as_str()),
        membership.as_str(),
    )
}

/// The relation index entry of an event that relates to another, under the room it was sent
/// in: a relation names its parent by id only, and an event in another room that names a
/// parent here must never be counted as relating to it.
pub fn relation_row(
    batch: &mut Batch,
    short_room: u64,
    stored: &Value,
    count: u64,
    short: u64,
) -> Result<(), StoreError> {
    match relation_parent(stored) {
        Some(parent) => {
            schema::ROOM_PARENT_COUNT__RELATION.put(batch, (short_room, &parent, count), &short)
        }
        None => Ok(()),
    }
}

/// The event this one relates to through `m.relates_to` (replies are not relations).
pub fn relation_parent(stored: &Value) -> Option<String> {
    let rel = stored.get("content")?.get("m.relates_to")?;
    rel.get("rel_type")?.as_str()?;
    rel.get("event_id")?.as_str().map(str::to_owned)
}

/// The stored form of `target` after redaction by `because` (kept in `unsigned`).
pub fn redacted_form(
    svc: &Services,
    target: u64,
    because: &Value,
    room_id: &ruma::RoomId,
    rules: &RoomVersionRules,
) -> Option<Value> {
    let orig = svc.rooms.pdu_json(target).ok()??;
    let map = orig.as_object()?.clone();
    let obj = try_from_json_map(map).ok()?;
    let redacted = redact(obj, &rules.redaction, None).ok()?;
    let mut v = serde_json::to_value(redacted).ok()?;
    let because = plexus_core::client_event::to_client_event(
        because,
        room_id.as_str(),
        now_ms(),
        true,
        rules.redaction.content_field_redacts,
    );
    v["unsigned"] = json!({ "redacted_because": because });
    Some(v)
}

/// The member event content for a local user joining, knocking, changing profile or being
/// invited: with their displayname and avatar (in an invite, so that clients show who was
/// invited before they join, as Synapse does).
pub fn member_content(
    svc: &Services,
    user: &UserId,
    membership: &str,
) -> Result<Value, AccountsError> {
    let mut c = json!({ "membership": membership });
    if matches!(membership, "join" | "knock" | "invite") {
        if let Some(rec) = svc.accounts.user(user)? {
            add_profile(&mut c, &rec);
        }
    }
    Ok(c)
}

/// A local user's displayname and avatar in member event content that has none of its own.
pub fn add_profile(content: &mut Value, user: &super::accounts::UserRecord) {
    for (field, value) in [
        ("displayname", &user.displayname),
        ("avatar_url", &user.avatar_url),
    ] {
        if let (Some(v), None) = (value, content.get(field)) {
            content[field] = json!(v);
        }
    }
}

/// Append one event to an existing room and commit it.
pub async fn send_one(
    svc: &Services,
    room_id: &ruma::RoomId,
    sender: &UserId,
    ev: NewEvent,
    txn: Option<(String, String)>,
) -> Result<OwnedEventId, WriteError> {
    let mut w = RoomWriter::open(svc, room_id).await?;
    let id = w.append(sender, ev, txn)?;
    w.commit().await?;
    Ok(id)
}
