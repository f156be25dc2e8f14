//! Reporting events, rooms and users to the server's administrators. Reports are stored for
//! the admin API; the reporter learns nothing about what happens next.

use axum::{extract::State, Json};
use ruma::{EventId, UserId};
use serde_json::{json, Map, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject, Path},
    service::{accounts::Session, App},
};

fn reason(body: &Map<String, Value>) -> ApiResult<Option<String>> {
    match body.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) if r.len() <= 1000 => Ok(Some(r.clone())),
        Some(_) => Err(ApiError::BadJson(
            "reason must be a string of at most 1000 bytes".into(),
        )),
    }
}

async fn file(
    app: &App,
    s: &Session,
    subject: Value,
    reason: Option<String>,
) -> ApiResult<Json<Value>> {
    let id = app.reports.file(&s.user_id, &subject, reason.as_deref())?;
    app.store.flush().await?;
    tracing::info!(reporter = %s.user_id, report = id, "content reported");
    Ok(Json(json!({})))
}

pub async fn report_event(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    if body.get("score").is_some_and(|v| !v.is_i64()) {
        return Err(ApiError::BadJson("score must be an integer".into()));
    }
    // Only events the reporter can see may be reported; others are indistinguishable from absent.
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.room(&room_id)?.ok_or_else(not_found)?;
    let short = app.short_event(&event_id)?.ok_or_else(not_found)?;
    let pdu = app.pdu_by_short(short)?.ok_or_else(not_found)?;
    let in_room = app
        .event_position(short)?
        .is_some_and(|(r, _)| r == room.short);
    if !in_room || !app.can_see(&s.user_id, &room_id, short, &pdu)? {
        return Err(not_found());
    }
    let reason = reason(&body)?;
    file(
        &app,
        &s,
        json!({ "room_id": room_id, "event_id": event_id }),
        reason,
    )
    .await
}

pub async fn report_room(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    app.room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Room not found".into()))?;
    let reason = reason(&body)?;
    file(&app, &s, json!({ "room_id": room_id }), reason).await
}

pub async fn report_user(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    // Users of other servers can be reported once this server has seen them in a room
    // (as the user directory and invites show them: MSC4260).
    let known = match app.is_local(&user) {
        true => app.user(&user)?.is_some(),
        false => !app.user_rooms(&user)?.is_empty(),
    };
    if !known {
        return Err(ApiError::NotFound("User not found".into()));
    }
    let reason = reason(&body)?;
    file(&app, &s, json!({ "user_id": user }), reason).await
}
