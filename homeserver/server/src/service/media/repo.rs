//! The media repository's local side: content-addressed blobs under `<data_dir>/media`, and
//! the limits shared by uploads, thumbnails and remote downloads.

use plexus_media::{blob::BlobStore, MediaError};

/// Media state held by [`crate::service::Services`].
pub struct Repo {
    pub blobs: BlobStore,
    /// Woken whenever a reserved id receives its content, for downloads waiting on it.
    pub uploaded: tokio::sync::Notify,
    /// Serialises the check-then-write of uploads: to a reserved id, and of the uploader's
    /// quota count.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// Thumbnailing decodes whole images: at most two at once keeps memory bounded.
    pub thumbnailing: tokio::sync::Semaphore,
    /// One download per remote media id at a time: the others wait and find it cached.
    pub remote_flights: crate::service::single_flight::SingleFlight<String>,
    /// Remote downloads in progress, each holding up to the size limit in memory.
    pub remote_fetches: tokio::sync::Semaphore,
}

/// Remote media downloads at once.
const REMOTE_FETCHES: usize = 4;

impl Repo {
    pub fn open(dir: &std::path::Path) -> Result<Self, MediaError> {
        Ok(Self {
            blobs: BlobStore::open(dir)?,
            uploaded: tokio::sync::Notify::new(),
            write_lock: tokio::sync::Mutex::new(()),
            thumbnailing: tokio::sync::Semaphore::new(2),
            remote_flights: Default::default(),
            remote_fetches: tokio::sync::Semaphore::new(REMOTE_FETCHES),
        })
    }
}
