//! Content-addressed files: every distinct content is stored once, under its SHA-256, so the
//! same picture posted to ten rooms takes the space of one. A file appears under its final
//! name only once it is complete and on disk, so a crash leaves at most a stray temporary file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::MediaError;

/// A stored content: its SHA-256 (lower-case hex) and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

pub struct BlobStore {
    root: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BlobStore {
    /// Opens (creating) the folder and removes temporary files a crash left behind.
    pub fn open(root: &Path) -> Result<Self, MediaError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where a content lives: two levels of fan-out keep directories small.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256_hex(sha256).then(|| {
            self.root
                .join(&sha256[0..2])
                .join(&sha256[2..4])
                .join(sha256)
        })
    }

    /// Stores a stream of chunks, refusing it as soon as it passes `limit` bytes.
    pub async fn write_stream<S, E>(&self, mut stream: S, limit: u64) -> Result<Blob, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| MediaError::Interrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(MediaError::TooLarge { limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            Ok(Blob {
                sha256: hex(&hasher.finalize()),
                size,
            })
        }
        .await;
        match result {
            Ok(blob) => {
                self.place(&tmp, &blob.sha256).await?;
                Ok(blob)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Stores bytes already in memory (thumbnails, small remote files).
    pub async fn write_bytes(&self, data: Bytes) -> Result<Blob, MediaError> {
        let len = data.len() as u64;
        self.write_stream(
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(data)]),
            len,
        )
        .await
    }

    /// Moves a complete temporary file to its content address; identical content already
    /// there wins and the copy is dropped.
    async fn place(&self, tmp: &Path, sha256: &str) -> Result<(), MediaError> {
        let dest = self
            .path(sha256)
            .ok_or_else(|| MediaError::Interrupted("bad digest".into()))?;
        if tokio::fs::try_exists(&dest).await? {
            tokio::fs::remove_file(tmp).await?;
            return Ok(());
        }
        let dir = dest.parent().unwrap_or(&self.root).to_owned();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(tmp, &dest).await?;
        // The rename itself must survive a crash before the metadata that names it is written.
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(|e| MediaError::Interrupted(e.to_string()))??;
        Ok(())
    }

    pub async fn open_file(&self, sha256: &str) -> Result<tokio::fs::File, MediaError> {
        let path = self.path(sha256).ok_or_else(|| {
            MediaError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "bad digest",
            ))
        })?;
        Ok(tokio::fs::File::open(path).await?)
    }

    pub async fn read(&self, sha256: &str) -> Result<Vec<u8>, MediaError> {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        self.open_file(sha256).await?.read_to_end(&mut out).await?;
        Ok(out)
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn same_content_is_stored_once_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = store
            .write_stream(chunks(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        let b = store
            .write_bytes(Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(store.read(&a.sha256).await.unwrap(), b"hello world");
        assert!(std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn oversized_and_interrupted_streams_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let err = store
            .write_stream(chunks(&[b"12345", b"67890"]), 8)
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::TooLarge { limit: 8 }));
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err("connection reset".to_string()),
        ]);
        let err = store.write_stream(broken, 100).await.unwrap_err();
        assert!(matches!(err, MediaError::Interrupted(_)));
        assert!(std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(store.path("../../etc/passwd").is_none());
    }
}
