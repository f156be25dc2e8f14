//! Third-party identifiers (email addresses, phone numbers). Plexus binds none to accounts: it
//! sends no mail or SMS and talks to no identity server, so an account's list is always empty
//! and asking to verify one gets the spec's error for an unsupported medium (v1.13).

use axum::Json;
use ruma::api::client::account::get_3pids;
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    http::{extract::JsonObject, ruma::Ruma},
    service::App,
};

/// `GET /account/3pid`: what Element's settings page reads.
pub async fn list(_: App, _: Ruma<get_3pids::v3::Request>) -> ApiResult<get_3pids::v3::Response> {
    Ok(get_3pids::v3::Response::new(vec![]))
}

/// `POST /account/3pid/{email,msisdn}/requestToken` (no access token, as the spec has it).
/// Hand-typed: ruma's request types need the medium's fields, and the answer is the same
/// whatever was sent.
pub async fn request_token(JsonObject(_): JsonObject) -> ApiResult<Json<Value>> {
    Err(ApiError::ThreepidMediumNotSupported(
        "This server does not add email addresses or phone numbers to accounts".into(),
    ))
}
