//! `PUT /_matrix/federation/v2/invite`: countersigning invites of our users to rooms on other
//! servers. Asking another server to countersign our invite is `service::federation::invite`.

use axum::{extract::State, Json};
use plexus_core::{builder::countersign, client_event::to_stripped, room_version};
use ruma::{room_version_rules::RoomVersionRules, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId};
use serde_json::{json, Value};

use crate::http::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::Path,
    service::{
        federation::{ingest, join::persist_out_of_room},
        App, Services,
    },
};

/// Most entries of `invite_room_state` looked at.
const MAX_INVITE_STATE: usize = 50;

/// An invite of one of our users to a room on another server: check it, countersign it, and
/// (unless a local user is already in the room, when it also arrives in a transaction) keep
/// it with the room's stripped state so the user sees the invite.
/// Hand-typed: ruma requires `invite_room_state`, which the spec leaves optional.
pub async fn invite(
    State(app): State<App>,
    Path((room, event_id)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let body = &req.body;
    let version = body
        .get("room_version")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::MissingParam("room_version is required".into()))?;
    let version = RoomVersionId::try_from(version)
        .ok()
        .filter(|v| room_version::SUPPORTED.contains(v))
        .ok_or_else(|| {
            ApiError::IncompatibleRoomVersion(format!("room version {version} is not supported"))
        })?;
    let rules = room_version::rules(&version)?;
    let raw = body
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| ApiError::MissingParam("event is required".into()))?;
    let (c, hash_ok) = ingest::check_hash(&app, &rules, raw)
        .await
        .map_err(|e| ApiError::InvalidParam(e.to_string()))?;
    if !hash_ok {
        return Err(ApiError::InvalidParam(
            "the invite's content does not match its hash".into(),
        ));
    }
    let room_id = OwnedRoomId::try_from(room.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let pdu = &c.pdu;
    if c.event_id.as_str() != event_id || pdu.room_id.as_deref() != Some(&*room_id) {
        return Err(ApiError::InvalidParam(
            "the event does not match the path".into(),
        ));
    }
    if pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.membership().as_deref() != Some("invite")
    {
        return Err(ApiError::InvalidParam("not an invite".into()));
    }
    if pdu.sender.server_name() != req.origin {
        return Err(ApiError::InvalidParam(format!(
            "the sender is not a user of {}",
            req.origin
        )));
    }
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|k| OwnedUserId::try_from(k).ok())
        .filter(|u| app.is_local(u))
        .ok_or_else(|| ApiError::InvalidParam("the invitee is not a user of this server".into()))?;
    if app.accounts.user(&target)?.is_none() {
        return Err(ApiError::NotFound(format!("unknown user {target}")));
    }
    let state = invite_state(&app, &rules, &room_id, body.get("invite_room_state")).await?;
    tracing::info!(room_id = %room_id, event_id = %c.event_id, origin = %req.origin, "invite");

    let mut obj = ingest::canonical_object(raw).map_err(ApiError::InvalidParam)?;
    obj.remove("unsigned");
    let signed = countersign(obj, &rules, app.server_name(), &app.key)?;
    let signed = serde_json::to_value(&signed).map_err(|e| ApiError::Internal(e.to_string()))?;

    if let Some(r) = app.rooms.room(&room_id)? {
        crate::service::federation::acl::ensure(&app, r.short, &req.origin)?;
    }
    if !app.rooms.is_resident(&room_id)? {
        let mut kept = c;
        kept.stored["signatures"] = signed["signatures"].clone();
        persist_out_of_room(&app, &room_id, &version, kept, Some(state)).await?;
    }
    Ok(Json(json!({ "event": signed })))
}

/// `invite_room_state` as stripped state. Full PDUs are checked (signatures, same room); from
/// room version 12 on the spec wants only PDUs and the create event among them.
async fn invite_state(
    app: &Services,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    raw: Option<&Value>,
) -> ApiResult<Vec<Value>> {
    let strict = rules.authorization.room_create_event_id_as_room_id;
    let list = match raw {
        None | Some(Value::Null) => &vec![],
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "invite_room_state is not a list".into(),
            ))
        }
    };
    let mut out = vec![];
    let mut has_create = false;
    for e in list.iter().take(MAX_INVITE_STATE) {
        if !e.is_object() {
            return Err(ApiError::InvalidParam(
                "invite_room_state holds a non-object".into(),
            ));
        }
        let is_create = e.get("type").and_then(Value::as_str) == Some("m.room.create");
        if e.get("signatures").is_none() {
            if strict {
                return Err(ApiError::InvalidParam(
                    "invite_room_state must hold PDUs in this room version".into(),
                ));
            }
            has_create |= is_create;
            out.push(to_stripped(e));
            continue;
        }
        let c = ingest::check(app, rules, e)
            .await
            .map_err(|err| ApiError::InvalidParam(format!("invite_room_state: {err}")))?;
        if !ingest::in_room(c.pdu.room_id.as_deref(), &c.event_id, room_id) {
            return Err(ApiError::InvalidParam(
                "invite_room_state holds an event of another room".into(),
            ));
        }
        has_create |= is_create;
        out.push(to_stripped(&c.stored));
    }
    if strict && !has_create {
        return Err(ApiError::InvalidParam(
            "invite_room_state lacks the m.room.create event".into(),
        ));
    }
    Ok(out)
}
