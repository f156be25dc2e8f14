//! Server signing keys: our key server and notary endpoints. The cache of other servers' keys
//! is `service::federation::keys`.

use std::collections::BTreeMap;

use axum::{extract::State, Json};
use ruma::api::federation::discovery::{get_remote_server_keys, get_server_keys};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    http::{
        extract::Body,
        ruma::{raw_json, Ruma},
    },
    service::{
        federation::keys::{notarise, own_response},
        App,
    },
};

/// `GET /_matrix/key/v2/server`: our signed keys, as raw JSON, so exactly the bytes signed.
pub async fn server_keys(
    app: App,
    _: Ruma<get_server_keys::v2::Request>,
) -> ApiResult<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(raw_json(
        &own_response(&app)?,
    )?))
}

#[derive(Deserialize)]
pub struct QueryBody {
    server_keys: BTreeMap<String, Value>,
}

/// `POST /_matrix/key/v2/query`: a notary answer, each response countersigned by us.
/// Hand-written: ruma's request refuses the whole batch over one server name or key id it
/// rejects, where this skips that server.
pub async fn query(State(app): State<App>, Body(body): Body<QueryBody>) -> ApiResult<Json<Value>> {
    let mut out = vec![];
    for (server, criteria) in body.server_keys.iter().take(100) {
        // `{key_id: {minimum_valid_until_ts}}`: the latest any key asks for.
        let min_valid = criteria
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|c| c.get("minimum_valid_until_ts").and_then(Value::as_u64))
            .max();
        if let Some(v) = notarise(&app, server, min_valid).await? {
            out.push(v);
        }
    }
    Ok(Json(json!({ "server_keys": out })))
}

/// `GET /_matrix/key/v2/query/{serverName}`; `minimum_valid_until_ts` defaults to now.
pub async fn query_one(
    app: App,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> ApiResult<get_remote_server_keys::v2::Response> {
    let q = req.body;
    let min_valid = u64::from(q.minimum_valid_until_ts.0);
    let mut out = vec![];
    if let Some(v) = notarise(&app, q.server_name.as_str(), Some(min_valid)).await? {
        out.push(raw_json(&v)?);
    }
    Ok(get_remote_server_keys::v2::Response::new(out))
}
