//! Client-server endpoints that concern appservices: ping, each network's room directory, and
//! third-party lookups passed through to the appservices that provide the protocol.

use std::time::Duration;

use axum::{extract::State, Json};
use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    room::Visibility,
};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{query_pairs, Auth, Path},
        ruma::Ruma,
    },
    service::federation::sender::enc,
    service::App,
};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`.
pub async fn ping(
    app: App,
    req: Ruma<request_ping::v1::Request>,
) -> ApiResult<request_ping::v1::Response> {
    let (reg, body) = (req.caller, req.body);
    if reg.id != body.appservice_id {
        return Err(ApiError::Forbidden(
            "Provided access token is not the appservice's as_token".into(),
        ));
    }
    let txn = body.transaction_id.as_ref().map(|t| t.as_str());
    let ms = app.ping_appservice(&reg, txn).await?;
    Ok(request_ping::v1::Response::new(Duration::from_millis(ms)))
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: only with an `as_token`.
pub async fn set_network_visibility(
    app: App,
    req: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let (reg, body) = (req.caller, req.body);
    let room_id = &body.room_id;
    app.rooms.room_or_404(room_id)?;
    let listed = match &body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(ApiError::BadJson(format!(
                "visibility must be public or private, not {}",
                other.as_str()
            )))
        }
    };
    app.directory
        .set_network_listing(&reg.id, &body.network_id, room_id, listed)?;
    app.store.flush().await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// The protocols every appservice offers, with its instances named `appservice|network` (the
/// `third_party_instance_id` a client gives `publicRooms`).
async fn protocols(app: &App, only: Option<&str>) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for reg in &app.appservices.regs {
        for p in reg
            .protocols
            .iter()
            .filter(|p| only.is_none_or(|o| o == p.as_str()))
        {
            let Some(mut meta) = app
                .thirdparty_query(reg, &format!("protocol/{}", enc(p)), None)
                .await
            else {
                continue;
            };
            let Some(obj) = meta.as_object_mut() else {
                continue;
            };
            let mut instances = vec![];
            for mut inst in obj
                .remove("instances")
                .and_then(|i| match i {
                    Value::Array(a) => Some(a),
                    _ => None,
                })
                .unwrap_or_default()
            {
                let network = inst["network_id"].as_str().unwrap_or_default().to_owned();
                inst["instance_id"] = json!(format!("{}|{network}", reg.id));
                instances.push(inst);
            }
            match out.get_mut(p.as_str()) {
                // Two appservices for one protocol: one entry, all their instances.
                Some(existing) => {
                    if let Some(list) = existing["instances"].as_array_mut() {
                        list.extend(instances);
                    }
                }
                None => {
                    obj.insert("instances".into(), Value::Array(instances));
                    out.insert(p.clone(), meta);
                }
            }
        }
    }
    out
}

/// `GET /thirdparty/protocols`.
///
/// Hand-written: ruma's `Protocol` drops fields bridges add and needs string-only `fields`.
pub async fn all_protocols(State(app): State<App>, Auth(_): Auth) -> Json<Value> {
    Json(Value::Object(protocols(&app, None).await))
}

/// `GET /thirdparty/protocol/{protocol}`.
///
/// Hand-written: ruma's `Protocol` drops fields bridges add and needs string-only `fields`.
pub async fn one_protocol(
    State(app): State<App>,
    Auth(_): Auth,
    Path(protocol): Path<String>,
) -> ApiResult<Json<Value>> {
    protocols(&app, Some(&protocol))
        .await
        .remove(&protocol)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("No protocol {protocol}")))
}

/// Concatenate the answers of every appservice asked (those with the protocol, or all).
async fn lookup(
    app: &App,
    protocol: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Json<Value>> {
    let regs: Vec<_> = app
        .appservices
        .regs
        .iter()
        .filter(|r| protocol.is_none_or(|p| r.protocols.iter().any(|q| q == p)))
        .collect();
    if protocol.is_some() && regs.is_empty() {
        return Err(ApiError::NotFound(
            "No appservice provides this protocol".into(),
        ));
    }
    let mut out = vec![];
    for reg in regs {
        if let Some(Value::Array(found)) = app.thirdparty_query(reg, path, query).await {
            out.extend(found);
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /thirdparty/location/{protocol}`.
///
/// Hand-written: ruma's `Location` needs string-only `fields`; the spec allows any object.
pub async fn location_by_protocol(
    State(app): State<App>,
    Auth(_): Auth,
    Path(protocol): Path<String>,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    let path = format!("location/{}", enc(&protocol));
    lookup(&app, Some(&protocol), &path, uri.query()).await
}

/// `GET /thirdparty/user/{protocol}`.
///
/// Hand-written: ruma's `User` needs string-only `fields`; the spec allows any object.
pub async fn user_by_protocol(
    State(app): State<App>,
    Auth(_): Auth,
    Path(protocol): Path<String>,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    let path = format!("user/{}", enc(&protocol));
    lookup(&app, Some(&protocol), &path, uri.query()).await
}

/// `GET /thirdparty/location?alias=`.
///
/// Hand-written: ruma answers a missing `alias` `M_INVALID_PARAM`, not `M_MISSING_PARAM`.
pub async fn location_by_alias(
    State(app): State<App>,
    Auth(_): Auth,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    require_param(uri.query(), "alias")?;
    lookup(&app, None, "location", uri.query()).await
}

/// `GET /thirdparty/user?userid=`.
///
/// Hand-written: ruma answers a missing `userid` `M_INVALID_PARAM`, not `M_MISSING_PARAM`.
pub async fn user_by_id(
    State(app): State<App>,
    Auth(_): Auth,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    require_param(uri.query(), "userid")?;
    lookup(&app, None, "user", uri.query()).await
}

fn require_param(query: Option<&str>, name: &str) -> ApiResult<()> {
    if query_pairs(query).iter().any(|(k, _)| k == name) {
        Ok(())
    } else {
        Err(ApiError::MissingParam(format!("missing {name}")))
    }
}
