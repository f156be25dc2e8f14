//! Room aliases: create, resolve, delete, and list a room's local aliases.

use axum::{extract::State, Json};
use ruma::{OwnedRoomAliasId, RoomAliasId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::membership::resolve_alias;
use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Path},
    service::{
        directory::{
            list_public, parse_limit, Network, PublicRoomsBody, PublicRoomsFilter, PublicRoomsQuery,
        },
        App,
    },
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
    app.appservices.check_exclusive(
        plexus_core::appservice::Kind::Alias,
        alias.as_str(),
        s.appservice.as_deref(),
    )?;
    app.room_or_404(&room_id)?;
    if !app.is_joined(&s.user_id, &room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    app.directory.create_alias(&alias, &room_id, &s.user_id)?;
    app.store.flush().await?;
    Ok(Json(json!({})))
}

pub async fn get(State(app): State<App>, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let (room_id, mut servers) = super::membership::resolve_alias_servers(&app, &alias).await?;
    if servers.is_empty() {
        servers.push(app.server_name().to_owned());
        if let Some(room) = app.room(&room_id)? {
            servers.extend(app.room_servers(room.short)?);
        }
    }
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

pub async fn delete(
    State(app): State<App>,
    Auth(s): Auth,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = resolve_alias(&app, &alias)?;
    let creator = app.directory.alias_creator(&room_id, &alias)?;
    let is_creator = creator.as_deref() == Some(s.user_id.as_str());
    // Otherwise whoever may change the room's canonical alias may remove its aliases.
    let may_manage = is_creator
        || app.may_send_state(
            &s.user_id,
            &app.room_or_404(&room_id)?,
            "m.room.canonical_alias",
        )?;
    if !may_manage {
        return Err(ApiError::Forbidden("You may not delete this alias".into()));
    }
    app.directory.delete_alias(&room_id, &alias)?;
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
    let aliases: Vec<String> = app
        .directory
        .room_aliases(&room_id)?
        .into_iter()
        .map(|(alias, _)| alias)
        .collect();
    Ok(Json(json!({ "aliases": aliases })))
}

/// This server's directory, or another server's over federation (`GET` when there is no
/// filter, `POST` with one).
async fn list_public_on(
    app: &App,
    limit: Option<usize>,
    since: Option<&str>,
    server: Option<&str>,
    filter: Option<&PublicRoomsFilter>,
    network: &Network,
) -> ApiResult<Value> {
    let server = match server {
        Some(s) if s != app.server_name().as_str() => ruma::ServerName::parse(s)
            .map_err(|e| ApiError::InvalidParam(format!("invalid server name: {e}")))?,
        _ => {
            return list_public(
                app,
                limit,
                since,
                filter.unwrap_or(&Default::default()),
                network,
            )
        }
    };
    let Some(fed) = &app.federation else {
        return Err(ApiError::NotFound(
            "Other servers' directories need federation, which is not enabled".into(),
        ));
    };
    const PATH: &str = "/_matrix/federation/v1/publicRooms";
    let v = match filter {
        None => {
            let mut q = vec![];
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            if let Some(s) = since {
                q.push(format!("since={}", crate::federation::sender::enc(s)));
            }
            let path = format!("{PATH}?{}", q.join("&"));
            fed.request(app, &server, http::Method::GET, &path, None, true)
                .await?
        }
        Some(f) => {
            let mut body = json!({ "filter": f });
            if let Some(l) = limit {
                body["limit"] = json!(l);
            }
            if let Some(s) = since {
                body["since"] = json!(s);
            }
            fed.request(app, &server, http::Method::POST, PATH, Some(body), true)
                .await?
        }
    };
    if !v.get("chunk").is_some_and(Value::is_array) {
        return Err(ApiError::BadGateway(format!(
            "{server} answered publicRooms without a chunk"
        )));
    }
    Ok(v)
}

pub async fn public_rooms(
    State(app): State<App>,
    crate::http::extract::Query(q): crate::http::extract::Query<PublicRoomsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = parse_limit(q.limit.as_deref())?;
    let network = Network::of(
        q.third_party_instance_id.as_deref(),
        q.include_all_networks.as_deref() == Some("true"),
    );
    Ok(Json(
        list_public_on(
            &app,
            limit,
            q.since.as_deref(),
            q.server.as_deref(),
            None,
            &network,
        )
        .await?,
    ))
}

pub async fn search_public_rooms(
    State(app): State<App>,
    Auth(_): Auth,
    crate::http::extract::Query(q): crate::http::extract::Query<PublicRoomsQuery>,
    Body(body): Body<PublicRoomsBody>,
) -> ApiResult<Json<Value>> {
    let server = body.server.as_deref().or(q.server.as_deref());
    Ok(Json(
        list_public_on(
            &app,
            body.limit,
            body.since.as_deref(),
            server,
            Some(&body.filter),
            &Network::of(
                body.third_party_instance_id.as_deref(),
                body.include_all_networks,
            ),
        )
        .await?,
    ))
}

pub async fn get_visibility(
    State(app): State<App>,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    app.room_or_404(&room_id)?;
    let public = app.directory.is_published(&room_id)?;
    Ok(Json(
        json!({ "visibility": if public { "public" } else { "private" } }),
    ))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: String,
}

pub async fn set_visibility(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = app.room_or_404(&room_id)?;
    if !app.may_send_state(&s.user_id, &room, "m.room.canonical_alias")? {
        return Err(ApiError::Forbidden(
            "You may not change this room's directory visibility".into(),
        ));
    }
    let published = match body.visibility.as_str() {
        "public" => true,
        "private" => false,
        other => {
            return Err(ApiError::BadJson(format!(
                "visibility must be public or private, not {other}"
            )))
        }
    };
    app.directory.set_published(&room_id, published)?;
    app.store.flush().await?;
    app.public_users.mark_stale();
    Ok(Json(json!({})))
}
