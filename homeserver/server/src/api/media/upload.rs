//! Uploads: in one step (`POST /upload`), or reserve an id first (`POST /v1/create`) and send
//! the content later (`PUT /upload/{server}/{id}`). The file is on disk and its record durable
//! before the client hears it succeeded.

use axum::{
    extract::{Request, State},
    http::header,
    Json,
};
use plexus_core::signing::random_alnum;
use ruma::{api::client::media::create_mxc_uri, MilliSecondsSinceUnixEpoch, UInt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::parse_mxc;
use crate::service::media::{MediaRecordsError, Record};
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Path, Query},
        ruma::Ruma,
    },
    service::{now_ms, ratelimit::Action, App},
};

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// The declared type (default `application/octet-stream`) and a checked filename.
fn describe(req: &Request, q: &UploadQuery) -> ApiResult<(String, Option<String>)> {
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        None => "application/octet-stream".to_owned(),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|t| !t.trim().is_empty() && t.len() <= 255)
            .ok_or_else(|| ApiError::InvalidParam("unusable Content-Type".into()))?
            .trim()
            .to_owned(),
    };
    if let Some(f) = &q.filename {
        if f.is_empty() || f.len() > 255 || f.chars().any(char::is_control) {
            return Err(ApiError::InvalidParam(
                "filename must be 1 to 255 bytes without control characters".into(),
            ));
        }
    }
    Ok((content_type, q.filename.clone()))
}

/// The most the next upload of `user` may be: the size limit, or what is left of the quota,
/// or of the disk above the store's reserve (media must not fill the disk the store needs).
fn upload_limit(app: &App, user: &str) -> ApiResult<u64> {
    let limit = app
        .settings
        .media
        .max_upload_bytes
        .min(app.store.kv.writable_bytes()?);
    let quota = app.settings.media.max_bytes_per_user;
    if quota == 0 {
        return Ok(limit);
    }
    match quota.saturating_sub(app.media_records.used_bytes(user)?) {
        0 => Err(MediaRecordsError::OverQuota(quota).into()),
        left => Ok(limit.min(left)),
    }
}

/// Streams the body to the blob store, refusing it past `limit` bytes.
async fn store_body(app: &App, req: Request, limit: u64) -> ApiResult<plexus_media::blob::Blob> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge);
    }
    let stream = req.into_body().into_data_stream();
    Ok(app.media.blobs.write_stream(stream, limit).await?)
}

fn mxc(app: &App, id: &str) -> String {
    format!("mxc://{}/{id}", app.server_name())
}

/// `POST /upload`. Hand-typed: the body is the file, streamed to disk under the size limit;
/// ruma's request would hold all of it in memory first.
pub async fn upload(
    State(app): State<App>,
    Auth(s): Auth,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<Json<Value>> {
    app.limit_user(&s, Action::Uploads)?;
    let (content_type, filename) = describe(&req, &q)?;
    let user = s.user_id.as_str();
    let blob = store_body(&app, req, upload_limit(&app, user)?).await?;
    let id = random_alnum(24);
    let rec = Record {
        sha256: Some(blob.sha256),
        size: blob.size,
        content_type,
        filename,
        uploader: Some(s.user_id.to_string()),
        created_ts: now_ms(),
        unused_expires_at: None,
    };
    // Under the lock, two uploads cannot both fit in the last bytes of the quota.
    let charged = app.media.write_lock.lock().await;
    app.media_records.record_upload(
        app.server_name().as_str(),
        &id,
        &rec,
        user,
        app.settings.media.max_bytes_per_user,
        false,
    )?;
    drop(charged);
    app.store.flush().await?;
    tracing::info!(user = %s.user_id, media = %id, size = rec.size, "media uploaded");
    Ok(Json(json!({ "content_uri": mxc(&app, &id) })))
}

/// Reserves an id. Each user may hold a few at a time; expired reservations are dropped here.
pub async fn create(
    app: App,
    req: Ruma<create_mxc_uri::v1::Request>,
) -> ApiResult<create_mxc_uri::v1::Response> {
    let s = req.caller;
    let now = now_ms();
    let user = s.user_id.to_string();
    let id = random_alnum(24);
    let expires = now + app.settings.media.unused_expiry_secs * 1000;
    app.media_records.reserve(
        app.server_name().as_str(),
        &user,
        &id,
        now,
        expires,
        app.settings.media.max_pending_uploads,
    )?;
    app.store.flush().await?;
    let mut res = create_mxc_uri::v1::Response::new(mxc(&app, &id).into());
    res.unused_expires_at = Some(MilliSecondsSinceUnixEpoch(UInt::new_saturating(expires)));
    Ok(res)
}

/// Why a reserved id cannot take this upload, if it cannot.
fn check_reserved(rec: Option<&Record>, user: &str, now: u64) -> ApiResult<()> {
    let rec = rec.ok_or_else(|| ApiError::NotFound("Media not found".into()))?;
    if rec.uploader.as_deref() != Some(user) {
        return Err(ApiError::Forbidden(
            "This media id was reserved by someone else".into(),
        ));
    }
    if rec.sha256.is_some() {
        return Err(ApiError::CannotOverwriteMedia(
            "Media already has content".into(),
        ));
    }
    if rec.unused_expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::NotFound("Media id has expired".into()));
    }
    Ok(())
}

/// `PUT /upload/{serverName}/{mediaId}`: the content of a reserved id. Hand-typed, as
/// [`upload`] is.
pub async fn upload_reserved(
    State(app): State<App>,
    Auth(s): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<Json<Value>> {
    let (server, id) = parse_mxc(&server, &media_id)?;
    if server != app.server_name() {
        return Err(ApiError::NotFound("Media not found".into()));
    }
    let user = s.user_id.to_string();
    check_reserved(
        app.media_records.get(server.as_str(), &id)?.as_ref(),
        &user,
        now_ms(),
    )?;
    let (content_type, filename) = describe(&req, &q)?;
    let blob = store_body(&app, req, upload_limit(&app, &user)?).await?;
    // Two uploads to one id may race: only the first to get here wins.
    let _one = app.media.write_lock.lock().await;
    let rec = app.media_records.get(server.as_str(), &id)?;
    check_reserved(rec.as_ref(), &user, now_ms())?;
    let rec = Record {
        sha256: Some(blob.sha256),
        size: blob.size,
        content_type,
        filename,
        unused_expires_at: None,
        ..rec.unwrap_or_default()
    };
    app.media_records.record_upload(
        server.as_str(),
        &id,
        &rec,
        &user,
        app.settings.media.max_bytes_per_user,
        true,
    )?;
    app.store.flush().await?;
    app.media.uploaded.notify_waiters();
    tracing::info!(user = %s.user_id, media = %id, size = rec.size, "reserved media uploaded");
    Ok(Json(json!({})))
}
