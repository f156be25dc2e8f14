//! Joining, inviting, leaving, forgetting, kicking, banning.

use axum::{extract::State, Json};
use plexus_core::builder::NewEvent;
use ruma::{
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, join_room_by_id, join_room_by_id_or_alias, joined_rooms,
            kick_user, leave_room, unban_user,
        },
    },
    OwnedRoomId, OwnedRoomOrAliasId, OwnedServerName, RoomAliasId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{parse_room_id, Auth, Body, Path},
        ruma::Ruma,
    },
    service::federation::join::remote_membership,
    service::restricted::JoinAuthorisation,
    service::{
        ratelimit::Action,
        writer::{member_content, RoomWriter},
        App,
    },
};

/// Resolve `#alias:server`: our own directory, or the alias's server over federation.
/// Also answers servers that know the room.
pub async fn resolve_alias_servers(
    app: &App,
    alias: &RoomAliasId,
) -> ApiResult<(OwnedRoomId, Vec<OwnedServerName>)> {
    if alias.server_name() == app.server_name() {
        return match resolve_alias(app, alias) {
            // An unknown alias in an appservice's namespace may be one it makes on demand.
            Err(ApiError::NotFound(_)) if app.ask_appservices_for_alias(alias).await => {
                Ok((resolve_alias(app, alias)?, vec![]))
            }
            other => Ok((other?, vec![])),
        };
    }
    let Some(fed) = &app.federation else {
        return Err(ApiError::NotFound(
            "Room alias not found (federation is not enabled)".into(),
        ));
    };
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        crate::service::federation::sender::enc(alias.as_str())
    );
    let v = fed
        .request(
            app,
            alias.server_name(),
            http::Method::GET,
            &path,
            None,
            true,
        )
        .await?;
    let room_id = v
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| ApiError::BadGateway("alias answer without a room id".into()))?;
    let mut servers: Vec<OwnedServerName> = v
        .get("servers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| OwnedServerName::try_from(s).ok())
        .collect();
    servers.insert(0, alias.server_name().to_owned());
    Ok((room_id, servers))
}

/// Resolve `#alias:server` through the local directory.
pub fn resolve_alias(app: &App, alias: &RoomAliasId) -> ApiResult<OwnedRoomId> {
    if alias.server_name() != app.server_name() {
        return Err(ApiError::NotFound(
            "Room alias not found (federation is not enabled)".into(),
        ));
    }
    app.directory
        .room_of_alias(alias)?
        .ok_or_else(|| ApiError::NotFound("Room alias not found".into()))
}

fn member_event(target: &UserId, mut content: Value, reason: Option<&String>) -> NewEvent {
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    NewEvent {
        kind: "m.room.member".into(),
        content,
        state_key: Some(target.to_string()),
        redacts: None,
    }
}

/// Turn down an invite or withdraw a knock in a room this server is not in: through a server
/// of the room (the inviter's, the room's, those behind its stripped state) or, when none
/// answers, with a leave only this server knows of.
async fn reject_remote(
    app: &App,
    user: &UserId,
    room_id: &RoomId,
    m: &crate::service::rooms::Membership,
    reason: Option<&String>,
) -> ApiResult<()> {
    let senders: Vec<OwnedServerName> = app
        .rooms
        .stored_stripped_state(user, room_id, &m.event_id)?
        .unwrap_or_default()
        .iter()
        .filter_map(|ev| ev.get("sender").and_then(Value::as_str))
        .filter_map(|u| UserId::parse(u).ok())
        .map(|u| u.server_name().to_owned())
        .collect();
    if app.federation.is_some() {
        match remote(app, user, room_id, senders, "leave", reason).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(room_id = %room_id, error = %e, "remote leave failed; leaving locally")
            }
        }
    }
    Ok(crate::service::federation::join::local_rejection(app, user, room_id, &m.event_id).await?)
}

/// Join, leave or knock on a room this server is not in. Servers are asked in this order:
/// whoever sent the user's current membership (the inviter), `via`, the room id's server,
/// then servers known to have members in the room.
async fn remote(
    app: &App,
    user: &UserId,
    room_id: &RoomId,
    via: Vec<OwnedServerName>,
    membership: &str,
    reason: Option<&String>,
) -> ApiResult<()> {
    if app.federation.is_none() {
        return Err(ApiError::NotFound(
            "No known servers for this room (federation is not enabled)".into(),
        ));
    }
    let mut servers: Vec<OwnedServerName> = app
        .rooms
        .membership(user, room_id)?
        .map(|m| m.sender.server_name().to_owned())
        .into_iter()
        .collect();
    servers.extend(via);
    servers.extend(room_id.server_name().map(ToOwned::to_owned));
    if let Some(r) = app.rooms.room(room_id)? {
        servers.extend(app.rooms.room_servers(r.short)?);
    }
    Ok(remote_membership(app, user, room_id, &servers, membership, reason).await?)
}

/// A room id, or an alias resolved (over federation if need be), with the servers that may
/// know the room: `via`/`server_name` and those the alias's server named.
pub async fn room_and_via(
    app: &App,
    room: &str,
    q: &ViaQuery,
) -> ApiResult<(OwnedRoomId, Vec<OwnedServerName>)> {
    if !room.starts_with('#') {
        return Ok((parse_room_id(room)?, q.servers()));
    }
    let alias = RoomAliasId::parse(room)
        .map_err(|e| ApiError::InvalidParam(format!("invalid alias: {e}")))?;
    room_or_alias(app, alias.into(), q.servers()).await
}

/// A room id, or an alias resolved (over federation if need be), with `via` and the servers
/// the alias's server named.
async fn room_or_alias(
    app: &App,
    room: OwnedRoomOrAliasId,
    mut via: Vec<OwnedServerName>,
) -> ApiResult<(OwnedRoomId, Vec<OwnedServerName>)> {
    match OwnedRoomId::try_from(room) {
        Ok(id) => Ok((id, via)),
        Err(alias) => {
            let (id, servers) = resolve_alias_servers(app, &alias).await?;
            via.extend(servers);
            Ok((id, via))
        }
    }
}

async fn do_join(
    app: &App,
    user: &UserId,
    room_id: &RoomId,
    reason: Option<&String>,
    via: Vec<OwnedServerName>,
) -> ApiResult<()> {
    // A room everyone here left is joined again locally when federation is off.
    let known = app.rooms.room(room_id)?.is_some();
    if !app.rooms.is_resident(room_id)? && (!known || app.federation.is_some()) {
        remote(app, user, room_id, via, "join", reason).await?;
        super::upgrade::carry_personal_settings(app, user, room_id).await?;
        return Ok(());
    }
    let mut w = RoomWriter::open(app, room_id).await?;
    if w.membership_of(user)?.as_deref() == Some("join") {
        return Ok(());
    }
    let mut content = member_content(app, user, "join")?;
    let room = app.rooms.room_or_404(room_id)?;
    if let JoinAuthorisation::Via(by) = app.authorise_join(&room, user)? {
        content["join_authorised_via_users_server"] = json!(by);
    }
    w.append(user, member_event(user, content, reason), None)?;
    w.commit().await?;
    super::upgrade::carry_personal_settings(app, user, room_id).await?;
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct ViaQuery {
    #[serde(default)]
    server_name: Vec<String>,
    #[serde(default)]
    via: Vec<String>,
}

impl ViaQuery {
    fn servers(&self) -> Vec<OwnedServerName> {
        self.via
            .iter()
            .chain(&self.server_name)
            .filter_map(|s| OwnedServerName::try_from(s.as_str()).ok())
            .collect()
    }
}

pub async fn join_by_id_or_alias(
    app: App,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let (s, body) = (req.caller, req.body);
    app.limit_user(&s, Action::RoomActions)?;
    let (room_id, via) = room_or_alias(&app, body.room_id_or_alias, body.via).await?;
    do_join(&app, &s.user_id, &room_id, body.reason.as_ref(), via).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

pub async fn join(
    app: App,
    req: Ruma<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    let (s, body) = (req.caller, req.body);
    app.limit_user(&s, Action::RoomActions)?;
    do_join(
        &app,
        &s.user_id,
        &body.room_id,
        body.reason.as_ref(),
        vec![],
    )
    .await?;
    Ok(join_room_by_id::v3::Response::new(body.room_id))
}

/// Change another user's membership; `allowed_from` lists the target memberships the change
/// makes sense from (the auth rules decide whether the sender may).
async fn change_member(
    app: &App,
    sender: &UserId,
    room_id: &RoomId,
    (target, reason): (&UserId, Option<String>),
    membership: &str,
    allowed_from: &[&str],
) -> ApiResult<()> {
    let mut content = json!({ "membership": membership });
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    set_membership(app, sender, room_id, target, content, allowed_from).await
}

/// Set `target`'s membership to `content` (whose `membership` says which); an invite of a user
/// on another server is countersigned by their server before it is committed.
pub async fn set_membership(
    app: &App,
    sender: &UserId,
    room_id: &RoomId,
    target: &UserId,
    content: Value,
    allowed_from: &[&str],
) -> ApiResult<()> {
    let membership = content["membership"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let membership = membership.as_str();
    let remote_invite = membership == "invite" && !app.is_local(target);
    if remote_invite && app.federation.is_none() {
        return Err(ApiError::Forbidden(
            "federation is not enabled on this server".into(),
        ));
    }
    let mut content = content;
    if membership == "invite" && !remote_invite {
        let Some(invitee) = app.accounts.user(target)? else {
            return Err(ApiError::NotFound(format!("unknown user {target}")));
        };
        crate::service::writer::add_profile(&mut content, &invitee);
    }
    let mut w = RoomWriter::open(app, room_id).await?;
    if w.membership_of(sender)?.as_deref() != Some("join") {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let current = w.membership_of(target)?;
    let current = current.as_deref().unwrap_or("leave");
    if !allowed_from.contains(&current) {
        return Err(ApiError::Forbidden(format!(
            "{target} is {current} in this room; cannot {membership}"
        )));
    }
    let event_id = w.append(sender, member_event(target, content, None), None)?;
    if remote_invite {
        crate::service::federation::invite::countersigned_invite(app, &mut w, &event_id, target)
            .await?;
    }
    w.commit().await?;
    Ok(())
}

#[derive(Deserialize)]
pub struct InviteBody {
    user_id: String,
    reason: Option<String>,
}

/// Hand-typed: ruma reads the body as an untagged enum (a user or a third-party id), so an
/// invalid `user_id` would lose its `M_INVALID_PARAM` to a bare `M_BAD_JSON`.
pub async fn invite(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<InviteBody>,
) -> ApiResult<Json<Value>> {
    app.limit_user(&s, Action::RoomActions)?;
    let room_id = parse_room_id(&room_id)?;
    let target = UserId::parse(&body.user_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    let from = &["leave", "invite", "knock"];
    let who = (&*target, body.reason);
    change_member(&app, &s.user_id, &room_id, who, "invite", from).await?;
    Ok(Json(json!({})))
}

pub async fn kick(
    app: App,
    req: Ruma<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let from = &["join", "invite", "knock"];
    let target = (&*b.user_id, b.reason);
    change_member(&app, &s.user_id, &b.room_id, target, "leave", from).await?;
    Ok(kick_user::v3::Response::new())
}

pub async fn ban(app: App, req: Ruma<ban_user::v3::Request>) -> ApiResult<ban_user::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let from = &["join", "invite", "knock", "leave", "ban"];
    let target = (&*b.user_id, b.reason);
    change_member(&app, &s.user_id, &b.room_id, target, "ban", from).await?;
    Ok(ban_user::v3::Response::new())
}

pub async fn unban(
    app: App,
    req: Ruma<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let target = (&*b.user_id, b.reason);
    change_member(&app, &s.user_id, &b.room_id, target, "leave", &["ban"]).await?;
    Ok(unban_user::v3::Response::new())
}

pub async fn leave(
    app: App,
    req: Ruma<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let room_id = &body.room_id;
    let done = leave_room::v3::Response::new;
    if let Some(m) = app.rooms.membership(&s.user_id, room_id)? {
        if matches!(m.membership.as_str(), "invite" | "knock") && !app.rooms.is_resident(room_id)? {
            reject_remote(&app, &s.user_id, room_id, &m, body.reason.as_ref()).await?;
            return Ok(done());
        }
    }
    let mut w = RoomWriter::open(&app, room_id).await?;
    match w.membership_of(&s.user_id)?.as_deref() {
        Some("join" | "invite" | "knock") => {}
        Some("leave") => return Ok(done()),
        _ => return Err(ApiError::Forbidden("You are not in this room".into())),
    }
    w.append(
        &s.user_id,
        member_event(
            &s.user_id,
            json!({ "membership": "leave" }),
            body.reason.as_ref(),
        ),
        None,
    )?;
    w.commit().await?;
    Ok(done())
}

pub async fn forget(
    app: App,
    req: Ruma<forget_room::v3::Request>,
) -> ApiResult<forget_room::v3::Response> {
    let (s, room_id) = (req.caller, req.body.room_id);
    let mut m = app
        .rooms
        .membership(&s.user_id, &room_id)?
        .ok_or_else(|| ApiError::NotFound("You have no membership in this room".into()))?;
    if matches!(m.membership.as_str(), "join" | "invite" | "knock") {
        return Err(ApiError::Unknown(
            "User is still in the room; leave it first".into(),
        ));
    }
    m.forgotten = true;
    app.rooms.save_membership(&s.user_id, &room_id, &m)?;
    app.store.flush().await?;
    Ok(forget_room::v3::Response::new())
}

pub async fn joined_rooms(
    app: App,
    req: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let s = req.caller;
    let rooms: Vec<OwnedRoomId> = app
        .rooms
        .user_rooms(&s.user_id)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(r, _)| r)
        .collect();
    Ok(joined_rooms::v3::Response::new(rooms))
}

/// Ask to join a room whose join rule is `knock` (room versions 7 and later); the auth rules
/// refuse everything else.
pub async fn knock(
    app: App,
    req: Ruma<knock_room::v3::Request>,
) -> ApiResult<knock_room::v3::Response> {
    let (s, body) = (req.caller, req.body);
    app.limit_user(&s, Action::RoomActions)?;
    let (room_id, via) = room_or_alias(&app, body.room_id_or_alias, body.via).await?;
    if !app.rooms.is_resident(&room_id)? {
        remote(
            &app,
            &s.user_id,
            &room_id,
            via,
            "knock",
            body.reason.as_ref(),
        )
        .await?;
        return Ok(knock_room::v3::Response::new(room_id));
    }
    let mut w = RoomWriter::open(&app, &room_id).await?;
    let content = member_content(&app, &s.user_id, "knock")?;
    w.append(
        &s.user_id,
        member_event(&s.user_id, content, body.reason.as_ref()),
        None,
    )?;
    w.commit().await?;
    Ok(knock_room::v3::Response::new(room_id))
}
