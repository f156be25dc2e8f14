//! Device list changes: one stream row per user whose devices or cross-signing keys changed
//! (`USER__DEVICE_LIST_COUNT`, `COUNT__DEVICE_LIST_USER`), the `m.device_list_update` /
//! `m.signing_key_update` EDUs for local users' changes (written to the durable EDU outbox in
//! the same batch), and what a user's sync or `/keys/changes` reports as changed or left.

use std::collections::BTreeSet;

use plexus_store::{schema, Batch, StoreError};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::{E2ee, E2eeError};
use crate::service::{federation::sender::Sender, rooms::RoomsError, Services};

/// One change to a local user's devices or cross-signing keys.
pub enum Change {
    /// A device's keys or display name changed (or it appeared).
    Device {
        id: String,
        keys: Option<Value>,
        display_name: Option<String>,
    },
    Deleted {
        id: String,
    },
    /// The public cross-signing keys changed.
    CrossSigning {
        master: Option<Value>,
        self_signing: Option<Value>,
    },
}

impl Change {
    fn edu(&self, user: &UserId, stream_id: u64, prev: Option<u64>) -> Value {
        match self {
            Change::Device {
                id,
                keys,
                display_name,
            } => {
                let mut c = json!({
                    "user_id": user, "device_id": id, "stream_id": stream_id,
                    "prev_id": prev.into_iter().collect::<Vec<_>>(), "deleted": false,
                });
                if let Some(k) = keys {
                    c["keys"] = k.clone();
                }
                if let Some(n) = display_name {
                    c["device_display_name"] = json!(n);
                }
                json!({ "edu_type": "m.device_list_update", "content": c })
            }
            Change::Deleted { id } => json!({
                "edu_type": "m.device_list_update",
                "content": {
                    "user_id": user, "device_id": id, "stream_id": stream_id,
                    "prev_id": prev.into_iter().collect::<Vec<_>>(), "deleted": true,
                },
            }),
            Change::CrossSigning {
                master,
                self_signing,
            } => {
                let mut c = json!({ "user_id": user });
                if let Some(m) = master {
                    c["master_key"] = m.clone();
                }
                if let Some(s) = self_signing {
                    c["self_signing_key"] = s.clone();
                }
                json!({ "edu_type": "m.signing_key_update", "content": c })
            }
        }
    }
}

impl E2ee {
    /// Move `user`'s row in the change stream to `count`; answers the previous position.
    fn stream_row(
        &self,
        b: &mut Batch,
        user: &UserId,
        count: u64,
        prev: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let prev = match prev {
            Some(p) => Some(p),
            None => schema::USER__DEVICE_LIST_COUNT.get(&self.store.kv, user.as_str())?,
        };
        if let Some(p) = prev {
            schema::COUNT__DEVICE_LIST_USER.delete(b, p);
        }
        schema::COUNT__DEVICE_LIST_USER.put(b, count, user.as_str())?;
        schema::USER__DEVICE_LIST_COUNT.put(b, user.as_str(), &count)?;
        Ok(prev)
    }

    /// Commit `batch` together with the change rows of `changes` to a local user's devices
    /// and an EDU for each to each of `servers`; answers the last stream position. Not yet
    /// durable: the caller flushes.
    pub fn commit_local_changes(
        &self,
        user: &UserId,
        changes: &[Change],
        servers: &[OwnedServerName],
        batch: Batch,
    ) -> Result<u64, E2eeError> {
        let n = changes.len().max(1) as u64;
        let (last, ()) = self.store.commit_with_counts(n, |first, b| {
            b.append(batch);
            let mut prev = None;
            for (i, change) in changes.iter().enumerate() {
                let count = first + i as u64;
                prev = self.stream_row(b, user, count, prev)?;
                let edu = change.edu(user, count, prev);
                for dest in servers {
                    Sender::stage_edu(b, dest.as_str(), count, &edu)?;
                }
                prev = Some(count);
            }
            Ok(())
        })?;
        Ok(last)
    }

    /// Commit `batch` with a change row for another user (remote, or one whose master key a
    /// local user signed); answers its stream position. Not yet durable.
    pub fn commit_remote_change(&self, user: &UserId, batch: Batch) -> Result<u64, E2eeError> {
        let (count, ()) = self.store.commit_with_count(|count, b| {
            b.append(batch);
            self.stream_row(b, user, count, None)?;
            Ok(())
        })?;
        Ok(count)
    }

    /// The stream position of a user's latest device list change, if any.
    pub fn device_list_position(&self, user: &UserId) -> Result<Option<u64>, E2eeError> {
        Ok(schema::USER__DEVICE_LIST_COUNT.get(&self.store.kv, user.as_str())?)
    }

    /// Users whose device list changed after `since` and up to `upper`, as stored, in stream
    /// order; read as the caller goes.
    pub fn changed_between(
        &self,
        since: u64,
        upper: u64,
    ) -> impl Iterator<Item = Result<String, E2eeError>> + '_ {
        schema::COUNT__DEVICE_LIST_USER
            .stream::<String>(&self.store.kv, since, upper)
            .map(|r| r.map(|(_, who)| who).map_err(E2eeError::from))
    }
}

impl Services {
    /// Commit `batch` together with the change rows and outbound EDUs of `changes` to a local
    /// user's devices, make it durable, and wake whoever must hear of it.
    pub async fn commit_device_list_changes(
        &self,
        user: &UserId,
        changes: Vec<Change>,
        batch: Batch,
    ) -> Result<(), E2eeError> {
        let (locals, servers) = self.device_list_audience(user)?;
        let servers: Vec<OwnedServerName> = if self.federation.is_some() {
            servers.into_iter().collect()
        } else {
            vec![]
        };
        let last = self
            .e2ee
            .commit_local_changes(user, &changes, &servers, batch)?;
        self.store.flush().await?;
        self.notifier
            .wake(locals.iter().map(|u| u.as_ref()).chain([user]), last);
        if let Some(fed) = &self.federation {
            for d in &servers {
                fed.sender.wake(d);
            }
        }
        Ok(())
    }

    /// A remote user's device list changed (or another user's keys gained a signature):
    /// commit `batch` with the change row, durably; local users who share a room with them see
    /// it in their next sync.
    pub async fn commit_remote_device_list_change(
        &self,
        user: &UserId,
        batch: Batch,
    ) -> Result<(), E2eeError> {
        let (locals, _) = self.device_list_audience(user)?;
        let count = self.e2ee.commit_remote_change(user, batch)?;
        self.store.flush().await?;
        self.notifier.wake(locals.iter().map(|u| u.as_ref()), count);
        Ok(())
    }

    /// Local users who share a joined room with `user`, and the other servers in those rooms.
    pub fn device_list_audience(
        &self,
        user: &UserId,
    ) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedServerName>), RoomsError> {
        let mut locals = BTreeSet::new();
        let mut servers = BTreeSet::new();
        for (room_id, m) in self.rooms.user_rooms(user)? {
            if m.membership != "join" {
                continue;
            }
            let Some(room) = self.rooms.room(&room_id)? else {
                continue;
            };
            let a = self.rooms.room_audience(room.short)?;
            locals.extend(a.local_joined);
            servers.extend(a.servers);
        }
        locals.remove(user);
        servers.remove(self.server_name());
        Ok((locals, servers))
    }

    /// Whether any local user shares a joined room with `user`: only then do we track their
    /// keys.
    pub fn shared_with_local(&self, user: &UserId) -> Result<bool, RoomsError> {
        for (room_id, m) in self.rooms.user_rooms(user)? {
            if m.membership != "join" {
                continue;
            }
            if let Some(room) = self.rooms.room(&room_id)? {
                if !self
                    .rooms
                    .room_audience(room.short)?
                    .local_joined
                    .is_empty()
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Users whose device lists `user` must re-fetch (`changed`) or may stop tracking
    /// (`left`) between stream positions `since` and `upper`.
    pub fn device_list_changes(
        &self,
        user: &UserId,
        since: u64,
        upper: u64,
    ) -> Result<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>), E2eeError> {
        let mut joined = vec![];
        let mut changed = BTreeSet::new();
        let mut left_candidates = BTreeSet::new();
        let in_range = |c: u64| c > since && c <= upper;
        for (room_id, m) in self.rooms.user_rooms(user)? {
            let Some(room) = self.rooms.room(&room_id)? else {
                continue;
            };
            match m.membership.as_str() {
                "join" => {
                    joined.push(room.short);
                    let mut i_joined = false;
                    let mut joins = vec![];
                    for (who, membership) in self.rooms.member_changes(room.short, since, upper)? {
                        if who == user {
                            i_joined |= membership == "join";
                        } else if membership == "join" {
                            joins.push(who);
                        } else if membership == "leave" || membership == "ban" {
                            left_candidates.insert(who);
                        }
                    }
                    if i_joined {
                        // Newly here: everyone in the room is news to this user.
                        for (who, membership) in self.rooms.room_members(room.short)? {
                            if membership == "join" && who != user {
                                changed.insert(who);
                            }
                        }
                    } else {
                        changed.extend(joins);
                    }
                }
                "leave" | "ban" if in_range(m.count) => {
                    for (who, membership) in self.rooms.room_members(room.short)? {
                        if membership == "join" {
                            left_candidates.insert(who);
                        }
                    }
                }
                _ => {}
            }
        }
        let shares = |other: &UserId| -> Result<bool, RoomsError> {
            for short in &joined {
                let m = self.rooms.membership_in(*short, other)?;
                if m.as_deref() == Some("join") {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let changed_users = self
            .e2ee
            .changed_between(since, upper)
            .collect::<Result<Vec<_>, _>>()?;
        for who in changed_users {
            let Ok(who) = OwnedUserId::try_from(who) else {
                continue;
            };
            // A user's own device changes are news to their other devices.
            if who == user || shares(&who)? {
                changed.insert(who);
            }
        }
        let mut left = BTreeSet::new();
        for who in left_candidates {
            if who != user && !shares(&who)? {
                changed.remove(&who);
                left.insert(who);
            }
        }
        Ok((changed, left))
    }
}
