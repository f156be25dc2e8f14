//! Cross-signing: the master, self-signing and user-signing keys
//! (`/keys/device_signing/upload`) and the signatures made with them
//! (`/keys/signatures/upload`). The keys are kept by the service
//! (`crate::service::e2ee::cross_signing`).

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use ruma::{api::client::keys::upload_signing_keys, serde::Raw, OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Body},
        ruma::Ruma,
    },
    service::{
        accounts::PASSWORD_FLOW,
        e2ee::{
            cross_signing::{public_key, MASTER, SELF_SIGNING, USER_SIGNING},
            device_lists::Change,
            keys::KeyWrite,
            signatures::{merge_signatures, signed_by, signed_part},
        },
        App,
    },
};

/// A key of the request as the JSON it is stored as.
fn key_json<T>(key: Option<&Raw<T>>) -> ApiResult<Option<Value>> {
    key.map(|k| serde_json::from_str(k.json().get()))
        .transpose()
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

/// A cross-signing key of `usage` for `user`, well formed.
fn check_key(key: &Value, user: &UserId, usage: &str) -> ApiResult<(String, String)> {
    if key["user_id"] != user.as_str() {
        return Err(ApiError::InvalidParam(format!(
            "{usage} key must name the user of the access token"
        )));
    }
    let usages = key["usage"].as_array().cloned().unwrap_or_default();
    if !usages.iter().any(|u| u == usage) {
        return Err(ApiError::InvalidParam(format!(
            "{usage} key must have {usage} in its usage"
        )));
    }
    public_key(key).ok_or_else(|| {
        ApiError::InvalidParam(format!(
            "{usage} key must have exactly one ed25519 key, named after itself"
        ))
    })
}

/// `POST /keys/device_signing/upload`. The first upload needs no further authentication, nor
/// does repeating the keys already stored; replacing keys needs the password again.
pub async fn upload(
    app: App,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let master_key = key_json(body.master_key.as_ref())?;
    let self_signing_key = key_json(body.self_signing_key.as_ref())?;
    let user_signing_key = key_json(body.user_signing_key.as_ref())?;
    let auth = body
        .auth
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| ApiError::BadJson(format!("auth: {e}")))?;
    let user = &s.user_id;
    let _guard = app.e2ee.cross_signing_lock.lock().await;
    let existing_master = app.e2ee.cross_signing_key(user, MASTER)?;
    let provided = [
        (MASTER, &master_key),
        (SELF_SIGNING, &self_signing_key),
        (USER_SIGNING, &user_signing_key),
    ];
    let mut unchanged = true;
    for (usage, key) in provided {
        if let Some(k) = key {
            let stored = app.e2ee.cross_signing_key(user, usage)?;
            unchanged &= stored.is_some_and(|old| signed_part(&old) == signed_part(k));
        }
    }
    if existing_master.is_some() {
        if unchanged {
            return Ok(upload_signing_keys::v3::Response::new());
        }
        app.uia(auth, PASSWORD_FLOW, Some(user.clone())).await?;
    }
    let master = match (&master_key, &existing_master) {
        (Some(m), _) => m,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(ApiError::MissingParam(
                "no master signing key is available".into(),
            ))
        }
    };
    let (master_id, master_pk) = check_key(master, user, MASTER)?;
    let device_ids: Vec<String> = app
        .accounts
        .devices(user)?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let mut writes = vec![];
    for (usage, key) in provided {
        let Some(k) = key else { continue };
        let (_, pk) = check_key(k, user, usage)?;
        if device_ids.contains(&pk) {
            return Err(ApiError::Forbidden(
                "a cross-signing key may not share an id with a device".into(),
            ));
        }
        if usage != MASTER && !signed_by(k, user.as_str(), &master_id, &master_pk) {
            return Err(ApiError::InvalidSignature(format!(
                "{usage} key is not signed by the master key"
            )));
        }
        writes.push(KeyWrite::CrossSigningKey {
            usage,
            key: Some(k.clone()),
        });
    }
    // A new master key orphans the keys the old one signed.
    let master_replaced = master_key.is_some()
        && existing_master
            .as_ref()
            .is_some_and(|old| signed_part(old) != signed_part(master));
    if master_replaced {
        for (usage, key) in &provided[1..] {
            if key.is_none() {
                writes.push(KeyWrite::CrossSigningKey { usage, key: None });
            }
        }
    }
    let self_signing = match &self_signing_key {
        Some(k) => Some(k.clone()),
        None if master_replaced => None,
        None => app.e2ee.cross_signing_key(user, SELF_SIGNING)?,
    };
    let change = Change::CrossSigning {
        master: Some(master.clone()),
        self_signing,
    };
    app.commit_key_changes(user, writes, vec![change]).await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// `POST /keys/signatures/upload`: each signature is checked on its own; those that fail are
/// listed in `failures` and the others are stored.
/// Hand-written: ruma drops an empty `failures` and fails the whole body for one bad user id.
pub async fn upload_signatures(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<BTreeMap<String, Map<String, Value>>>,
) -> ApiResult<Json<Value>> {
    let me = &s.user_id;
    let _guard = app.e2ee.cross_signing_lock.lock().await;
    let mut failures: Map<String, Value> = Map::new();
    let mut fail = |user: &str, key: &str, code: &str, why: &str| {
        failures.entry(user.to_owned()).or_insert_with(|| json!({}))[key] =
            json!({ "errcode": code, "error": why });
    };
    let mut own_changes = vec![];
    let mut own_writes = vec![];
    // Signatures on other users' master keys: (target, key id, signatures).
    let mut others: Vec<(OwnedUserId, String, Value)> = vec![];
    for (target, keys) in body {
        let Ok(target_id) = OwnedUserId::try_from(target.as_str()) else {
            for key_id in keys.keys() {
                fail(&target, key_id, "M_INVALID_PARAM", "invalid user id");
            }
            continue;
        };
        for (key_id, signed) in keys {
            let outcome = if target_id == *me {
                sign_own(&app, me, &key_id, &signed, &mut own_writes)
            } else {
                sign_other(&app, me, &target_id, &key_id, &signed)
                    .await
                    .map(|(row, sigs)| {
                        others.push((target_id.clone(), row, sigs));
                        None
                    })
            };
            match outcome {
                Ok(Some(change)) => own_changes.push(change),
                Ok(None) => {}
                Err(e) => {
                    let (code, why) = match &e {
                        ApiError::InvalidSignature(w) => ("M_INVALID_SIGNATURE", w.clone()),
                        ApiError::NotFound(w) => ("M_NOT_FOUND", w.clone()),
                        other => ("M_INVALID_PARAM", other.to_string()),
                    };
                    fail(&target, &key_id, code, &why);
                }
            }
        }
    }
    if !own_changes.is_empty() {
        app.commit_key_changes(me, own_writes, own_changes).await?;
    }
    for (target, key_id, sigs) in others {
        app.commit_signature_on_other(me, &target, &key_id, &sigs)
            .await?;
    }
    Ok(Json(json!({ "failures": failures })))
}

/// A signature on one of the user's own keys: a device signed by the self-signing key, or the
/// master key signed by one of the user's devices. The key with the signature added goes into
/// `writes`.
fn sign_own(
    app: &App,
    me: &UserId,
    key_id: &str,
    signed: &Value,
    writes: &mut Vec<KeyWrite>,
) -> ApiResult<Option<Change>> {
    if let Some(mut stored) = app.e2ee.device_keys(me, key_id)? {
        if signed_part(&stored) != signed_part(signed) {
            return Err(ApiError::InvalidSignature(
                "the signed object does not match the device's keys".into(),
            ));
        }
        let ss = app
            .e2ee
            .cross_signing_key(me, SELF_SIGNING)?
            .ok_or_else(|| ApiError::NotFound("no self-signing key".into()))?;
        let (ss_id, ss_pk) = public_key(&ss)
            .ok_or_else(|| ApiError::Internal("stored self-signing key malformed".into()))?;
        if !signed_by(signed, me.as_str(), &ss_id, &ss_pk) {
            return Err(ApiError::InvalidSignature(
                "not signed by the self-signing key".into(),
            ));
        }
        let sig = signed["signatures"][me.as_str()][&ss_id].clone();
        merge_signatures(
            &mut stored,
            &json!({ "signatures": { me.as_str(): { ss_id: sig } } }),
        );
        writes.push(KeyWrite::DeviceKeys {
            device: key_id.to_owned(),
            keys: stored.clone(),
        });
        let display_name = app
            .accounts
            .device(me, key_id)?
            .and_then(|d| d.display_name);
        return Ok(Some(Change::Device {
            id: key_id.to_owned(),
            keys: Some(stored),
            display_name,
        }));
    }
    let mut master = app
        .e2ee
        .cross_signing_key(me, MASTER)?
        .filter(|m| public_key(m).is_some_and(|(_, pk)| pk == key_id))
        .ok_or_else(|| ApiError::NotFound(format!("no key {key_id}")))?;
    if signed_part(&master) != signed_part(signed) {
        return Err(ApiError::InvalidSignature(
            "the signed object does not match the master key".into(),
        ));
    }
    // Any of the user's devices may vouch for the master key.
    let mut added = Map::new();
    for (sig_id, sig) in signed["signatures"][me.as_str()]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Some(device) = sig_id.strip_prefix("ed25519:") else {
            continue;
        };
        let Some(keys) = app.e2ee.device_keys(me, device)? else {
            continue;
        };
        let Some(pk) = keys["keys"][sig_id.as_str()].as_str() else {
            continue;
        };
        if signed_by(signed, me.as_str(), sig_id, pk) {
            added.insert(sig_id.clone(), sig.clone());
        }
    }
    if added.is_empty() {
        return Err(ApiError::InvalidSignature(
            "not signed by any of the user's devices".into(),
        ));
    }
    merge_signatures(
        &mut master,
        &json!({ "signatures": { me.as_str(): added } }),
    );
    writes.push(KeyWrite::CrossSigningKey {
        usage: MASTER,
        key: Some(master.clone()),
    });
    let self_signing = app.e2ee.cross_signing_key(me, SELF_SIGNING)?;
    Ok(Some(Change::CrossSigning {
        master: Some(master),
        self_signing,
    }))
}

/// A signature on another user's master key, made with the signer's user-signing key: answers
/// the key's id (`ed25519:...`) and the signatures to store on it.
async fn sign_other(
    app: &App,
    me: &UserId,
    target: &UserId,
    key_id: &str,
    signed: &Value,
) -> ApiResult<(String, Value)> {
    let master = if app.is_local(target) {
        app.e2ee.cross_signing_key(target, MASTER)?
    } else {
        crate::service::e2ee::federation::remote_devices(app, target)
            .await
            .ok()
            .and_then(|d| d.get("master_key").cloned())
    };
    let master = master
        .filter(|m| public_key(m).is_some_and(|(_, pk)| pk == key_id))
        .ok_or_else(|| ApiError::NotFound(format!("no master key {key_id} for {target}")))?;
    if signed_part(&master) != signed_part(signed) {
        return Err(ApiError::InvalidSignature(
            "the signed object does not match the master key".into(),
        ));
    }
    let us = app
        .e2ee
        .cross_signing_key(me, USER_SIGNING)?
        .ok_or_else(|| ApiError::NotFound("no user-signing key".into()))?;
    let (us_id, us_pk) = public_key(&us)
        .ok_or_else(|| ApiError::Internal("stored user-signing key malformed".into()))?;
    if !signed_by(signed, me.as_str(), &us_id, &us_pk) {
        return Err(ApiError::InvalidSignature(
            "not signed by the user-signing key".into(),
        ));
    }
    let sig = signed["signatures"][me.as_str()][&us_id].clone();
    Ok((
        format!("ed25519:{key_id}"),
        json!({ me.as_str(): { us_id: sig } }),
    ))
}
