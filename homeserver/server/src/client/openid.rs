//! OpenID tokens that let a third party (an integration, a voice SFU) confirm who a user is via
//! the federation `openid/userinfo` endpoint, without seeing their access token.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    http::extract::{Auth, JsonObject, Path},
    service::{openid::LIFETIME_SECS, App},
};

pub async fn request_token(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
    JsonObject(_body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let token = app.openid.issue(&s.user_id)?;
    app.store.flush().await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.server_name(),
        "expires_in": LIFETIME_SECS,
    })))
}
