//! Presence: what users set, when they were last active ([`Presence`], the one owner of
//! `USER__PRESENCE`), and who gets told (on `Services`: it reads the rooms users share).

use std::{collections::BTreeSet, sync::Arc};

use plexus_store::{schema, Store, StoreError};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_ms, rooms::RoomsError, Services};

/// Online users with no activity for this long are shown as unavailable (idle).
pub const IDLE_AFTER_MS: u64 = 5 * 60 * 1000;
/// Activity is recorded at most this often, so syncing does not write on every request.
const ACTIVITY_GRANULARITY_MS: u64 = 60 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    /// Stream position of the last change.
    pub count: u64,
}

impl PresenceRecord {
    /// The `m.presence` content as others see it now.
    pub fn content(&self) -> Value {
        let ago = now_ms().saturating_sub(self.last_active_ts);
        let presence = if self.presence == "online" && ago > IDLE_AFTER_MS {
            "unavailable"
        } else {
            self.presence.as_str()
        };
        let mut c = json!({
            "presence": presence,
            "last_active_ago": ago,
            "currently_active": presence == "online",
        });
        if let Some(m) = &self.status_msg {
            c["status_msg"] = json!(m);
        }
        c
    }
}

impl Services {
    /// Everyone who shares a joined room with `user`, and the user.
    pub fn presence_audience(&self, user: &UserId) -> Result<BTreeSet<OwnedUserId>, PresenceError> {
        let mut out = BTreeSet::from([user.to_owned()]);
        for (room_id, m) in self.rooms.user_rooms(user)? {
            if m.membership != "join" {
                continue;
            }
            if let Some(room) = self.rooms.room(&room_id)? {
                out.extend(
                    self.rooms
                        .room_members(room.short)?
                        .into_iter()
                        .filter(|(_, m)| m == "join")
                        .map(|(u, _)| u),
                );
            }
        }
        Ok(out)
    }

    /// Update presence (see [`Presence::update`]); when what others see changed, make it
    /// durable, then wake the audience's syncs and tell other servers.
    pub async fn update_presence(
        &self,
        user: &UserId,
        presence: &str,
        status_msg: Option<Option<String>>,
        active: bool,
    ) -> Result<(), PresenceError> {
        let Some(change) = self.presence.update(user, presence, status_msg, active)? else {
            return Ok(());
        };
        self.store.flush().await?;
        let audience = self.presence_audience(user)?;
        self.notifier
            .wake(audience.iter().map(|u| u.as_ref()), change.count);
        crate::service::federation::edu::send_presence(
            self,
            user,
            &audience,
            presence,
            change.status_msg.as_deref(),
            change.last_active_ago,
        );
        Ok(())
    }

    /// `m.presence` events of users the viewer shares rooms with, changed after `since`.
    pub fn presence_since(
        &self,
        viewer: &UserId,
        since: Option<u64>,
    ) -> Result<Vec<Value>, PresenceError> {
        self.presence
            .events_since(self.presence_audience(viewer)?, since)
    }
}

/// Why presence could not be read or written, or its audience found.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}

/// Presence as last set or seen: the one owner of `USER__PRESENCE`.
pub struct Presence {
    store: Arc<Store>,
}

/// A presence change as stored, for telling others.
pub struct PresenceChange {
    /// Stream position of the change.
    pub count: u64,
    pub status_msg: Option<String>,
    /// Time since the user was last active, as of the change (ms).
    pub last_active_ago: u64,
}

impl Presence {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    pub fn get(&self, user: &UserId) -> Result<Option<PresenceRecord>, PresenceError> {
        Ok(schema::USER__PRESENCE.get(&self.store.kv, user.as_str())?)
    }

    /// Set presence explicitly (`status_msg: None` keeps the old message, `Some(None)` clears
    /// it), or record activity. Writes only when what others see changes, and answers the change
    /// then. Not yet durable: the caller flushes.
    pub fn update(
        &self,
        user: &UserId,
        presence: &str,
        status_msg: Option<Option<String>>,
        active: bool,
    ) -> Result<Option<PresenceChange>, PresenceError> {
        let old = self.get(user)?;
        let now = now_ms();
        let msg = match status_msg {
            Some(m) => m,
            None => old.as_ref().and_then(|o| o.status_msg.clone()),
        };
        let last_active = if active || old.is_none() {
            now
        } else {
            old.as_ref().map_or(now, |o| o.last_active_ts)
        };
        let unchanged = old.as_ref().is_some_and(|o| {
            o.presence == presence
                && o.status_msg == msg
                && now.saturating_sub(o.last_active_ts) < ACTIVITY_GRANULARITY_MS
        });
        if unchanged {
            return Ok(None);
        }
        let (count, ()) = self.store.commit_with_count(|count, b| {
            let rec = PresenceRecord {
                presence: presence.to_owned(),
                status_msg: msg.clone(),
                last_active_ts: last_active,
                count,
            };
            schema::USER__PRESENCE.put(b, user.as_str(), &rec)
        })?;
        Ok(Some(PresenceChange {
            count,
            status_msg: msg,
            last_active_ago: now - last_active,
        }))
    }

    /// `m.presence` events of `users` changed after `since`.
    pub fn events_since(
        &self,
        users: impl IntoIterator<Item = OwnedUserId>,
        since: Option<u64>,
    ) -> Result<Vec<Value>, PresenceError> {
        let mut events = vec![];
        for user in users {
            let Some(rec) = self.get(&user)? else {
                continue;
            };
            if since.is_some_and(|c| rec.count <= c) {
                continue;
            }
            events.push(json!({ "type": "m.presence", "sender": user, "content": rec.content() }));
        }
        Ok(events)
    }
}
