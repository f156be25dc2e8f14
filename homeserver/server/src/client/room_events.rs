//! Room state, sending, redaction, single events and member lists.

use axum::{extract::State, Json};
use plexus_core::builder::NewEvent;
use ruma::{EventId, OwnedEventId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, JsonObject, Path, Query},
    service::{ratelimit::Action, writer::RoomWriter, App},
};

fn check_type(kind: &str) -> ApiResult<()> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(ApiError::InvalidParam(
            "event type must be 1 to 255 bytes".into(),
        ));
    }
    Ok(())
}

pub async fn all_state(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    let hash = app.visible_state_hash(&s.user_id, &room)?;
    let map = app.state_map(hash)?;
    let mut out = Vec::with_capacity(map.len());
    for short in map.values() {
        if let Some(stored) = app.pdu_json(*short)? {
            out.push(app.client_event_inner(*short, &stored, &room_id, Some(&s), true)?);
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize, Default)]
pub struct FormatQuery {
    format: Option<String>,
}

async fn state_event(
    app: &App,
    s: &crate::service::accounts::Session,
    room_id: &str,
    kind: &str,
    key: &str,
    format: Option<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    let hash = app.visible_state_hash(&s.user_id, &room)?;
    let short = app
        .state_get(hash, kind, key)?
        .ok_or_else(|| ApiError::NotFound("Event not found".into()))?;
    let stored = app
        .pdu_json(short)?
        .ok_or_else(|| ApiError::NotFound("Event not found".into()))?;
    match format.as_deref() {
        Some("event") => Ok(Json(app.client_event_inner(
            short,
            &stored,
            &room_id,
            Some(s),
            true,
        )?)),
        None | Some("content") => Ok(Json(stored.get("content").cloned().unwrap_or(json!({})))),
        Some(f) => Err(ApiError::InvalidParam(format!("unknown format {f}"))),
    }
}

pub async fn get_state(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind, key)): Path<(String, String, String)>,
    Query(q): Query<FormatQuery>,
) -> ApiResult<Json<Value>> {
    state_event(&app, &s, &room_id, &kind, &key, q.format).await
}

pub async fn get_state_empty_key(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind)): Path<(String, String)>,
    Query(q): Query<FormatQuery>,
) -> ApiResult<Json<Value>> {
    state_event(&app, &s, &room_id, &kind, "", q.format).await
}

async fn set_state(
    app: &App,
    s: &crate::service::accounts::Session,
    room_id: &str,
    kind: String,
    key: String,
    content: Map<String, Value>,
) -> ApiResult<Json<Value>> {
    check_type(&kind)?;
    app.limit_user(s, Action::Events)?;
    let room_id = parse_room_id(room_id)?;
    let mut w = RoomWriter::open(app, &room_id).await?;
    let ev = NewEvent {
        kind,
        content: Value::Object(content),
        state_key: Some(key),
        redacts: None,
    };
    let id = w.append(&s.user_id, ev, None)?;
    w.commit().await?;
    Ok(Json(json!({ "event_id": id })))
}

pub async fn put_state(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind, key)): Path<(String, String, String)>,
    JsonObject(content): JsonObject,
) -> ApiResult<Json<Value>> {
    set_state(&app, &s, &room_id, kind, key, content).await
}

pub async fn put_state_empty_key(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind)): Path<(String, String)>,
    JsonObject(content): JsonObject,
) -> ApiResult<Json<Value>> {
    set_state(&app, &s, &room_id, kind, String::new(), content).await
}

/// Send with transaction-id idempotency: the same device and txn id give the same event id.
async fn send_with_txn(
    app: &App,
    s: &crate::service::accounts::Session,
    room_id: &str,
    ev: NewEvent,
    txn: &str,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    app.limit_user(s, Action::Events)?;
    let scope = s.txn_scope();
    let mut w = RoomWriter::open(app, &room_id).await?;
    if let Some(existing) = app.event_of_txn(&s.user_id, &scope, txn)? {
        return Ok(Json(json!({ "event_id": existing })));
    }
    let id = w.append(&s.user_id, ev, Some((scope, txn.to_owned())))?;
    w.commit().await?;
    Ok(Json(json!({ "event_id": id })))
}

pub async fn send(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, kind, txn)): Path<(String, String, String)>,
    JsonObject(content): JsonObject,
) -> ApiResult<Json<Value>> {
    check_type(&kind)?;
    let ev = NewEvent {
        kind,
        content: Value::Object(content),
        state_key: None,
        redacts: None,
    };
    send_with_txn(&app, &s, &room_id, ev, &txn).await
}

#[derive(Deserialize, Default)]
pub struct RedactBody {
    reason: Option<String>,
}

pub async fn redact(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id, txn)): Path<(String, String, String)>,
    Body(body): Body<RedactBody>,
) -> ApiResult<Json<Value>> {
    let event_id = EventId::parse(&event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let room = app.room_or_404(&parse_room_id(&room_id)?)?;
    let rules = plexus_core::room_version::rules(&room.meta.version)?;
    let mut content = json!({});
    if let Some(r) = body.reason {
        content["reason"] = json!(r);
    }
    let redacts: Option<OwnedEventId> = if rules.redaction.content_field_redacts {
        content["redacts"] = json!(event_id);
        // Clients of older versions still read the top-level field.
        None
    } else {
        Some(event_id.clone())
    };
    let ev = NewEvent {
        kind: "m.room.redaction".into(),
        content,
        state_key: None,
        redacts,
    };
    send_with_txn(&app, &s, &room_id, ev, &txn).await
}

pub async fn event(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.room(&room_id)?.ok_or_else(not_found)?;
    let short = app.short_event(&event_id)?.ok_or_else(not_found)?;
    let (r, _) = app.event_position(short)?.ok_or_else(not_found)?;
    if r != room.short {
        return Err(not_found());
    }
    let pdu = app.pdu_by_short(short)?.ok_or_else(not_found)?;
    if app.forgot(&s.user_id, &room_id)? || !app.can_see(&s.user_id, &room_id, short, &pdu)? {
        return Err(not_found());
    }
    let stored = app.pdu_json(short)?.ok_or_else(not_found)?;
    Ok(Json(app.client_event(
        short,
        &stored,
        &room_id,
        Some(&s),
        true,
    )?))
}

#[derive(Deserialize, Default)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

pub async fn members(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    let mut hash = app.visible_state_hash(&s.user_id, &room)?;
    if let Some(at) = &q.at {
        let count = crate::http::extract::parse_token(at)?;
        // A user who left sees the room at most as it was when they left.
        let limit = match app.membership(&s.user_id, &room_id)? {
            Some(m) if m.membership != "join" => m.count,
            _ => u64::MAX,
        };
        hash = app.state_at_count(room.short, count.min(limit))?;
    }
    let mut chunk = vec![];
    for short in app.state_map(hash)?.values() {
        let Some(stored) = app.pdu_json(*short)? else {
            continue;
        };
        if stored.get("type").and_then(Value::as_str) != Some("m.room.member") {
            continue;
        }
        let m = stored["content"]["membership"].as_str().unwrap_or_default();
        if q.membership.as_deref().is_some_and(|want| want != m) {
            continue;
        }
        if q.not_membership.as_deref() == Some(m) {
            continue;
        }
        chunk.push(app.client_event_inner(*short, &stored, &room_id, Some(&s), true)?);
    }
    Ok(Json(json!({ "chunk": chunk })))
}

pub async fn joined_members(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    if !app.is_joined(&s.user_id, &room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let hash = app.current_state(room.short)?.map(|h| h.0).unwrap_or(0);
    let mut joined = Map::new();
    for (user, m) in app.room_members(room.short)? {
        if m != "join" {
            continue;
        }
        let content = app
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
