//! `PUT /_matrix/federation/v1/send/{txnId}`: PDUs each accepted or refused on their own (the
//! answer lists every one), then EDUs (typing, receipts, presence).

use std::collections::BTreeMap;

use ruma::{api::federation::transactions::send_transaction_message, OwnedEventId};
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{
        federation::{ingest::IngestError, send::one_pdu},
        App,
    },
};

pub async fn transaction(
    app: App,
    req: Ruma<send_transaction_message::v1::Request>,
) -> ApiResult<send_transaction_message::v1::Response> {
    let (origin, t) = (req.caller, req.body);
    if t.origin != origin {
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
    let mut results = BTreeMap::new();
    let mut acl = std::collections::HashMap::new();
    for raw in &t.pdus {
        let Ok(raw) = serde_json::from_str::<Value>(raw.get()) else {
            continue;
        };
        let (id, outcome) = one_pdu(&app, &origin, &raw, &mut acl).await;
        let Some(id) = id else { continue };
        let result = match outcome {
            Ok(o) => {
                tracing::debug!(event_id = %id, origin = %origin, outcome = ?o, "inbound PDU");
                Ok(())
            }
            Err(e) => {
                // A failure of ours reads as the Matrix error it maps to.
                let why = match e {
                    IngestError::Local(e) => ApiError::from(e).to_string(),
                    e => e.to_string(),
                };
                tracing::info!(event_id = %id, origin = %origin, error = %why, "inbound PDU refused");
                Err(why)
            }
        };
        // An id a PDU only claims (one for a room we are not in) may not be an event id, and
        // ruma's answer cannot name it.
        if let Ok(id) = OwnedEventId::try_from(id) {
            results.insert(id, result);
        }
    }
    for edu in &t.edus {
        let Ok(edu) = edu.deserialize_as::<Value>() else {
            continue;
        };
        if let Err(e) = crate::service::federation::edu::handle(&app, &origin, &edu).await {
            tracing::debug!(origin = %origin, error = %e, "EDU ignored");
        }
    }
    // The disk filled up part way: some of it may not be stored, so all of it comes again
    // (what was stored is recognised and skipped then).
    app.store.kv.health()?;
    Ok(send_transaction_message::v1::Response::new(results))
}
