//! Global and per-room account data (needed by sync; `m.direct`, `m.push_rules`, tags live here).

use ruma::{
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data,
        set_room_account_data,
    },
    serde::Raw,
    UserId,
};
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::{raw_json, Ruma},
    service::App,
};

/// Account data as clients set it; server-managed types have their own endpoints.
async fn put<T>(
    app: &App,
    user: &UserId,
    room: &str,
    kind: &str,
    content: &Raw<T>,
) -> ApiResult<()> {
    if kind.is_empty() {
        return Err(ApiError::InvalidParam("empty type".into()));
    }
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(ApiError::BadJson(format!(
            "{kind} cannot be set through this endpoint"
        )));
    }
    let content: Value = content
        .deserialize_as_unchecked()
        .map_err(|e| ApiError::BadJson(e.to_string()))?;
    Ok(app.set_account_data(user, room, kind, &content).await?)
}

/// One entry; `M_NOT_FOUND` if the user never set it.
fn get<T>(app: &App, user: &UserId, room: &str, kind: &str) -> ApiResult<Raw<T>> {
    let v = app
        .account_data
        .get(user, room, kind)?
        .ok_or_else(|| ApiError::NotFound("Account data not found".into()))?;
    raw_json(&v)
}

pub async fn put_global(
    app: App,
    req: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    let (s, b) = (req.caller, req.body);
    s.require_self(b.user_id.as_str())?;
    put(&app, &s.user_id, "", &b.event_type.to_string(), &b.data).await?;
    Ok(set_global_account_data::v3::Response::new())
}

pub async fn get_global(
    app: App,
    req: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    let (s, b) = (req.caller, req.body);
    s.require_self(b.user_id.as_str())?;
    let data = get(&app, &s.user_id, "", &b.event_type.to_string())?;
    Ok(get_global_account_data::v3::Response::new(data))
}

pub async fn put_room(
    app: App,
    req: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    let (s, b) = (req.caller, req.body);
    s.require_self(b.user_id.as_str())?;
    let kind = b.event_type.to_string();
    put(&app, &s.user_id, b.room_id.as_str(), &kind, &b.data).await?;
    Ok(set_room_account_data::v3::Response::new())
}

pub async fn get_room(
    app: App,
    req: Ruma<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    let (s, b) = (req.caller, req.body);
    s.require_self(b.user_id.as_str())?;
    let data = get(
        &app,
        &s.user_id,
        b.room_id.as_str(),
        &b.event_type.to_string(),
    )?;
    Ok(get_room_account_data::v3::Response::new(data))
}
