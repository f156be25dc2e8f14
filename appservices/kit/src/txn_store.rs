//! Which transactions were already handled, so a retried `PUT /transactions/{txnId}` (the
//! homeserver lost our 200) is answered without handling its events twice.
//!
//! Bounded: the ids of the last `capacity` transactions. Homeservers retry the transaction in
//! flight, never one from thousands ago. With a file, the memory survives a restart: one JSON
//! string per line, appended and flushed before the homeserver is answered, rewritten to the
//! last `capacity` ids when it has grown to twice that.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::error::Error;

/// How many ids [`TxnStore::default`] keeps.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Recently handled transaction ids.
#[derive(Debug)]
pub struct TxnStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
    log: Option<Log>,
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl Default for TxnStore {
    fn default() -> Self {
        TxnStore::in_memory(DEFAULT_CAPACITY)
    }
}

impl Inner {
    fn remember(&mut self, id: String) {
        if self.set.contains(&id) {
            return;
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

fn log_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::TxnLog {
        path: path.to_owned(),
        source,
    }
}

impl TxnStore {
    /// Memory only: a restart forgets (the homeserver may then redeliver the last transaction).
    pub fn in_memory(capacity: usize) -> Self {
        TxnStore {
            inner: Mutex::new(Inner {
                order: VecDeque::new(),
                set: HashSet::new(),
                capacity: capacity.max(1),
                log: None,
            }),
        }
    }

    /// Backed by the file at `path` (created if missing). A torn last line, from a crash
    /// mid-write, is skipped.
    pub async fn open(path: impl AsRef<Path>, capacity: usize) -> Result<Self, Error> {
        let path = path.as_ref();
        let mut inner = Inner {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
            log: None,
        };
        let mut lines = 0;
        let mut torn = false;
        match tokio::fs::read(path).await {
            Ok(bytes) => {
                torn = bytes.last().is_some_and(|b| *b != b'\n');
                for line in String::from_utf8_lossy(&bytes).lines() {
                    lines += 1;
                    if let Ok(id) = serde_json::from_str::<String>(line) {
                        inner.remember(id);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(log_err(path)(e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(log_err(path))?;
        // A torn line would glue itself to the next id: start on a fresh line.
        if torn {
            file.write_all(b"\n").await.map_err(log_err(path))?;
        }
        inner.log = Some(Log {
            path: path.to_owned(),
            file,
            lines,
        });
        Ok(TxnStore {
            inner: Mutex::new(inner),
        })
    }

    /// Whether `id` was handled.
    pub async fn contains(&self, id: &str) -> bool {
        self.inner.lock().await.set.contains(id)
    }

    /// Record `id` as handled (and durably, with a file). In memory even if the file write
    /// fails, so at least this process does not handle it twice.
    pub async fn insert(&self, id: &str) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        if inner.set.contains(id) {
            return Ok(());
        }
        inner.remember(id.to_owned());
        let Inner {
            order,
            capacity,
            log,
            ..
        } = &mut *inner;
        let Some(log) = log else {
            return Ok(());
        };
        let mut line = serde_json::to_string(id).unwrap_or_default();
        line.push('\n');
        log.file
            .write_all(line.as_bytes())
            .await
            .map_err(log_err(&log.path))?;
        log.file.sync_data().await.map_err(log_err(&log.path))?;
        log.lines += 1;
        if log.lines >= capacity.saturating_mul(2) {
            compact(log, order).await?;
        }
        Ok(())
    }
}

/// Rewrite the log to the ids still remembered: a new file renamed over the old, so a crash
/// leaves one or the other whole.
async fn compact(log: &mut Log, order: &VecDeque<String>) -> Result<(), Error> {
    let tmp = log.path.with_extension("compacting");
    let mut text = String::new();
    for id in order {
        text.push_str(&serde_json::to_string(id).unwrap_or_default());
        text.push('\n');
    }
    let mut f = File::create(&tmp).await.map_err(log_err(&tmp))?;
    f.write_all(text.as_bytes()).await.map_err(log_err(&tmp))?;
    f.sync_all().await.map_err(log_err(&tmp))?;
    tokio::fs::rename(&tmp, &log.path)
        .await
        .map_err(log_err(&log.path))?;
    log.file = OpenOptions::new()
        .append(true)
        .open(&log.path)
        .await
        .map_err(log_err(&log.path))?;
    log.lines = order.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forgets_the_oldest_beyond_capacity() {
        let s = TxnStore::in_memory(3);
        for id in ["1", "2", "3", "4"] {
            s.insert(id).await.unwrap();
        }
        assert!(!s.contains("1").await);
        assert!(s.contains("2").await && s.contains("4").await);
        // Inserting a known id again does not push anything out.
        s.insert("2").await.unwrap();
        assert!(s.contains("2").await && s.contains("3").await);
    }

    #[tokio::test]
    async fn a_file_survives_restarts_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("txns");
        {
            let s = TxnStore::open(&path, 4).await.unwrap();
            for i in 0..20 {
                s.insert(&format!("t{i}")).await.unwrap();
            }
            s.insert("with\nnewline").await.unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 8, "compacted, got {lines} lines");
        // A crash mid-append leaves a torn line: it is skipped, and the next id is whole.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\"torn");
        std::fs::write(&path, text).unwrap();

        let s = TxnStore::open(&path, 4).await.unwrap();
        assert!(s.contains("t19").await);
        assert!(s.contains("with\nnewline").await);
        assert!(!s.contains("t0").await);
        s.insert("after").await.unwrap();
        drop(s);
        let s = TxnStore::open(&path, 4).await.unwrap();
        assert!(s.contains("after").await);
    }

    #[tokio::test]
    async fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = TxnStore::open(dir.path(), 4).await.unwrap_err();
        assert!(matches!(err, Error::TxnLog { .. }), "{err}");
    }
}
