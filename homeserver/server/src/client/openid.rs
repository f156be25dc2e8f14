//! OpenID tokens that let a third party (an integration, a voice SFU) confirm who a user is via
//! the federation `openid/userinfo` endpoint, without seeing their access token.

use axum::{extract::State, Json};
use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    http::extract::{Auth, JsonObject, Path},
    service::{now_ms, App},
};

const OPENID_LIFETIME_SECS: u64 = 3600;

pub async fn request_token(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
    JsonObject(_body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let token = random_alnum(32);
    let mut b = Batch::default();
    schema::OPENID_TOKEN__GRANT.put(
        &mut b,
        &crate::service::accounts::token_key(&token),
        &json!({ "user_id": s.user_id, "expires_at": now_ms() + OPENID_LIFETIME_SECS * 1000 }),
    )?;
    app.store.commit(b)?;
    app.store.flush().await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.server_name(),
        "expires_in": OPENID_LIFETIME_SECS,
    })))
}
