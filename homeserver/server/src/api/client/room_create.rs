//! `POST /createRoom`: the spec's event sequence, built and committed as one atomic batch.

use axum::{extract::State, Json};
use plexus_core::{builder::NewEvent, room_version};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::service::directory::Directory;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body},
    service::{
        ratelimit::Action,
        writer::{member_content, RoomWriter},
        App,
    },
};

#[derive(Deserialize)]
pub struct StateEventBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    invite_3pid: Vec<Value>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<StateEventBody>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

/// Hand-written: ruma answers a malformed `room_version` `M_INVALID_PARAM`, not unsupported.
pub async fn create_room(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<CreateRoomBody>,
) -> ApiResult<Json<Value>> {
    app.limit_user(&s, Action::RoomActions)?;
    let sender = s.user_id.clone();
    // --- validate everything before writing anything ---
    let version = match &body.room_version {
        Some(v) => {
            let v = RoomVersionId::try_from(v.as_str()).map_err(|_| {
                ApiError::UnsupportedRoomVersion(format!("unknown room version {v}"))
            })?;
            if !room_version::is_supported(&v) {
                return Err(ApiError::UnsupportedRoomVersion(format!(
                    "room version {v} is not supported"
                )));
            }
            v
        }
        None => room_version::DEFAULT_ROOM_VERSION,
    };
    let visibility = body.visibility.as_deref().unwrap_or("private");
    if !matches!(visibility, "public" | "private") {
        return Err(ApiError::InvalidParam(
            "visibility must be public or private".into(),
        ));
    }
    let preset = body.preset.as_deref().unwrap_or(if visibility == "public" {
        "public_chat"
    } else {
        "private_chat"
    });
    if !matches!(
        preset,
        "public_chat" | "private_chat" | "trusted_private_chat"
    ) {
        return Err(ApiError::InvalidParam(format!("unknown preset {preset}")));
    }
    if !body.invite_3pid.is_empty() {
        return Err(ApiError::Forbidden(
            "third-party invites are not supported".into(),
        ));
    }
    let mut invitees: Vec<OwnedUserId> = vec![];
    for i in &body.invite {
        let u = UserId::parse(i.as_str())
            .map_err(|e| ApiError::InvalidParam(format!("invalid user id {i}: {e}")))?;
        if !app.is_local(&u) {
            if app.federation.is_none() {
                return Err(ApiError::Forbidden(
                    "federation is not enabled on this server".into(),
                ));
            }
        } else if app.accounts.user(&u)?.is_none() {
            return Err(ApiError::NotFound(format!("unknown user {u}")));
        }
        if u != sender && !invitees.contains(&u) {
            invitees.push(u);
        }
    }
    let alias: Option<OwnedRoomAliasId> = match &body.room_alias_name {
        Some(name) => {
            if name.contains(':') || name.contains('#') || name.is_empty() {
                return Err(ApiError::InvalidParam(
                    "room_alias_name must be a bare localpart".into(),
                ));
            }
            let a = OwnedRoomAliasId::try_from(format!("#{name}:{}", app.server_name()))
                .map_err(|e| ApiError::InvalidParam(format!("invalid alias: {e}")))?;
            app.appservices.check_exclusive(
                plexus_core::appservice::Kind::Alias,
                a.as_str(),
                s.appservice.as_deref(),
            )?;
            if app.directory.room_of_alias(&a)?.is_some() {
                return Err(ApiError::RoomInUse("Room alias already taken".into()));
            }
            Some(a)
        }
        None => None,
    };

    let mut w = RoomWriter::create(&app, version.clone())?;
    let rules = w.rules.clone();

    // 1. m.room.create
    let mut create = body.creation_content.clone().unwrap_or_default();
    create.insert("room_version".into(), json!(version.as_str()));
    if !rules.authorization.use_room_create_sender {
        create.insert("creator".into(), json!(sender));
    } else {
        create.remove("creator");
    }
    w.append(
        &sender,
        NewEvent::state("m.room.create", "", Value::Object(create)),
        None,
    )?;

    // 2. the creator joins
    w.append(
        &sender,
        NewEvent::state(
            "m.room.member",
            sender.as_str(),
            member_content(&app, &sender, "join")?,
        ),
        None,
    )?;

    // 3. power levels
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(sender.to_string(), json!(100));
    }
    if preset == "trusted_private_chat" {
        for u in &invitees {
            users.insert(u.to_string(), json!(100));
        }
    }
    let mut pl = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
        "invite": if preset == "public_chat" { 50 } else { 0 },
        "notifications": { "room": 50 },
    });
    if let (Some(o), Some(over)) = (pl.as_object_mut(), &body.power_level_content_override) {
        for (k, v) in over {
            o.insert(k.clone(), v.clone());
        }
    }
    w.append(
        &sender,
        NewEvent::state("m.room.power_levels", "", pl),
        None,
    )?;

    // 4. canonical alias
    if let Some(a) = &alias {
        w.append(
            &sender,
            NewEvent::state("m.room.canonical_alias", "", json!({ "alias": a })),
            None,
        )?;
    }

    // 5. preset state, overridden by initial_state of the same type and key
    let join_rule = if preset == "public_chat" {
        "public"
    } else {
        "invite"
    };
    let mut preset_state = vec![
        NewEvent::state("m.room.join_rules", "", json!({ "join_rule": join_rule })),
        NewEvent::state(
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": "shared" }),
        ),
    ];
    if preset != "public_chat" {
        preset_state.push(NewEvent::state(
            "m.room.guest_access",
            "",
            json!({ "guest_access": "can_join" }),
        ));
    }
    let overridden = |e: &NewEvent| {
        body.initial_state
            .iter()
            .any(|i| i.kind == e.kind && Some(&i.state_key) == e.state_key.as_ref())
    };
    for ev in preset_state.into_iter().filter(|e| !overridden(e)) {
        w.append(&sender, ev, None)?;
    }

    // 6. initial_state
    for i in &body.initial_state {
        if matches!(i.kind.as_str(), "m.room.create" | "m.room.member") {
            return Err(ApiError::BadJson(format!(
                "{} may not be set in initial_state",
                i.kind
            )));
        }
        w.append(
            &sender,
            NewEvent::state(&i.kind, &i.state_key, Value::Object(i.content.clone())),
            None,
        )?;
    }

    // 7. name and topic
    if let Some(name) = &body.name {
        w.append(
            &sender,
            NewEvent::state("m.room.name", "", json!({ "name": name })),
            None,
        )?;
    }
    if let Some(topic) = &body.topic {
        let content = json!({
            "topic": topic,
            "m.topic": { "m.text": [{ "mimetype": "text/plain", "body": topic }] },
        });
        w.append(&sender, NewEvent::state("m.room.topic", "", content), None)?;
    }

    // 8. invites (of users on other servers once the room exists: their server countersigns)
    let (invitees, remote): (Vec<_>, Vec<_>) = invitees.into_iter().partition(|u| app.is_local(u));
    for u in &invitees {
        let mut c = member_content(&app, u, "invite")?;
        if body.is_direct {
            c["is_direct"] = json!(true);
        }
        w.append(
            &sender,
            NewEvent::state("m.room.member", u.as_str(), c),
            None,
        )?;
    }

    let room_id = w
        .room_id
        .clone()
        .ok_or_else(|| ApiError::Internal("room id not set".into()))?;
    if let Some(a) = &alias {
        Directory::stage_alias(&mut w.extra, a.as_str(), &room_id, sender.as_str())?;
    }
    if visibility == "public" {
        Directory::stage_published(&mut w.extra, &room_id, true)?;
    }
    w.commit().await?;
    tracing::info!(room = %room_id, creator = %sender, version = %version, "room created");
    for u in &remote {
        let mut c = json!({ "membership": "invite" });
        if body.is_direct {
            c["is_direct"] = json!(true);
        }
        // The room exists either way; an invitee whose server refuses simply is not invited.
        if let Err(e) =
            super::membership::set_membership(&app, &sender, &room_id, u, c, &["leave"]).await
        {
            tracing::warn!(room = %room_id, invitee = %u, error = %e, "invite at room creation failed");
        }
    }
    Ok(Json(json!({ "room_id": room_id })))
}
