//! Room state, sending, redaction, single events and member lists.

use axum::{extract::State, Json};
use plexus_core::builder::NewEvent;
use ruma::{
    api::client::{
        membership::get_member_events,
        message::send_message_event,
        redact::redact_event,
        room::get_room_event,
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    serde::Raw,
    OwnedEventId, RoomId,
};
use serde_json::{json, Map, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Path},
        ruma::{raw_json, Ruma},
    },
    service::{accounts::Session, ratelimit::Action, writer::RoomWriter, App},
};

fn check_type(kind: &str) -> ApiResult<()> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(ApiError::InvalidParam(
            "event type must be 1 to 255 bytes".into(),
        ));
    }
    Ok(())
}

/// Event content as ruma hands it over (a JSON object, its parser made sure).
fn event_content<T>(raw: &Raw<T>) -> ApiResult<Value> {
    raw.deserialize_as_unchecked()
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

pub async fn all_state(
    app: App,
    req: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let (s, room_id) = (req.caller, req.body.room_id);
    let room = app.rooms.room_or_forbidden(&room_id)?;
    let hash = app.visible_state_hash(&s.user_id, &room)?;
    let map = app.rooms.state_map(hash)?;
    let mut out = Vec::with_capacity(map.len());
    for short in map.values() {
        if let Some(stored) = app.rooms.pdu_json(*short)? {
            let ev = app.client_event_inner(*short, &stored, &room_id, Some(&s), true)?;
            out.push(raw_json(&ev)?);
        }
    }
    Ok(get_state_events::v3::Response::new(out))
}

/// Also at `.../state/{event_type}` and `.../state/{event_type}/`: the empty state key.
/// ruma's `StateEventType` gives back the type a client sent as long as no `unstable-msc*`
/// feature of ruma-events is on (their aliases read as the stable names; see the test below).
pub async fn get_state(
    app: App,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let room = app.rooms.room_or_forbidden(&b.room_id)?;
    let hash = app.visible_state_hash(&s.user_id, &room)?;
    let not_found = || ApiError::NotFound("Event not found".into());
    let short = app
        .rooms
        .state_get(hash, &b.event_type.to_string(), &b.state_key)?
        .ok_or_else(not_found)?;
    let stored = app.rooms.pdu_json(short)?.ok_or_else(not_found)?;
    let body = match b.format.as_str() {
        "event" => app.client_event_inner(short, &stored, &b.room_id, Some(&s), true)?,
        "content" => stored.get("content").cloned().unwrap_or(json!({})),
        f => return Err(ApiError::InvalidParam(format!("unknown format {f}"))),
    };
    Ok(get_state_event_for_key::v3::Response::new(
        crate::service::raw_value(&body)?,
    ))
}

/// Also at `.../state/{event_type}` and `.../state/{event_type}/`: the empty state key.
pub async fn put_state(
    app: App,
    req: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let kind = b.event_type.to_string();
    check_type(&kind)?;
    app.limit_user(&s, Action::Events)?;
    let ev = NewEvent {
        kind,
        content: event_content(&b.body)?,
        state_key: Some(b.state_key),
        redacts: None,
    };
    let mut w = RoomWriter::open(&app, &b.room_id).await?;
    let id = w.append(&s.user_id, ev, None)?;
    w.commit().await?;
    Ok(send_state_event::v3::Response::new(id))
}

/// Send with transaction-id idempotency: the same device and txn id give the same event id.
async fn send_with_txn(
    app: &App,
    s: &Session,
    room_id: &RoomId,
    ev: NewEvent,
    txn: &str,
) -> ApiResult<OwnedEventId> {
    app.limit_user(s, Action::Events)?;
    let scope = s.txn_scope();
    let mut w = RoomWriter::open(app, room_id).await?;
    if let Some(existing) = app.rooms.event_of_txn(&s.user_id, &scope, txn)? {
        return OwnedEventId::try_from(existing)
            .map_err(|e| ApiError::Internal(format!("stored event id: {e}")));
    }
    let id = w.append(&s.user_id, ev, Some((scope, txn.to_owned())))?;
    w.commit().await?;
    Ok(id)
}

/// The event type is taken from the path as sent: ruma's `MessageLikeEventType` reads some
/// unstable names as their stable ones, which would change the type stored.
pub async fn send(
    app: App,
    req: Ruma<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let kind = req.path.get(1).cloned().unwrap_or_default();
    check_type(&kind)?;
    let ev = NewEvent {
        kind,
        content: event_content(&b.body)?,
        state_key: None,
        redacts: None,
    };
    let id = send_with_txn(&app, &s, &b.room_id, ev, b.txn_id.as_str()).await?;
    Ok(send_message_event::v3::Response::new(id))
}

pub async fn redact(
    app: App,
    req: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let room = app.rooms.room_or_404(&b.room_id)?;
    let rules = plexus_core::room_version::rules(&room.meta.version)?;
    let mut content = json!({});
    if let Some(r) = b.reason {
        content["reason"] = json!(r);
    }
    let redacts: Option<OwnedEventId> = if rules.redaction.content_field_redacts {
        content["redacts"] = json!(b.event_id);
        // Clients of older versions still read the top-level field.
        None
    } else {
        Some(b.event_id.clone())
    };
    let ev = NewEvent {
        kind: "m.room.redaction".into(),
        content,
        state_key: None,
        redacts,
    };
    let id = send_with_txn(&app, &s, &b.room_id, ev, b.txn_id.as_str()).await?;
    Ok(redact_event::v3::Response::new(id))
}

pub async fn event(
    app: App,
    req: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (room_id, event_id) = (b.room_id, b.event_id);
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.rooms.room(&room_id)?.ok_or_else(not_found)?;
    let short = app.rooms.short_event(&event_id)?.ok_or_else(not_found)?;
    let (r, _) = app.rooms.event_position(short)?.ok_or_else(not_found)?;
    if r != room.short {
        return Err(not_found());
    }
    let pdu = app.rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    if app.rooms.forgot(&s.user_id, &room_id)?
        || !app.rooms.can_see(&s.user_id, &room_id, short, &pdu)?
    {
        return Err(not_found());
    }
    let stored = app.rooms.pdu_json(short)?.ok_or_else(not_found)?;
    let ev = app.client_event(short, &stored, &room_id, Some(&s), true)?;
    Ok(get_room_event::v3::Response::new(raw_json(&ev)?))
}

pub async fn members(
    app: App,
    req: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let (s, q) = (req.caller, req.body);
    let room_id = q.room_id;
    let room = app.rooms.room_or_forbidden(&room_id)?;
    let mut hash = app.visible_state_hash(&s.user_id, &room)?;
    if let Some(at) = &q.at {
        let count = crate::http::extract::parse_token(at)?;
        // A user who left sees the room at most as it was when they left.
        let limit = match app.rooms.membership(&s.user_id, &room_id)? {
            Some(m) if m.membership != "join" => m.count,
            _ => u64::MAX,
        };
        hash = app.rooms.state_at_count(room.short, count.min(limit))?;
    }
    let membership = q.membership.as_ref().map(|m| m.as_str());
    let not_membership = q.not_membership.as_ref().map(|m| m.as_str());
    let mut chunk = vec![];
    for short in app.rooms.state_map(hash)?.values() {
        let Some(stored) = app.rooms.pdu_json(*short)? else {
            continue;
        };
        if stored.get("type").and_then(Value::as_str) != Some("m.room.member") {
            continue;
        }
        let m = stored["content"]["membership"].as_str().unwrap_or_default();
        if membership.is_some_and(|want| want != m) {
            continue;
        }
        if not_membership == Some(m) {
            continue;
        }
        let ev = app.client_event_inner(*short, &stored, &room_id, Some(&s), true)?;
        chunk.push(raw_json(&ev)?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// Hand-written: ruma leaves out an unset `display_name`/`avatar_url`; Synapse sends `null`.
pub async fn joined_members(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.rooms.room_or_forbidden(&room_id)?;
    if !app.rooms.is_joined(&s.user_id, &room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let hash = app
        .rooms
        .current_state(room.short)?
        .map(|h| h.0)
        .unwrap_or(0);
    let mut joined = Map::new();
    for (user, m) in app.rooms.room_members(room.short)? {
        if m != "join" {
            continue;
        }
        let content = app
            .rooms
            .state_json(hash, "m.room.member", user.as_str())?
            .and_then(|e| e.get("content").cloned())
            .unwrap_or(json!({}));
        joined.insert(
            user.to_string(),
            json!({ "display_name": content.get("displayname"), "avatar_url": content.get("avatar_url") }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}

#[cfg(test)]
mod tests {
    use ruma::events::StateEventType;

    /// The state endpoints take the event type as ruma's `StateEventType`: it must give back
    /// the type the client sent, which it does not for the aliases of an `unstable-msc*`
    /// feature of ruma-events (`m.call.member` read as `org.matrix.msc3401.call.member`).
    #[test]
    fn state_event_types_round_trip() {
        for t in [
            "m.room.topic",
            "m.call.member",
            "org.matrix.msc3401.call.member",
            "m.member_hints",
            "io.element.functional_members",
            "m.beacon_info",
            "org.matrix.msc3672.beacon_info",
            "m.room.retention",
            "org.matrix.msc1763.retention",
            "m.room.language",
            "org.matrix.msc4334.room.language",
            "m.room.presence_sharing",
            "org.example.custom",
        ] {
            assert_eq!(StateEventType::from(t).to_string(), t);
        }
    }
}
