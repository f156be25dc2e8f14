//! Downloads and thumbnails, of this server's media and of other servers' (fetched once over
//! federation, then served from the cache here), with headers that keep browsers from running
//! anything that was uploaded.

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use plexus_media::{
    disposition::{content_disposition, CONTENT_SECURITY_POLICY},
    thumbnail::{self, Method, Size},
};
use ruma::{api::client::authenticated_media::get_media_config, UInt};
use serde::Deserialize;

use super::{parse_mxc, DEFAULT_WAIT_MS, MAX_WAIT};
use crate::service::media::{Record, ThumbRecord};
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Path, Query},
        ruma::Ruma,
    },
    service::{now_ms, App},
};

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct ThumbQuery {
    pub width: u32,
    pub height: u32,
    pub method: Option<String>,
    pub timeout_ms: Option<u64>,
}

impl ThumbQuery {
    /// The standard size this request is served with.
    pub fn size(&self) -> ApiResult<Size> {
        if self.width == 0 || self.height == 0 {
            return Err(ApiError::InvalidParam(
                "width and height must be positive".into(),
            ));
        }
        let method = match self.method.as_deref() {
            None | Some("scale") => Method::Scale,
            Some("crop") => Method::Crop,
            Some(other) => {
                return Err(ApiError::InvalidParam(format!(
                    "method must be crop or scale, not {other}"
                )))
            }
        };
        Ok(thumbnail::pick(self.width, self.height, method))
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("Media not found".into())
}

/// This server's media with its content, waiting up to `timeout_ms` for a reserved id's
/// upload: `M_NOT_YET_UPLOADED` if it does not arrive in time.
pub async fn local_ready(app: &App, id: &str, timeout_ms: Option<u64>) -> ApiResult<Record> {
    let wait = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = app.media.uploaded.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let rec = app
            .media_records
            .get(app.server_name().as_str(), id)?
            .ok_or_else(not_found)?;
        if rec.sha256.is_some() {
            return Ok(rec);
        }
        if rec.unused_expires_at.is_some_and(|e| e <= now_ms()) {
            return Err(not_found());
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(ApiError::NotYetUploaded);
        }
    }
}

/// The media an `mxc://` URI names, from here, the cache, or its own server.
async fn find(
    app: &App,
    server: &ruma::ServerName,
    id: &str,
    timeout_ms: Option<u64>,
    allow_remote: bool,
) -> ApiResult<Record> {
    if server == app.server_name() {
        return local_ready(app, id, timeout_ms).await;
    }
    if let Some(rec) = app.media_records.get(server.as_str(), id)? {
        if rec.sha256.is_some() {
            return Ok(rec);
        }
    }
    if !allow_remote {
        return Err(not_found());
    }
    let _turn = app
        .media
        .remote_flights
        .turn(format!("{server}/{id}"))
        .await;
    // Someone else may have fetched it while this request waited its turn.
    if let Some(rec) = app.media_records.get(server.as_str(), id)? {
        if rec.sha256.is_some() {
            return Ok(rec);
        }
    }
    let _slot = app
        .media
        .remote_fetches
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(crate::service::media::remote::fetch(app, server, id, timeout_ms).await?)
}

/// A stored content as a streamed body, with its length.
pub async fn open(app: &App, sha256: &str) -> ApiResult<(Body, u64)> {
    let file = app.media.blobs.open_file(sha256).await.map_err(|e| {
        tracing::error!(sha256, error = %e, "media file missing from the data dir");
        not_found()
    })?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    Ok((
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        len,
    ))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// The download response: the bytes, their type, and the headers of the spec's "serving
/// inline content" rules.
async fn respond(
    app: &App,
    sha256: &str,
    content_type: &str,
    filename: Option<&str>,
) -> ApiResult<Response> {
    let (body, len) = open(app, sha256).await?;
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(content_type, filename)),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    // Content behind an mxc URI never changes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(res)
}

async fn serve_download(
    app: App,
    server: String,
    media_id: String,
    filename: Option<String>,
    q: DownloadQuery,
    allow_remote: bool,
) -> ApiResult<Response> {
    let (server, id) = parse_mxc(&server, &media_id)?;
    let rec = find(&app, &server, &id, q.timeout_ms, allow_remote).await?;
    let sha = rec.sha256.as_deref().ok_or_else(not_found)?;
    respond(
        &app,
        sha,
        &rec.content_type,
        filename.as_deref().or(rec.filename.as_deref()),
    )
    .await
}

pub async fn download(
    State(app): State<App>,
    _auth: Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(app, server, media_id, None, q, true).await
}

pub async fn download_as(
    State(app): State<App>,
    _auth: Auth,
    Path((server, media_id, filename)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(app, server, media_id, Some(filename), q, true).await
}

/// The unauthenticated (legacy) endpoints serve other servers' media only once it is cached
/// here, as Synapse does since authenticated media: otherwise anyone, signed in or not, could
/// make this server download whatever it names.
const LEGACY_FETCHES_REMOTE: bool = false;

pub async fn legacy_download(
    State(app): State<App>,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(app, server, media_id, None, q, LEGACY_FETCHES_REMOTE).await
}

pub async fn legacy_download_as(
    State(app): State<App>,
    Path((server, media_id, filename)): Path<(String, String, String)>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(
        app,
        server,
        media_id,
        Some(filename),
        q,
        LEGACY_FETCHES_REMOTE,
    )
    .await
}

/// A thumbnail of stored media at a standard size, made once and then served from the cache.
pub async fn thumbnail_of(
    app: &App,
    server: &str,
    id: &str,
    rec: &Record,
    size: Size,
) -> ApiResult<ThumbRecord> {
    let sha = rec.sha256.as_deref().ok_or_else(not_found)?;
    if !thumbnail::can_thumbnail(&rec.content_type) {
        return Err(ApiError::Unknown(
            "Cannot generate thumbnails for the requested content".into(),
        ));
    }
    let key = (size.width, size.height, size.method.as_str());
    if let Some(t) = app.media_records.thumbnail(server, id, key)? {
        return Ok(t);
    }
    let _permit = app
        .media
        .thumbnailing
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let src = app.media.blobs.read(sha).await?;
    let thumb = tokio::task::spawn_blocking(move || thumbnail::generate(&src, size))
        .await
        .map_err(|e| ApiError::Internal(format!("thumbnailer: {e}")))??;
    let blob = app.media.blobs.write_bytes(thumb.bytes.into()).await?;
    let t = ThumbRecord {
        sha256: blob.sha256,
        size: blob.size,
        content_type: thumb.content_type.to_owned(),
    };
    app.media_records.put_thumbnail(server, id, key, &t)?;
    Ok(t)
}

async fn serve_thumbnail(
    app: App,
    server: String,
    media_id: String,
    q: ThumbQuery,
    allow_remote: bool,
) -> ApiResult<Response> {
    let (server, id) = parse_mxc(&server, &media_id)?;
    let size = q.size()?;
    let rec = find(&app, &server, &id, q.timeout_ms, allow_remote).await?;
    let t = thumbnail_of(&app, server.as_str(), &id, &rec, size).await?;
    let name = format!("thumbnail.{}", t.content_type.trim_start_matches("image/"));
    respond(&app, &t.sha256, &t.content_type, Some(&name)).await
}

pub async fn thumbnail(
    State(app): State<App>,
    _auth: Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<ThumbQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(app, server, media_id, q, true).await
}

pub async fn legacy_thumbnail(
    State(app): State<App>,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<ThumbQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(app, server, media_id, q, LEGACY_FETCHES_REMOTE).await
}

/// The largest upload this server takes.
fn upload_size(app: &App) -> UInt {
    UInt::new_saturating(app.settings.media.max_upload_bytes)
}

pub async fn config(
    app: App,
    _req: Ruma<get_media_config::v1::Request>,
) -> ApiResult<get_media_config::v1::Response> {
    Ok(get_media_config::v1::Response::new(upload_size(&app)))
}

/// The deprecated `/_matrix/media/v3/config`, for clients from before authenticated media.
#[allow(deprecated)] // served for those clients; ruma marks the type deprecated
pub async fn legacy_config(
    app: App,
    _req: Ruma<ruma::api::client::media::get_media_config::v3::Request>,
) -> ApiResult<ruma::api::client::media::get_media_config::v3::Response> {
    Ok(ruma::api::client::media::get_media_config::v3::Response::new(upload_size(&app)))
}
