//! Other servers' media: fetched over federation (`/_matrix/federation/v1/media/download`,
//! spec 1.11, following a `Location` if the server hands one out), falling back to the legacy
//! `/_matrix/media/v3/download` for servers that predate it, then kept here.

use http::{Method, StatusCode};
use plexus_media::{disposition, multipart, MediaError};
use plexus_store::StoreError;
use ruma::ServerName;
use serde_json::Value;

use super::{Record, DEFAULT_WAIT_MS, MAX_WAIT};
use crate::service::{
    federation::client::{error_chain, literal_ip_refused, status_error, FedError},
    now_ms, App,
};

/// Why another server's media could not be fetched and kept here.
#[derive(Debug, thiserror::Error)]
pub enum RemoteMediaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the blob, or reading the multipart answer.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The request to the other server failed, or federation is off.
    #[error(transparent)]
    Fed(#[from] FedError),
    /// 404: the other server does not have it.
    #[error("Media not found")]
    NotFound,
    /// 504: the other server's reserved id has not received its upload yet.
    #[error("content has not yet been uploaded")]
    NotYetUploaded,
    /// 502: the content is larger than this server accepts.
    #[error("remote content is larger than this server accepts")]
    TooLarge,
    /// 502: an answer this server cannot use.
    #[error("{0}")]
    BadGateway(String),
}

/// What a remote server answered for a media id.
struct Fetched {
    content_type: String,
    filename: Option<String>,
    bytes: bytes::Bytes,
}

/// Reads a response body, giving up as soon as it passes `limit` bytes.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<bytes::Bytes, RemoteMediaError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(RemoteMediaError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| RemoteMediaError::BadGateway(format!("remote media: {}", error_chain(&e))))?
    {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(RemoteMediaError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn header(resp: &reqwest::Response, name: http::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A content type safe to store and send back out as a header.
fn clean_type(t: Option<&str>) -> String {
    t.map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .unwrap_or("application/octet-stream")
        .to_owned()
}

async fn error_of(resp: reqwest::Response) -> FedError {
    let status = resp.status();
    let json: Value = resp
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    status_error(status, &json)
}

/// Fetches, stores and records another server's media.
pub async fn fetch(
    app: &App,
    server: &ServerName,
    id: &str,
    timeout_ms: Option<u64>,
) -> Result<Record, RemoteMediaError> {
    let fed = app.fed()?;
    let limit = app
        .settings
        .media
        .max_upload_bytes
        .min(app.store.kv.writable_bytes()?);
    let wait = timeout_ms
        .unwrap_or(DEFAULT_WAIT_MS)
        .min(MAX_WAIT.as_millis() as u64);
    let path = format!("/_matrix/federation/v1/media/download/{id}?timeout_ms={wait}");
    let resp = fed
        .send(app, server, Method::GET, &path, None, true)
        .await?;
    let fetched = if resp.status().is_success() {
        from_multipart(app, resp, limit).await?
    } else if matches!(
        resp.status(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST
    ) {
        let err = error_of(resp).await;
        let unrecognized = matches!(&err, FedError::Status { errcode, .. }
            if errcode == "M_UNRECOGNIZED" || errcode.is_empty());
        if !unrecognized {
            return Err(map_error(err));
        }
        // A server from before authenticated media.
        let legacy = format!(
            "/_matrix/media/v3/download/{server}/{id}?allow_remote=false&timeout_ms={wait}"
        );
        let resp = fed
            .send(app, server, Method::GET, &legacy, None, false)
            .await?;
        if !resp.status().is_success() {
            return Err(map_error(error_of(resp).await));
        }
        plain(resp, limit).await?
    } else {
        return Err(map_error(error_of(resp).await));
    };
    let blob = app.media.blobs.write_bytes(fetched.bytes).await?;
    let rec = Record {
        sha256: Some(blob.sha256),
        size: blob.size,
        content_type: fetched.content_type,
        filename: fetched.filename,
        uploader: None,
        created_ts: now_ms(),
        unused_expires_at: None,
    };
    app.media_records.put(server.as_str(), id, &rec)?;
    tracing::info!(%server, media = %id, size = rec.size, "remote media cached");
    Ok(rec)
}

fn map_error(e: FedError) -> RemoteMediaError {
    match e {
        FedError::Status { status: 404, .. } => RemoteMediaError::NotFound,
        FedError::Status { errcode, .. } if errcode == "M_NOT_YET_UPLOADED" => {
            RemoteMediaError::NotYetUploaded
        }
        FedError::Status { errcode, .. } if errcode == "M_TOO_LARGE" => RemoteMediaError::TooLarge,
        e => RemoteMediaError::BadGateway(e.to_string()),
    }
}

/// A response whose body is the media itself.
async fn plain(resp: reqwest::Response, limit: u64) -> Result<Fetched, RemoteMediaError> {
    let content_type = clean_type(header(&resp, http::header::CONTENT_TYPE).as_deref());
    let filename =
        header(&resp, http::header::CONTENT_DISPOSITION).and_then(|d| disposition::filename_of(&d));
    let bytes = read_limited(resp, limit).await?;
    Ok(Fetched {
        content_type,
        filename,
        bytes,
    })
}

/// The federation answer: metadata, then the content or where to get it.
async fn from_multipart(
    app: &App,
    resp: reqwest::Response,
    limit: u64,
) -> Result<Fetched, RemoteMediaError> {
    let bad = |why: &str| RemoteMediaError::BadGateway(format!("remote media: {why}"));
    let boundary = header(&resp, http::header::CONTENT_TYPE)
        .and_then(|t| multipart::boundary_of(&t))
        .ok_or_else(|| bad("not multipart/mixed"))?;
    // Headers and the metadata part come on top of the content itself.
    let body = read_limited(resp, limit + 64 * 1024).await?;
    let parts = multipart::parse(&boundary, &body)?;
    let [meta, content] = parts.as_slice() else {
        return Err(bad("expected exactly two parts"));
    };
    if serde_json::from_slice::<serde_json::Map<String, Value>>(meta.body).is_err() {
        return Err(bad("metadata part is not a JSON object"));
    }
    if let Some(location) = content.header("location") {
        return follow(app, location, limit).await;
    }
    if content.body.len() as u64 > limit {
        return Err(RemoteMediaError::TooLarge);
    }
    Ok(Fetched {
        content_type: clean_type(content.header("content-type")),
        filename: content
            .header("content-disposition")
            .and_then(disposition::filename_of),
        bytes: body.slice_ref(content.body),
    })
}

/// A `Location` another server pointed at (a CDN, say): fetched without our signature, and
/// never at an address remote input must not make us contact.
async fn follow(app: &App, location: &str, limit: u64) -> Result<Fetched, RemoteMediaError> {
    let fed = app.fed()?;
    let url = reqwest::Url::parse(location)
        .map_err(|e| RemoteMediaError::BadGateway(format!("remote media location: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(RemoteMediaError::BadGateway(
            "remote media location is not http(s)".into(),
        ));
    }
    if let Some(why) = literal_ip_refused(&url, fed.settings.allow_loopback) {
        return Err(RemoteMediaError::BadGateway(format!(
            "remote media location: {why}"
        )));
    }
    let resp = fed.http.get(url).send().await.map_err(|e| {
        RemoteMediaError::BadGateway(format!("remote media location: {}", error_chain(&e)))
    })?;
    if !resp.status().is_success() {
        return Err(map_error(error_of(resp).await));
    }
    plain(resp, limit).await
}
