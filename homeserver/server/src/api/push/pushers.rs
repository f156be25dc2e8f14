//! Pushers: `POST /_matrix/client/v3/pushers/set` and `GET /_matrix/client/v3/pushers`. What
//! is stored, and how, is `service::push::pushers`.

use axum::{extract::State, Json};
use ruma::api::client::push::{get_pushers, Pusher};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, JsonObject},
        ruma::Ruma,
    },
    service::{now_ms, push::pushers::PusherKey, App, Services},
};

/// The push gateway path the spec requires an HTTP pusher's URL to have.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
const MAX_APP_ID: usize = 64;
const MAX_PUSHKEY: usize = 512;

pub async fn get(
    app: App,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    let s = req.caller;
    let mut pushers: Vec<Pusher> = vec![];
    for ((_, app_id, _), p) in app.pusher_records.of_user(&s.user_id)? {
        // What `set` stored; the store's own fields (`pushkey_ts`, `device_id`) are not
        // ruma's and are left out.
        match serde_json::from_value::<Pusher>(p) {
            Ok(p) => pushers.push(p),
            Err(e) => tracing::warn!(%app_id, "stored pusher unreadable: {e}"),
        }
    }
    Ok(get_pushers::v3::Response::new(pushers))
}

fn required_str<'a>(body: &'a Map<String, Value>, field: &str) -> ApiResult<&'a str> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::MissingParam(format!("{field} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::InvalidParam(format!("{field} must be a string"))),
    }
}

/// An HTTP pusher's URL: absolute http(s), with the spec's notify path, and not an address
/// literal this server may not reach.
fn check_url(app: &Services, url: &str) -> ApiResult<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::InvalidParam(format!("data.url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::InvalidParam(
            "data.url must be http or https".into(),
        ));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(ApiError::InvalidParam(format!(
            "data.url must have the path {NOTIFY_PATH}"
        )));
    }
    if let Some(why) = crate::service::federation::client::literal_ip_refused(
        &parsed,
        app.settings.push.allow_loopback,
    ) {
        return Err(ApiError::InvalidParam(format!(
            "data.url points at a {why}"
        )));
    }
    Ok(())
}

/// Hand-typed: ruma answers a missing field `M_BAD_JSON`; clients are told `M_MISSING_PARAM`.
pub async fn set(
    State(app): State<App>,
    Auth(s): Auth,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let pushkey = required_str(&body, "pushkey")?;
    let app_id = required_str(&body, "app_id")?;
    if app_id.len() > MAX_APP_ID {
        return Err(ApiError::InvalidParam(format!(
            "app_id is longer than {MAX_APP_ID} characters"
        )));
    }
    if pushkey.len() > MAX_PUSHKEY {
        return Err(ApiError::InvalidParam(format!(
            "pushkey is longer than {MAX_PUSHKEY} bytes"
        )));
    }
    if app_id.contains('\0') || pushkey.contains('\0') {
        return Err(ApiError::InvalidParam(
            "app_id and pushkey may not contain NUL".into(),
        ));
    }
    let key: PusherKey = (s.user_id.to_string(), app_id.to_owned(), pushkey.to_owned());
    let kind = match body.get("kind") {
        None => return Err(ApiError::MissingParam("kind is required".into())),
        Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "kind must be a string or null".into(),
            ))
        }
    };
    let Some(kind) = kind else {
        app.pusher_records.remove(&key)?;
        app.store.flush().await?;
        return Ok(Json(json!({})));
    };
    match kind {
        "http" => {}
        "email" => {
            return Err(ApiError::InvalidParam(
                "email pushers are not supported: this server sends no email".into(),
            ))
        }
        other => {
            return Err(ApiError::InvalidParam(format!(
                "unknown pusher kind {other}"
            )))
        }
    }
    let app_display_name = required_str(&body, "app_display_name")?;
    let device_display_name = required_str(&body, "device_display_name")?;
    let lang = required_str(&body, "lang")?;
    let data = match body.get("data") {
        None | Some(Value::Null) => return Err(ApiError::MissingParam("data is required".into())),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(ApiError::InvalidParam("data must be an object".into())),
    };
    let url = required_str(data, "url")
        .map_err(|_| ApiError::MissingParam("data.url is required for an http pusher".into()))?;
    check_url(&app, url)?;
    if let Some(f) = data.get("format") {
        if !f.is_string() {
            return Err(ApiError::InvalidParam(
                "data.format must be a string".into(),
            ));
        }
    }
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "profile_tag must be a string".into(),
            ))
        }
    };
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::InvalidParam("append must be a boolean".into())),
    };
    let mut pusher = json!({
        "pushkey": pushkey,
        "kind": kind,
        "app_id": app_id,
        "app_display_name": app_display_name,
        "device_display_name": device_display_name,
        "lang": lang,
        "data": data,
        "pushkey_ts": now_ms(),
    });
    if let Some(t) = profile_tag {
        pusher["profile_tag"] = json!(t);
    }
    // The device that set it: the pusher goes when the device does (logout, deletion).
    if let Some(d) = &s.device_id {
        pusher["device_id"] = json!(d);
    }
    app.pusher_records.set(&key, &pusher, append)?;
    app.store.flush().await?;
    app.pushers.added(&s.user_id);
    Ok(Json(json!({})))
}
