//! Each user's parsed push rules and ignore list, cached. Rule evaluation runs for every local
//! member on every event; reading and parsing both from account data each time halved the
//! send rate of a busy room. Writes of either account data type drop the user's entry.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use ruma::{push::Ruleset, OwnedUserId, UserId};

use crate::service::{account_data::AccountDataError, Services};

/// Entries kept before the cache starts over (a bound, not a working-set estimate).
const MAX_USERS: usize = 50_000;

pub struct UserPush {
    pub rules: Ruleset,
    pub ignored: BTreeSet<String>,
}

#[derive(Default)]
pub struct UserPushCache {
    map: Mutex<HashMap<OwnedUserId, Arc<UserPush>>>,
    /// Bumped by every invalidation, so a load that raced with a write is not cached.
    generation: AtomicU64,
}

impl UserPushCache {
    pub fn get(&self, app: &Services, user: &UserId) -> Result<Arc<UserPush>, AccountDataError> {
        if let Some(hit) = self.lock().get(user) {
            return Ok(hit.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = Arc::new(UserPush {
            rules: app.account_data.push_rules(user)?,
            ignored: app.account_data.ignored_users(user)?,
        });
        let mut map = self.lock();
        if self.generation.load(Ordering::Acquire) == generation {
            if map.len() >= MAX_USERS {
                map.clear();
            }
            map.insert(user.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }

    /// After a write of the user's push rules or ignore list.
    pub fn forget(&self, user: &UserId) {
        let mut map = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<UserPush>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
