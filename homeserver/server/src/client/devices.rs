//! Device management.

use axum::{extract::State, Json};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Path},
    service::accounts::PASSWORD_FLOW,
    service::{accounts::DeviceRecord, App},
};

/// A device as clients see it. `last_seen_ip` is always present (null when the device has made
/// no request since this was recorded): matrix-nio rejects a device list without it.
fn device_json(app: &App, user: &UserId, id: &str, d: &DeviceRecord) -> ApiResult<Value> {
    let seen = app.device_seen(user, id)?;
    let (ts, ip) = match seen {
        Some(s) => (s.ts.max(d.last_seen_ts), Some(s.ip)),
        None => (d.last_seen_ts, None),
    };
    Ok(json!({
        "device_id": id,
        "display_name": d.display_name,
        "last_seen_ts": ts,
        "last_seen_ip": ip,
    }))
}

pub async fn list(State(app): State<App>, Auth(s): Auth) -> ApiResult<Json<Value>> {
    let devices = app
        .devices(&s.user_id)?
        .iter()
        .map(|(id, d)| device_json(&app, &s.user_id, id, d))
        .collect::<ApiResult<Vec<Value>>>()?;
    Ok(Json(json!({ "devices": devices })))
}

pub async fn get(
    State(app): State<App>,
    Auth(s): Auth,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = app
        .device(&s.user_id, &device_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown device".into()))?;
    Ok(Json(device_json(&app, &s.user_id, &device_id, &d)?))
}

#[derive(Deserialize)]
pub struct UpdateBody {
    display_name: Option<String>,
}

pub async fn update(
    State(app): State<App>,
    Auth(s): Auth,
    Path(device_id): Path<String>,
    Body(body): Body<UpdateBody>,
) -> ApiResult<Json<Value>> {
    let mut d = app
        .device(&s.user_id, &device_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown device".into()))?;
    if let Some(name) = body.display_name {
        if name.len() > 512 {
            return Err(ApiError::InvalidParam("display_name too long".into()));
        }
        d.display_name = Some(name);
    }
    let mut b = plexus_store::Batch::default();
    app.put_device(&s.user_id, &device_id, &d, &mut b)?;
    // Other users see device names in key queries: a rename is a device list change.
    let change = crate::e2ee::device_lists::Change::Device {
        keys: app.device_keys(&s.user_id, &device_id)?,
        id: device_id,
        display_name: d.display_name,
    };
    crate::e2ee::device_lists::commit_local_changes(&app, &s.user_id, vec![change], b).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    auth: Option<Value>,
}

pub async fn delete(
    State(app): State<App>,
    Auth(s): Auth,
    Path(device_id): Path<String>,
    Body(body): Body<DeleteBody>,
) -> ApiResult<Json<Value>> {
    if app.device(&s.user_id, &device_id)?.is_none() {
        return Err(ApiError::NotFound("Unknown device".into()));
    }
    app.uia(body.auth.clone(), PASSWORD_FLOW, Some(s.user_id.clone()))
        .await?;
    app.delete_devices(&s.user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<Value>,
}

pub async fn delete_many(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<DeleteManyBody>,
) -> ApiResult<Json<Value>> {
    app.uia(body.auth.clone(), PASSWORD_FLOW, Some(s.user_id.clone()))
        .await?;
    app.delete_devices(&s.user_id, &body.devices).await?;
    Ok(Json(json!({})))
}
