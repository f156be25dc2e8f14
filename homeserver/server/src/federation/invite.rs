//! Invites across servers (`PUT /_matrix/federation/v2/invite`): countersigning invites of our
//! users to rooms elsewhere, and asking another server to countersign our invite of its user.

use axum::{extract::State, Json};
use plexus_core::{builder::countersign, client_event::to_stripped, room_version};
use ruma::{
    canonical_json::redact, room_version_rules::RoomVersionRules, EventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Value};

use super::{join::persist_out_of_room, x_matrix::FedRequest};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::Path,
    service::{
        federation::{
            ingest,
            sender::{enc, federation_form},
        },
        writer::RoomWriter,
        App, Services,
    },
};

/// Most entries of `invite_room_state` looked at.
const MAX_INVITE_STATE: usize = 50;

/// An invite of one of our users to a room on another server: check it, countersign it, and
/// (unless a local user is already in the room, when it also arrives in a transaction) keep
/// it with the room's stripped state so the user sees the invite.
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
    if app.user(&target)?.is_none() {
        return Err(ApiError::NotFound(format!("unknown user {target}")));
    }
    let state = invite_state(&app, &rules, &room_id, body.get("invite_room_state")).await?;
    tracing::info!(room_id = %room_id, event_id = %c.event_id, origin = %req.origin, "invite");

    let mut obj = ingest::canonical_object(raw).map_err(ApiError::InvalidParam)?;
    obj.remove("unsigned");
    let signed = countersign(obj, &rules, app.server_name(), &app.key)?;
    let signed = serde_json::to_value(&signed).map_err(|e| ApiError::Internal(e.to_string()))?;

    if let Some(r) = app.room(&room_id)? {
        crate::service::federation::acl::ensure(&app, r.short, &req.origin)?;
    }
    if !app.is_resident(&room_id)? {
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

/// Have the invitee's server countersign an invite appended to `w` (not yet committed), and
/// take its signature onto the event. A refusal there is the invite's refusal.
pub async fn countersigned_invite(
    app: &Services,
    w: &mut RoomWriter<'_>,
    event_id: &EventId,
    target: &UserId,
) -> ApiResult<()> {
    let fed = app.fed()?;
    let room_id = w
        .room_id
        .clone()
        .ok_or_else(|| ApiError::Internal("room without id".into()))?;
    let room = app.room_or_404(&room_id)?;
    let ours = w
        .pending_event(event_id)
        .map(federation_form)
        .ok_or_else(|| ApiError::Internal("invite not appended".into()))?;
    let sender = ours
        .get("sender")
        .and_then(Value::as_str)
        .and_then(|s| OwnedUserId::try_from(s).ok());
    let state: Vec<Value> = app
        .stripped_state_events(room.short, sender.as_deref())?
        .iter()
        .map(federation_form)
        .collect();
    let server = target.server_name();
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        enc(room_id.as_str()),
        enc(event_id.as_str())
    );
    let body = json!({
        "room_version": room.meta.version,
        "event": ours,
        "invite_room_state": state,
    });
    let resp = fed
        .request(app, server, http::Method::PUT, &path, Some(body), true)
        .await?;
    let theirs = resp
        .get("event")
        .filter(|e| e.is_object())
        .ok_or_else(|| ApiError::BadGateway(format!("{server} answered the invite without it")))?;

    // Only their signature may differ from what we sent.
    let strip = |v: &Value| {
        let mut v = federation_form(v);
        if let Some(o) = v.as_object_mut() {
            o.remove("signatures");
        }
        v
    };
    if strip(theirs) != strip(&ours) {
        return Err(ApiError::BadGateway(format!(
            "{server} changed the invite it signed"
        )));
    }
    let sigs = theirs
        .get("signatures")
        .and_then(|s| s.get(server.as_str()))
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .ok_or_else(|| ApiError::BadGateway(format!("{server} did not sign the invite")))?;
    let ids: Vec<String> = sigs
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let keys = fed.keys.verify_keys(app, server, &ids, None).await?;
    let mut obj =
        ingest::canonical_object(&federation_form(theirs)).map_err(ApiError::BadGateway)?;
    if let Some(ruma::CanonicalJsonValue::Object(all)) = obj.get_mut("signatures") {
        all.retain(|s, _| s == server.as_str());
    }
    let redacted =
        redact(obj, &w.rules.redaction, None).map_err(|e| ApiError::BadGateway(e.to_string()))?;
    ruma::signatures::verify_json(&keys, &redacted).map_err(|e| {
        ApiError::BadGateway(format!(
            "{server}'s signature on the invite is invalid: {e}"
        ))
    })?;
    w.add_signatures(event_id, server.as_str(), sigs);
    Ok(())
}
