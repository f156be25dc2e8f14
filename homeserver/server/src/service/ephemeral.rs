//! Typing notifications ([`Typing`], in memory, with timeouts) and read receipts
//! ([`Receipts`], stored), both ordered on the global stream so that sync sees them like any
//! other update. Setting either stays on `Services`: it wakes the room's members and tells
//! other servers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use plexus_store::{schema, Batch, First, Store, StoreError};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{now_ms, rooms::RoomsError, Services};

/// Longest a client may claim to be typing without renewing.
pub const MAX_TYPING_MS: u64 = 120_000;

/// Who is typing where, in memory only: a restart forgets it, as clients expect.
#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
}

#[derive(Default)]
struct RoomTyping {
    /// user → expiry (ms since epoch)
    users: HashMap<OwnedUserId, u64>,
    /// Stream position of the last change.
    changed: u64,
}

impl Typing {
    /// Record that `user` types in the room for `timeout_ms` (capped) from now, or stopped
    /// (`None`), as the change at stream position `count`.
    pub fn set(&self, room_id: &RoomId, user: &UserId, timeout_ms: Option<u64>, count: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.entry(room_id.to_owned()).or_default();
        match timeout_ms {
            Some(t) => {
                room.users
                    .insert(user.to_owned(), now_ms() + t.min(MAX_TYPING_MS));
            }
            None => {
                room.users.remove(user);
            }
        }
        room.changed = count;
    }

    /// Users typing in the room, if that changed after `since` (or always for an initial sync).
    pub fn since(&self, room_id: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.get(room_id)?;
        let now = now_ms();
        let users: Vec<OwnedUserId> = room
            .users
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(u, _)| u.clone())
            .collect();
        match since {
            Some(c) if room.changed <= c => None,
            None if users.is_empty() => None,
            _ => Some(users),
        }
    }

    /// Drop expired entries; answers the rooms that had any.
    pub fn expire(&self) -> Vec<OwnedRoomId> {
        let now = now_ms();
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .iter_mut()
            .filter_map(|(id, r)| {
                let before = r.users.len();
                r.users.retain(|_, e| *e > now);
                (r.users.len() != before).then(|| id.clone())
            })
            .collect()
    }

    /// Note a change to the room's typing users (an expiry) at stream position `count`.
    pub fn changed(&self, room_id: &RoomId, count: u64) {
        if let Some(r) = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(room_id)
        {
            r.changed = count;
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: String,
    pub ts: u64,
    pub count: u64,
}

/// Why receipts could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The content gathered for an event was not an object (each starts as one).
    #[error("receipt content")]
    Content,
}

/// Why typing or a receipt could not be set: the store, or reading the room's members and
/// servers.
#[derive(Debug, thiserror::Error)]
pub enum EphemeralError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}

/// Read receipts: the one owner of `ROOM_USER_TYPE_THREAD__RECEIPT`.
pub struct Receipts {
    store: Arc<Store>,
}

impl Receipts {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// A user's receipt as the change at stream position `count`, in a batch that also clears
    /// the unread notifications it covers.
    pub fn stage_receipt(
        b: &mut Batch,
        count: u64,
        short_room: u64,
        user: &UserId,
        kind: &str,
        event_id: &str,
        thread: &str,
    ) -> Result<(), StoreError> {
        let r = Receipt {
            event_id: event_id.to_owned(),
            ts: now_ms(),
            count,
        };
        schema::ROOM_USER_TYPE_THREAD__RECEIPT.put(b, (short_room, user.as_str(), kind, thread), &r)
    }

    /// The `m.receipt` content of receipts newer than `since`; private ones only of the users
    /// `sees_private_of` accepts.
    pub fn since(
        &self,
        short_room: u64,
        since: Option<u64>,
        sees_private_of: &dyn Fn(&str) -> bool,
    ) -> Result<Option<Value>, ReceiptsError> {
        let mut content: Map<String, Value> = Map::new();
        for item in schema::ROOM_USER_TYPE_THREAD__RECEIPT
            .prefix::<First<1>, Receipt>(&self.store.kv, (short_room,))
        {
            let ((_, user, kind, thread), r) = item?;
            if since.is_some_and(|c| r.count <= c) {
                continue;
            }
            if kind == "m.read.private" && !sees_private_of(&user) {
                continue;
            }
            let mut info = json!({ "ts": r.ts });
            if !thread.is_empty() {
                info["thread_id"] = json!(thread);
            }
            let by_event = content
                .entry(r.event_id.clone())
                .or_insert_with(|| json!({}));
            by_event
                .as_object_mut()
                .ok_or(ReceiptsError::Content)?
                .entry(kind)
                .or_insert_with(|| json!({}))[user.as_str()] = info;
        }
        Ok((!content.is_empty()).then_some(Value::Object(content)))
    }
}

impl Services {
    /// A new stream position for an update that has no batch of its own.
    fn bump(&self) -> Result<u64, StoreError> {
        Ok(self.store.commit_with_count(|_, _| Ok(()))?.0)
    }

    fn wake_room(&self, room_id: &RoomId, count: u64) -> Result<(), RoomsError> {
        let Some(room) = self.rooms.room(room_id)? else {
            return Ok(());
        };
        let members: Vec<OwnedUserId> = self
            .rooms
            .room_members(room.short)?
            .into_iter()
            .filter(|(_, m)| m == "join")
            .map(|(u, _)| u)
            .collect();
        self.notifier
            .wake(members.iter().map(|u| u.as_ref()), count);
        Ok(())
    }

    pub fn set_typing(
        &self,
        room_id: &RoomId,
        user: &UserId,
        timeout_ms: Option<u64>,
    ) -> Result<(), EphemeralError> {
        let count = self.bump()?;
        self.typing.set(room_id, user, timeout_ms, count);
        crate::service::federation::edu::send_typing(self, room_id, user, timeout_ms)?;
        Ok(self.wake_room(room_id, count)?)
    }

    /// Drop expired typing entries and tell the rooms' members; runs every second.
    pub fn spawn_typing_expiry(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { return };
                for room in app.typing.expire() {
                    if let Ok(count) = app.bump() {
                        app.typing.changed(&room, count);
                        let _ = app.wake_room(&room, count);
                    }
                }
            }
        });
    }

    /// Store a receipt; public receipts wake the room, private ones only their owner.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        short_room: u64,
        user: &UserId,
        kind: &str,
        event_id: &str,
        thread: &str,
    ) -> Result<(), EphemeralError> {
        // Where the receipt points in the timeline, for the unread notifications it clears.
        let read_upto = match ruma::EventId::parse(event_id) {
            Ok(id) if self.is_local(user) => self
                .rooms
                .short_event(&id)?
                .and_then(|short| self.rooms.event_position(short).ok().flatten())
                .filter(|(room, _)| *room == short_room)
                .map(|(_, count)| count),
            _ => None,
        };
        let (count, ()) = self.store.commit_with_count(|count, b| {
            Receipts::stage_receipt(b, count, short_room, user, kind, event_id, thread)?;
            if let Some(upto) = read_upto {
                crate::service::push::unread::clear_through(
                    self,
                    b,
                    user,
                    short_room,
                    upto,
                    crate::service::push::unread::ReadScope::of_receipt(thread),
                )?;
            }
            Ok(())
        })?;
        self.store.flush().await?;
        if kind == "m.read.private" {
            self.notifier.wake([user], count);
        } else {
            crate::service::federation::edu::send_receipt(
                self, room_id, short_room, user, event_id, thread,
            )?;
            self.wake_room(room_id, count)?;
        }
        Ok(())
    }
}
