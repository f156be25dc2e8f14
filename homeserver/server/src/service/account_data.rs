//! Account data: the JSON documents a user keeps on the server, global or per room (push
//! rules, ignored users, tags, `m.direct`, anything a client invents). The one owner of
//! `USER_ROOM_TYPE__ACCOUNT_DATA`; handlers and other services go through it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use plexus_store::{schema, First, Store, StoreError};
use ruma::{push::Ruleset, UserId};
use serde_json::{json, Value};

/// Why account data could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AccountDataError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored {kind} is unreadable: {why}")]
    Unreadable { kind: &'static str, why: String },
}

pub struct AccountData {
    store: Arc<Store>,
}

/// The `m.push_rules` type, kept as `{"global": ruleset}`.
pub const PUSH_RULES: &str = "m.push_rules";
/// The `m.ignored_user_list` type.
pub const IGNORED_USERS: &str = "m.ignored_user_list";

impl AccountData {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// The content of one entry (`room` empty: global), if the user set it.
    pub fn get(
        &self,
        user: &UserId,
        room: &str,
        kind: &str,
    ) -> Result<Option<Value>, AccountDataError> {
        let rec: Option<Value> = schema::USER_ROOM_TYPE__ACCOUNT_DATA
            .get(&self.store.kv, (user.as_str(), room, kind))?;
        Ok(rec.map(|r| r.get("content").cloned().unwrap_or(json!({}))))
    }

    /// Store an entry with the stream position of the change, so that sync sends only what
    /// changed; answers that position. Not yet durable: the caller flushes.
    pub fn set(
        &self,
        user: &UserId,
        room: &str,
        kind: &str,
        content: &Value,
    ) -> Result<u64, AccountDataError> {
        let (count, ()) = self.store.commit_with_count(|count, b| {
            schema::USER_ROOM_TYPE__ACCOUNT_DATA.put(
                b,
                (user.as_str(), room, kind),
                &json!({ "count": count, "content": content }),
            )
        })?;
        Ok(count)
    }

    /// Entries changed after `since` (all without it), global ones or per-room ones, as sync
    /// events grouped by room (`""` for global).
    pub fn changed_since(
        &self,
        user: &UserId,
        since: Option<u64>,
        rooms: bool,
    ) -> Result<HashMap<String, Vec<Value>>, AccountDataError> {
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for item in schema::USER_ROOM_TYPE__ACCOUNT_DATA
            .prefix::<First<1>, Value>(&self.store.kv, (user.as_str(),))
        {
            let ((_, room, kind), rec) = item?;
            if rooms == room.is_empty() {
                continue;
            }
            if since.is_some_and(|c| rec["count"].as_u64().unwrap_or(0) <= c) {
                continue;
            }
            out.entry(room)
                .or_default()
                .push(json!({ "type": kind, "content": rec["content"] }));
        }
        Ok(out)
    }

    /// The user's push rules: what they stored, or the server's defaults.
    pub fn push_rules(&self, user: &UserId) -> Result<Ruleset, AccountDataError> {
        match self.get(user, "", PUSH_RULES)? {
            Some(v) => serde_json::from_value(v["global"].clone()).map_err(|e| {
                AccountDataError::Unreadable {
                    kind: PUSH_RULES,
                    why: e.to_string(),
                }
            }),
            None => Ok(Ruleset::server_default(user)),
        }
    }

    /// The users `user` ignores.
    pub fn ignored_users(&self, user: &UserId) -> Result<BTreeSet<String>, AccountDataError> {
        Ok(self
            .get(user, "", IGNORED_USERS)?
            .and_then(|v| {
                v["ignored_users"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
            })
            .unwrap_or_default())
    }
}

impl super::Services {
    /// Set an entry and make it durable; forgets the user's cached push rules when it was
    /// theirs, and wakes their syncs.
    pub async fn set_account_data(
        &self,
        user: &UserId,
        room: &str,
        kind: &str,
        content: &Value,
    ) -> Result<(), AccountDataError> {
        let count = self.account_data.set(user, room, kind, content)?;
        if room.is_empty() && matches!(kind, PUSH_RULES | IGNORED_USERS) {
            self.user_push.forget(user);
        }
        self.store.flush().await?;
        self.notifier.wake([user], count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (tempfile::TempDir, AccountData) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        (dir, AccountData::new(store))
    }

    #[test]
    fn entries_round_trip_and_sync_sees_only_changes() {
        let (_dir, ad) = service();
        let alice = ruma::user_id!("@alice:x");
        assert_eq!(ad.get(alice, "", "m.direct").unwrap(), None);
        let first = ad.set(alice, "", "m.direct", &json!({"a": 1})).unwrap();
        ad.set(alice, "!r:x", "m.tag", &json!({"tags": {}}))
            .unwrap();
        assert_eq!(
            ad.get(alice, "", "m.direct").unwrap(),
            Some(json!({"a": 1}))
        );
        let global = ad.changed_since(alice, None, false).unwrap();
        assert_eq!(global[""].len(), 1);
        let rooms = ad.changed_since(alice, Some(first), true).unwrap();
        assert_eq!(rooms["!r:x"][0]["type"], "m.tag");
        assert!(ad
            .changed_since(alice, Some(first), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn defaults_when_nothing_is_stored_and_an_error_when_it_is_garbage() {
        let (_dir, ad) = service();
        let bob = ruma::user_id!("@bob:x");
        assert!(ad.ignored_users(bob).unwrap().is_empty());
        let json = |r: &Ruleset| serde_json::to_value(r).unwrap();
        assert_eq!(
            json(&ad.push_rules(bob).unwrap()),
            json(&Ruleset::server_default(bob))
        );
        ad.set(bob, "", PUSH_RULES, &json!({"global": 7})).unwrap();
        assert!(matches!(
            ad.push_rules(bob),
            Err(AccountDataError::Unreadable { .. })
        ));
        ad.set(
            bob,
            "",
            IGNORED_USERS,
            &json!({"ignored_users": {"@eve:x": {}}}),
        )
        .unwrap();
        assert!(ad.ignored_users(bob).unwrap().contains("@eve:x"));
    }
}
