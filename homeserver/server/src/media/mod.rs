//! The media repository: uploads, downloads and thumbnails on the authenticated
//! `/_matrix/client/v1/media/*` endpoints and the legacy `/_matrix/media/*` ones, with other
//! servers' media fetched over federation and cached here.
//!
//! Files live under `<data_dir>/media`, content-addressed (`plexus_media::blob`); the store
//! keeps one record per `mxc://` URI naming the content, its type and filename.

mod download;
pub mod remote;
mod upload;

pub use download::{local_ready, open as open_stored, thumbnail_of, ThumbQuery};

use std::time::Duration;

use axum::{
    routing::{get, post, put},
    Router,
};
use plexus_media::blob::BlobStore;

use crate::{
    error::{ApiError, ApiResult},
    service::App,
};

/// Media state held by [`Services`].
pub struct Repo {
    pub blobs: BlobStore,
    /// Woken whenever a reserved id receives its content, for downloads waiting on it.
    pub uploaded: tokio::sync::Notify,
    /// Serialises the check-then-write of uploads: to a reserved id, and of the uploader's
    /// quota count.
    write_lock: tokio::sync::Mutex<()>,
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
    pub fn open(dir: &std::path::Path) -> Result<Self, ApiError> {
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

/// Longest a download waits for a reserved id's upload, whatever `timeout_ms` asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// `timeout_ms` when the request names none (the spec's default).
pub const DEFAULT_WAIT_MS: u64 = 20_000;

/// Media ids this server accepts in paths: opaque, but only URL-safe characters, so one can
/// never escape a path or a URL it is put in.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `(server, media id)` from path parameters: an unusable id cannot name any media.
pub fn parse_mxc(server: &str, id: &str) -> ApiResult<(ruma::OwnedServerName, String)> {
    let server = ruma::OwnedServerName::try_from(server)
        .map_err(|e| ApiError::InvalidParam(format!("invalid server name: {e}")))?;
    if !valid_media_id(id) {
        return Err(ApiError::NotFound("Media not found".into()));
    }
    Ok((server, id.to_owned()))
}

/// Media routes for the client listener.
pub fn router() -> Router<App> {
    Router::new()
        .route("/_matrix/client/v1/media/config", get(download::config))
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            get(download::download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}/{filename}",
            get(download::download_as),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
            get(download::thumbnail),
        )
        .route("/_matrix/media/v3/config", get(download::config))
        .route("/_matrix/media/v3/upload", post(upload::upload))
        .route(
            "/_matrix/media/v3/upload/{server}/{media_id}",
            put(upload::upload_reserved),
        )
        .route("/_matrix/media/v1/create", post(upload::create))
        .route(
            "/_matrix/media/v3/download/{server}/{media_id}",
            get(download::legacy_download),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{media_id}/{filename}",
            get(download::legacy_download_as),
        )
        .route(
            "/_matrix/media/v3/thumbnail/{server}/{media_id}",
            get(download::legacy_thumbnail),
        )
}
