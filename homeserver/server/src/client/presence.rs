//! `/presence/{userId}/status`.

use axum::{extract::State, Json};
use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject, Path},
    service::App,
};

fn parse_user(s: &str) -> ApiResult<OwnedUserId> {
    UserId::parse(s).map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))
}

pub fn check_state(p: &str) -> ApiResult<()> {
    match p {
        "online" | "offline" | "unavailable" => Ok(()),
        _ => Err(ApiError::BadJson(
            "presence must be online, offline or unavailable".into(),
        )),
    }
}

pub async fn set(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let user = parse_user(&user)?;
    s.require_self(user.as_str())?;
    let presence = body
        .get("presence")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadJson("presence is required".into()))?;
    check_state(presence)?;
    let msg = match body.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.len() <= 1024 => Some(m.clone()),
        Some(_) => {
            return Err(ApiError::BadJson(
                "status_msg must be a string of at most 1024 bytes".into(),
            ))
        }
    };
    app.update_presence(&user, presence, Some(msg), presence != "offline")
        .await?;
    Ok(Json(json!({})))
}

pub async fn get(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = parse_user(&user)?;
    // Users of other servers have no account here; what their servers told us is kept as
    // for anyone else, and shown to those who share a room with them.
    if app.is_local(&user) && app.user(&user)?.is_none() {
        return Err(ApiError::NotFound("Unknown user".into()));
    }
    if user != s.user_id && !app.presence_audience(&s.user_id)?.contains(&user) {
        return Err(ApiError::Forbidden(
            "You do not share a room with this user".into(),
        ));
    }
    match app.presence(&user)? {
        Some(rec) => Ok(Json(rec.content())),
        None => Ok(Json(json!({ "presence": "offline" }))),
    }
}
