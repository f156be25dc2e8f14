//! OpenID tokens that let a third party (an integration, a voice SFU) confirm who a user is via
//! the federation `openid/userinfo` endpoint, without seeing their access token.

use ruma::{api::client::account::request_openid_token, authentication::TokenType};

use crate::{
    error::ApiResult,
    http::ruma::Ruma,
    service::{openid::LIFETIME_SECS, App},
};

pub async fn request_token(
    app: App,
    req: Ruma<request_openid_token::v3::Request>,
) -> ApiResult<request_openid_token::v3::Response> {
    let s = req.caller;
    s.require_self(req.body.user_id.as_str())?;
    let token = app.openid.issue(&s.user_id)?;
    app.store.flush().await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        app.server_name().to_owned(),
        std::time::Duration::from_secs(LIFETIME_SECS),
    ))
}
