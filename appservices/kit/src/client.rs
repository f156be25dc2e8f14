//! The HTTP client towards the homeserver: bearer token, requests built by ruma from its typed
//! request types ([`Client::send`]) or, for what ruma does not define, from path segments (so
//! room ids, aliases and event types are always escaped), and retries.
//!
//! What is retried: connection failures and timeouts, 5xx and 429 (waiting what the server asks,
//! `retry_after_ms` or `Retry-After`), with exponential back-off up to a cap and a bounded number
//! of attempts. Every other 4xx comes back at once as [`MatrixError`]: retrying a refusal only
//! delays it. A retried request may reach the homeserver twice if an answer was lost; message
//! sends carry a transaction id, so those are deduplicated by the homeserver.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
pub use reqwest::Method;
use reqwest::{StatusCode, Url};
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{
    AppserviceUserIdentity, IncomingResponseExt, MatrixVersion, Metadata, OutgoingRequest,
    OutgoingRequestAppserviceExt, OutgoingRequestExt, SupportedVersions,
};
use ruma::UserId;
use serde_json::Value;

use crate::error::{Error, MatrixError};

/// The Matrix version whose endpoint paths ruma picks (`/v3/...`, `/v1/...`).
const MATRIX_VERSION: MatrixVersion = MatrixVersion::V1_15;

/// What ruma is told the homeserver supports, to choose each endpoint's path.
pub(crate) fn supported_versions() -> SupportedVersions {
    SupportedVersions {
        versions: [MATRIX_VERSION].into(),
        features: Default::default(),
    }
}

/// How hard to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap on the doubled wait.
    pub max_backoff: Duration,
    /// Cap on a wait the server asks for with 429, so a bad hint cannot park a bridge for hours.
    pub max_retry_after: Duration,
    /// Time limit for each attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt only: for questions about the state right now, such as a ping.
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    Empty,
    Json(Value),
    /// Raw bytes (media uploads). `Bytes` clones share the buffer, so retries copy nothing.
    Bytes {
        data: Bytes,
        content_type: String,
    },
}

/// A homeserver client authenticated with one access token (the kit uses the `as_token`).
/// Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Arc<str>,
    policy: RetryPolicy,
}

/// Without the token, so logging a client leaks nothing.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to, when it is worth another.
enum Retryable {
    Transport(reqwest::Error),
    Matrix(MatrixError, Option<Duration>),
}

/// A request ready to be sent, and sent again on a retry (`Bytes` clones share the buffer).
struct Prepared {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
}

/// A 2xx answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Client {
    /// `base_url` is the homeserver's client API base, e.g. `http://127.0.0.1:8008` (a path
    /// prefix is kept).
    pub fn new(base_url: &str, access_token: &str, policy: RetryPolicy) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadUrl {
            url: base_url.to_owned(),
            why: why.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("not an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("plexus-appservice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: access_token.into(),
            policy,
        })
    }

    /// The same client with another retry policy.
    pub fn with_policy(&self, policy: RetryPolicy) -> Client {
        Client {
            policy,
            ..self.clone()
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The homeserver base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` (each escaped as one path segment) under the base, with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        // `new` refused cannot-be-a-base URLs, the only case where this is `Err`.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Send one of ruma's typed Client-Server requests with the appservice's token, as
    /// `user_id` (`?user_id=`, identity assertion) if given, else as the appservice's own user;
    /// retried as the module describes. A Matrix error answer is [`Error::Matrix`], with its
    /// `errcode` and status; a 2xx answer ruma cannot read is [`Error::BadResponse`].
    pub async fn send<R>(
        &self,
        request: R,
        user_id: Option<&UserId>,
    ) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        // The token goes along even where an endpoint does not require one: `?user_id=` means
        // something only with the appservice's token, and some endpoints (registering a ghost)
        // require it only of appservices.
        let token = SendAccessToken::Always(&self.token);
        let versions = Cow::Owned(supported_versions());
        let built = match user_id {
            Some(user) => request.try_into_http_request_with_identity::<Vec<u8>>(
                self.base.as_str(),
                token,
                AppserviceUserIdentity::new(user),
                versions,
            ),
            None => request.try_into_http_request::<Vec<u8>>(self.base.as_str(), token, versions),
        };
        let built = built.map_err(|e| Error::InvalidRequest {
            what: "request".into(),
            why: e.to_string(),
        })?;
        let (parts, body) = built.into_parts();
        let url = Url::parse(&parts.uri.to_string()).map_err(|e| Error::BadUrl {
            url: parts.uri.to_string(),
            why: e.to_string(),
        })?;
        let prepared = Prepared {
            method: parts.method,
            url,
            headers: parts.headers,
            body: (!body.is_empty()).then(|| Bytes::from(body)),
        };
        let answer = self.execute(&prepared).await?;
        let mut response = http::Response::new(&answer.body[..]);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        R::IncomingResponse::try_from_http_response(response).map_err(|e| Error::BadResponse {
            url: prepared.url.to_string(),
            why: e.to_string(),
        })
    }

    /// Send a request ruma has no type for, retrying as the module describes, and read the
    /// JSON answer (`{}` for an empty body).
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<Value, Error> {
        let url = self.url(segments, query);
        let mut headers = HeaderMap::new();
        let body = match body {
            Body::Empty => None,
            Body::Json(v) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let bytes = serde_json::to_vec(&v).map_err(|e| Error::InvalidRequest {
                    what: "JSON body".into(),
                    why: e.to_string(),
                })?;
                Some(Bytes::from(bytes))
            }
            Body::Bytes { data, content_type } => {
                let value =
                    HeaderValue::from_str(&content_type).map_err(|e| Error::InvalidRequest {
                        what: format!("content type {content_type:?}"),
                        why: e.to_string(),
                    })?;
                headers.insert(CONTENT_TYPE, value);
                Some(data)
            }
        };
        let prepared = Prepared {
            method,
            url,
            headers,
            body,
        };
        let answer = self.execute(&prepared).await?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&answer.body).map_err(|e| Error::BadResponse {
            url: prepared.url.to_string(),
            why: format!("body is not JSON: {e}"),
        })
    }

    /// Send, retrying as the module describes; the 2xx answer.
    async fn execute(&self, req: &Prepared) -> Result<Answer, Error> {
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(req).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => return Err(e),
                Err(f) => f,
            };
            let (wait, err) = match failure {
                Retryable::Transport(e) => (
                    self.policy.backoff(attempt),
                    Error::Transport {
                        url: req.url.to_string(),
                        source: e,
                    },
                ),
                Retryable::Matrix(e, hint) => (
                    hint.map(|h| h.min(self.policy.max_retry_after))
                        .unwrap_or_else(|| self.policy.backoff(attempt)),
                    Error::Matrix(e),
                ),
            };
            if attempt >= attempts {
                return Err(err);
            }
            tracing::warn!(method = %req.method, url = %req.url, attempt, ?wait, error = %err, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt. Outer `Err`: worth retrying; inner: the final answer.
    async fn attempt(&self, req: &Prepared) -> Result<Result<Answer, Error>, Retryable> {
        let mut builder = self
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone())
            .timeout(self.policy.timeout);
        if !req.headers.contains_key(AUTHORIZATION) {
            builder = builder.bearer_auth(&*self.token);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let resp = builder.send().await.map_err(Retryable::Transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.map_err(Retryable::Transport)?;
        if status.is_success() {
            return Ok(Ok(Answer {
                status,
                headers,
                body,
            }));
        }
        let err = MatrixError::from_response(status.as_u16(), &body);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let hint = err
                .retry_after_ms
                .map(Duration::from_millis)
                .or(retry_after);
            return Err(Retryable::Matrix(err, hint));
        }
        if status.is_server_error() {
            return Err(Retryable::Matrix(err, None));
        }
        Ok(Err(Error::Matrix(err)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, put};
    use axum::Router;
    use serde_json::json;

    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            max_retry_after: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        }
    }

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            ..RetryPolicy::default()
        };
        let waits: Vec<_> = (1..=5).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 700, 700]);
        assert_eq!(p.backoff(200), Duration::from_millis(700));
    }

    #[test]
    fn urls_escape_each_segment_and_keep_a_base_path() {
        let c = Client::new("http://hs.example/prefix/", "t", fast()).unwrap();
        let u = c.url(
            &[
                "_matrix",
                "client",
                "v3",
                "rooms",
                "!a/b?c:hs",
                "state",
                "m.x",
                "#k",
            ],
            &[("user_id", "@bot:hs")],
        );
        assert_eq!(
            u.as_str(),
            "http://hs.example/prefix/_matrix/client/v3/rooms/!a%2Fb%3Fc:hs/state/m.x/%23k?user_id=%40bot%3Ahs"
        );
        assert!(Client::new("ftp://x", "t", fast()).is_err());
        assert!(Client::new("not a url", "t", fast()).is_err());
    }

    #[tokio::test]
    async fn retries_5xx_and_429_then_succeeds() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = Router::new().route(
            "/x",
            put(move |headers: HeaderMap| {
                let h = h.clone();
                async move {
                    assert_eq!(headers["authorization"], "Bearer tok");
                    match h.fetch_add(1, Ordering::SeqCst) {
                        0 => (StatusCode::BAD_GATEWAY, "<html>").into_response(),
                        1 => (
                            StatusCode::TOO_MANY_REQUESTS,
                            axum::Json(json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 5})),
                        )
                            .into_response(),
                        2 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "")
                            .into_response(),
                        _ => axum::Json(json!({"ok": true})).into_response(),
                    }
                }
            }),
        );
        let base = serve(app).await;
        let c = Client::new(&base, "tok", fast()).unwrap();
        let v = c
            .request(Method::PUT, &["x"], &[], Body::Json(json!({})))
            .await
            .unwrap();
        assert_eq!(v, json!({"ok": true}));
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn typed_requests_carry_the_token_and_the_asserted_user() {
        use axum::extract::{Path, RawQuery};
        use axum::routing::post;
        use ruma::api::client::membership::{invite_user, leave_room};

        type Seen = Vec<(String, Vec<(String, String)>, String)>;
        let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
        let s = seen.clone();
        let app = Router::new()
            .route(
                "/prefix/_matrix/client/v3/rooms/{room}/leave",
                post(
                    move |Path(room): Path<String>, RawQuery(q): RawQuery, headers: HeaderMap| {
                        let s = s.clone();
                        async move {
                            let query = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                                .into_owned()
                                .collect();
                            let auth = headers["authorization"].to_str().unwrap().to_owned();
                            s.lock().unwrap().push((room, query, auth));
                            axum::Json(json!({}))
                        }
                    },
                ),
            )
            .route(
                "/prefix/_matrix/client/v3/rooms/{room}/invite",
                post(|| async {
                    (
                        StatusCode::FORBIDDEN,
                        axum::Json(json!({"errcode": "M_FORBIDDEN", "error": "no"})),
                    )
                }),
            );
        let base = serve(app).await;
        let c = Client::new(&format!("{base}/prefix/"), "tok", fast()).unwrap();
        let room = ruma::OwnedRoomId::try_from("!r/x:hs").unwrap();
        let user = ruma::OwnedUserId::try_from("@g:hs").unwrap();
        c.send(leave_room::v3::Request::new(room.clone()), Some(&*user))
            .await
            .unwrap();
        c.send(leave_room::v3::Request::new(room.clone()), None)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let user_id = vec![("user_id".to_owned(), "@g:hs".to_owned())];
        assert_eq!(
            seen,
            vec![
                ("!r/x:hs".to_owned(), user_id, "Bearer tok".to_owned()),
                ("!r/x:hs".to_owned(), vec![], "Bearer tok".to_owned()),
            ]
        );

        let invite = invite_user::v3::Request::new(
            room,
            invite_user::v3::InviteUserId::new(user.clone()).into(),
        );
        let err = c.send(invite, Some(&*user)).await.unwrap_err();
        assert_eq!(err.errcode(), Some("M_FORBIDDEN"));
        assert_eq!(err.status(), Some(403));
    }

    #[tokio::test]
    async fn client_errors_come_back_at_once_with_their_errcode() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = Router::new()
            .route(
                "/forbidden",
                get(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                    async {
                        (
                            StatusCode::FORBIDDEN,
                            axum::Json(json!({"errcode": "M_FORBIDDEN", "error": "no"})),
                        )
                    }
                }),
            )
            .route(
                "/down",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
            );
        let base = serve(app).await;
        let c = Client::new(&base, "tok", fast()).unwrap();
        let err = c
            .request(Method::GET, &["forbidden"], &[], Body::Empty)
            .await
            .unwrap_err();
        assert_eq!(err.errcode(), Some("M_FORBIDDEN"));
        assert_eq!(err.status(), Some(403));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // 5xx until the attempts run out: the last answer comes back.
        let err = c
            .request(Method::GET, &["down"], &[], Body::Empty)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
    }

    #[tokio::test]
    async fn connection_failures_are_retried_then_reported() {
        // A port nobody listens on (bound, then released).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "t", fast()).unwrap();
        let started = std::time::Instant::now();
        let err = c
            .request(Method::GET, &["x"], &[], Body::Empty)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err}");
        // Three waits of 1, 2 and 4 ms happened.
        assert!(started.elapsed() >= Duration::from_millis(7));
    }
}
