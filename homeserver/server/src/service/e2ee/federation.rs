//! Other servers' users' keys: `/user/keys/query` and `/user/keys/claim` sent to their
//! servers, our copy of a remote user's device list (fetched with `/user/devices` and kept
//! while a local user shares a room with them), and the device list EDUs that keep it current.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{json, Map, Value};

use super::{remote_devices::RemoteCopy, E2eeError};
use crate::{
    error::client_text,
    service::{federation::sender::enc, App},
};

/// Keys of `server`'s users: tracked users from our copy of their device list, the others
/// asked for with `/user/keys/query`.
pub async fn query_remote(
    app: &App,
    server: &ServerName,
    users: &BTreeMap<OwnedUserId, Vec<String>>,
) -> Result<Value, String> {
    let mut out = json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} });
    let mut ask = Map::new();
    for (user, wanted) in users {
        if !app.shared_with_local(user).map_err(client_text)? {
            forget_untracked(app, user).map_err(client_text)?;
            ask.insert(user.to_string(), json!(wanted));
            continue;
        }
        let list = remote_devices(app, user).await?;
        let mut devices = Map::new();
        for d in list["devices"].as_array().into_iter().flatten() {
            let (Some(id), Some(keys)) = (d["device_id"].as_str(), d.get("keys")) else {
                continue;
            };
            if wanted.is_empty() || wanted.iter().any(|w| w == id) {
                let mut keys = keys.clone();
                if let Some(name) = d["device_display_name"].as_str() {
                    keys["unsigned"] = json!({ "device_display_name": name });
                }
                devices.insert(id.to_owned(), keys);
            }
        }
        out["device_keys"][user.as_str()] = Value::Object(devices);
        for (field, from) in [
            ("master_keys", "master_key"),
            ("self_signing_keys", "self_signing_key"),
        ] {
            if let Some(k) = list.get(from) {
                out[field][user.as_str()] = k.clone();
            }
        }
    }
    if !ask.is_empty() {
        let fed = app.fed().map_err(|e| e.to_string())?;
        let answer = fed
            .request(
                app,
                server,
                http::Method::POST,
                "/_matrix/federation/v1/user/keys/query",
                Some(json!({ "device_keys": ask })),
                true,
            )
            .await
            .map_err(|e| e.to_string())?;
        for field in ["device_keys", "master_keys", "self_signing_keys"] {
            for (user, v) in answer[field].as_object().into_iter().flatten() {
                out[field][user.as_str()] = v.clone();
            }
        }
    }
    Ok(out)
}

/// `/user/keys/claim` on `server` for its users.
pub async fn claim_remote(
    app: &App,
    server: &ServerName,
    users: Map<String, Value>,
) -> Result<Value, String> {
    let fed = app.fed().map_err(|e| e.to_string())?;
    fed.request(
        app,
        server,
        http::Method::POST,
        "/_matrix/federation/v1/user/keys/claim",
        Some(json!({ "one_time_keys": users })),
        true,
    )
    .await
    .map_err(|e| e.to_string())
}

/// A remote user's device list: our tracked copy, or fetched with `/user/devices` (and kept
/// while a local user shares a room with them).
pub async fn remote_devices(app: &App, user: &UserId) -> Result<Value, String> {
    if let Some(list) = app.e2ee.remote_devices(user).map_err(|e| e.to_string())? {
        return Ok(list);
    }
    let fed = app.fed().map_err(|e| e.to_string())?;
    let path = format!("/_matrix/federation/v1/user/devices/{}", enc(user.as_str()));
    let list = fed
        .request(
            app,
            user.server_name(),
            http::Method::GET,
            &path,
            None,
            true,
        )
        .await
        .map_err(|e| e.to_string())?;
    if list["user_id"] != user.as_str() || !list["devices"].is_array() {
        return Err(format!(
            "{} answered a malformed device list",
            user.server_name()
        ));
    }
    if app.shared_with_local(user).map_err(client_text)? {
        app.e2ee
            .keep_remote_devices(user, &list)
            .map_err(|e| e.to_string())?;
    }
    Ok(list)
}

/// The remote user an EDU from `origin` speaks for, if it may and we track them.
fn tracked_sender(
    app: &App,
    origin: &ServerName,
    content: &Value,
) -> Result<Option<OwnedUserId>, E2eeError> {
    let Some(user) = content["user_id"]
        .as_str()
        .and_then(|u| OwnedUserId::try_from(u).ok())
    else {
        return Ok(None);
    };
    if user.server_name() != origin {
        tracing::warn!(%origin, %user, "device list EDU for a user of another server");
        return Ok(None);
    }
    if app.shared_with_local(&user)? {
        return Ok(Some(user));
    }
    forget_untracked(app, &user)?;
    Ok(None)
}

/// We stop following the EDUs of a user no local user shares a room with, so a copy of their
/// device list would go stale: drop it, and fetch afresh if they come back.
fn forget_untracked(app: &App, user: &UserId) -> Result<(), E2eeError> {
    app.e2ee.forget_remote_devices(user)
}

/// `m.device_list_update`: apply it to our copy when it follows on from what we have; when
/// an update was missed, drop the copy and fetch the list again.
pub async fn device_list_update(
    app: &App,
    origin: &ServerName,
    content: &Value,
) -> Result<(), E2eeError> {
    let Some(user) = tracked_sender(app, origin, content)? else {
        return Ok(());
    };
    let (Some(device), Some(stream_id)) =
        (content["device_id"].as_str(), content["stream_id"].as_u64())
    else {
        return Ok(());
    };
    let mut copy = RemoteCopy::Keep;
    let mut resync = false;
    if let Some(mut list) = app.e2ee.remote_devices(&user)? {
        let known = list["stream_id"].as_u64().unwrap_or(0);
        if stream_id <= known {
            return Ok(());
        }
        let prev: Vec<u64> = content["prev_id"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        if prev.is_empty() || prev.contains(&known) {
            let devices = list["devices"].as_array_mut();
            if let Some(devices) = devices {
                devices.retain(|d| d["device_id"] != device);
                if content["deleted"] != true {
                    let mut d = json!({ "device_id": device });
                    if let Some(k) = content.get("keys") {
                        d["keys"] = k.clone();
                    }
                    if let Some(n) = content.get("device_display_name") {
                        d["device_display_name"] = n.clone();
                    }
                    devices.push(d);
                }
            }
            list["stream_id"] = json!(stream_id);
            copy = RemoteCopy::Replace(list);
        } else {
            tracing::info!(%user, stream_id, known, "missed a device list update; fetching the list again");
            copy = RemoteCopy::Forget;
            resync = true;
        }
    }
    app.remote_device_list_changed(&user, copy).await?;
    if resync {
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = remote_devices(&app, &user).await {
                tracing::info!(%user, error = %e, "device list re-sync failed; the next query retries");
            }
        });
    }
    Ok(())
}

/// `m.signing_key_update`: new public cross-signing keys of a remote user.
pub async fn signing_key_update(
    app: &App,
    origin: &ServerName,
    content: &Value,
) -> Result<(), E2eeError> {
    let Some(user) = tracked_sender(app, origin, content)? else {
        return Ok(());
    };
    let mut copy = RemoteCopy::Keep;
    if let Some(mut list) = app.e2ee.remote_devices(&user)? {
        for field in ["master_key", "self_signing_key"] {
            let key = &content[field];
            if key["user_id"] == user.as_str() {
                list[field] = key.clone();
            }
        }
        copy = RemoteCopy::Replace(list);
    }
    app.remote_device_list_changed(&user, copy).await
}
