//! The HTTP client towards the homeserver: bearer token, URLs built from path segments (so room
//! ids, aliases and event types are always escaped), and retries.
//!
//! What is retried: connection failures and timeouts, 5xx and 429 (waiting what the server asks,
//! `retry_after_ms` or `Retry-After`), with exponential back-off up to a cap and a bounded number
//! of attempts. Every other 4xx comes back at once as [`MatrixError`]: retrying a refusal only
//! delays it. A retried request may reach the homeserver twice if an answer was lost; message
//! sends carry a transaction id, so those are deduplicated by the homeserver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
pub use reqwest::Method;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::error::{Error, MatrixError};

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

    /// Send a request, retrying as the module describes, and read the JSON answer (`{}` for an
    /// empty body).
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<Value, Error> {
        let url = self.url(segments, query);
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(&method, &url, &body).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => return Err(e),
                Err(f) => f,
            };
            let (wait, err) = match failure {
                Retryable::Transport(e) => (
                    self.policy.backoff(attempt),
                    Error::Transport {
                        url: url.to_string(),
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
            tracing::warn!(%method, %url, attempt, ?wait, error = %err, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt. Outer `Err`: worth retrying; inner: the final answer.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: &Body,
    ) -> Result<Result<Value, Error>, Retryable> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(&*self.token)
            .timeout(self.policy.timeout);
        req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(v),
            Body::Bytes { data, content_type } => req
                .header(CONTENT_TYPE, content_type.as_str())
                .body(data.clone()),
        };
        let resp = req.send().await.map_err(Retryable::Transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(Retryable::Transport)?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Ok(Value::Object(Default::default())));
            }
            return Ok(
                serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse {
                    url: url.to_string(),
                    why: format!("body is not JSON: {e}"),
                }),
            );
        }
        let err = MatrixError::from_response(status.as_u16(), &bytes);
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

/// A string field of a JSON answer, or a [`Error::BadResponse`] naming it.
pub(crate) fn str_field(v: &Value, field: &str, what: &str) -> Result<String, Error> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::BadResponse {
            url: what.to_owned(),
            why: format!("no string `{field}` in {v}"),
        })
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
