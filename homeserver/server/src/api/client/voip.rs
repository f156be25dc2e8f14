//! `GET /voip/turnServer`: credentials for the configured TURN server. With a shared secret
//! they follow the TURN REST API that coturn implements (username `expiry:user_id`, password
//! the base64 HMAC-SHA1 of it), so they expire by themselves.

use axum::{extract::State, Json};
use base64::Engine;
use serde_json::{json, Value};

use crate::{
    config::TurnConfig,
    error::ApiResult,
    http::extract::Auth,
    service::{now_ms, App},
};

/// Hand-typed: ruma's response requires credentials, and a server without TURN answers `{}`.
pub async fn turn_server(State(app): State<App>, Auth(s): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(credentials(
        &app.settings.turn,
        s.user_id.as_str(),
        now_ms(),
    )))
}

/// The answer for `user` at `now_ms`: `{}` without a TURN server, as Synapse answers.
fn credentials(turn: &TurnConfig, user: &str, now_ms: u64) -> Value {
    if turn.uris.is_empty() {
        return json!({});
    }
    let (username, password) = match &turn.shared_secret {
        Some(secret) => {
            let expiry = now_ms / 1000 + turn.user_lifetime_secs;
            let username = format!("{expiry}:{user}");
            let key =
                ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
            let tag = ring::hmac::sign(&key, username.as_bytes());
            let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
            (username, password)
        }
        None => (
            turn.username.clone().unwrap_or_default(),
            turn.password.clone().unwrap_or_default(),
        ),
    };
    json!({
        "username": username,
        "password": password,
        "uris": turn.uris,
        "ttl": turn.user_lifetime_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_turn_server_is_an_empty_object() {
        assert_eq!(credentials(&TurnConfig::default(), "@a:x", 0), json!({}));
    }

    #[test]
    fn shared_secret_credentials_follow_the_turn_rest_api() {
        let turn = TurnConfig {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: Some("secret".into()),
            user_lifetime_secs: 86400,
            ..TurnConfig::default()
        };
        let c = credentials(&turn, "@alice:example.org", 1_700_000_000_000);
        assert_eq!(c["username"], "1700086400:@alice:example.org");
        // `printf %s '1700086400:@alice:example.org' | openssl dgst -sha1 -hmac secret -binary | base64`
        assert_eq!(c["password"], "RuLuGNKKbiGzqiXEknBM5BiuQKM=");
        assert_eq!(c["ttl"], 86400);
        assert_eq!(
            c["uris"],
            json!(["turn:turn.example.org:3478?transport=udp"])
        );
    }

    #[test]
    fn fixed_credentials_are_passed_on() {
        let turn = TurnConfig {
            uris: vec!["turns:t.example.org".into()],
            username: Some("u".into()),
            password: Some("p".into()),
            ..TurnConfig::default()
        };
        let c = credentials(&turn, "@a:x", 0);
        assert_eq!(
            (c["username"].as_str(), c["password"].as_str()),
            (Some("u"), Some("p"))
        );
    }
}
