//! Reading rooms: ids, PDUs, timeline positions, state snapshots, memberships, visibility.
//! [`Rooms`] owns the room, event, timeline, state and membership tables; the room writer
//! (`writer.rs`) adds its rows to a commit batch. The client form of events, power levels and
//! the state a user may read are still [`Services`] methods over it.

use std::sync::Arc;

use plexus_core::{CoreError, Pdu};
use plexus_store::{schema, Batch, First, StateMap, Store, StoreError};
use ruma::{
    events::{
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
        StateEventType,
    },
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Services;

/// State types that let someone outside a room recognise it (the spec's recommended set).
pub const STRIPPED_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomMeta {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
}

/// A user's latest membership in a room, as recorded when its member event was persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    pub membership: String,
    /// Stream position of the member event.
    pub count: u64,
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    /// Set by `/forget`: the room no longer shows up for this user.
    #[serde(default)]
    pub forgotten: bool,
}

/// See [`Rooms::room_audience`].
#[derive(Debug, Default)]
pub struct RoomAudience {
    /// Local users joined or invited: those a write wakes.
    pub local: Vec<OwnedUserId>,
    /// Local users joined: those whose push rules judge a new event.
    pub local_joined: Vec<OwnedUserId>,
    /// Joined members on every server (the push rules' `room_member_count`).
    pub joined: usize,
    pub servers: Vec<OwnedServerName>,
}

/// A known room: short id and metadata.
#[derive(Clone, Debug)]
pub struct RoomRef {
    pub short: u64,
    pub meta: RoomMeta,
}

/// Stream positions and the short ids of the events placed at each.
pub type Placed = Vec<(u64, Vec<u64>)>;

/// Why a room read or write failed. Besides the store's errors, the refusals a client sees
/// (mapped in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum RoomsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 403: to someone asking as a member, an unknown room looks like one they are not in.
    #[error("You are not in this room")]
    NotInRoom,
    /// 404: the room is not known here.
    #[error("Unknown room")]
    UnknownRoom,
    /// Stored rows that do not fit together (500).
    #[error("{0}")]
    Corrupt(String),
    /// The room version's rules (an unsupported version).
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The rooms tables: rooms, events, timelines, state snapshots, memberships, relations.
pub struct Rooms {
    pub(super) store: Arc<Store>,
    /// To tell local members from remote ones.
    server_name: OwnedServerName,
}

impl Rooms {
    pub fn new(store: Arc<Store>, server_name: OwnedServerName) -> Self {
        Self { store, server_name }
    }

    /// Events placed after stream position `from` and up to `to`, at most `max` positions of
    /// each source: the room timelines, then what backfill fetched (which has no timeline
    /// position). For consumers that follow the write path, such as the search indexer.
    pub fn placed_since(&self, from: u64, to: u64, max: usize) -> Result<[Placed; 2], RoomsError> {
        let kv = &self.store.kv;
        let timeline = schema::COUNT__EVENT
            .stream::<u64>(kv, from, to)
            .take(max)
            .map(|item| item.map(|(count, short)| (count, vec![short])))
            .collect::<Result<_, _>>()?;
        let backfill = schema::COUNT__BACKFILLED_EVENTS
            .stream::<Vec<u64>>(kv, from, to)
            .take(max)
            .collect::<Result<_, _>>()?;
        Ok([timeline, backfill])
    }

    /// Timeline events after stream position `from` and up to `to`, `(count, short event
    /// id)` in stream order, read as the caller goes (a consumer that stops early reads no
    /// further).
    pub fn events_since(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, u64), RoomsError>> + '_ {
        schema::COUNT__EVENT
            .stream::<u64>(&self.store.kv, from, to)
            .map(|r| r.map_err(RoomsError::from))
    }

    /// Every room known here, `(room id as stored, short id)` in room id order, read as the
    /// caller goes.
    pub fn all_rooms(&self) -> impl Iterator<Item = Result<(String, u64), RoomsError>> + '_ {
        schema::ROOMID__SHORT
            .iter::<u64>(&self.store.kv)
            .map(|r| r.map_err(RoomsError::from))
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRef>, RoomsError> {
        let kv = &self.store.kv;
        let Some(short) = schema::ROOMID__SHORT.get(kv, room_id.as_str())? else {
            return Ok(None);
        };
        let meta = schema::ROOM__META
            .get(kv, short)?
            .ok_or_else(|| RoomsError::Corrupt(format!("room {room_id} has no metadata")))?;
        Ok(Some(RoomRef { short, meta }))
    }

    /// For reads by members: an unknown room looks exactly like a room the user is not in.
    pub fn room_or_forbidden(&self, room_id: &RoomId) -> Result<RoomRef, RoomsError> {
        self.room(room_id)?.ok_or(RoomsError::NotInRoom)
    }

    pub fn room_or_404(&self, room_id: &RoomId) -> Result<RoomRef, RoomsError> {
        self.room(room_id)?.ok_or(RoomsError::UnknownRoom)
    }

    pub fn short_event(&self, event_id: &EventId) -> Result<Option<u64>, RoomsError> {
        Ok(schema::EVENTID__SHORT.get(&self.store.kv, event_id.as_str())?)
    }

    pub fn pdu_json(&self, short: u64) -> Result<Option<Value>, RoomsError> {
        Ok(schema::EVENT__PDU.get(&self.store.kv, short)?)
    }

    pub fn pdu_by_short(&self, short: u64) -> Result<Option<Pdu>, RoomsError> {
        Ok(schema::EVENT__PDU.get(&self.store.kv, short)?)
    }

    pub fn pdu(&self, event_id: &EventId) -> Result<Option<Pdu>, RoomsError> {
        match self.short_event(event_id)? {
            Some(s) => self.pdu_by_short(s),
            None => Ok(None),
        }
    }

    /// `(short room id, stream position)` of a persisted event.
    pub fn event_position(&self, short: u64) -> Result<Option<(u64, u64)>, RoomsError> {
        Ok(schema::EVENT__ROOM_COUNT.get(&self.store.kv, short)?)
    }

    /// The event a client's transaction already created, if it did (the scope is the device,
    /// or the appservice acting without one).
    pub fn event_of_txn(
        &self,
        user: &UserId,
        scope: &str,
        txn: &str,
    ) -> Result<Option<String>, RoomsError> {
        Ok(schema::USER_DEVICE_TXN__EVENTID.get(&self.store.kv, (user.as_str(), scope, txn))?)
    }

    /// Claim `/sendToDevice` transaction `txn` of `(user, scope)` in the caller's batch unless
    /// it was claimed before; answers whether it is new. To-device ids have their own
    /// namespace in the transaction table, apart from room sends'. Call it inside the commit,
    /// under the store's write lock, so that two tries of one transaction cannot both claim it.
    pub fn stage_to_device_txn(
        &self,
        b: &mut Batch,
        user: &UserId,
        scope: &str,
        txn: &str,
    ) -> Result<bool, StoreError> {
        let txn_id = format!("m.to_device\0{txn}");
        let key = (user.as_str(), scope, txn_id.as_str());
        if schema::USER_DEVICE_TXN__EVENTID.contains(&self.store.kv, key)? {
            return Ok(false);
        }
        schema::USER_DEVICE_TXN__EVENTID.put(b, key, "")?;
        Ok(true)
    }

    pub fn extremities(&self, short_room: u64) -> Result<Vec<u64>, RoomsError> {
        schema::ROOM_EVENT__EXTREMITY
            .prefix::<First<1>, ()>(&self.store.kv, (short_room,))
            .map(|r| Ok(r?.0 .1))
            .collect()
    }

    /// Timeline entries `(count, short event id)` with `lo < count <= hi`, oldest first.
    pub fn timeline(
        &self,
        short_room: u64,
        lo: u64,
        hi: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(u64, u64), RoomsError>> + '_ {
        schema::ROOM_COUNT__EVENT
            .range(
                &self.store.kv,
                (short_room, lo.saturating_add(1)),
                (short_room, hi.saturating_add(1)),
            )
            .map(|r| {
                let ((_, count), short) = r?;
                Ok((count, short))
            })
    }

    /// Current state of a room: snapshot hash and its delta depth.
    pub fn current_state(&self, short_room: u64) -> Result<Option<(u64, u32)>, RoomsError> {
        Ok(schema::ROOM__STATEHASH_DEPTH.get(&self.store.kv, short_room)?)
    }

    /// State hashes before and after an event (0 = empty state).
    pub fn event_state(&self, short_event: u64) -> Result<Option<(u64, u64)>, RoomsError> {
        Ok(schema::EVENT__STATE_BEFORE_AFTER.get(&self.store.kv, short_event)?)
    }

    pub fn short_state_key(&self, kind: &str, state_key: &str) -> Result<Option<u64>, RoomsError> {
        Ok(schema::TYPE_STATEKEY__SHORT.get(&self.store.kv, (kind, state_key))?)
    }

    /// Get or allocate the short id of `(type, state_key)`; races resolve to one winner.
    pub fn short_state_key_or_create(
        &self,
        kind: &str,
        state_key: &str,
    ) -> Result<u64, RoomsError> {
        if let Some(s) = self.short_state_key(kind, state_key)? {
            return Ok(s);
        }
        let fresh = self.store.kv.unique_id()?;
        let won = schema::TYPE_STATEKEY__SHORT.insert_if_absent(
            &self.store.kv,
            (kind, state_key),
            &fresh,
        )?;
        if won == fresh {
            let mut b = plexus_store::Batch::default();
            schema::SHORT__TYPE_STATEKEY.put(
                &mut b,
                fresh,
                &(kind.to_owned(), state_key.to_owned()),
            )?;
            self.store.commit(b)?;
        }
        Ok(won)
    }

    /// The short ids of every state key of type `kind` known here (in any room), in state key
    /// order, read as the caller goes.
    pub fn state_keys_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = Result<u64, RoomsError>> + 'a {
        schema::TYPE_STATEKEY__SHORT
            .prefix::<First<1>, u64>(&self.store.kv, (kind,))
            .map(|r| r.map(|(_, short)| short).map_err(RoomsError::from))
    }

    pub fn state_key_of(&self, short: u64) -> Result<(String, String), RoomsError> {
        schema::SHORT__TYPE_STATEKEY
            .get(&self.store.kv, short)?
            .ok_or_else(|| RoomsError::Corrupt(format!("unknown state key {short}")))
    }

    pub fn state_map(&self, hash: u64) -> Result<Arc<StateMap>, RoomsError> {
        if hash == 0 {
            return Ok(Arc::default());
        }
        Ok(self.store.state.full(hash)?)
    }

    /// Short id of the event at `(type, state_key)` in a snapshot.
    pub fn state_get(
        &self,
        hash: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<u64>, RoomsError> {
        if hash == 0 {
            return Ok(None);
        }
        match self.short_state_key(kind, state_key)? {
            Some(sk) => Ok(self.store.state.get(hash, sk)?),
            None => Ok(None),
        }
    }

    pub fn state_pdu(
        &self,
        hash: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Pdu>, RoomsError> {
        match self.state_get(hash, kind, state_key)? {
            Some(e) => self.pdu_by_short(e),
            None => Ok(None),
        }
    }

    pub fn state_json(
        &self,
        hash: u64,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Value>, RoomsError> {
        match self.state_get(hash, kind, state_key)? {
            Some(e) => self.pdu_json(e),
            None => Ok(None),
        }
    }

    /// Every state event of a snapshot, in stored form.
    pub fn state_events(&self, hash: u64) -> Result<Vec<Value>, RoomsError> {
        self.state_map(hash)?
            .values()
            .filter_map(|e| self.pdu_json(*e).transpose())
            .collect()
    }

    /// Current state of a room as a closure for the auth rules.
    pub fn fetch_state_fn(&self, hash: u64) -> impl Fn(&StateEventType, &str) -> Option<Pdu> + '_ {
        move |t, k| self.state_pdu(hash, &t.to_string(), k).ok().flatten()
    }

    /// The state after the last event at or before `count` (the room as of a sync token).
    pub fn state_at_count(&self, short_room: u64, count: u64) -> Result<u64, RoomsError> {
        match self.timeline(short_room, 0, count).next_back() {
            Some(r) => {
                let (_, ev) = r?;
                Ok(self.event_state(ev)?.map(|(_, after)| after).unwrap_or(0))
            }
            None => Ok(0),
        }
    }

    /// The room's history visibility in a state snapshot (`shared` when unset).
    pub fn history_visibility(&self, hash: u64) -> Result<String, RoomsError> {
        Ok(self
            .state_pdu(hash, "m.room.history_visibility", "")?
            .and_then(|p| {
                p.content_value()
                    .get("history_visibility")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".into()))
    }

    /// The events that let someone outside the room recognise it (for invites and knocks):
    /// [`STRIPPED_STATE`] from current state, plus `member`'s own member event.
    pub fn stripped_state_events(
        &self,
        short_room: u64,
        member: Option<&UserId>,
    ) -> Result<Vec<Value>, RoomsError> {
        let Some((hash, _)) = self.current_state(short_room)? else {
            return Ok(vec![]);
        };
        let mut events = vec![];
        for kind in STRIPPED_STATE {
            events.extend(self.state_json(hash, kind, "")?);
        }
        if let Some(m) = member {
            events.extend(self.state_json(hash, "m.room.member", m.as_str())?);
        }
        Ok(events)
    }

    /// Stripped state another server gave us with `event_id` (an invite or a knock answer).
    pub fn stored_stripped_state(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Option<Vec<Value>>, RoomsError> {
        let Some(rec) = schema::USER_ROOM__STRIPPED_STATE
            .get::<Value>(&self.store.kv, (user.as_str(), room_id.as_str()))?
        else {
            return Ok(None);
        };
        if rec["event_id"].as_str() != Some(event_id.as_str()) {
            return Ok(None);
        }
        Ok(rec["events"].as_array().cloned())
    }

    pub fn membership(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Option<Membership>, RoomsError> {
        Ok(schema::USER_ROOM__MEMBERSHIP.get(&self.store.kv, (user.as_str(), room_id.as_str()))?)
    }

    /// Replace the user's membership record of a room (to mark it forgotten). Not yet
    /// durable: the caller flushes.
    pub fn save_membership(
        &self,
        user: &UserId,
        room_id: &RoomId,
        m: &Membership,
    ) -> Result<(), RoomsError> {
        let mut b = plexus_store::Batch::default();
        schema::USER_ROOM__MEMBERSHIP.put(&mut b, (user.as_str(), room_id.as_str()), m)?;
        Ok(self.store.commit(b)?)
    }

    pub fn is_joined(&self, user: &UserId, room_id: &RoomId) -> Result<bool, RoomsError> {
        Ok(self
            .membership(user, room_id)?
            .is_some_and(|m| m.membership == "join"))
    }

    /// Every room the user has a membership in.
    pub fn user_rooms(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, Membership)>, RoomsError> {
        schema::USER_ROOM__MEMBERSHIP
            .prefix::<First<1>, Membership>(&self.store.kv, (user.as_str(),))
            .map(|r| {
                let ((_, room), m) = r?;
                let room =
                    OwnedRoomId::try_from(room).map_err(|e| RoomsError::Corrupt(e.to_string()))?;
                Ok((room, m))
            })
            .collect()
    }

    /// `(user, membership)` for everyone with a membership in the room.
    pub fn room_members(&self, short_room: u64) -> Result<Vec<(OwnedUserId, String)>, RoomsError> {
        schema::ROOM_USER__MEMBERSHIP
            .prefix::<First<1>, String>(&self.store.kv, (short_room,))
            .map(|r| {
                let ((_, user), m) = r?;
                let user =
                    OwnedUserId::try_from(user).map_err(|e| RoomsError::Corrupt(e.to_string()))?;
                Ok((user, m))
            })
            .collect()
    }

    /// `user`'s membership in a room by its short id, as the member table keeps it.
    pub fn membership_in(
        &self,
        short_room: u64,
        user: &UserId,
    ) -> Result<Option<String>, RoomsError> {
        Ok(schema::ROOM_USER__MEMBERSHIP.get(&self.store.kv, (short_room, user.as_str()))?)
    }

    /// `(user, membership)` of member events in the room after `since` and up to `upper`, in
    /// stream order (a user id that does not parse is skipped).
    pub fn member_changes(
        &self,
        short_room: u64,
        since: u64,
        upper: u64,
    ) -> Result<Vec<(OwnedUserId, String)>, RoomsError> {
        let mut out = vec![];
        for item in schema::ROOM_COUNT_USER__MEMBERSHIP.range::<String>(
            &self.store.kv,
            (short_room, since + 1, ""),
            (short_room, upper.saturating_add(1), ""),
        ) {
            let ((_, _, who), membership) = item?;
            if let Ok(who) = OwnedUserId::try_from(who) {
                out.push((who, membership));
            }
        }
        Ok(out)
    }

    /// Who a write to the room concerns, from one scan of its members: local users to wake
    /// (joined or invited) and the other servers with a joined member.
    pub fn room_audience(&self, short_room: u64) -> Result<RoomAudience, RoomsError> {
        let mut out = RoomAudience::default();
        let mut servers = std::collections::BTreeSet::new();
        for (user, m) in self.room_members(short_room)? {
            let joined = m == "join";
            out.joined += usize::from(joined);
            if user.server_name() == &*self.server_name {
                if joined {
                    out.local_joined.push(user.clone());
                }
                if joined || m == "invite" {
                    out.local.push(user);
                }
            } else if joined {
                servers.insert(user.server_name().to_owned());
            }
        }
        out.servers = servers.into_iter().collect();
        Ok(out)
    }

    /// Whether a local user is joined to the room, so that this server can write to it.
    pub fn is_resident(&self, room_id: &RoomId) -> Result<bool, RoomsError> {
        Ok(self.resident_room(room_id)?.is_some())
    }

    /// The room, if a local user is joined to it (its current state here is then live).
    pub fn resident_room(&self, room_id: &RoomId) -> Result<Option<RoomRef>, RoomsError> {
        match self.room(room_id)? {
            Some(r) if !self.room_audience(r.short)?.local_joined.is_empty() => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    /// Servers other than this one with a joined member in the room.
    pub fn room_servers(&self, short_room: u64) -> Result<Vec<OwnedServerName>, RoomsError> {
        Ok(self.room_audience(short_room)?.servers)
    }

    /// Whether the user forgot the room: then nothing of it is theirs to read any more.
    pub fn forgot(&self, user: &UserId, room_id: &RoomId) -> Result<bool, RoomsError> {
        Ok(self.membership(user, room_id)?.is_some_and(|m| m.forgotten))
    }

    /// May `user` see this event? History visibility and the user's membership at the event,
    /// per the spec's rules; a user always sees their own membership events.
    pub fn can_see(
        &self,
        user: &UserId,
        room_id: &RoomId,
        short_event: u64,
        pdu: &Pdu,
    ) -> Result<bool, RoomsError> {
        if pdu.state_key.as_deref() == Some(user.as_str()) && pdu.membership().is_some() {
            return Ok(true);
        }
        let before = self.event_state(short_event)?.map(|(b, _)| b).unwrap_or(0);
        let visibility = self.history_visibility(before)?;
        if visibility == "world_readable" {
            return Ok(true);
        }
        let at_event = self
            .state_pdu(before, "m.room.member", user.as_str())?
            .and_then(|p| p.membership());
        Ok(match (visibility.as_str(), at_event.as_deref()) {
            (_, Some("join")) => true,
            ("invited", Some("invite")) => true,
            ("shared", _) => self.is_joined(user, room_id)?,
            _ => false,
        })
    }
}

impl Services {
    /// The client form of a stored event in a timeline-like list for `viewer`: adds
    /// `unsigned.transaction_id` when the viewer's own device sent it, `unsigned.membership`
    /// (MSC4115), and the bundled aggregations (thread summary, latest edit). State listings
    /// use [`Self::client_event_inner`].
    pub fn client_event(
        &self,
        short: u64,
        stored: &Value,
        room_id: &RoomId,
        viewer: Option<&super::accounts::Session>,
        include_room_id: bool,
    ) -> Result<Value, RoomsError> {
        let mut ev = self.client_event_inner(short, stored, room_id, viewer, include_room_id)?;
        if let Some(s) = viewer {
            if let Some(m) = self.membership_at(&s.user_id, short, stored)? {
                ev["unsigned"]["membership"] = Value::String(m);
            }
        }
        // State events are neither edited nor thread roots: skip the lookups (full-state syncs
        // render thousands of them).
        if let Some(s) = viewer.filter(|_| stored.get("state_key").is_none()) {
            if let Some(b) =
                self.bundled_relations(short, stored, room_id, s, include_room_id, true)?
            {
                ev["unsigned"]["m.relations"] = b;
            }
        }
        Ok(ev)
    }

    /// Whether the room's version keeps a redaction's target in `content.redacts` (v11+)
    /// rather than at the top level.
    pub fn redacts_in_content(&self, room_id: &RoomId) -> Result<bool, RoomsError> {
        Ok(match self.rooms.room(room_id)? {
            Some(room) => {
                plexus_core::room_version::rules(&room.meta.version)?
                    .redaction
                    .content_field_redacts
            }
            None => false,
        })
    }

    /// `user`'s membership at an event, counting the event's own change (MSC4115): `leave`
    /// when they had none. `None` for an event stored without state (an outlier).
    pub fn membership_at(
        &self,
        user: &UserId,
        short: u64,
        stored: &Value,
    ) -> Result<Option<String>, RoomsError> {
        let own_change = stored.get("type").and_then(Value::as_str) == Some("m.room.member")
            && stored.get("state_key").and_then(Value::as_str) == Some(user.as_str());
        if own_change {
            return Ok(stored["content"]["membership"].as_str().map(str::to_owned));
        }
        let Some((before, _)) = self.rooms.event_state(short)? else {
            return Ok(None);
        };
        /// Only the membership is read: no `Value` tree for the rest of the event.
        #[derive(serde::Deserialize)]
        struct Member {
            #[serde(default)]
            content: MemberContent,
        }
        #[derive(serde::Deserialize, Default)]
        struct MemberContent {
            #[serde(default)]
            membership: Option<Value>,
        }
        let membership = match self
            .rooms
            .state_get(before, "m.room.member", user.as_str())?
        {
            Some(e) => match schema::EVENT__PDU.get::<Vec<u8>>(&self.store.kv, e)? {
                Some(raw) => serde_json::from_slice::<Member>(&raw)
                    .map_err(|e| RoomsError::Corrupt(format!("corrupt event {e}")))?
                    .content
                    .membership
                    .and_then(|m| m.as_str().map(str::to_owned)),
                None => None,
            },
            None => None,
        };
        Ok(Some(membership.unwrap_or_else(|| "leave".to_owned())))
    }

    /// The client form for state listings: no bundled aggregations, no `unsigned.membership`.
    pub fn client_event_inner(
        &self,
        short: u64,
        stored: &Value,
        room_id: &RoomId,
        viewer: Option<&super::accounts::Session>,
        include_room_id: bool,
    ) -> Result<Value, RoomsError> {
        // Only a redaction needs its room version: where its `redacts` counts.
        let redacts_in_content = match stored.get("type").and_then(Value::as_str) {
            Some("m.room.redaction") => self.redacts_in_content(room_id)?,
            _ => false,
        };
        let mut ev = plexus_core::client_event::to_client_event(
            stored,
            room_id.as_str(),
            super::now_ms(),
            include_room_id,
            redacts_in_content,
        );
        if let Some(s) = viewer {
            if stored.get("sender").and_then(Value::as_str) == Some(s.user_id.as_str()) {
                if let Some((device, txn)) =
                    schema::EVENT__DEVICE_TXN.get::<(String, String)>(&self.store.kv, short)?
                {
                    if device == s.txn_scope() {
                        ev["unsigned"]["transaction_id"] = Value::String(txn);
                    }
                }
            }
        }
        Ok(ev)
    }

    /// The state a user may read: the current state while joined (or if the room is world
    /// readable), the state as they left it if they left (or were kicked or banned) after being
    /// joined. `M_FORBIDDEN` if they never were joined, or forgot the room.
    pub fn visible_state_hash(&self, user: &UserId, room: &RoomRef) -> Result<u64, RoomsError> {
        let current = self
            .rooms
            .current_state(room.short)?
            .map(|s| s.0)
            .unwrap_or(0);
        match self.rooms.membership(user, &room.meta.room_id)? {
            Some(m) if m.membership == "join" => return Ok(current),
            Some(m) if !m.forgotten && (m.membership == "leave" || m.membership == "ban") => {
                if let Some(short) = self.rooms.short_event(&m.event_id)? {
                    if let Some((before, after)) = self.rooms.event_state(short)? {
                        // Leaving from an invite or a knock, or a ban of someone who never
                        // came in, opens nothing: they never saw the room's state.
                        let was = self
                            .rooms
                            .state_pdu(before, "m.room.member", user.as_str())?
                            .and_then(|p| p.membership());
                        if was.as_deref() == Some("join") {
                            return Ok(after);
                        }
                    }
                }
            }
            _ => {}
        }
        if self.rooms.history_visibility(current)? == "world_readable" {
            return Ok(current);
        }
        Err(RoomsError::NotInRoom)
    }
}

impl Services {
    /// The room's power levels at `hash` as the auth rules read them: the event's content, or
    /// the spec's defaults without one, with the room's creators (privileged in v12, 100 by
    /// default before that).
    pub fn power_levels(
        &self,
        hash: u64,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<RoomPowerLevels, RoomsError> {
        let content: Option<RoomPowerLevelsEventContent> = self
            .rooms
            .state_json(hash, "m.room.power_levels", "")?
            .and_then(|e| serde_json::from_value(e["content"].clone()).ok());
        let create = self
            .rooms
            .state_json(hash, "m.room.create", "")?
            .unwrap_or(Value::Null);
        let creator = if rules.authorization.use_room_create_sender {
            &create["sender"]
        } else {
            &create["content"]["creator"]
        };
        let additional = create["content"]["additional_creators"]
            .as_array()
            .filter(|_| rules.authorization.additional_room_creators)
            .into_iter()
            .flatten();
        let creators: Vec<OwnedUserId> = std::iter::once(creator)
            .chain(additional)
            .filter_map(Value::as_str)
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect();
        let source = match content {
            Some(c) => RoomPowerLevelsSource::Original(c),
            None => RoomPowerLevelsSource::None,
        };
        Ok(RoomPowerLevels::new(source, &rules.authorization, creators))
    }

    /// Whether `user` is joined and has the power to send state of type `kind` in the room's
    /// current state.
    pub fn may_send_state(
        &self,
        user: &UserId,
        room: &RoomRef,
        kind: &str,
    ) -> Result<bool, RoomsError> {
        if !self.rooms.is_joined(user, &room.meta.room_id)? {
            return Ok(false);
        }
        let hash = self
            .rooms
            .current_state(room.short)?
            .map(|h| h.0)
            .unwrap_or(0);
        let rules = plexus_core::room_version::rules(&room.meta.version)?;
        Ok(self
            .power_levels(hash, &rules)?
            .user_can_send_state(user, StateEventType::from(kind)))
    }
}
