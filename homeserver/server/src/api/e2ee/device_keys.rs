//! Device identity keys, one-time keys and fallback keys: `/keys/upload`. The keys are kept
//! by the service (`crate::service::e2ee::keys`).

use axum::{extract::State, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body},
    service::{
        e2ee::{
            device_lists::Change,
            keys::KeyWrite,
            signatures::{signed_by, signed_part},
        },
        App,
    },
};

/// Most one-time keys one upload may carry; clients keep about 50 published.
const MAX_OTKS_PER_UPLOAD: usize = 1_000;

#[derive(Deserialize)]
pub struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: Map<String, Value>,
    #[serde(default)]
    fallback_keys: Map<String, Value>,
    /// The name clients used before fallback keys were in the spec.
    #[serde(default, rename = "org.matrix.msc2732.fallback_keys")]
    fallback_keys_unstable: Map<String, Value>,
}

/// `POST /keys/upload`. Everything in the request is checked before anything is stored, so a
/// bad key leaves the device as it was.
/// Hand-written: ruma's request drops `org.matrix.msc2732.fallback_keys`, which older clients send.
pub async fn upload(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<UploadBody>,
) -> ApiResult<Json<Value>> {
    let user = s.user_id.as_str();
    let device = s.device()?.as_str();
    let stored = app.e2ee.device_keys(&s.user_id, device)?;
    let mut writes = vec![];
    let mut changed_keys = None;
    if let Some(keys) = &body.device_keys {
        check_device_keys(keys, user, device)?;
        let same = stored
            .as_ref()
            .is_some_and(|old| signed_part(old) == signed_part(keys));
        if !same {
            changed_keys = Some(keys.clone());
        }
    }
    // One-time and fallback keys are signed with the device's ed25519 key.
    let ed25519 = body
        .device_keys
        .as_ref()
        .or(stored.as_ref())
        .and_then(|k| k["keys"][format!("ed25519:{device}")].as_str())
        .map(str::to_owned);
    if body.one_time_keys.len() > MAX_OTKS_PER_UPLOAD {
        return Err(ApiError::InvalidParam(format!(
            "at most {MAX_OTKS_PER_UPLOAD} one-time keys per upload"
        )));
    }
    // Keys are handed out in upload order (spec v1.13); one upload's keys share a place.
    let upload_seq = match body.one_time_keys.is_empty() {
        true => 0,
        false => app.e2ee.upload_seq()?,
    };
    for (id, key) in &body.one_time_keys {
        let (algorithm, key_id) = split_key_id(id)?;
        check_signed_key(key, user, device, ed25519.as_deref(), id)?;
        match app
            .e2ee
            .one_time_key(&s.user_id, device, algorithm, key_id)?
        {
            Some(old) if old != *key => {
                return Err(ApiError::InvalidParam(format!(
                    "one-time key {id} already exists with different content"
                )));
            }
            Some(_) => {}
            None => writes.push(KeyWrite::OneTimeKey {
                device: device.to_owned(),
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                seq: upload_seq,
                key: key.clone(),
            }),
        }
    }
    let fallback = if body.fallback_keys.is_empty() {
        &body.fallback_keys_unstable
    } else {
        &body.fallback_keys
    };
    let mut fallback_algorithms = std::collections::BTreeSet::new();
    for (id, key) in fallback {
        let (algorithm, key_id) = split_key_id(id)?;
        if !fallback_algorithms.insert(algorithm) {
            return Err(ApiError::InvalidParam(format!(
                "more than one {algorithm} fallback key"
            )));
        }
        check_signed_key(key, user, device, ed25519.as_deref(), id)?;
        let old = app.e2ee.fallback_key(&s.user_id, device, algorithm)?;
        let same = old.is_some_and(|old| old["key_id"] == key_id && old["key"] == *key);
        // Uploading the current fallback key again keeps its "used" mark.
        if !same {
            writes.push(KeyWrite::FallbackKey {
                device: device.to_owned(),
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key: key.clone(),
            });
        }
    }
    match changed_keys {
        Some(keys) => {
            writes.push(KeyWrite::DeviceKeys {
                device: device.to_owned(),
                keys: keys.clone(),
            });
            let display_name = app
                .accounts
                .device(&s.user_id, device)?
                .and_then(|d| d.display_name);
            let change = Change::Device {
                id: device.to_owned(),
                keys: Some(keys),
                display_name,
            };
            app.commit_key_changes(&s.user_id, writes, vec![change])
                .await?;
        }
        None => {
            app.e2ee.write_keys(&s.user_id, &writes)?;
            app.store.flush().await?;
            // New key counts: an appservice running this device learns them (MSC3202).
            app.notifier
                .wake([s.user_id.as_ref()], app.store.current_count());
        }
    }
    Ok(Json(
        json!({ "one_time_key_counts": app.e2ee.one_time_key_counts(&s.user_id, device)? }),
    ))
}

/// `algorithm:key_id`, both non-empty.
fn split_key_id(id: &str) -> ApiResult<(&str, &str)> {
    match id.split_once(':') {
        Some((a, k))
            if !a.is_empty() && !k.is_empty() && !a.contains('\0') && !k.contains('\0') =>
        {
            Ok((a, k))
        }
        _ => Err(ApiError::InvalidParam(format!(
            "key id {id:?} is not algorithm:key_id"
        ))),
    }
}

/// Device keys name the uploading user and device and are signed by the device's own
/// ed25519 key.
fn check_device_keys(keys: &Value, user: &str, device: &str) -> ApiResult<()> {
    if keys["user_id"] != user || keys["device_id"] != device {
        return Err(ApiError::InvalidParam(
            "device_keys must name the user and device of the access token".into(),
        ));
    }
    if !keys["algorithms"].is_array() {
        return Err(ApiError::BadJson(
            "device_keys.algorithms must be a list".into(),
        ));
    }
    let Some(map) = keys["keys"].as_object() else {
        return Err(ApiError::BadJson(
            "device_keys.keys must be an object".into(),
        ));
    };
    if map.values().any(|v| !v.is_string()) {
        return Err(ApiError::BadJson(
            "device_keys.keys values must be strings".into(),
        ));
    }
    let key_id = format!("ed25519:{device}");
    let Some(ed25519) = map.get(&key_id).and_then(Value::as_str) else {
        return Err(ApiError::InvalidParam(format!(
            "device_keys.keys has no {key_id}"
        )));
    };
    if !signed_by(keys, user, &key_id, ed25519) {
        return Err(ApiError::InvalidSignature(
            "device_keys are not signed by the device's ed25519 key".into(),
        ));
    }
    Ok(())
}

/// A one-time or fallback key: an unsigned curve25519 string, or an object signed by the
/// device (checked when the device's keys are known).
fn check_signed_key(
    key: &Value,
    user: &str,
    device: &str,
    ed25519: Option<&str>,
    id: &str,
) -> ApiResult<()> {
    match key {
        Value::String(_) => Ok(()),
        Value::Object(o) => {
            if !o.get("key").is_some_and(Value::is_string) {
                return Err(ApiError::BadJson(format!("key {id} has no key string")));
            }
            match ed25519 {
                Some(pk) if !signed_by(key, user, &format!("ed25519:{device}"), pk) => Err(
                    ApiError::InvalidSignature(format!("key {id} is not signed by the device")),
                ),
                _ => Ok(()),
            }
        }
        _ => Err(ApiError::BadJson(format!(
            "key {id} must be a string or an object"
        ))),
    }
}
