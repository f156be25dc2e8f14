//! Room aliases: create, resolve, delete, and list a room's local aliases.

use axum::{extract::State, Json};
use plexus_store::{Batch, Table};
use ruma::{OwnedRoomAliasId, RoomAliasId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::membership::{parse_room_id, resolve_alias};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Path},
    service::{key2, App},
};

fn parse_alias(s: &str) -> ApiResult<OwnedRoomAliasId> {
    RoomAliasId::parse(s).map_err(|e| ApiError::InvalidParam(format!("invalid room alias: {e}")))
}

#[derive(Deserialize)]
pub struct AliasBody {
    room_id: String,
}

pub async fn create(
    State(app): State<App>,
    Auth(s): Auth,
    Path(alias): Path<String>,
    Body(body): Body<AliasBody>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = parse_room_id(&body.room_id)?;
    if alias.server_name() != app.server_name() {
        return Err(ApiError::InvalidParam(
            "Aliases can only be created on this server's domain".into(),
        ));
    }
    app.room_or_404(&room_id)?;
    if !app.is_joined(&s.user_id, &room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    let stored =
        app.store
            .kv
            .insert_if_absent(Table::Alias, alias.as_bytes(), room_id.as_bytes())?;
    if stored != room_id.as_bytes()
        || app
            .store
            .kv
            .contains(Table::RoomAlias, &key2(room_id.as_str(), alias.as_str()))?
    {
        return Err(ApiError::Conflict("Room alias already exists".into()));
    }
    let mut b = Batch::default();
    b.put(
        Table::RoomAlias,
        &key2(room_id.as_str(), alias.as_str()),
        s.user_id.as_bytes(),
    );
    app.store.commit(b)?;
    app.store.flush().await?;
    Ok(Json(json!({})))
}

pub async fn get(State(app): State<App>, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = resolve_alias(&app, &alias)?;
    Ok(Json(
        json!({ "room_id": room_id, "servers": [app.server_name()] }),
    ))
}

pub async fn delete(
    State(app): State<App>,
    Auth(s): Auth,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = resolve_alias(&app, &alias)?;
    let creator = app
        .store
        .kv
        .get(Table::RoomAlias, &key2(room_id.as_str(), alias.as_str()))?;
    let is_creator = creator.as_deref() == Some(s.user_id.as_bytes());
    // Otherwise whoever may change the room's canonical alias may remove its aliases.
    let may_manage = is_creator || {
        let room = app.room_or_404(&room_id)?;
        let hash = app.current_state(room.short)?.map(|h| h.0).unwrap_or(0);
        let pl = app
            .state_json(hash, "m.room.power_levels", "")?
            .map(|e| e["content"].clone())
            .unwrap_or(Value::Null);
        let level = |v: &Value, d: i64| v.as_i64().unwrap_or(d);
        let needed = level(
            &pl["events"]["m.room.canonical_alias"],
            level(&pl["state_default"], 50),
        );
        let creator_of_room = app.state_json(hash, "m.room.create", "")?.is_some_and(|c| {
            c["sender"] == s.user_id.as_str()
                && room
                    .meta
                    .version
                    .rules()
                    .is_some_and(|r| r.authorization.explicitly_privilege_room_creators)
        });
        let mine = level(
            &pl["users"][s.user_id.as_str()],
            level(&pl["users_default"], 0),
        );
        app.is_joined(&s.user_id, &room_id)? && (creator_of_room || mine >= needed)
    };
    if !may_manage {
        return Err(ApiError::Forbidden("You may not delete this alias".into()));
    }
    let mut b = Batch::default();
    b.delete(Table::Alias, alias.as_bytes());
    b.delete(Table::RoomAlias, &key2(room_id.as_str(), alias.as_str()));
    app.store.commit(b)?;
    app.store.flush().await?;
    Ok(Json(json!({})))
}

pub async fn room_aliases(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_forbidden(&room_id)?;
    app.visible_state_hash(&s.user_id, &room)?;
    let mut prefix = room_id.as_bytes().to_vec();
    prefix.push(0);
    let aliases: Vec<String> = app
        .store
        .kv
        .scan_prefix(Table::RoomAlias, &prefix)
        .map(|r| r.map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({ "aliases": aliases })))
}
