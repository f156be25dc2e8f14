//! Room tags, kept in the room's `m.tag` account data as the spec lays out.

use axum::{extract::State, Json};
use serde_json::{json, Map, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject, Path},
    service::{accounts::Session, App},
};

fn current(app: &App, s: &Session, room: &str) -> ApiResult<Map<String, Value>> {
    Ok(app
        .account_data
        .get(&s.user_id, room, "m.tag")?
        .and_then(|v| v.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

pub async fn list(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, room)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let room = parse_room_id(&room)?;
    Ok(Json(json!({ "tags": current(&app, &s, room.as_str())? })))
}

pub async fn put(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let room = parse_room_id(&room)?;
    if tag.is_empty() || tag.len() > 255 {
        return Err(ApiError::InvalidParam("tag must be 1 to 255 bytes".into()));
    }
    if body.get("order").is_some_and(|o| !o.is_number()) {
        return Err(ApiError::BadJson("order must be a number".into()));
    }
    let mut tags = current(&app, &s, room.as_str())?;
    tags.insert(tag, Value::Object(body));
    app.set_account_data(&s.user_id, room.as_str(), "m.tag", &json!({ "tags": tags }))
        .await?;
    Ok(Json(json!({})))
}

pub async fn delete(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let room = parse_room_id(&room)?;
    let mut tags = current(&app, &s, room.as_str())?;
    if tags.remove(&tag).is_some() {
        app.set_account_data(&s.user_id, room.as_str(), "m.tag", &json!({ "tags": tags }))
            .await?;
    }
    Ok(Json(json!({})))
}
