//! `PUT /_matrix/federation/v1/send/{txnId}`: PDUs each accepted or refused on their own (the
//! answer lists every one), then EDUs (typing, receipts, presence).

use axum::{extract::State, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::x_matrix::FedRequest;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::Path,
    service::{federation::send::one_pdu, App},
};

#[derive(Deserialize)]
struct Transaction {
    origin: String,
    #[serde(default)]
    pdus: Vec<Value>,
    #[serde(default)]
    edus: Vec<Value>,
}

pub async fn transaction(
    State(app): State<App>,
    Path(_txn): Path<String>,
    req: FedRequest,
) -> ApiResult<Json<Value>> {
    let t: Transaction = req.json()?;
    if t.origin != req.origin.as_str() {
        return Err(ApiError::Forbidden(
            "transaction origin does not match the signed origin".into(),
        ));
    }
    if t.pdus.len() > 50 || t.edus.len() > 100 {
        return Err(ApiError::BadJson("at most 50 PDUs and 100 EDUs".into()));
    }
    // A transaction answered 200 is never sent again: while the store cannot take writes
    // (a full disk), the sender is told to come back instead of losing what it carried.
    app.store.kv.health()?;
    let mut results = serde_json::Map::new();
    let mut acl = std::collections::HashMap::new();
    for raw in &t.pdus {
        let (id, outcome) = one_pdu(&app, &req.origin, raw, &mut acl).await;
        let Some(id) = id else { continue };
        match outcome {
            Ok(o) => {
                tracing::debug!(event_id = %id, origin = %req.origin, outcome = ?o, "inbound PDU");
                results.insert(id, json!({}));
            }
            Err(e) => {
                tracing::info!(event_id = %id, origin = %req.origin, error = %e, "inbound PDU refused");
                results.insert(id, json!({ "error": e.to_string() }));
            }
        }
    }
    for edu in &t.edus {
        if let Err(e) = crate::service::federation::edu::handle(&app, &req.origin, edu).await {
            tracing::debug!(origin = %req.origin, error = %e, "EDU ignored");
        }
    }
    // The disk filled up part way: some of it may not be stored, so all of it comes again
    // (what was stored is recognised and skipped then).
    app.store.kv.health()?;
    Ok(Json(json!({ "pdus": results })))
}
