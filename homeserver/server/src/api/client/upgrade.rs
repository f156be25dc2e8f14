//! `POST /rooms/{roomId}/upgrade`: a new room of the requested version that carries the old
//! room's state over, a tombstone pointing to it, moved aliases, and an old room where only
//! moderators can still speak or invite.

use axum::{extract::State, Json};
use plexus_core::{builder::NewEvent, room_version};
use ruma::RoomVersionId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::extract::parse_room_id;
use crate::service::directory::Directory;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Path},
    service::{
        writer::{member_content, RoomWriter},
        App,
    },
};

/// State copied to the replacement room, per the spec.
const CARRIED_STATE: [&str; 9] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.pinned_events",
];

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

/// Hand-written: ruma answers a malformed `new_version` `M_INVALID_PARAM`, not unsupported.
pub async fn upgrade(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<UpgradeBody>,
) -> ApiResult<Json<Value>> {
    let old_id = parse_room_id(&room_id)?;
    let version = RoomVersionId::try_from(body.new_version.as_str())
        .ok()
        .filter(room_version::is_supported)
        .ok_or_else(|| {
            ApiError::UnsupportedRoomVersion(format!(
                "room version {} is not supported",
                body.new_version
            ))
        })?;
    let old_room = app.rooms.room_or_forbidden(&old_id)?;
    if !app.rooms.is_joined(&s.user_id, &old_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    if !app.may_send_state(&s.user_id, &old_room, "m.room.tombstone")? {
        return Err(ApiError::Forbidden("You may not upgrade this room".into()));
    }
    let old_hash = app
        .rooms
        .current_state(old_room.short)?
        .map(|h| h.0)
        .unwrap_or(0);
    let old_state = |kind: &str| -> ApiResult<Option<Value>> {
        Ok(app
            .rooms
            .state_json(old_hash, kind, "")?
            .map(|e| e["content"].clone()))
    };

    // The replacement room.
    let mut w = RoomWriter::create(&app, version.clone())?;
    let rules = w.rules.clone();
    let mut create = old_state("m.room.create")?.unwrap_or(json!({}));
    create["room_version"] = json!(version.as_str());
    create["predecessor"] = json!({ "room_id": old_id });
    if let Some(o) = create.as_object_mut() {
        o.remove("creator");
        o.remove("additional_creators");
    }
    if rules.authorization.use_room_create_sender {
        // v11+: the creator is the create event's sender.
    } else {
        create["creator"] = json!(s.user_id);
    }
    if rules.authorization.additional_room_creators && !body.additional_creators.is_empty() {
        create["additional_creators"] = json!(body.additional_creators);
    }
    w.append(
        &s.user_id,
        NewEvent::state("m.room.create", "", create),
        None,
    )?;
    w.append(
        &s.user_id,
        NewEvent::state(
            "m.room.member",
            s.user_id.as_str(),
            member_content(&app, &s.user_id, "join")?,
        ),
        None,
    )?;

    let mut pl = old_state("m.room.power_levels")?.unwrap_or(json!({}));
    if let Some(users) = pl["users"].as_object_mut() {
        if rules.authorization.explicitly_privilege_room_creators {
            // Creators are privileged by the create event and may not be listed.
            users.remove(s.user_id.as_str());
            for c in &body.additional_creators {
                users.remove(c);
            }
        } else {
            users.insert(s.user_id.to_string(), json!(100));
        }
    }
    w.append(
        &s.user_id,
        NewEvent::state("m.room.power_levels", "", pl.clone()),
        None,
    )?;
    for kind in CARRIED_STATE {
        if let Some(content) = old_state(kind)? {
            w.append(&s.user_id, NewEvent::state(kind, "", content), None)?;
        }
    }
    let alias = old_state("m.room.canonical_alias")?;
    if let Some(a) = &alias {
        w.append(
            &s.user_id,
            NewEvent::state("m.room.canonical_alias", "", a.clone()),
            None,
        )?;
    }
    // Move every local alias of the old room.
    let aliases = app.directory.room_aliases(&old_id)?;
    let new_id = w
        .room_id
        .clone()
        .ok_or_else(|| ApiError::Internal("room id not set".into()))?;
    for (alias, creator) in &aliases {
        Directory::stage_alias(&mut w.extra, alias, &new_id, creator)?;
    }
    if app.directory.is_published(&old_id)? {
        Directory::stage_published(&mut w.extra, &new_id, true)?;
    }
    w.commit().await?;

    // Tombstone the old room and restrict it.
    let mut old = RoomWriter::open(&app, &old_id).await?;
    old.append(
        &s.user_id,
        NewEvent::state(
            "m.room.tombstone",
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new_id }),
        ),
        None,
    )?;
    let users_default = pl["users_default"].as_i64().unwrap_or(0);
    let restricted = (users_default + 1).max(50);
    let mut old_pl = old_state("m.room.power_levels")?.unwrap_or(json!({}));
    old_pl["events_default"] =
        json!(restricted.max(old_pl["events_default"].as_i64().unwrap_or(0)));
    old_pl["invite"] = json!(restricted.max(old_pl["invite"].as_i64().unwrap_or(0)));
    old.append(
        &s.user_id,
        NewEvent::state("m.room.power_levels", "", old_pl),
        None,
    )?;
    // The old room leaves the directory in the batch that tombstones it.
    for (alias, _) in &aliases {
        Directory::stage_alias_moved(&mut old.extra, &old_id, alias);
    }
    Directory::stage_published(&mut old.extra, &old_id, false)?;
    old.commit().await?;
    tracing::info!(old = %old_id, new = %new_id, version = %version, "room upgraded");
    carry_personal_settings(&app, &s.user_id, &new_id).await?;
    Ok(Json(json!({ "replacement_room": new_id })))
}

/// After `user` joins a room that replaced another (its create event names a predecessor),
/// carry their personal settings over, as the spec recommends: the old room's tags and its
/// room push rule (say, a muted room stays muted). Settings already set on the new room win.
pub async fn carry_personal_settings(
    app: &App,
    user: &ruma::UserId,
    room_id: &ruma::RoomId,
) -> ApiResult<()> {
    let Some(room) = app.rooms.room(room_id)? else {
        return Ok(());
    };
    let hash = app
        .rooms
        .current_state(room.short)?
        .map(|s| s.0)
        .unwrap_or(0);
    let Some(old) = app
        .rooms
        .state_json(hash, "m.room.create", "")?
        .and_then(|c| {
            c["content"]["predecessor"]["room_id"]
                .as_str()
                .map(str::to_owned)
        })
        .and_then(|r| ruma::OwnedRoomId::try_from(r).ok())
    else {
        return Ok(());
    };
    let tags = |room: &str| app.account_data.get(user, room, "m.tag");
    if tags(room_id.as_str())?.is_none() {
        if let Some(t) = tags(old.as_str())? {
            app.set_account_data(user, room_id.as_str(), "m.tag", &t)
                .await?;
        }
    }
    let rules = app.account_data.push_rules(user)?;
    if rules
        .get(ruma::push::RuleKind::Room, room_id.as_str())
        .is_none()
    {
        if let Some(old_rule) = rules.get(ruma::push::RuleKind::Room, old.as_str()) {
            let actions = old_rule.actions().to_vec();
            let new_room = room_id.to_owned();
            super::push_rules::edit(app, user, |r| {
                r.insert(
                    ruma::push::NewPushRule::Room(ruma::push::NewSimplePushRule::new(
                        new_room, actions,
                    )),
                    None,
                    None,
                )
                .map_err(|e| ApiError::Internal(e.to_string()))
            })
            .await?;
        }
    }
    Ok(())
}
