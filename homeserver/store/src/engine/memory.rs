//! [`Engine`] in memory, for unit tests: the same contract as sled, nothing on disk.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
};

use super::{Engine, EngineError, Op, Rows};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemoryEngine {
    map: RwLock<Tree>,
    ids: AtomicU64,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Tree>, EngineError> {
        self.map
            .read()
            .map_err(|_| EngineError::Other("memory engine lock poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Tree>, EngineError> {
        self.map
            .write()
            .map_err(|_| EngineError::Other("memory engine lock poisoned".into()))
    }

    /// The rows in `bounds`, copied out so no lock is held while the caller iterates (the
    /// snapshot a sled iterator would give).
    fn collect(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, prefix: Option<&[u8]>) -> Rows<'_> {
        let rows: Result<Vec<_>, EngineError> = self.read().map(|m| {
            m.range::<[u8], _>((from, to))
                .take_while(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)))
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect()
        });
        match rows {
            Ok(rows) => Box::new(rows.into_iter()),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.read()?.get(key).cloned())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        let mut m = self.write()?;
        for (key, value) in ops {
            match value {
                Some(v) => m.insert(key, v),
                None => m.remove(&key),
            };
        }
        Ok(())
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let mut m = self.write()?;
        if let Some(found) = m.get(key) {
            return Ok(Some(found.clone()));
        }
        m.insert(key.to_vec(), value.to_vec());
        Ok(None)
    }

    fn take(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.write()?.remove(key))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Rows<'_> {
        self.collect(Bound::Included(prefix), Bound::Unbounded, Some(prefix))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Rows<'_> {
        if from >= to {
            return Box::new(std::iter::empty());
        }
        self.collect(Bound::Included(from), Bound::Excluded(to), None)
    }

    fn generate_id(&self) -> Result<u64, EngineError> {
        Ok(self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn flush(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn flush_async(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send + '_>>
    {
        Box::pin(std::future::ready(Ok(())))
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(0)
    }
}
