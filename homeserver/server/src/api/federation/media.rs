//! Serving this server's media to other servers (spec 1.11 authenticated media): the content
//! or a thumbnail as `multipart/mixed`, metadata first. Only media uploaded here is served;
//! what this server cached from elsewhere is the other server's to give.

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use plexus_core::signing::random_alnum;
use plexus_media::{disposition::content_disposition, multipart};
use serde::Deserialize;

use crate::http::x_matrix::FedRequest;
use crate::{
    api::media::{self, local_ready, thumbnail_of, ThumbQuery},
    error::{ApiError, ApiResult},
    http::extract::{Path, Query},
    service::App,
};

#[derive(Deserialize)]
pub struct WaitQuery {
    timeout_ms: Option<u64>,
}

fn checked_id(id: &str) -> ApiResult<()> {
    if media::valid_media_id(id) {
        Ok(())
    } else {
        Err(ApiError::NotFound("Media not found".into()))
    }
}

/// The two-part body around a stored content, streamed from disk.
async fn respond(
    app: &App,
    sha256: &str,
    content_type: &str,
    filename: Option<&str>,
) -> ApiResult<Response> {
    let (content, len) = media::open_stored(app, sha256).await?;
    let boundary = random_alnum(32);
    let head = multipart::head(
        &boundary,
        content_type,
        &content_disposition(content_type, filename),
    );
    let tail = multipart::tail(&boundary);
    let total = head.len() as u64 + len + tail.len() as u64;
    let stream = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(content.into_data_stream())
        .chain(futures_util::stream::once(async move {
            Ok(bytes::Bytes::from(tail))
        }));
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&multipart::content_type(&boundary))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Ok(res)
}

pub async fn download(
    State(app): State<App>,
    Path(media_id): Path<String>,
    Query(q): Query<WaitQuery>,
    _req: FedRequest,
) -> ApiResult<Response> {
    checked_id(&media_id)?;
    let rec = local_ready(&app, &media_id, q.timeout_ms).await?;
    let sha = rec
        .sha256
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("Media not found".into()))?;
    respond(&app, sha, &rec.content_type, rec.filename.as_deref()).await
}

pub async fn thumbnail(
    State(app): State<App>,
    Path(media_id): Path<String>,
    Query(q): Query<ThumbQuery>,
    _req: FedRequest,
) -> ApiResult<Response> {
    checked_id(&media_id)?;
    let size = q.size()?;
    let rec = local_ready(&app, &media_id, q.timeout_ms).await?;
    let server = app.server_name().as_str().to_owned();
    let t = thumbnail_of(&app, &server, &media_id, &rec, size).await?;
    respond(&app, &t.sha256, &t.content_type, None).await
}
