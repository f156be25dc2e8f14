//! Device keys (`USER_DEVICE__KEYS`), one-time keys with their claim queue
//! (`USER_DEVICE_ALG_KEYID__ONE_TIME_KEY`, `USER_DEVICE_ALG_SEQ_KEYID__QUEUED`) and fallback
//! keys (`USER_DEVICE_ALG__FALLBACK_KEY`): writing what an upload brings (with the
//! cross-signing keys, [`KeyWrite`]), the counts sync reports, and taking keys out for claims.

use std::collections::BTreeMap;

use plexus_store::{schema, Batch, First, StoreError};
use ruma::{OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use super::{device_lists::Change, E2ee, E2eeError};
use crate::service::Services;

/// A write to a local user's own published keys, gathered while an upload is checked whole.
pub enum KeyWrite {
    /// A device's identity keys, with the signatures on them.
    DeviceKeys { device: String, keys: Value },
    /// A new one-time key, at place `seq` in the device's claim queue.
    OneTimeKey {
        device: String,
        algorithm: String,
        key_id: String,
        seq: u64,
        key: Value,
    },
    /// A device's fallback key for `algorithm`, not yet used.
    FallbackKey {
        device: String,
        algorithm: String,
        key_id: String,
        key: Value,
    },
    /// A cross-signing key of `usage` (`None` removes it).
    CrossSigningKey {
        usage: &'static str,
        key: Option<Value>,
    },
}

impl KeyWrite {
    fn stage(&self, b: &mut Batch, user: &str) -> Result<(), StoreError> {
        match self {
            KeyWrite::DeviceKeys { device, keys } => {
                schema::USER_DEVICE__KEYS.put(b, (user, device.as_str()), keys)
            }
            KeyWrite::OneTimeKey {
                device,
                algorithm,
                key_id,
                seq,
                key,
            } => {
                let (device, algorithm, key_id) =
                    (device.as_str(), algorithm.as_str(), key_id.as_str());
                schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.put(
                    b,
                    (user, device, algorithm, key_id),
                    key,
                )?;
                schema::USER_DEVICE_ALG_SEQ_KEYID__QUEUED.put(
                    b,
                    (user, device, algorithm, *seq, key_id),
                    &(),
                )
            }
            KeyWrite::FallbackKey {
                device,
                algorithm,
                key_id,
                key,
            } => schema::USER_DEVICE_ALG__FALLBACK_KEY.put(
                b,
                (user, device.as_str(), algorithm.as_str()),
                &json!({ "key_id": key_id, "key": key, "used": false }),
            ),
            KeyWrite::CrossSigningKey { usage, key } => {
                super::cross_signing::stage_key(b, user, usage, key.as_ref())
            }
        }
    }
}

impl E2ee {
    /// A device's keys as stored (with the signatures added since), if it uploaded any.
    pub fn device_keys(&self, user: &UserId, device: &str) -> Result<Option<Value>, E2eeError> {
        Ok(schema::USER_DEVICE__KEYS.get(&self.store.kv, (user.as_str(), device))?)
    }

    /// A device's unclaimed one-time key `algorithm:key_id`.
    pub fn one_time_key(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
        key_id: &str,
    ) -> Result<Option<Value>, E2eeError> {
        let row = (user.as_str(), device, algorithm, key_id);
        Ok(schema::USER_DEVICE_ALG_KEYID__ONE_TIME_KEY.get(&self.store.kv, row)?)
    }

    /// A device's fallback key for `algorithm`, as stored: `{key_id, key, used}`.
    pub fn fallback_key(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<Value>, E2eeError> {
        let row = (user.as_str(), device, algorithm);
        Ok(schema::USER_DEVICE_ALG__FALLBACK_KEY.get(&self.store.kv, row)?)
    }

    /// A new place in the claim queue, shared by the one-time keys of one upload: keys are
    /// handed out in upload order (spec v1.13).
    pub fn upload_seq(&self) -> Result<u64, E2eeError> {
        Ok(self.store.kv.unique_id()?)
    }

    /// Write a user's key changes that no one else need hear of (one-time and fallback keys).
    /// Not yet durable: the caller flushes.
    pub fn write_keys(&self, user: &UserId, writes: &[KeyWrite]) -> Result<(), E2eeError> {
        let mut b = Batch::default();
        for w in writes {
            w.stage(&mut b, user.as_str())?;
        }
        Ok(self.store.commit(b)?)
    }

    /// Unclaimed one-time keys per algorithm; `signed_curve25519` is always present, as
    /// clients decide from it whether to upload more.
    pub fn one_time_key_counts(&self, user: &UserId, device: &str) -> Result<Value, E2eeError> {
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
    pub fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &str,
    ) -> Result<Vec<String>, E2eeError> {
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
    /// else its fallback key (kept, marked used). Callers hold [`E2ee::claim_lock`].
    fn claim_key(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
        batch: &mut Batch,
    ) -> Result<Option<(String, Value)>, E2eeError> {
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

    /// Claim keys of local users, `{user: {device: algorithm}}`: answers
    /// `{user: {device: {"algorithm:id": key}}}` (unknown users and devices, and devices with
    /// no key left, are simply absent) and whether anything was taken out of the store. Not
    /// yet durable: the caller flushes.
    pub async fn claim_keys(
        &self,
        requested: &Map<String, Value>,
    ) -> Result<(Map<String, Value>, bool), E2eeError> {
        let _guard = self.claim_lock.lock().await;
        let mut batch = Batch::default();
        let mut out = Map::new();
        for (user, devices) in requested {
            let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            let mut got = Map::new();
            for (device, algorithm) in devices.as_object().into_iter().flatten() {
                let Some(algorithm) = algorithm.as_str() else {
                    continue;
                };
                if let Some((id, key)) = self.claim_key(&user_id, device, algorithm, &mut batch)? {
                    got.insert(device.clone(), json!({ id: key }));
                }
            }
            if !got.is_empty() {
                out.insert(user.clone(), Value::Object(got));
            }
        }
        let taken = !batch.is_empty();
        if taken {
            self.store.commit(batch)?;
        }
        Ok((out, taken))
    }

    /// Remove everything a device published, and its to-device inbox, in `batch` (the device
    /// is being deleted).
    pub fn stage_delete_device_keys(
        &self,
        user: &UserId,
        device: &str,
        batch: &mut Batch,
    ) -> Result<(), E2eeError> {
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

impl Services {
    /// Write a user's key changes together with the device list changes they make (and the
    /// EDUs for them), durably, and wake whoever must hear of it.
    pub async fn commit_key_changes(
        &self,
        user: &UserId,
        writes: Vec<KeyWrite>,
        changes: Vec<Change>,
    ) -> Result<(), E2eeError> {
        let mut b = Batch::default();
        for w in &writes {
            w.stage(&mut b, user.as_str())?;
        }
        self.commit_device_list_changes(user, changes, b).await
    }
}
