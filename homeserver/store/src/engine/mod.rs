//! The storage engine seam: one ordered keyspace with atomic multi-key batches. Everything above
//! it ([`crate::Kv`], the typed tables, state snapshots) is engine-neutral, so a clustered engine
//! is one more implementation of [`Engine`].

mod memory;
mod sled;

pub use self::memory::MemoryEngine;
pub use self::sled::SledEngine;

use std::{future::Future, pin::Pin};

/// A failure inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The disk under the engine failed (full, read-only, gone): the engine cannot go on.
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else the engine reports (corruption, unsupported operation, ...).
    #[error("{0}")]
    Other(String),
}

/// `(key, value)` pairs in key order.
pub type Rows<'a> =
    Box<dyn DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>> + Send + 'a>;

/// A write of one key: `Some(value)` stores it, `None` deletes it.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// What Plexus needs from an ordered key-value engine. Keys and values are opaque bytes; keys
/// sort bytewise.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.get(key)?.is_some())
    }

    /// Apply every write or none; later writes to one key win.
    fn apply(&self, ops: Vec<Op>) -> Result<(), EngineError>;

    /// Store `value` only if `key` is absent. `None` when it was stored, else the value found.
    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Remove a key and answer what it held, atomically.
    fn take(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Every row whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Rows<'_>;

    /// Every row with a key in `[from, to)`, in key order.
    fn range(&self, from: &[u8], to: &[u8]) -> Rows<'_>;

    /// A number never handed out before, even across crashes.
    fn generate_id(&self) -> Result<u64, EngineError>;

    /// Make every applied write durable.
    fn flush(&self) -> Result<(), EngineError>;

    /// [`Engine::flush`] without blocking the async runtime.
    fn flush_async(&self) -> Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + '_>>;

    /// Bytes the engine uses on disk.
    fn size_on_disk(&self) -> Result<u64, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every engine keeps, run against each.
    fn contract(e: &dyn Engine) {
        e.apply(vec![
            (b"a1".to_vec(), Some(b"x".to_vec())),
            (b"a2".to_vec(), Some(b"y".to_vec())),
            (b"b1".to_vec(), Some(b"z".to_vec())),
            (b"a2".to_vec(), None),
            (b"a3".to_vec(), Some(b"w".to_vec())),
        ])
        .unwrap();
        assert_eq!(e.get(b"a1").unwrap(), Some(b"x".to_vec()));
        assert_eq!(e.get(b"a2").unwrap(), None, "a later write in a batch wins");
        assert!(e.contains(b"b1").unwrap());
        let keys = |rows: Rows<'_>| -> Vec<Vec<u8>> { rows.map(|r| r.unwrap().0).collect() };
        assert_eq!(
            keys(e.scan_prefix(b"a")),
            vec![b"a1".to_vec(), b"a3".to_vec()]
        );
        assert_eq!(
            keys(Box::new(e.scan_prefix(b"a").rev())),
            vec![b"a3".to_vec(), b"a1".to_vec()]
        );
        assert_eq!(keys(e.range(b"a2", b"b1")), vec![b"a3".to_vec()]);
        assert!(keys(e.range(b"b", b"a")).is_empty());
        assert_eq!(e.insert_if_absent(b"c", b"1").unwrap(), None);
        assert_eq!(e.insert_if_absent(b"c", b"2").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.take(b"c").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.take(b"c").unwrap(), None);
        let first = e.generate_id().unwrap();
        assert!(e.generate_id().unwrap() > first);
        e.flush().unwrap();
    }

    #[test]
    fn sled_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&SledEngine::open(dir.path()).unwrap());
    }

    #[test]
    fn memory_keeps_the_contract() {
        contract(&MemoryEngine::new());
    }
}
