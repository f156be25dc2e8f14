//! One at a time per key: the first caller for a key does the work (a key fetch, a remote media
//! download) while later callers for the same key wait for it and then find its result cached;
//! callers for other keys never wait. An entry lives only while someone holds or awaits it, so
//! keys chosen by remote input cannot grow the map.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

pub struct SingleFlight<K> {
    inflight: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

/// The turn of one caller for one key; the next waiter goes when it is dropped.
pub struct Turn<'a, K: Eq + Hash> {
    flights: &'a SingleFlight<K>,
    key: K,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    pub async fn turn(&self, key: K) -> Turn<'_, K> {
        let lock = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        Turn {
            flights: self,
            key,
            _guard: lock.lock_owned().await,
        }
    }

    /// Keys with someone working or waiting on them.
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's handle and ours are the last: nobody waits, the entry can go.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not_and_entries_go() {
        let f = SingleFlight::<String>::default();
        let a = f.turn("a".into()).await;
        let b = tokio::time::timeout(std::time::Duration::from_millis(50), f.turn("b".into()))
            .await
            .expect("another key does not wait");
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), f.turn("a".into()));
        assert!(again.await.is_err(), "the same key waits");
        drop((a, b));
        assert!(f.is_empty());
    }
}
