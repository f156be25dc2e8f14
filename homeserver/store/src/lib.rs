//! Plexus storage: the only crate that names sled.
//!
//! Everything lives in one ordered key-value keyspace, split into tables by a one-byte prefix, so
//! that any write touching several tables is one atomic batch. The engine under it is a trait
//! ([`engine::Engine`]: get, atomic batches, prefix and range scans): sled on disk by default,
//! an in-memory engine for unit tests, and a distributed one would be a third.

pub mod codec;
pub mod engine;
mod kv;
mod map;
mod migrate;
pub mod schema;
pub mod state;
mod tables;

pub use codec::First;
pub use kv::{Batch, Kv, StoreError};
pub use map::{Map, Row};
pub use state::{StateMap, StateStore};
pub use tables::Table;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

/// Schema version this build writes; [`migrate`] brings older data here.
pub const SCHEMA_VERSION: u64 = 3;

/// The store: the keyspace, the global stream clock and the state snapshot cache.
pub struct Store {
    pub kv: Kv,
    pub state: StateStore,
    /// Highest stream position whose batch is applied; what sync may read up to.
    committed: AtomicU64,
    /// Serialises "take the next position + apply" so positions become visible in order.
    write_lock: Mutex<()>,
}

const META_COUNT: &[u8] = b"count";
pub(crate) const META_SCHEMA: &[u8] = b"schema_version";

impl Store {
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let kv = Kv::open(path)?;
        migrate::migrate(&kv)?;
        let count = schema::META
            .get::<Vec<u8>>(&kv, META_COUNT)?
            .map(|v| be_u64(&v))
            .unwrap_or(0);
        Ok(Self {
            state: StateStore::new(kv.clone()),
            kv,
            committed: AtomicU64::new(count),
            write_lock: Mutex::new(()),
        })
    }

    /// The stream position every reader may safely read up to.
    pub fn current_count(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Apply a batch that needs `n >= 1` new stream positions. The closure fills the batch given
    /// the first one; positions become visible to readers strictly in order. Returns the last.
    pub fn commit_with_counts<T>(
        &self,
        n: u64,
        fill: impl FnOnce(u64, &mut Batch) -> Result<T, StoreError>,
    ) -> Result<(u64, T), StoreError> {
        let _guard = self.write_lock.lock().map_err(|_| StoreError::Poisoned)?;
        let first = self.committed.load(Ordering::Acquire) + 1;
        let last = first + n.max(1) - 1;
        let mut batch = Batch::default();
        let out = fill(first, &mut batch)?;
        schema::META.put(&mut batch, META_COUNT, last.to_be_bytes().as_slice())?;
        self.kv.apply(batch)?;
        self.committed.store(last, Ordering::Release);
        Ok((last, out))
    }

    /// [`Self::commit_with_counts`] with one position.
    pub fn commit_with_count<T>(
        &self,
        fill: impl FnOnce(u64, &mut Batch) -> Result<T, StoreError>,
    ) -> Result<(u64, T), StoreError> {
        self.commit_with_counts(1, fill)
    }

    /// Apply a batch that needs no stream position.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.kv.apply(batch)
    }

    /// Make every applied batch durable; called before a client is told a write succeeded.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush().await
    }
}

/// Big-endian u64 from the first 8 bytes (0 if shorter: only our own keys are read here).
pub fn be_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_reopen_and_are_ordered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for i in 1..=5u64 {
                let (c, _) = store
                    .commit_with_count(|c, b| {
                        b.put(Table::Meta, b"x", &c.to_be_bytes());
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(c, i);
            }
            futures_flush(&store);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.current_count(), 5);
    }

    #[test]
    fn a_version_1_store_queues_its_one_time_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = Kv::open(dir.path()).unwrap();
            let mut b = Batch::default();
            b.put(Table::Meta, META_SCHEMA, &1u64.to_be_bytes());
            b.put(
                Table::OneTimeKey,
                b"@a:x\0DEV\0signed_curve25519\0AAAB",
                b"{}",
            );
            kv.apply(b).unwrap();
            kv.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let schema = store.kv.get(Table::Meta, META_SCHEMA).unwrap().unwrap();
        assert_eq!(be_u64(&schema), SCHEMA_VERSION);
        let queued: Vec<Vec<u8>> = store
            .kv
            .scan_prefix(Table::OneTimeKeyQueue, b"")
            .map(|r| r.unwrap().0.to_vec())
            .collect();
        let mut want = b"@a:x\0DEV\0signed_curve25519\0".to_vec();
        want.extend_from_slice(&0u64.to_be_bytes());
        want.extend_from_slice(b"AAAB");
        assert_eq!(queued, vec![want]);
    }

    fn futures_flush(store: &Store) {
        store.kv.flush_blocking().unwrap();
    }
}
