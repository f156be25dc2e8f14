//! To-device messages: `/sendToDevice` with transaction ids. The inboxes, the EDUs to other
//! servers and the `m.direct_to_device` EDUs from them are the service's
//! (`crate::service::e2ee::to_device`).

use std::collections::BTreeMap;

use ruma::{
    api::client::to_device::send_event_to_device, events::AnyToDeviceEventContent, serde::Raw,
    OwnedServerName,
};
use serde_json::{Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{e2ee::to_device::Delivery, App},
};

/// A message's content as ruma hands it over, as JSON.
fn content_json(raw: &Raw<AnyToDeviceEventContent>) -> ApiResult<Value> {
    raw.deserialize_as_unchecked()
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

/// `PUT /sendToDevice/{eventType}/{txnId}`.
pub async fn send(
    app: App,
    req: Ruma<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let kind = body.event_type.to_string();
    let txn = body.txn_id;
    let mut local = vec![];
    let mut remote: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in body.messages {
        // In the order of the device ids as text, as before (ruma's map puts `*` last).
        let devices = devices
            .iter()
            .map(|(d, c)| Ok((d.to_string(), content_json(c)?)))
            .collect::<ApiResult<Map<String, Value>>>()?;
        if app.is_local(&user) {
            for (device, content) in devices {
                local.push(Delivery {
                    user: user.clone(),
                    device,
                    content,
                });
            }
        } else {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.to_string(), Value::Object(devices));
        }
    }
    if !remote.is_empty() && app.federation.is_none() {
        remote.clear();
    }
    let targets = crate::service::e2ee::to_device::expand(&app, local)?;
    app.send_to_device(
        &s.user_id,
        &s.txn_scope(),
        txn.as_str(),
        &kind,
        targets,
        remote,
    )
    .await?;
    Ok(send_event_to_device::v3::Response::new())
}
