//! Device identity keys, one-time keys and fallback keys: `/keys/upload`, the counts sync
//! reports, and taking keys out for `/keys/claim`.

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use plexus_store::{Batch, Table};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{device_lists::Change, signed_by, signed_part};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body},
    service::{decode, encode, key2, key3, App, Services},
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
        let row = otk_key(user, device, algorithm, key_id);
        match app.store.kv.get(Table::OneTimeKey, &row)? {
            Some(old) if decode::<Value>(&old)? != *key => {
                return Err(ApiError::InvalidParam(format!(
                    "one-time key {id} already exists with different content"
                )));
            }
            Some(_) => {}
            None => {
                batch.put(Table::OneTimeKey, &row, &encode(key));
                batch.put(
                    Table::OneTimeKeyQueue,
                    &otk_queue_key(user, device, algorithm, upload_seq, key_id),
                    b"",
                );
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
        let row = key3(user, device, algorithm);
        let same = match app.store.kv.get(Table::FallbackKey, &row)? {
            Some(old) => {
                let old: Value = decode(&old)?;
                old["key_id"] == key_id && old["key"] == *key
            }
            None => false,
        };
        // Uploading the current fallback key again keeps its "used" mark.
        if !same {
            batch.put(
                Table::FallbackKey,
                &row,
                &encode(&json!({ "key_id": key_id, "key": key, "used": false })),
            );
        }
    }
    match changed_keys {
        Some(keys) => {
            batch.put(Table::DeviceKeys, &key2(user, device), &encode(&keys));
            let display_name = app.device(&s.user_id, device)?.and_then(|d| d.display_name);
            let change = Change::Device {
                id: device.to_owned(),
                keys: Some(keys),
                display_name,
            };
            super::device_lists::commit_local_changes(&app, &s.user_id, vec![change], batch)
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

fn otk_key(user: &str, device: &str, algorithm: &str, key_id: &str) -> Vec<u8> {
    let mut k = key3(user, device, algorithm);
    k.push(0);
    k.extend_from_slice(key_id.as_bytes());
    k
}

fn otk_queue_key(user: &str, device: &str, algorithm: &str, seq: u64, key_id: &str) -> Vec<u8> {
    let mut k = key3(user, device, algorithm);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(key_id.as_bytes());
    k
}

impl Services {
    /// A device's keys as stored (with the signatures added since), if it uploaded any.
    pub fn device_keys(&self, user: &UserId, device: &str) -> ApiResult<Option<Value>> {
        match self
            .store
            .kv
            .get(Table::DeviceKeys, &key2(user.as_str(), device))?
        {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Unclaimed one-time keys per algorithm; `signed_curve25519` is always present, as
    /// clients decide from it whether to upload more.
    pub fn one_time_key_counts(&self, user: &UserId, device: &str) -> ApiResult<Value> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        counts.insert("signed_curve25519".into(), 0);
        let mut prefix = key2(user.as_str(), device);
        prefix.push(0);
        for item in self.store.kv.scan_prefix(Table::OneTimeKey, &prefix) {
            let (k, _) = item?;
            if let Some(end) = k.iter().position(|b| *b == 0) {
                *counts
                    .entry(String::from_utf8_lossy(&k[..end]).into_owned())
                    .or_default() += 1;
            }
        }
        Ok(json!(counts))
    }

    /// Algorithms whose fallback key has not been used yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &str) -> ApiResult<Vec<String>> {
        let mut prefix = key2(user.as_str(), device);
        prefix.push(0);
        let mut out = vec![];
        for item in self.store.kv.scan_prefix(Table::FallbackKey, &prefix) {
            let (k, v) = item?;
            let rec: Value = decode(&v)?;
            if rec["used"] != true {
                out.push(String::from_utf8_lossy(&k).into_owned());
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
        let mut prefix = key3(user.as_str(), device, algorithm);
        prefix.push(0);
        for item in self.store.kv.scan_prefix(Table::OneTimeKeyQueue, &prefix) {
            let (k, _) = item?;
            let mut queued = prefix.clone();
            queued.extend_from_slice(&k);
            batch.delete(Table::OneTimeKeyQueue, &queued);
            let Some(key_id) = k.get(8..) else {
                continue;
            };
            let mut row = prefix.clone();
            row.extend_from_slice(key_id);
            // A queue entry outlives its key only if the two were split by hand: skip it.
            let Some(v) = self.store.kv.get(Table::OneTimeKey, &row)? else {
                continue;
            };
            batch.delete(Table::OneTimeKey, &row);
            return Ok(Some((
                format!("{algorithm}:{}", String::from_utf8_lossy(key_id)),
                decode(&v)?,
            )));
        }
        let row = key3(user.as_str(), device, algorithm);
        let Some(raw) = self.store.kv.get(Table::FallbackKey, &row)? else {
            return Ok(None);
        };
        let mut rec: Value = decode(&raw)?;
        let id = format!("{algorithm}:{}", rec["key_id"].as_str().unwrap_or_default());
        let key = rec["key"].clone();
        if rec["used"] != true {
            rec["used"] = json!(true);
            batch.put(Table::FallbackKey, &row, &encode(&rec));
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
        batch.delete(Table::DeviceKeys, &key2(user.as_str(), device));
        let mut prefix = key2(user.as_str(), device);
        prefix.push(0);
        for table in [
            Table::OneTimeKey,
            Table::OneTimeKeyQueue,
            Table::FallbackKey,
            Table::ToDevice,
        ] {
            for item in self.store.kv.scan_prefix(table, &prefix) {
                let (k, _) = item?;
                let mut full = prefix.clone();
                full.extend_from_slice(&k);
                batch.delete(table, &full);
            }
        }
        Ok(())
    }
}
