//! Typing notifications, read receipts and read markers.

use axum::{extract::State, Json};
use ruma::{
    api::client::{read_marker::set_read_marker, receipt::create_receipt},
    events::receipt::ReceiptThread,
    EventId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Body, Path},
        ruma::Ruma,
    },
    service::{accounts::Session, ephemeral::MAX_TYPING_MS, rooms::RoomRef, App},
};

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// Hand-typed: ruma's request needs a `timeout` with `typing: true`, which the spec leaves
/// optional.
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
    if !app.rooms.is_joined(&s.user_id, &room_id)? {
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
    let room = app.rooms.room_or_forbidden(room_id)?;
    if !app.rooms.is_joined(&s.user_id, room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let in_room = app
        .rooms
        .short_event(&event_id)?
        .and_then(|short| app.rooms.event_position(short).ok().flatten())
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
                .await?;
            Ok(())
        }
        "m.fully_read" => Ok(app
            .set_account_data(
                &s.user_id,
                room_id.as_str(),
                "m.fully_read",
                &json!({ "event_id": event_id }),
            )
            .await?),
        other => Err(ApiError::InvalidParam(format!(
            "unknown receipt type {other}"
        ))),
    }
}

pub async fn receipt(
    app: App,
    req: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let kind = body.receipt_type.to_string();
    if !matches!(kind.as_str(), "m.read" | "m.read.private" | "m.fully_read") {
        return Err(ApiError::InvalidParam(format!(
            "unknown receipt type {kind}"
        )));
    }
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => "",
        ReceiptThread::Main => "main",
        ReceiptThread::Thread(t) if kind != "m.fully_read" => t.as_str(),
        t => {
            let t = t.as_str().unwrap_or_default();
            return Err(ApiError::InvalidParam(format!("invalid thread_id {t}")));
        }
    };
    apply(
        &app,
        &s,
        &body.room_id,
        &kind,
        body.event_id.as_str(),
        thread,
    )
    .await?;
    Ok(create_receipt::v3::Response::new())
}

pub async fn read_markers(
    app: App,
    req: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let room_id = &body.room_id;
    let markers = [
        ("m.fully_read", &body.fully_read),
        ("m.read", &body.read_receipt),
        ("m.read.private", &body.private_read_receipt),
    ];
    // Validate every marker before storing any.
    for (_, ev) in markers {
        if let Some(ev) = ev {
            target(&app, &s, room_id, ev.as_str())?;
        }
    }
    for (kind, ev) in markers {
        if let Some(ev) = ev {
            apply(&app, &s, room_id, kind, ev.as_str(), "").await?;
        }
    }
    Ok(set_read_marker::v3::Response::new())
}
