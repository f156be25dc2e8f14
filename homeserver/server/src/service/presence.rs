//! Presence: what users set, when they were last active, and who gets told.

use std::collections::BTreeSet;

use plexus_store::schema;
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_ms, Services};
use crate::error::ApiResult;

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
    pub fn presence(&self, user: &UserId) -> ApiResult<Option<PresenceRecord>> {
        Ok(schema::USER__PRESENCE.get(&self.store.kv, user.as_str())?)
    }

    /// Everyone who shares a joined room with `user`, and the user.
    pub fn presence_audience(&self, user: &UserId) -> ApiResult<BTreeSet<OwnedUserId>> {
        let mut out = BTreeSet::from([user.to_owned()]);
        for (room_id, m) in self.user_rooms(user)? {
            if m.membership != "join" {
                continue;
            }
            if let Some(room) = self.room(&room_id)? {
                out.extend(
                    self.room_members(room.short)?
                        .into_iter()
                        .filter(|(_, m)| m == "join")
                        .map(|(u, _)| u),
                );
            }
        }
        Ok(out)
    }

    /// Set presence explicitly (`status_msg: None` keeps the old message unless `clear_msg`),
    /// or record activity. Writes and wakes only when what others see changes.
    pub async fn update_presence(
        &self,
        user: &UserId,
        presence: &str,
        status_msg: Option<Option<String>>,
        active: bool,
    ) -> ApiResult<()> {
        let old = self.presence(user)?;
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
            return Ok(());
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
        self.store.flush().await?;
        let audience = self.presence_audience(user)?;
        self.notifier
            .wake(audience.iter().map(|u| u.as_ref()), count);
        crate::service::federation::edu::send_presence(
            self,
            user,
            &audience,
            presence,
            msg.as_deref(),
            now - last_active,
        );
        Ok(())
    }

    /// `m.presence` events of users the viewer shares rooms with, changed after `since`.
    pub fn presence_since(&self, viewer: &UserId, since: Option<u64>) -> ApiResult<Vec<Value>> {
        let mut events = vec![];
        for user in self.presence_audience(viewer)? {
            let Some(rec) = self.presence(&user)? else {
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
