//! Federation queries: server version, profiles and aliases of this server, OpenID userinfo.

use axum::{extract::State, Json};
use ruma::api::federation::{
    discovery::get_server_version::{self, v1::Server},
    openid::get_openid_userinfo,
    query::{get_profile_information, get_room_information},
};
use serde_json::{json, Value};

use crate::http::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::{extract::Query, ruma::Ruma},
    service::{
        directory::{list_public, parse_limit, PublicRoomsBody, PublicRoomsQuery},
        App,
    },
};

pub async fn version(
    _: App,
    _: Ruma<get_server_version::v1::Request>,
) -> ApiResult<get_server_version::v1::Response> {
    let mut server = Server::new();
    server.name = Some("Plexus".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut res = get_server_version::v1::Response::new();
    res.server = Some(server);
    Ok(res)
}

pub async fn profile(
    app: App,
    req: Ruma<get_profile_information::v1::Request>,
) -> ApiResult<get_profile_information::v1::Response> {
    let q = req.body;
    let user = q.user_id;
    if !app.is_local(&user) {
        return Err(ApiError::InvalidParam("user is not on this server".into()));
    }
    let rec = app
        .accounts
        .user(&user)?
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    let mut out = get_profile_information::v1::Response::new();
    let want = |f: &str| q.field.as_ref().is_none_or(|w| w.as_str() == f);
    if want("displayname") {
        if let Some(d) = rec.displayname {
            out.set("displayname".into(), json!(d));
        }
    }
    if want("avatar_url") {
        if let Some(a) = rec.avatar_url {
            out.set("avatar_url".into(), json!(a));
        }
    }
    Ok(out)
}

pub async fn directory(
    app: App,
    req: Ruma<get_room_information::v1::Request>,
) -> ApiResult<get_room_information::v1::Response> {
    let alias = req.body.room_alias;
    if alias.server_name() != app.server_name() {
        return Err(ApiError::NotFound("Room alias not found".into()));
    }
    let room_id = app
        .directory
        .room_of_alias(&alias)?
        .ok_or_else(|| ApiError::NotFound("Room alias not found".into()))?;
    let mut servers = vec![app.server_name().to_owned()];
    if let Some(room) = app.rooms.room(&room_id)? {
        servers.extend(app.rooms.room_servers(room.short)?);
    }
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

/// Unauthenticated by design: the OpenID token is the credential.
pub async fn openid_userinfo(
    app: App,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> ApiResult<get_openid_userinfo::v1::Response> {
    let user = app
        .openid
        .user_of(&req.body.access_token)?
        .ok_or(ApiError::UnknownToken { soft_logout: false })?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}

/// `GET /publicRooms`: this server's room directory for another server's users.
/// Hand-written: ruma's `PublicRoomsChunk` leaves out `"join_rule": "public"`, which this sends.
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
/// Hand-written: ruma's response leaves out `"join_rule": "public"` and sends absent
/// `next_batch`/`prev_batch` as `null`, and its filter reads `room_types: []` as no filter.
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
