//! Global and per-room account data (needed by sync; `m.direct`, `m.push_rules`, tags live here).

use axum::{extract::State, Json};
use plexus_store::schema;
use serde_json::{json, Value};

use super::membership::parse_room_id;
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
    store(app, user, room, kind, content).await
}

/// Account data is stored with the stream position of its last change, so sync can send only
/// what changed.
pub async fn store(
    app: &App,
    user: &ruma::UserId,
    room: &str,
    kind: &str,
    content: Value,
) -> ApiResult<()> {
    let (count, ()) = app.store.commit_with_count(|count, b| {
        schema::USER_ROOM_TYPE__ACCOUNT_DATA.put(
            b,
            (user.as_str(), room, kind),
            &json!({ "count": count, "content": content }),
        )
    })?;
    if room.is_empty() && matches!(kind, "m.push_rules" | "m.ignored_user_list") {
        app.user_push.forget(user);
    }
    app.store.flush().await?;
    app.notifier.wake([user], count);
    Ok(())
}

pub fn load(
    app: &crate::service::Services,
    user: &ruma::UserId,
    room: &str,
    kind: &str,
) -> ApiResult<Value> {
    let v: Value = schema::USER_ROOM_TYPE__ACCOUNT_DATA
        .get(&app.store.kv, (user.as_str(), room, kind))?
        .ok_or_else(|| ApiError::NotFound("Account data not found".into()))?;
    Ok(v.get("content").cloned().unwrap_or(json!({})))
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
    Ok(Json(load(&app, &s.user_id, "", &kind)?))
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
    Ok(Json(load(&app, &s.user_id, room.as_str(), &kind)?))
}
