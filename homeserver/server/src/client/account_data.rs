//! Global and per-room account data (needed by sync; `m.direct`, `m.push_rules`, tags live here).

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject, Path},
    service::App,
};

/// Account data as clients set it; server-managed types have their own endpoints.
async fn put(
    app: &App,
    user: &ruma::UserId,
    room: &str,
    kind: &str,
    content: Value,
) -> ApiResult<()> {
    if kind.is_empty() {
        return Err(ApiError::InvalidParam("empty type".into()));
    }
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(ApiError::BadJson(format!(
            "{kind} cannot be set through this endpoint"
        )));
    }
    app.set_account_data(user, room, kind, &content).await
}

/// One entry; `M_NOT_FOUND` if the user never set it.
fn get(app: &App, user: &ruma::UserId, room: &str, kind: &str) -> ApiResult<Value> {
    app.account_data
        .get(user, room, kind)?
        .ok_or_else(|| ApiError::NotFound("Account data not found".into()))
}

pub async fn put_global(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, kind)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    put(&app, &s.user_id, "", &kind, Value::Object(body)).await?;
    Ok(Json(json!({})))
}

pub async fn get_global(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, kind)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    Ok(Json(get(&app, &s.user_id, "", &kind)?))
}

pub async fn put_room(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, room, kind)): Path<(String, String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let room = parse_room_id(&room)?;
    put(&app, &s.user_id, room.as_str(), &kind, Value::Object(body)).await?;
    Ok(Json(json!({})))
}

pub async fn get_room(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, room, kind)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let room = parse_room_id(&room)?;
    Ok(Json(get(&app, &s.user_id, room.as_str(), &kind)?))
}
