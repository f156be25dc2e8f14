//! Typing notifications, read receipts and read markers.

use axum::{extract::State, Json};
use ruma::{EventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Path},
    service::{accounts::Session, ephemeral::MAX_TYPING_MS, rooms::RoomRef, App},
};

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

pub async fn typing(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, user)): Path<(String, String)>,
    Body(body): Body<TypingBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    s.require_self(user.as_str())?;
    if !app.is_joined(&s.user_id, &room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let timeout = body
        .typing
        .then(|| body.timeout.unwrap_or(30_000).min(MAX_TYPING_MS));
    app.set_typing(&room_id, &s.user_id, timeout)?;
    Ok(Json(json!({})))
}

/// The room and event a receipt or marker points at: the user must be joined and the event
/// must be in that room.
fn target(app: &App, s: &Session, room_id: &RoomId, event_id: &str) -> ApiResult<RoomRef> {
    let event_id = EventId::parse(event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let room = app.room_or_forbidden(room_id)?;
    if !app.is_joined(&s.user_id, room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let in_room = app
        .short_event(&event_id)?
        .and_then(|short| app.event_position(short).ok().flatten())
        .is_some_and(|(r, _)| r == room.short);
    if !in_room {
        return Err(ApiError::NotFound("Event not found in this room".into()));
    }
    Ok(room)
}

async fn apply(
    app: &App,
    s: &Session,
    room_id: &RoomId,
    kind: &str,
    event_id: &str,
    thread: &str,
) -> ApiResult<()> {
    let room = target(app, s, room_id, event_id)?;
    match kind {
        "m.read" | "m.read.private" => {
            app.set_receipt(room_id, room.short, &s.user_id, kind, event_id, thread)
                .await
        }
        "m.fully_read" => {
            app.set_account_data(
                &s.user_id,
                room_id.as_str(),
                "m.fully_read",
                &json!({ "event_id": event_id }),
            )
            .await
        }
        other => Err(ApiError::InvalidParam(format!(
            "unknown receipt type {other}"
        ))),
    }
}

#[derive(Deserialize, Default)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

pub async fn receipt(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind, event_id)): Path<(String, String, String)>,
    Body(body): Body<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    if !matches!(kind.as_str(), "m.read" | "m.read.private" | "m.fully_read") {
        return Err(ApiError::InvalidParam(format!(
            "unknown receipt type {kind}"
        )));
    }
    let thread = match body.thread_id.as_deref() {
        None => "",
        Some("main") => "main",
        Some(t) if kind != "m.fully_read" && EventId::parse(t).is_ok() => t,
        Some(t) => return Err(ApiError::InvalidParam(format!("invalid thread_id {t}"))),
    };
    apply(&app, &s, &room_id, &kind, &event_id, thread).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct MarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

pub async fn read_markers(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<MarkersBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    // Validate every marker before storing any.
    for ev in [&body.fully_read, &body.read, &body.read_private]
        .into_iter()
        .flatten()
    {
        target(&app, &s, &room_id, ev)?;
    }
    if let Some(ev) = &body.fully_read {
        apply(&app, &s, &room_id, "m.fully_read", ev, "").await?;
    }
    if let Some(ev) = &body.read {
        apply(&app, &s, &room_id, "m.read", ev, "").await?;
    }
    if let Some(ev) = &body.read_private {
        apply(&app, &s, &room_id, "m.read.private", ev, "").await?;
    }
    Ok(Json(json!({})))
}
