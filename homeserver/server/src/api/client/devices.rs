//! Device management.

use ruma::{
    api::client::device::{
        delete_device, delete_devices, get_device, get_devices, update_device, Device,
    },
    MilliSecondsSinceUnixEpoch, UInt, UserId,
};

use crate::{
    api::client::account::uia_json,
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::accounts::PASSWORD_FLOW,
    service::{accounts::DeviceRecord, App},
};

/// A device as clients see it. `last_seen_ip` is always present (null when the device has made
/// no request since this was recorded): matrix-nio rejects a device list without it.
fn device(app: &App, user: &UserId, id: &str, d: &DeviceRecord) -> ApiResult<Device> {
    let seen = app.accounts.device_seen(user, id)?;
    let (ts, ip) = match seen {
        Some(s) => (s.ts.max(d.last_seen_ts), Some(s.ip)),
        None => (d.last_seen_ts, None),
    };
    let mut dev = Device::new(id.into());
    dev.display_name = d.display_name.clone();
    dev.last_seen_ip = ip;
    dev.last_seen_ts = Some(MilliSecondsSinceUnixEpoch(
        UInt::try_from(ts).unwrap_or(UInt::MAX),
    ));
    Ok(dev)
}

pub async fn list(
    app: App,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let s = req.caller;
    let devices = app
        .accounts
        .devices(&s.user_id)?
        .iter()
        .map(|(id, d)| device(&app, &s.user_id, id, d))
        .collect::<ApiResult<Vec<Device>>>()?;
    Ok(get_devices::v3::Response::new(devices))
}

pub async fn get(
    app: App,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let (s, device_id) = (req.caller, req.body.device_id);
    let d = app
        .accounts
        .device(&s.user_id, device_id.as_str())?
        .ok_or_else(|| ApiError::NotFound("Unknown device".into()))?;
    Ok(get_device::v3::Response::new(device(
        &app,
        &s.user_id,
        device_id.as_str(),
        &d,
    )?))
}

pub async fn update(
    app: App,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let device_id = body.device_id.to_string();
    let mut d = app
        .accounts
        .device(&s.user_id, &device_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown device".into()))?;
    if let Some(name) = body.display_name {
        if name.len() > 512 {
            return Err(ApiError::InvalidParam("display_name too long".into()));
        }
        d.display_name = Some(name);
    }
    app.update_device(&s.user_id, &device_id, d).await?;
    Ok(update_device::v3::Response::new())
}

pub async fn delete(
    app: App,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let device_id = body.device_id.to_string();
    if app.accounts.device(&s.user_id, &device_id)?.is_none() {
        return Err(ApiError::NotFound("Unknown device".into()));
    }
    app.uia(
        uia_json(body.auth.as_ref())?,
        PASSWORD_FLOW,
        Some(s.user_id.clone()),
    )
    .await?;
    app.delete_devices(&s.user_id, &[device_id]).await?;
    Ok(delete_device::v3::Response::new())
}

pub async fn delete_many(
    app: App,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let (s, body) = (req.caller, req.body);
    app.uia(
        uia_json(body.auth.as_ref())?,
        PASSWORD_FLOW,
        Some(s.user_id.clone()),
    )
    .await?;
    let devices: Vec<String> = body.devices.iter().map(|d| d.to_string()).collect();
    app.delete_devices(&s.user_id, &devices).await?;
    Ok(delete_devices::v3::Response::new())
}
