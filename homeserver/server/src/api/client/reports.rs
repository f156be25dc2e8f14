//! Reporting events, rooms and users to the server's administrators. Reports are stored for
//! the admin API; the reporter learns nothing about what happens next.

use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{accounts::Session, App},
};

fn reason(reason: Option<String>) -> ApiResult<Option<String>> {
    match reason {
        Some(r) if r.len() > 1000 => Err(ApiError::BadJson(
            "reason must be a string of at most 1000 bytes".into(),
        )),
        r => Ok(r),
    }
}

async fn file(app: &App, s: &Session, subject: Value, reason: Option<String>) -> ApiResult<()> {
    let id = app.reports.file(&s.user_id, &subject, reason.as_deref())?;
    app.store.flush().await?;
    tracing::info!(reporter = %s.user_id, report = id, "content reported");
    Ok(())
}

pub async fn report_event(
    app: App,
    req: Ruma<report_content::v3::Request>,
) -> ApiResult<report_content::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let (room_id, event_id) = (&body.room_id, &body.event_id);
    // Only events the reporter can see may be reported; others are indistinguishable from absent.
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.rooms.room(room_id)?.ok_or_else(not_found)?;
    let short = app.rooms.short_event(event_id)?.ok_or_else(not_found)?;
    let pdu = app.rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    let in_room = app
        .rooms
        .event_position(short)?
        .is_some_and(|(r, _)| r == room.short);
    if !in_room || !app.rooms.can_see(&s.user_id, room_id, short, &pdu)? {
        return Err(not_found());
    }
    let reason = reason(body.reason)?;
    let subject = json!({ "room_id": room_id, "event_id": event_id });
    file(&app, &s, subject, reason).await?;
    Ok(report_content::v3::Response::new())
}

pub async fn report_room(
    app: App,
    req: Ruma<report_room::v3::Request>,
) -> ApiResult<report_room::v3::Response> {
    let (s, body) = (req.caller, req.body);
    app.rooms
        .room(&body.room_id)?
        .ok_or_else(|| ApiError::NotFound("Room not found".into()))?;
    // ruma reads an absent reason (optional in v1.13) as an empty one.
    let reason = reason(Some(body.reason).filter(|r| !r.is_empty()))?;
    file(&app, &s, json!({ "room_id": body.room_id }), reason).await?;
    Ok(report_room::v3::Response::new())
}

pub async fn report_user(
    app: App,
    req: Ruma<report_user::v3::Request>,
) -> ApiResult<report_user::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let user = body.user_id;
    // Users of other servers can be reported once this server has seen them in a room
    // (as the user directory and invites show them: MSC4260).
    let known = match app.is_local(&user) {
        true => app.accounts.user(&user)?.is_some(),
        false => !app.rooms.user_rooms(&user)?.is_empty(),
    };
    if !known {
        return Err(ApiError::NotFound("User not found".into()));
    }
    let reason = reason(Some(body.reason).filter(|r| !r.is_empty()))?;
    file(&app, &s, json!({ "user_id": user }), reason).await?;
    Ok(report_user::v3::Response::new())
}
