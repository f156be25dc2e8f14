//! Pushers: `POST /_matrix/client/v3/pushers/set` and `GET /_matrix/client/v3/pushers`, stored
//! per user as `user \0 app_id \0 pushkey`.

use axum::{extract::State, Json};
use plexus_store::{schema, Batch, First};
use ruma::{
    api::client::push::{get_pushers, Pusher},
    UserId,
};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, JsonObject},
        ruma::Ruma,
    },
    service::{now_ms, App, Services},
};

/// The push gateway path the spec requires an HTTP pusher's URL to have.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
const MAX_APP_ID: usize = 64;
const MAX_PUSHKEY: usize = 512;

/// Pushers one user may have: each notification is sent to every one of them.
const MAX_PUSHERS_PER_USER: usize = 100;

/// A pusher's identity: user id, app id, pushkey.
pub type PusherKey = (String, String, String);

/// A pusher's key as the store takes it.
pub fn key_ref(k: &PusherKey) -> (&str, &str, &str) {
    (&k.0, &k.1, &k.2)
}

/// Remove a pusher and its delivery progress in `b`.
pub fn delete(b: &mut Batch, key: &PusherKey) {
    schema::USER_APP_PUSHKEY__PUSHER.delete(b, key_ref(key));
    schema::USER_APP_PUSHKEY__DELIVERED.delete(b, key_ref(key));
}

/// Every pusher of a user: `(key, pusher JSON)`.
pub fn of_user(app: &Services, user: &UserId) -> ApiResult<Vec<(PusherKey, Value)>> {
    Ok(schema::USER_APP_PUSHKEY__PUSHER
        .prefix::<First<1>, Value>(&app.store.kv, (user.as_str(),))
        .collect::<Result<_, _>>()?)
}

/// Remove the pushers set by these devices of `user` (they were logged out or deleted: their
/// notifications must not go on to whoever holds the push key).
pub fn delete_for_devices(
    app: &Services,
    user: &UserId,
    devices: &[String],
    b: &mut Batch,
) -> ApiResult<()> {
    for (key, p) in of_user(app, user)? {
        if p["device_id"]
            .as_str()
            .is_some_and(|d| devices.iter().any(|x| x == d))
        {
            delete(b, &key);
        }
    }
    Ok(())
}

/// Users with at least one pusher, for the delivery workers at start.
pub fn users_with_pushers(app: &Services) -> ApiResult<Vec<ruma::OwnedUserId>> {
    let mut out: Vec<ruma::OwnedUserId> = vec![];
    for item in schema::USER_APP_PUSHKEY__PUSHER.iter::<serde::de::IgnoredAny>(&app.store.kv) {
        let ((user, _, _), _) = item?;
        if let Ok(u) = ruma::OwnedUserId::try_from(user) {
            if out.last() != Some(&u) {
                out.push(u);
            }
        }
    }
    Ok(out)
}

pub async fn get(
    app: App,
    req: Ruma<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    let s = req.caller;
    let mut pushers: Vec<Pusher> = vec![];
    for ((_, app_id, _), p) in of_user(&app, &s.user_id)? {
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
    if let Some(why) =
        crate::federation::client::literal_ip_refused(&parsed, app.settings.push.allow_loopback)
    {
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
        let mut b = Batch::default();
        delete(&mut b, &key);
        app.store.commit(b)?;
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
    let mut b = Batch::default();
    if !append {
        // The same app and pushkey belong to one user: a device changed hands.
        for item in schema::USER_APP_PUSHKEY__PUSHER.iter::<serde::de::IgnoredAny>(&app.store.kv) {
            let (k, _) = item?;
            if k.1 == app_id && k.2 == pushkey && k != key {
                delete(&mut b, &k);
            }
        }
    }
    // Deliver only what is notified from now on.
    let exists = schema::USER_APP_PUSHKEY__PUSHER.contains(&app.store.kv, key_ref(&key))?;
    if !exists && of_user(&app, &s.user_id)?.len() >= MAX_PUSHERS_PER_USER {
        return Err(ApiError::Forbidden(format!(
            "a user may have at most {MAX_PUSHERS_PER_USER} pushers: remove one first"
        )));
    }
    schema::USER_APP_PUSHKEY__PUSHER.put(&mut b, key_ref(&key), &pusher)?;
    if !exists {
        schema::USER_APP_PUSHKEY__DELIVERED.put(
            &mut b,
            key_ref(&key),
            &app.store.current_count(),
        )?;
    }
    app.store.commit(b)?;
    app.store.flush().await?;
    app.pushers.added(&s.user_id);
    Ok(Json(json!({})))
}
