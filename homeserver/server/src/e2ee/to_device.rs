//! To-device messages: `/sendToDevice` with transaction ids, a durable inbox per device that
//! sync drains once the client has acknowledged a position past a message, and the
//! `m.direct_to_device` EDU both ways.

use std::collections::{BTreeMap, BTreeSet};

use plexus_store::{schema, Batch, StoreError};
use ruma::{
    api::client::to_device::send_event_to_device, events::AnyToDeviceEventContent, serde::Raw,
    OwnedServerName, OwnedUserId, ServerName, UserId,
};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::{App, Services},
};

/// Most messages one sync delivers to a device; the rest wait for the next.
const SYNC_LIMIT: usize = 100;

/// One message for one device (`*`: every device of the user).
struct Delivery {
    user: OwnedUserId,
    device: String,
    content: Value,
}

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
    // To-device transaction ids share the table with room sends, under their own namespace.
    let scope = s.txn_scope();
    let txn_id = format!("m.to_device\0{txn}");
    let txn_key = (s.user_id.as_str(), scope.as_str(), txn_id.as_str());
    let sender = s.user_id.to_string();
    let targets = expand(&app, local)?;
    let recipients: BTreeSet<OwnedUserId> = targets.iter().map(|d| d.user.clone()).collect();
    let (count, fresh) = app.store.commit_with_count(|count, b| {
        if schema::USER_DEVICE_TXN__EVENTID.contains(&app.store.kv, txn_key)? {
            return Ok(false);
        }
        schema::USER_DEVICE_TXN__EVENTID.put(b, txn_key, "")?;
        for (seq, d) in targets.iter().enumerate() {
            store_message(&app, b, d, (count, seq as u32), &sender, &kind)?;
        }
        for (dest, messages) in &remote {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender, "type": kind, "message_id": count.to_string(),
                    "messages": messages,
                },
            });
            schema::DEST_COUNT_SEQ__EDU.put(b, (dest.as_str(), count, 0), &edu)?;
        }
        Ok(true)
    })?;
    if fresh {
        app.store.flush().await?;
        app.notifier
            .wake(recipients.iter().map(|u| u.as_ref()), count);
        if let Some(fed) = &app.federation {
            for dest in remote.keys() {
                fed.sender.wake(dest);
            }
        }
    }
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

/// Into the device's inbox, or, for a user of an appservice that takes ephemeral data, into
/// that appservice's queue: its devices get their messages in transactions (MSC2409).
fn store_message(
    app: &Services,
    b: &mut Batch,
    d: &Delivery,
    (count, seq): (u64, u32),
    sender: &str,
    kind: &str,
) -> Result<(), StoreError> {
    let server = app.server_name().as_str();
    match app
        .appservices
        .regs
        .iter()
        .find(|r| r.receive_ephemeral && r.may_act_as(d.user.as_str(), server))
    {
        Some(reg) => schema::APPSERVICE_COUNT_SEQ__TO_DEVICE.put(
            b,
            (&reg.id, count, seq),
            &json!({
                "type": kind, "sender": sender, "content": d.content,
                "to_user_id": d.user, "to_device_id": d.device,
            }),
        ),
        None => schema::USER_DEVICE_COUNT__TO_DEVICE.put(
            b,
            (d.user.as_str(), &d.device, count),
            &json!({ "sender": sender, "type": kind, "content": d.content }),
        ),
    }
}

impl Services {
    /// The device's to-device messages after `since` up to `upper`, having first deleted those
    /// the client acknowledged by syncing from `since`. When more are waiting than one sync
    /// carries, also answers the position of the last one delivered: the sync must not claim
    /// to be past the rest.
    pub fn to_device_since(
        &self,
        user: &UserId,
        device: &str,
        since: Option<u64>,
        upper: u64,
    ) -> ApiResult<(Vec<Value>, Option<u64>)> {
        let inbox = schema::USER_DEVICE_COUNT__TO_DEVICE;
        let kv = &self.store.kv;
        let user = user.as_str();
        if let Some(since) = since {
            let mut b = Batch::default();
            let end = (user, device, since.saturating_add(1));
            for item in inbox.range::<serde::de::IgnoredAny>(kv, (user, device, 0), end) {
                let ((_, _, count), _) = item?;
                inbox.delete(&mut b, (user, device, count));
            }
            if !b.is_empty() {
                self.store.commit(b)?;
            }
        }
        let mut events = vec![];
        let mut cut = None;
        for item in inbox.range::<Value>(
            kv,
            (user, device, since.unwrap_or(0).saturating_add(1)),
            (user, device, upper.saturating_add(1)),
        ) {
            let ((_, _, count), message) = item?;
            if events.len() == SYNC_LIMIT {
                cut = Some(count - 1);
                break;
            }
            events.push(message);
        }
        Ok((events, cut))
    }
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
    let (count, ()) = app.store.commit_with_count(|count, b| {
        for (seq, d) in targets.iter().enumerate() {
            store_message(app, b, d, (count, seq as u32), sender, kind)?;
        }
        Ok(())
    })?;
    app.store.flush().await?;
    let recipients: BTreeSet<&UserId> = targets.iter().map(|d| d.user.as_ref()).collect();
    app.notifier.wake(recipients, count);
    Ok(())
}
