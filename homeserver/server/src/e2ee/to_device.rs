//! To-device messages: `/sendToDevice` with transaction ids, and the `m.direct_to_device`
//! EDU from other servers. The inboxes, and the EDUs to other servers, are the service's
//! (`crate::service::e2ee::to_device`).

use std::collections::BTreeMap;

use ruma::{
    api::client::to_device::send_event_to_device, events::AnyToDeviceEventContent, serde::Raw,
    OwnedServerName, OwnedUserId, ServerName,
};
use serde_json::{Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{e2ee::to_device::Delivery, App, Services},
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
    let targets = expand(&app, local)?;
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

/// `*` becomes every device of the user; messages for devices that do not exist are dropped.
fn expand(app: &Services, deliveries: Vec<Delivery>) -> ApiResult<Vec<Delivery>> {
    let mut out = vec![];
    for d in deliveries {
        if d.device == "*" {
            for (device, _) in app.devices(&d.user)? {
                out.push(Delivery {
                    user: d.user.clone(),
                    device,
                    content: d.content.clone(),
                });
            }
        } else if app.device(&d.user, &d.device)?.is_some() {
            out.push(d);
        }
    }
    Ok(out)
}

/// An `m.direct_to_device` EDU from `origin`: its sender must be one of origin's users, and
/// only messages for our users are taken. A retried transaction's message is taken once.
pub async fn receive(app: &App, origin: &ServerName, content: &Value) -> ApiResult<()> {
    let sender = content["sender"].as_str().unwrap_or_default();
    let Ok(sender_id) = OwnedUserId::try_from(sender) else {
        return Ok(());
    };
    let (Some(kind), Some(messages)) = (content["type"].as_str(), content["messages"].as_object())
    else {
        return Ok(());
    };
    if sender_id.server_name() != origin {
        tracing::warn!(%origin, sender, "to-device message for a user of another server");
        return Ok(());
    }
    if let Some(id) = content["message_id"].as_str() {
        if !app.e2ee.first_sight(origin.as_str(), id) {
            return Ok(());
        }
    }
    let mut deliveries = vec![];
    for (user, devices) in messages {
        let Ok(user) = OwnedUserId::try_from(user.as_str()) else {
            continue;
        };
        let Some(devices) = devices.as_object() else {
            continue;
        };
        if !app.is_local(&user) {
            continue;
        }
        for (device, c) in devices {
            deliveries.push(Delivery {
                user: user.clone(),
                device: device.clone(),
                content: c.clone(),
            });
        }
    }
    let targets = expand(app, deliveries)?;
    if targets.is_empty() {
        return Ok(());
    }
    app.receive_to_device(sender, kind, targets).await
}
