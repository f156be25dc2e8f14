//! The pushers each user has set, and how far delivery to each has got: the two tables
//! `USER_APP_PUSHKEY__PUSHER` and `USER_APP_PUSHKEY__DELIVERED`, keyed by user, app id and
//! pushkey, owned by [`PusherRecords`]. The endpoints that set them are
//! `crate::api::push::pushers`; the delivery workers `super::gateway`.

use std::sync::Arc;

use plexus_store::{schema, Batch, First, Store, StoreError};
use ruma::{OwnedUserId, UserId};
use serde_json::Value;

/// Why a pusher could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum PushersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 403: the user already has [`MAX_PUSHERS_PER_USER`].
    #[error("a user may have at most {MAX_PUSHERS_PER_USER} pushers: remove one first")]
    TooMany,
    #[error("pusher of {user}: {why}")]
    BadUser { user: String, why: String },
}

/// The pusher tables.
pub struct PusherRecords {
    store: Arc<Store>,
}

/// Pushers one user may have: each notification is sent to every one of them.
pub const MAX_PUSHERS_PER_USER: usize = 100;

/// A pusher's identity: user id, app id, pushkey.
pub type PusherKey = (String, String, String);

fn key_ref(k: &PusherKey) -> (&str, &str, &str) {
    (&k.0, &k.1, &k.2)
}

/// Remove a pusher and its delivery progress in `b`.
fn stage_delete(b: &mut Batch, key: &PusherKey) {
    schema::USER_APP_PUSHKEY__PUSHER.delete(b, key_ref(key));
    schema::USER_APP_PUSHKEY__DELIVERED.delete(b, key_ref(key));
}

impl PusherRecords {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// One pusher as it was set, if it still is.
    pub fn get(&self, key: &PusherKey) -> Result<Option<Value>, PushersError> {
        Ok(schema::USER_APP_PUSHKEY__PUSHER.get(&self.store.kv, key_ref(key))?)
    }

    /// Every pusher of a user: `(key, pusher JSON)`.
    pub fn of_user(&self, user: &UserId) -> Result<Vec<(PusherKey, Value)>, PushersError> {
        Ok(schema::USER_APP_PUSHKEY__PUSHER
            .prefix::<First<1>, Value>(&self.store.kv, (user.as_str(),))
            .collect::<Result<_, _>>()?)
    }

    /// Users with at least one pusher, for the delivery workers at start.
    pub fn users_with_pushers(&self) -> Result<Vec<OwnedUserId>, PushersError> {
        let mut out: Vec<OwnedUserId> = vec![];
        for item in schema::USER_APP_PUSHKEY__PUSHER.iter::<serde::de::IgnoredAny>(&self.store.kv) {
            let ((user, _, _), _) = item?;
            if let Ok(u) = OwnedUserId::try_from(user) {
                if out.last() != Some(&u) {
                    out.push(u);
                }
            }
        }
        Ok(out)
    }

    /// Remove the pushers set by these devices of `user` in `b` (they were logged out or
    /// deleted: their notifications must not go on to whoever holds the push key).
    pub fn stage_delete_for_devices(
        &self,
        user: &UserId,
        devices: &[String],
        b: &mut Batch,
    ) -> Result<(), PushersError> {
        for (key, p) in self.of_user(user)? {
            if p["device_id"]
                .as_str()
                .is_some_and(|d| devices.iter().any(|x| x == d))
            {
                stage_delete(b, &key);
            }
        }
        Ok(())
    }

    /// Remove one pusher. Not flushed: the caller flushes before it answers.
    pub fn remove(&self, key: &PusherKey) -> Result<(), PushersError> {
        let mut b = Batch::default();
        stage_delete(&mut b, key);
        Ok(self.store.commit(b)?)
    }

    /// Set a pusher. Unless `append`, the same app id and pushkey held by any other user go (a
    /// device changed hands). A new pusher delivers only what is notified from now on.
    /// `M_FORBIDDEN` for a user at [`MAX_PUSHERS_PER_USER`]. Not flushed.
    pub fn set(&self, key: &PusherKey, pusher: &Value, append: bool) -> Result<(), PushersError> {
        let mut b = Batch::default();
        if !append {
            for item in
                schema::USER_APP_PUSHKEY__PUSHER.iter::<serde::de::IgnoredAny>(&self.store.kv)
            {
                let (k, _) = item?;
                if k.1 == key.1 && k.2 == key.2 && k != *key {
                    stage_delete(&mut b, &k);
                }
            }
        }
        let exists = schema::USER_APP_PUSHKEY__PUSHER.contains(&self.store.kv, key_ref(key))?;
        let user = OwnedUserId::try_from(key.0.as_str()).map_err(|e| PushersError::BadUser {
            user: key.0.clone(),
            why: e.to_string(),
        })?;
        if !exists && self.of_user(&user)?.len() >= MAX_PUSHERS_PER_USER {
            return Err(PushersError::TooMany);
        }
        schema::USER_APP_PUSHKEY__PUSHER.put(&mut b, key_ref(key), pusher)?;
        if !exists {
            let now = self.store.current_count();
            schema::USER_APP_PUSHKEY__DELIVERED.put(&mut b, key_ref(key), &now)?;
        }
        Ok(self.store.commit(b)?)
    }

    /// The stream position of the last notification delivered to a pusher (0 for none).
    pub fn delivered(&self, key: &PusherKey) -> Result<u64, PushersError> {
        Ok(schema::USER_APP_PUSHKEY__DELIVERED
            .get(&self.store.kv, key_ref(key))?
            .unwrap_or(0u64))
    }

    /// Record delivery up to `count`.
    pub fn set_delivered(&self, key: &PusherKey, count: u64) -> Result<(), PushersError> {
        let mut b = Batch::default();
        schema::USER_APP_PUSHKEY__DELIVERED.put(&mut b, key_ref(key), &count)?;
        Ok(self.store.commit(b)?)
    }
}
