use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{error::ApiResult, http::extract::Auth, service::App};

/// Spec versions whose client-server API Plexus implements for the endpoints it serves. From
/// v1.15 the spec offers OAuth 2.0 as an alternative to its legacy authentication; a server
/// may serve either, and Plexus serves the legacy one (`auth_metadata` answers 404).
pub async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
                     "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15"],
        "unstable_features": {}
    }))
}

pub async fn well_known(State(app): State<App>) -> Json<Value> {
    let base = format!("http://{}", app.settings.client_listen);
    Json(json!({ "m.homeserver": { "base_url": base } }))
}

pub async fn capabilities(State(_app): State<App>, Auth(_): Auth) -> ApiResult<Json<Value>> {
    let available: serde_json::Map<String, Value> = plexus_core::room_version::SUPPORTED
        .iter()
        .map(|v| (v.to_string(), json!("stable")))
        .collect();
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": plexus_core::room_version::DEFAULT_ROOM_VERSION.as_str(),
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    })))
}
