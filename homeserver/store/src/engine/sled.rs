//! [`Engine`] on sled: the embedded default, data in one local folder.

use super::{Engine, EngineError, Op, Rows};

pub struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    pub fn open(path: &std::path::Path) -> Result<Self, EngineError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        Ok(Self { db })
    }
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => EngineError::Io(io),
            other => EngineError::Other(other.to_string()),
        }
    }
}

fn rows<'a>(it: sled::Iter) -> Rows<'a> {
    Box::new(it.map(|r| {
        r.map(|(k, v)| (k.to_vec(), v.to_vec()))
            .map_err(EngineError::from)
    }))
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.db.contains_key(key)?)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        let mut b = sled::Batch::default();
        for (key, value) in ops {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        Ok(self.db.apply_batch(b)?)
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self
            .db
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
        {
            Ok(()) => Ok(None),
            Err(e) => Ok(Some(e.current.map(|v| v.to_vec()).unwrap_or_default())),
        }
    }

    fn take(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.db.remove(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Rows<'_> {
        rows(self.db.scan_prefix(prefix))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Rows<'_> {
        rows(self.db.range::<&[u8], _>(from..to))
    }

    fn generate_id(&self) -> Result<u64, EngineError> {
        Ok(self.db.generate_id()?)
    }

    fn flush(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        Ok(())
    }

    fn flush_async(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send + '_>>
    {
        Box::pin(async move {
            self.db.flush_async().await?;
            Ok(())
        })
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.db.size_on_disk()?)
    }
}
