//! Joins, leaves and knocks as the resident server: `make_join`/`send_join`,
//! `make_leave`/`send_leave` and `make_knock`/`send_knock`. Joining a room that lives elsewhere
//! is `service::federation::join`.

use axum::{extract::State, Json};
use plexus_core::room_version;
use ruma::{
    api::federation::membership::{
        create_knock_event, create_leave_event, prepare_join_event, prepare_knock_event,
        prepare_leave_event, RawStrippedState,
    },
    OwnedRoomId, OwnedUserId, RoomVersionId, ServerName,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue as RawJsonValue, Value};

use crate::http::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::{extract::Path, ruma::Ruma},
    service::{
        federation::{
            ingest::{self, Checked, IngestError, Outcome},
            join::member_template_event,
            sender::federation_form,
        },
        raw_value,
        restricted::JoinAuthorisation,
        rooms::RoomMeta,
        writer::RoomWriter,
        App, Services,
    },
};

/// The resident side of make_join/make_leave: an unsigned event for the remote user.
async fn make_membership(
    app: &Services,
    origin: &ServerName,
    room: &str,
    user: &str,
    membership: &str,
    versions: Option<&[String]>,
) -> ApiResult<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room)
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let user = OwnedUserId::try_from(user)
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    if user.server_name() != origin {
        return Err(ApiError::Forbidden(format!(
            "{origin} cannot {membership} on behalf of {user}"
        )));
    }
    let room = app
        .rooms
        .room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown room".into()))?;
    if app.rooms.room_audience(room.short)?.local_joined.is_empty() {
        return Err(ApiError::NotFound("This server is not in the room".into()));
    }
    crate::service::federation::acl::ensure(app, room.short, origin)?;
    if let Some(vers) = versions {
        let v = room.meta.version.as_str();
        let offered = if vers.is_empty() {
            v == "1"
        } else {
            vers.iter().any(|x| x == v)
        };
        if !offered {
            return Err(ApiError::IncompatibleRoomVersion(format!(
                "the room is version {v}, which your server did not offer"
            )));
        }
    }
    let mut tpl = member_template_event(&user, membership);
    if membership == "join" {
        if let JoinAuthorisation::Via(by) = app.authorise_join(&room, &user)? {
            tpl.content["join_authorised_via_users_server"] = json!(by);
        }
    }
    let w = RoomWriter::open(app, &room_id).await?;
    let event = w.template(&user, &tpl)?;
    Ok(Json(json!({
        "room_version": room.meta.version,
        "event": event,
    })))
}

/// `make_membership`'s answer as ruma's parts: the room version and the unsigned template.
fn template(Json(v): Json<Value>) -> ApiResult<(RoomVersionId, Box<RawJsonValue>)> {
    let version = RoomVersionId::deserialize(&v["room_version"])
        .map_err(|e| ApiError::Internal(format!("template room version: {e}")))?;
    Ok((version, raw_value(&v["event"])?))
}

pub async fn make_join(
    app: App,
    req: Ruma<prepare_join_event::v1::Request>,
) -> ApiResult<prepare_join_event::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let ver: Vec<String> = q.ver.iter().map(ToString::to_string).collect();
    let (room, user) = (q.room_id.as_str(), q.user_id.as_str());
    let answer = make_membership(&app, &origin, room, user, "join", Some(&ver)).await?;
    let (version, event) = template(answer)?;
    let mut res = prepare_join_event::v1::Response::new(event);
    res.room_version = Some(version);
    Ok(res)
}

pub async fn make_leave(
    app: App,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> ApiResult<prepare_leave_event::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let (room, user) = (q.room_id.as_str(), q.user_id.as_str());
    let answer = make_membership(&app, &origin, room, user, "leave", None).await?;
    let (version, event) = template(answer)?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

/// `ver` is required here, as the spec has it: a request without one is `M_MISSING_PARAM`.
pub async fn make_knock(
    app: App,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> ApiResult<prepare_knock_event::v1::Response> {
    let (origin, q) = (req.caller, req.body);
    let ver: Vec<String> = q.ver.iter().map(ToString::to_string).collect();
    let (room, user) = (q.room_id.as_str(), q.user_id.as_str());
    let answer = make_membership(&app, &origin, room, user, "knock", Some(&ver)).await?;
    let (version, event) = template(answer)?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

/// The local user a join names as its authoriser (`join_authorised_via_users_server`).
fn authorised_by_us(app: &Services, ev: &Value) -> Option<OwnedUserId> {
    ev.get("content")?
        .get("join_authorised_via_users_server")?
        .as_str()
        .and_then(|u| OwnedUserId::try_from(u).ok())
        .filter(|u| app.is_local(u))
}

/// The resident side of send_join/send_leave/send_knock: check, persist and pass the event on.
async fn send_membership(
    app: &Services,
    origin: &ServerName,
    sent: &Value,
    room: &str,
    event_id: &str,
    membership: &str,
) -> ApiResult<(RoomMeta, Checked)> {
    let room_id = OwnedRoomId::try_from(room)
        .map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))?;
    let room = app
        .rooms
        .room(&room_id)?
        .ok_or_else(|| ApiError::NotFound("Unknown room".into()))?;
    crate::service::federation::acl::ensure(app, room.short, origin)?;
    let rules = room_version::rules(&room.meta.version)?;
    let body = match authorised_by_us(app, sent) {
        // A restricted join one of our members vouches for: it needs our signature too.
        Some(by) if membership == "join" => {
            let user = sent["state_key"].as_str().unwrap_or_default();
            let user = OwnedUserId::try_from(user)
                .map_err(|e| ApiError::BadJson(format!("invalid state_key: {e}")))?;
            // Sign only for users who meet the allow conditions; the auth rules check the rest
            // (that `by` is joined and may invite).
            app.authorise_join(&room, &user)?;
            tracing::info!(room_id = %room_id, user_id = %user, authoriser = %by, "countersigning a restricted join");
            let obj = ingest::canonical_object(sent).map_err(ApiError::BadJson)?;
            let signed =
                plexus_core::builder::countersign(obj, &rules, app.server_name(), &app.key)?;
            serde_json::to_value(&signed).map_err(|e| ApiError::Internal(e.to_string()))?
        }
        _ => sent.clone(),
    };
    let c = ingest::check(app, &rules, &body)
        .await
        .map_err(|e| ApiError::BadJson(e.to_string()))?;
    if c.event_id.as_str() != event_id {
        return Err(ApiError::BadJson("event id does not match the path".into()));
    }
    let pdu = &c.pdu;
    if pdu.room_id.as_deref() != Some(&*room_id)
        || pdu.kind != ruma::events::TimelineEventType::RoomMember
        || pdu.membership().as_deref() != Some(membership)
        || pdu.state_key.as_deref() != Some(pdu.sender.as_str())
        || pdu.sender.server_name() != origin
    {
        return Err(ApiError::BadJson(format!(
            "not a {membership} of a user of {origin} in this room"
        )));
    }
    let outcome = ingest::persist(app, &room, &rules, c.clone(), Some(origin))
        .await
        .map_err(|e| match e {
            IngestError::Auth(why) => ApiError::Forbidden(why),
            IngestError::Local(e) => e.into(),
            e => ApiError::BadJson(e.to_string()),
        })?;
    if outcome == Outcome::SoftFailed {
        return Err(ApiError::Forbidden(
            "the event is not allowed by the room's current state".into(),
        ));
    }
    Ok((room.meta, c))
}

/// Hand-typed: ruma's answer has no `origin`, which the spec requires in it.
pub async fn send_join(
    State(app): State<App>,
    Path((room, event_id)): Path<(String, String)>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let (meta, c) = send_membership(&app, &req.origin, &req.body, &room, &event_id, "join").await?;
    let room = app.rooms.room_or_404(&meta.room_id)?;
    // The state before the join (which includes everything the join cites) and its auth chain.
    let (state, chain) = super::events::state_before(&app, &room, c.event_id.as_str())?;
    let mut servers = app.rooms.room_servers(room.short)?;
    servers.push(app.server_name().to_owned());
    Ok(Json(json!({
        "origin": app.server_name(),
        "state": super::events::federation_forms(&app, state)?,
        "auth_chain": super::events::federation_forms(&app, chain)?,
        "event": federation_form(&c.stored),
        "members_omitted": false,
        "servers_in_room": servers,
    })))
}

/// The PDU a send_leave or send_knock carries, as `send_membership` reads it.
fn sent_pdu(raw: &RawJsonValue) -> ApiResult<Value> {
    serde_json::from_str(raw.get()).map_err(|e| ApiError::BadJson(e.to_string()))
}

pub async fn send_leave(
    app: App,
    req: Ruma<create_leave_event::v2::Request>,
) -> ApiResult<create_leave_event::v2::Response> {
    let (origin, r) = (req.caller, req.body);
    let sent = sent_pdu(&r.pdu)?;
    let (room, event_id) = (r.room_id.as_str(), r.event_id.as_str());
    send_membership(&app, &origin, &sent, room, event_id, "leave").await?;
    Ok(create_leave_event::v2::Response::new())
}

/// A knock is persisted and passed on like a join; the knocking server gets the state that lets
/// its user recognise the room.
pub async fn send_knock(
    app: App,
    req: Ruma<create_knock_event::v1::Request>,
) -> ApiResult<create_knock_event::v1::Response> {
    let (origin, r) = (req.caller, req.body);
    let sent = sent_pdu(&r.pdu)?;
    let (room, event_id) = (r.room_id.as_str(), r.event_id.as_str());
    let (meta, _) = send_membership(&app, &origin, &sent, room, event_id, "knock").await?;
    let room = app.rooms.room_or_404(&meta.room_id)?;
    let state = app
        .rooms
        .stripped_state_events(room.short, None)?
        .iter()
        .map(|e| raw_value(&federation_form(e)).map(RawStrippedState::Pdu))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(create_knock_event::v1::Response::new(state))
}
