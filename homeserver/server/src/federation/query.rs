//! Federation queries: server version, profiles and aliases of this server, OpenID userinfo.

use axum::{extract::State, Json};
use ruma::{OwnedRoomAliasId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::Query,
    service::{
        directory::{list_public, parse_limit, PublicRoomsBody, PublicRoomsQuery},
        App,
    },
};

pub async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Plexus", "version": env!("CARGO_PKG_VERSION") } }))
}

#[derive(Deserialize)]
pub struct ProfileQuery {
    user_id: String,
    field: Option<String>,
}

pub async fn profile(
    State(app): State<App>,
    Query(q): Query<ProfileQuery>,
    _req: FedRequest,
) -> ApiResult<Json<Value>> {
    let user = OwnedUserId::try_from(q.user_id.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))?;
    if !app.is_local(&user) {
        return Err(ApiError::InvalidParam("user is not on this server".into()));
    }
    let rec = app
        .user(&user)?
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    let mut out = json!({});
    let want = |f: &str| q.field.as_deref().is_none_or(|w| w == f);
    if want("displayname") {
        if let Some(d) = rec.displayname {
            out["displayname"] = json!(d);
        }
    }
    if want("avatar_url") {
        if let Some(a) = rec.avatar_url {
            out["avatar_url"] = json!(a);
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    room_alias: String,
}

pub async fn directory(
    State(app): State<App>,
    Query(q): Query<DirectoryQuery>,
    _req: FedRequest,
) -> ApiResult<Json<Value>> {
    let alias = OwnedRoomAliasId::try_from(q.room_alias.as_str())
        .map_err(|e| ApiError::InvalidParam(format!("invalid alias: {e}")))?;
    if alias.server_name() != app.server_name() {
        return Err(ApiError::NotFound("Room alias not found".into()));
    }
    let room_id = app
        .directory
        .room_of_alias(&alias)?
        .ok_or_else(|| ApiError::NotFound("Room alias not found".into()))?;
    let mut servers = vec![app.server_name().to_string()];
    if let Some(room) = app.room(&room_id)? {
        servers.extend(
            app.room_servers(room.short)?
                .into_iter()
                .map(|s| s.to_string()),
        );
    }
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    access_token: String,
}

/// Unauthenticated by design: the OpenID token is the credential.
pub async fn openid_userinfo(
    State(app): State<App>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<Value>> {
    let user = app
        .openid
        .user_of(&q.access_token)?
        .ok_or(ApiError::UnknownToken { soft_logout: false })?;
    Ok(Json(json!({ "sub": user })))
}

/// `GET /publicRooms`: this server's room directory for another server's users.
pub async fn public_rooms(
    State(app): State<App>,
    Query(q): Query<PublicRoomsQuery>,
    _req: FedRequest,
) -> ApiResult<Json<Value>> {
    let limit = parse_limit(q.limit.as_deref())?;
    Ok(Json(list_public(
        &app,
        limit,
        q.since.as_deref(),
        &Default::default(),
        &Default::default(),
    )?))
}

/// `POST /publicRooms`: the same with a filter.
pub async fn search_public_rooms(
    State(app): State<App>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let body: PublicRoomsBody = serde_json::from_value(req.body.clone())
        .map_err(|e| ApiError::BadJson(format!("invalid publicRooms request: {e}")))?;
    Ok(Json(list_public(
        &app,
        body.limit,
        body.since.as_deref(),
        &body.filter,
        &Default::default(),
    )?))
}
