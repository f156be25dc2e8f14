//! E2EE over federation: the `/user/devices`, `/user/keys/query` and `/user/keys/claim`
//! endpoints for our users. The same requests to other servers for theirs, and the device list
//! EDUs, are the service's (`crate::service::e2ee::federation`).

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use ruma::{
    api::federation::keys::{claim_keys, get_keys},
    OwnedUserId,
};
use serde_json::{json, Map, Value};

use super::query::{claim_local, local_keys, KeysAnswer};
use crate::{
    error::{ApiError, ApiResult},
    http::{extract::Path, ruma::Ruma, x_matrix::FedRequest},
    service::{
        e2ee::cross_signing::{MASTER, SELF_SIGNING},
        App,
    },
};

/// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices with the stream
/// id of their latest change, so the asking server can follow the EDUs from there.
/// Hand-typed: ruma's `UserDevice` requires `keys`; a device that never uploaded any has none.
pub async fn user_devices(
    State(app): State<App>,
    Path(user): Path<String>,
    _req: FedRequest,
) -> ApiResult<Json<Value>> {
    let user = OwnedUserId::try_from(user.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    if !app.is_local(&user) {
        return Err(ApiError::InvalidParam("user is not on this server".into()));
    }
    if app.accounts.user(&user)?.is_none() {
        return Err(ApiError::NotFound("unknown user".into()));
    }
    let stream_id = app.e2ee.device_list_position(&user)?.unwrap_or(0);
    let mut devices = vec![];
    for (device, _) in app.accounts.devices(&user)? {
        let mut d = json!({ "device_id": device });
        if let Some(keys) = app.e2ee.device_keys(&user, &device)? {
            d["keys"] = keys;
        }
        devices.push(d);
    }
    let mut out = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
    if let Some(m) = app.e2ee.cross_signing_key(&user, MASTER)? {
        out["master_key"] = m;
    }
    if let Some(k) = app.e2ee.cross_signing_key(&user, SELF_SIGNING)? {
        out["self_signing_key"] = k;
    }
    Ok(Json(out))
}

/// `POST /_matrix/federation/v1/user/keys/query`.
pub async fn user_keys_query(
    app: App,
    req: Ruma<get_keys::v1::Request>,
) -> ApiResult<get_keys::v1::Response> {
    // Only our own users.
    let users: BTreeMap<OwnedUserId, Vec<String>> = req
        .body
        .device_keys
        .into_iter()
        .filter(|(user, _)| user.server_name() == app.server_name())
        .map(|(user, devices)| (user, devices.iter().map(ToString::to_string).collect()))
        .collect();
    let mut out = KeysAnswer::default();
    local_keys(&app, &users, None, &mut out)?;
    let mut res = get_keys::v1::Response::new(typed(out.device_keys)?);
    res.master_keys = typed(out.master_keys)?;
    res.self_signing_keys = typed(out.self_signing_keys)?;
    Ok(res)
}

/// Keys as `local_keys` gives them, as ruma's maps.
fn typed<T: serde::de::DeserializeOwned>(keys: Map<String, Value>) -> ApiResult<T> {
    serde_json::from_value(Value::Object(keys))
        .map_err(|e| ApiError::Internal(format!("queried keys: {e}")))
}

/// `POST /_matrix/federation/v1/user/keys/claim`.
pub async fn user_keys_claim(
    app: App,
    req: Ruma<claim_keys::v1::Request>,
) -> ApiResult<claim_keys::v1::Response> {
    // Only our own users, as `{user: {device: algorithm}}`.
    let mut users = Map::new();
    for (user, devices) in req.body.one_time_keys {
        if user.server_name() != app.server_name() {
            continue;
        }
        let devices: Map<String, Value> = devices
            .into_iter()
            .map(|(device, algorithm)| (device.to_string(), json!(algorithm.as_str())))
            .collect();
        users.insert(user.to_string(), Value::Object(devices));
    }
    let keys = match users.is_empty() {
        true => Map::new(),
        false => claim_local(&app, &users).await?,
    };
    let keys = serde_json::from_value(Value::Object(keys))
        .map_err(|e| ApiError::Internal(format!("claimed keys: {e}")))?;
    Ok(claim_keys::v1::Response::new(keys))
}
