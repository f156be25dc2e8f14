//! Third-party identifiers (email addresses, phone numbers). Plexus binds none to accounts: it
//! sends no mail or SMS and talks to no identity server, so an account's list is always empty
//! and asking to verify one gets the spec's error for an unsupported medium (v1.13).

use axum::Json;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject},
};

/// `GET /account/3pid`: what Element's settings page reads.
pub async fn list(Auth(_): Auth) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

/// `POST /account/3pid/{email,msisdn}/requestToken` (no access token, as the spec has it).
pub async fn request_token(JsonObject(_): JsonObject) -> ApiResult<Json<Value>> {
    Err(ApiError::ThreepidMediumNotSupported(
        "This server does not add email addresses or phone numbers to accounts".into(),
    ))
}
