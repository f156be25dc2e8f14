//! The ordered key-value boundary.

use thiserror::Error;

use crate::Table;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("corrupt record in {table:?}: {why}")]
    Corrupt { table: Table, why: String },
    #[error("store schema version {0} is not supported by this build")]
    SchemaTooNew(u64),
    #[error("store lock poisoned")]
    Poisoned,
}

/// Keys are `table byte ‖ key`.
fn k(table: Table, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.push(table as u8);
    v.extend_from_slice(key);
    v
}

#[derive(Clone)]
pub struct Kv {
    db: sled::Db,
    durability: std::sync::Arc<Durability>,
}

/// Group commit. sled deadlocks when many `flush_async` calls are in flight at once (its IO
/// pool fills with flushes waiting on each other), so one flush runs at a time and every
/// writer whose batch it covered returns together.
#[derive(Default)]
struct Durability {
    /// Batches applied so far.
    applied: std::sync::atomic::AtomicU64,
    /// Batches known to be on disk.
    flushed: std::sync::atomic::AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

/// Writes applied together or not at all.
#[derive(Default)]
pub struct Batch {
    /// Key and new value (`None`: delete), in order; later writes to a key win.
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.ops.push((k(table, key), Some(value.to_vec())));
    }
    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.ops.push((k(table, key), None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Move every write of `other` into this batch, after the ones already here.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

impl Kv {
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Ok(Self {
            db,
            durability: Default::default(),
        })
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(k(table, key))?.map(|v| v.to_vec()))
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(k(table, key))?)
    }

    /// Insert only if absent; returns the value that is stored afterwards.
    pub fn insert_if_absent(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        match self
            .db
            .compare_and_swap(k(table, key), None as Option<&[u8]>, Some(value))?
        {
            Ok(()) => {
                self.durability
                    .applied
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                Ok(value.to_vec())
            }
            Err(e) => Ok(e.current.map(|v| v.to_vec()).unwrap_or_default()),
        }
    }

    /// Remove a key and answer what it held, atomically: of two concurrent takes of one key,
    /// exactly one gets the value (single-use tokens).
    pub fn take(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.db.remove(k(table, key))?;
        if old.is_some() {
            self.durability
                .applied
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(old.map(|v| v.to_vec()))
    }

    /// All `(key without table byte and prefix, value)` under `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        let full = k(table, prefix);
        let skip = full.len();
        self.db.scan_prefix(full).map(move |r| {
            r.map(|(key, v)| (key[skip..].to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// Rows of a table keyed by stream position (big-endian u64) with the position in
    /// `(after, upto]`: what a consumer that has handled everything up to `after` reads next.
    pub fn stream_range(
        &self,
        table: Table,
        after: u64,
        upto: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(u64, Vec<u8>), StoreError>> {
        self.range(
            table,
            &after.saturating_add(1).to_be_bytes(),
            &upto.saturating_add(1).to_be_bytes(),
        )
        .map(|r| r.map(|(k, v)| (crate::be_u64(&k), v)))
    }

    /// Keys in `[from, to)` within a table, keys returned without the table byte.
    pub fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.db.range(k(table, from)..k(table, to)).map(|r| {
            r.map(|(key, v)| (key[1..].to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        self.db.apply_batch(b)?;
        self.durability
            .applied
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// A process-wide unique id that is never handed out twice, even across crashes.
    pub fn unique_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()? + 1)
    }

    /// Wait until every batch applied before this call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Acquire;
        let d = &self.durability;
        let target = d.applied.load(Acquire);
        if d.flushed.load(Acquire) >= target {
            return Ok(());
        }
        let _one_at_a_time = d.flushing.lock().await;
        if d.flushed.load(Acquire) >= target {
            return Ok(());
        }
        let covered = d.applied.load(Acquire);
        self.db.flush_async().await?;
        d.flushed
            .fetch_max(covered, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let covered = self
            .durability
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        self.db.flush()?;
        self.durability
            .flushed
            .fetch_max(covered, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Bytes the engine uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}
