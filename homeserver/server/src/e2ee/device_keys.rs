//! Device identity keys, one-time keys and fallback keys: `/keys/upload`, the counts sync
//! reports, and taking keys out for `/keys/claim`.

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use plexus_store::{schema, Batch, First};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body},
    service::{
        e2ee::{
            device_lists::Change,
            signatures::{signed_by, signed_part},
        },
        App, Services,
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
    let stored = app.device_keys(&s.user_id, device)?;
    let mut batch = Batch::default();
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
        false => app.store.kv.unique_id()?,
    };
    for (id, key) in &body.one_time_keys {
        let (algorithm, key_id) = split_key_id(id)?;
        check_signed_key(key, user, device, ed25519.as_deref(), id)?;
        let row = (user, device, algorithm, key_id);
        let old: Option<Value> =
            schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.get(&app.store.kv, row)?;
        match old {
            Some(old) if old != *key => {
                return Err(ApiError::InvalidParam(format!(
                    "one-time key {id} already exists with different content"
                )));
            }
            Some(_) => {}
            None => {
                schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.put(&mut batch, row, key)?;
                schema::USER_DEVICE_ALG_SEQ_KEYID__QUEUED.put(
                    &mut batch,
                    (user, device, algorithm, upload_seq, key_id),
                    &(),
                )?;
            }
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
        let row = (user, device, algorithm);
        let old: Option<Value> = schema::USER_DEVICE_ALG__FALLBACK_KEY.get(&app.store.kv, row)?;
        let same = old.is_some_and(|old| old["key_id"] == key_id && old["key"] == *key);
        // Uploading the current fallback key again keeps its "used" mark.
        if !same {
            schema::USER_DEVICE_ALG__FALLBACK_KEY.put(
                &mut batch,
                row,
                &json!({ "key_id": key_id, "key": key, "used": false }),
            )?;
        }
    }
    match changed_keys {
        Some(keys) => {
            schema::USER_DEVICE__KEYS.put(&mut batch, (user, device), &keys)?;
            let display_name = app.device(&s.user_id, device)?.and_then(|d| d.display_name);
            let change = Change::Device {
                id: device.to_owned(),
                keys: Some(keys),
                display_name,
            };
            app.commit_device_list_changes(&s.user_id, vec![change], batch)
                .await?;
        }
        None => {
            app.store.commit(batch)?;
            app.store.flush().await?;
            // New key counts: an appservice running this device learns them (MSC3202).
            app.notifier
                .wake([s.user_id.as_ref()], app.store.current_count());
        }
    }
    Ok(Json(
        json!({ "one_time_key_counts": app.one_time_key_counts(&s.user_id, device)? }),
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

impl Services {
    /// A device's keys as stored (with the signatures added since), if it uploaded any.
    pub fn device_keys(&self, user: &UserId, device: &str) -> ApiResult<Option<Value>> {
        Ok(schema::USER_DEVICE__KEYS.get(&self.store.kv, (user.as_str(), device))?)
    }

    /// Unclaimed one-time keys per algorithm; `signed_curve25519` is always present, as
    /// clients decide from it whether to upload more.
    pub fn one_time_key_counts(&self, user: &UserId, device: &str) -> ApiResult<Value> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        counts.insert("signed_curve25519".into(), 0);
        for item in schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY
            .prefix::<First<2>, serde::de::IgnoredAny>(&self.store.kv, (user.as_str(), device))
        {
            let ((_, _, algorithm, _), _) = item?;
            *counts.entry(algorithm).or_default() += 1;
        }
        Ok(json!(counts))
    }

    /// Algorithms whose fallback key has not been used yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &str) -> ApiResult<Vec<String>> {
        let mut out = vec![];
        for item in schema::USER_DEVICE_ALG__FALLBACK_KEY
            .prefix::<First<2>, Value>(&self.store.kv, (user.as_str(), device))
        {
            let ((_, _, algorithm), rec) = item?;
            if rec["used"] != true {
                out.push(algorithm);
            }
        }
        Ok(out)
    }

    /// Take one key of `algorithm` for a device: its oldest uploaded one-time key (removed),
    /// else its fallback key (kept, marked used). Callers hold [`super::E2ee::claim_lock`].
    pub fn claim_key(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
        batch: &mut Batch,
    ) -> ApiResult<Option<(String, Value)>> {
        let kv = &self.store.kv;
        let user = user.as_str();
        for item in schema::USER_DEVICE_ALG_SEQ_KEYID__QUEUED
            .prefix::<First<3>, ()>(kv, (user, device, algorithm))
        {
            let ((_, _, _, seq, key_id), ()) = item?;
            schema::USER_DEVICE_ALG_SEQ_KEYID__QUEUED
                .delete(batch, (user, device, algorithm, seq, &key_id));
            let row = (user, device, algorithm, key_id.as_str());
            // A queue entry outlives its key only if the two were split by hand: skip it.
            let Some(v) = schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.get::<Value>(kv, row)? else {
                continue;
            };
            schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.delete(batch, row);
            return Ok(Some((format!("{algorithm}:{key_id}"), v)));
        }
        let row = (user, device, algorithm);
        let Some(mut rec) = schema::USER_DEVICE_ALG__FALLBACK_KEY.get::<Value>(kv, row)? else {
            return Ok(None);
        };
        let id = format!("{algorithm}:{}", rec["key_id"].as_str().unwrap_or_default());
        let key = rec["key"].clone();
        if rec["used"] != true {
            rec["used"] = json!(true);
            schema::USER_DEVICE_ALG__FALLBACK_KEY.put(batch, row, &rec)?;
        }
        Ok(Some((id, key)))
    }

    /// Everything a device published, for when the device is deleted.
    pub fn delete_device_keys(
        &self,
        user: &UserId,
        device: &str,
        batch: &mut Batch,
    ) -> ApiResult<()> {
        let kv = &self.store.kv;
        let owner = (user.as_str(), device);
        schema::USER_DEVICE__KEYS.delete(batch, owner);
        schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.delete_prefix::<First<2>>(kv, batch, owner)?;
        schema::USER_DEVICE_ALG_SEQ_KEYID__QUEUED.delete_prefix::<First<2>>(kv, batch, owner)?;
        schema::USER_DEVICE_ALG__FALLBACK_KEY.delete_prefix::<First<2>>(kv, batch, owner)?;
        schema::USER_DEVICE_COUNT__TO_DEVICE.delete_prefix::<First<2>>(kv, batch, owner)?;
        Ok(())
    }
}
