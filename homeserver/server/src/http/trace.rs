//! Following one request through the logs: every request runs in a `request` span that names
//! its id, method and route, and, once authenticated, its user and device (or for federation its
//! origin server). Everything logged while handling it, an internal error included, carries
//! those fields; the id is also sent back as `X-Request-Id` for bug reports.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{
    extract::{MatchedPath, Request},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, TraceLayer},
};
use tracing::{field::Empty, Span};

/// This process's request id, unique within a run.
#[derive(Clone, Copy)]
pub struct RequestId(pub u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Numbers each request and returns its id in `X-Request-Id`. Runs outside [`layer`], so the
/// span can name the id.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    req.extensions_mut().insert(id);
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id.0.to_string()) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The target of request spans. The log filter always enables it (see `init_tracing`), so a
/// warning or error logged under a filter such as `warn` still names its request.
pub const SPAN_TARGET: &str = "plexus::request";

fn make_span(req: &Request) -> Span {
    let id = req.extensions().get::<RequestId>().map(|i| i.0);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("(no route)");
    tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        id,
        method = %req.method(),
        route,
        user = Empty,
        device = Empty,
        origin = Empty,
    )
}

/// [`layer`]'s type: request spans from [`make_span`], no failure logging.
pub type RequestTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    (),
>;

/// The span layer. Requests and responses (status, latency) are logged at debug level;
/// failures are not logged again here, since an internal error is logged with its cause where
/// it becomes a response.
pub fn layer() -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(make_span as fn(&Request) -> Span)
        .on_failure(())
}

/// Names the authenticated user and device on the current request span.
pub fn record_session(user: &str, device: Option<&str>) {
    let span = Span::current();
    span.record("user", user);
    if let Some(d) = device {
        span.record("device", d);
    }
}

/// Names the server a federation request came from on the current request span.
pub fn record_origin(origin: &str) {
    Span::current().record("origin", origin);
}
