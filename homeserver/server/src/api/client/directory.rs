//! Room aliases: create, resolve, delete, and list a room's local aliases.

use axum::{extract::State, Json};
use ruma::{
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_room_visibility, set_room_visibility},
        room::{aliases, Visibility},
    },
    RoomAliasId,
};
use serde_json::{json, Value};

use super::membership::resolve_alias;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, Body},
        ruma::Ruma,
    },
    service::{
        directory::{
            list_public, parse_limit, Network, PublicRoomsBody, PublicRoomsFilter, PublicRoomsQuery,
        },
        App,
    },
};

pub async fn create(
    app: App,
    req: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let (alias, room_id) = (&body.room_alias, &body.room_id);
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
    app.rooms.room_or_404(room_id)?;
    if !app.rooms.is_joined(&s.user_id, room_id)? {
        return Err(ApiError::Forbidden("You are not in this room".into()));
    }
    app.directory.create_alias(alias, room_id, &s.user_id)?;
    app.store.flush().await?;
    Ok(create_alias::v3::Response::new())
}

pub async fn get(
    app: App,
    req: Ruma<get_alias::v3::Request>,
) -> ApiResult<get_alias::v3::Response> {
    let alias = req.body.room_alias;
    let (room_id, mut servers) = super::membership::resolve_alias_servers(&app, &alias).await?;
    if servers.is_empty() {
        servers.push(app.server_name().to_owned());
        if let Some(room) = app.rooms.room(&room_id)? {
            servers.extend(app.rooms.room_servers(room.short)?);
        }
    }
    Ok(get_alias::v3::Response::new(room_id, servers))
}

pub async fn delete(
    app: App,
    req: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    let (s, alias) = (req.caller, req.body.room_alias);
    let room_id = resolve_alias(&app, &alias)?;
    let creator = app.directory.alias_creator(&room_id, &alias)?;
    let is_creator = creator.as_deref() == Some(s.user_id.as_str());
    // Otherwise whoever may change the room's canonical alias may remove its aliases.
    let may_manage = is_creator
        || app.may_send_state(
            &s.user_id,
            &app.rooms.room_or_404(&room_id)?,
            "m.room.canonical_alias",
        )?;
    if !may_manage {
        return Err(ApiError::Forbidden("You may not delete this alias".into()));
    }
    app.directory.delete_alias(&room_id, &alias)?;
    app.store.flush().await?;
    Ok(delete_alias::v3::Response::new())
}

pub async fn room_aliases(
    app: App,
    req: Ruma<aliases::v3::Request>,
) -> ApiResult<aliases::v3::Response> {
    let (s, room_id) = (req.caller, req.body.room_id);
    let room = app.rooms.room_or_forbidden(&room_id)?;
    app.visible_state_hash(&s.user_id, &room)?;
    // Only valid aliases are ever stored; one that no longer parses is left out.
    let list = app
        .directory
        .room_aliases(&room_id)?
        .into_iter()
        .filter_map(|(alias, _)| RoomAliasId::parse(&alias).ok())
        .collect();
    Ok(aliases::v3::Response::new(list))
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
            return Ok(list_public(
                app,
                limit,
                since,
                filter.unwrap_or(&Default::default()),
                network,
            )?)
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
                q.push(format!(
                    "since={}",
                    crate::service::federation::sender::enc(s)
                ));
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

/// Hand-written: ruma's `PublicRoomsChunk` leaves out `join_rule` when it is `public`.
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

/// Hand-written: ruma's `PublicRoomsChunk` leaves out `join_rule` when it is `public`.
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
    app: App,
    req: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    let room_id = req.body.room_id;
    app.rooms.room_or_404(&room_id)?;
    let public = app.directory.is_published(&room_id)?;
    Ok(get_room_visibility::v3::Response::new(if public {
        Visibility::Public
    } else {
        Visibility::Private
    }))
}

pub async fn set_visibility(
    app: App,
    req: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let room_id = &body.room_id;
    let room = app.rooms.room_or_404(room_id)?;
    if !app.may_send_state(&s.user_id, &room, "m.room.canonical_alias")? {
        return Err(ApiError::Forbidden(
            "You may not change this room's directory visibility".into(),
        ));
    }
    let published = match &body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(ApiError::BadJson(format!(
                "visibility must be public or private, not {}",
                other.as_str()
            )))
        }
    };
    app.directory.set_published(room_id, published)?;
    app.store.flush().await?;
    app.public_users.mark_stale();
    Ok(set_room_visibility::v3::Response::new())
}
