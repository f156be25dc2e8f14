//! The keyspace over an [`Engine`]: tables as key prefixes, atomic batches, group commit and
//! the free-disk guard.

use std::sync::Arc;

use thiserror::Error;

use crate::{
    engine::{Engine, EngineError, MemoryEngine, SledEngine},
    Table,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] EngineError),
    #[error("corrupt record in {table:?}: {why}")]
    Corrupt { table: Table, why: String },
    #[error("store schema version {0} is not supported by this build")]
    SchemaTooNew(u64),
    #[error("a record could not be encoded: {0}")]
    Encode(String),
    #[error("store lock poisoned")]
    Poisoned,
    /// Writes are refused while the disk is (almost) full, before the engine fails on it.
    #[error("the disk is full: {available} bytes free, {reserve} kept in reserve")]
    DiskFull { available: u64, reserve: u64 },
}

impl StoreError {
    /// An error from the disk under the engine (sled cannot go on after a failed write).
    fn is_io(&self) -> bool {
        matches!(self, StoreError::Engine(EngineError::Io(_)))
    }
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
    db: Arc<dyn Engine>,
    durability: Arc<Durability>,
    space: Arc<Space>,
}

/// Free space under the store. Writes stop while less than `reserve` bytes are free, before
/// sled meets ENOSPC: sled cannot recover from a failed write without a restart, while a write
/// refused here is simply tried again once space is back.
struct Space {
    /// The folder whose disk is watched; none for an engine without one.
    dir: Option<std::path::PathBuf>,
    reserve: std::sync::atomic::AtomicU64,
    /// When free space was last read, and what it was.
    checked: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
    /// An engine write or flush failed on the disk: the store needs a restart.
    failed: std::sync::atomic::AtomicBool,
}

/// How long a reading of free space is trusted.
const SPACE_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

impl Space {
    fn available(&self) -> u64 {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *checked {
            if at.elapsed() < SPACE_FRESH {
                return bytes;
            }
        }
        let bytes = self
            .dir
            .as_ref()
            .and_then(|d| fs2::available_space(d).ok())
            .unwrap_or(u64::MAX);
        *checked = Some((std::time::Instant::now(), bytes));
        bytes
    }

    fn ensure(&self) -> Result<(), StoreError> {
        let reserve = self.reserve.load(std::sync::atomic::Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let available = self.available();
        if available < reserve {
            return Err(StoreError::DiskFull { available, reserve });
        }
        Ok(())
    }

    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            if e.is_io() {
                self.failed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        r
    }
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
    pub(crate) fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.ops.push((k(table, key), Some(value.to_vec())));
    }
    pub(crate) fn delete(&mut self, table: Table, key: &[u8]) {
        self.ops.push((k(table, key), None));
    }
    /// Whether the batch only removes data (allowed on a full disk: it makes room).
    fn only_deletes(&self) -> bool {
        self.ops.iter().all(|(_, v)| v.is_none())
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
    /// The keyspace in a sled folder (the embedded default).
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        let engine = SledEngine::open(path)?;
        Ok(Self::with_engine(Arc::new(engine), Some(path.to_owned())))
    }

    /// A keyspace in memory, for unit tests.
    pub fn memory() -> Self {
        Self::with_engine(Arc::new(MemoryEngine::new()), None)
    }

    /// The keyspace on any engine; `dir` is the folder whose free space guards writes.
    pub fn with_engine(engine: Arc<dyn Engine>, dir: Option<std::path::PathBuf>) -> Self {
        Self {
            db: engine,
            durability: Default::default(),
            space: Arc::new(Space {
                dir,
                reserve: Default::default(),
                checked: Default::default(),
                failed: Default::default(),
            }),
        }
    }

    /// Refuse writes while fewer than `bytes` are free on the store's disk (0: never).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.space
            .reserve
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes that files beside the store (media) may still take before the disk reaches the
    /// reserve: `DiskFull` when there is no room left at all.
    pub fn writable_bytes(&self) -> Result<u64, StoreError> {
        self.health()?;
        let reserve = self
            .space
            .reserve
            .load(std::sync::atomic::Ordering::Relaxed);
        if reserve == 0 {
            return Ok(u64::MAX);
        }
        Ok(self.space.available().saturating_sub(reserve))
    }

    /// Whether the store can take writes: `DiskFull` while the disk is below the reserve, an
    /// engine error once a write failed on the disk (then only a restart helps).
    pub fn health(&self) -> Result<(), StoreError> {
        if self.space.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Engine(EngineError::Io(std::io::Error::other(
                "a write failed on the disk earlier; restart the server",
            ))));
        }
        self.space.ensure()
    }

    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(&k(table, key))?)
    }

    pub(crate) fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.contains(&k(table, key))?)
    }

    /// Insert only if absent: `None` when this call stored `value`, else the value found.
    pub(crate) fn insert_if_absent(
        &self,
        table: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.space.ensure()?;
        let found = self.space.note(
            self.db
                .insert_if_absent(&k(table, key), value)
                .map_err(StoreError::from),
        )?;
        if found.is_none() {
            self.durability
                .applied
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(found)
    }

    /// Remove a key and answer what it held, atomically: of two concurrent takes of one key,
    /// exactly one gets the value (single-use tokens).
    pub(crate) fn take(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.db.take(&k(table, key))?;
        if old.is_some() {
            self.durability
                .applied
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(old)
    }

    /// Every `(key, value)` of a table whose key starts with `prefix`, in key order; keys are
    /// whole (the prefix included), without the table byte.
    pub(crate) fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.db.scan_prefix(&k(table, prefix)).map(|r| {
            r.map(|(mut key, v)| {
                key.drain(..1.min(key.len()));
                (key, v)
            })
            .map_err(StoreError::from)
        })
    }

    /// Keys in `[from, to)` within a table, keys returned without the table byte.
    pub(crate) fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.db.range(&k(table, from), &k(table, to)).map(|r| {
            r.map(|(mut key, v)| {
                key.drain(..1.min(key.len()));
                (key, v)
            })
            .map_err(StoreError::from)
        })
    }

    pub(crate) fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if !batch.only_deletes() {
            self.space.ensure()?;
        }
        self.space
            .note(self.db.apply(batch.ops).map_err(StoreError::from))?;
        self.durability
            .applied
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// A process-wide unique id that is never handed out twice, even across crashes.
    pub fn unique_id(&self) -> Result<u64, StoreError> {
        self.space.ensure()?;
        Ok(self
            .space
            .note(self.db.generate_id().map_err(StoreError::from))?
            + 1)
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
        self.space
            .note(self.db.flush_async().await.map_err(StoreError::from))?;
        d.flushed
            .fetch_max(covered, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let covered = self
            .durability
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        self.space.note(self.db.flush().map_err(StoreError::from))?;
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
