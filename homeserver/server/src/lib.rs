//! The Plexus homeserver: configuration, the HTTP edge, services and the client-server API.
//! The `plexus` binary is a thin wrapper; benchmarks and tests use the library directly.

pub mod api;
pub mod config;
pub mod error;
pub mod http;
pub mod service;

use axum::{extract::Request, middleware, response::IntoResponse, Router};
use futures_util::FutureExt;

use crate::{error::ApiError, service::App};

/// Every route, with the Matrix fallbacks, panic guard, request spans and CORS.
pub fn router(app: App) -> Router {
    api::client::router()
        .merge(api::media::router())
        .route("/health", axum::routing::get(health))
        .fallback(http::unrecognized)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(catch_panic))
        .layer(http::trace::layer())
        .layer(middleware::from_fn(http::trace::request_id))
        .layer(middleware::from_fn(http::cors))
        .with_state(app)
}

/// The federation listener's routes: server-server API and key server.
pub fn federation_router(app: App) -> Router {
    api::federation::router()
        .fallback(http::unrecognized)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(catch_panic))
        .layer(http::trace::layer())
        .layer(middleware::from_fn(http::trace::request_id))
        .with_state(app)
}

/// `GET /health` for load balancers and supervisors: `200 OK` while the store takes writes,
/// `503` with the reason while the disk is full or after the store failed on it.
async fn health(axum::extract::State(app): axum::extract::State<App>) -> axum::response::Response {
    use axum::http::StatusCode;
    match app.store.kv.health() {
        Ok(()) => (StatusCode::OK, "OK").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"errcode": "M_UNKNOWN", "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// A bug must never take a connection down without an answer: turn panics into `M_UNKNOWN`.
async fn catch_panic(req: Request, next: middleware::Next) -> axum::response::Response {
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(res) => res,
        Err(_) => ApiError::Internal("handler panicked".into()).into_response(),
    }
}
