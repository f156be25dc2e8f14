//! The HTTP edge: extractors that turn bad input into Matrix errors, request spans, CORS,
//! fallbacks.

pub mod body;
pub mod extract;
pub mod ruma;
pub mod trace;
pub mod x_matrix;

use axum::{
    extract::Request,
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// Browsers (Element Web) need CORS on every client endpoint, including errors.
pub async fn cors(req: Request, next: Next) -> Response {
    let mut res = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    res
}

pub async fn unrecognized() -> ApiError {
    ApiError::Unrecognized
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
