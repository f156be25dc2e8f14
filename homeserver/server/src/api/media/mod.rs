//! The media repository: uploads, downloads and thumbnails on the authenticated
//! `/_matrix/client/v1/media/*` endpoints and the legacy `/_matrix/media/*` ones, with other
//! servers' media fetched over federation and cached here.
//!
//! Files live under `<data_dir>/media`, content-addressed (`plexus_media::blob`); the store
//! keeps one record per `mxc://` URI naming the content, its type and filename.

mod download;
mod upload;

pub use download::{local_ready, open as open_stored, thumbnail_of, ThumbQuery};

use axum::{
    routing::{get, post, put},
    Router,
};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::RumaRoutes,
    service::App,
};

pub use crate::service::media::{DEFAULT_WAIT_MS, MAX_WAIT};

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
        .ruma(download::config)
        .ruma(download::legacy_config)
        .ruma(upload::create)
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
        .route("/_matrix/media/v3/upload", post(upload::upload))
        .route(
            "/_matrix/media/v3/upload/{server}/{media_id}",
            put(upload::upload_reserved),
        )
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
