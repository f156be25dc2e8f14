//! To-device messages: a durable inbox per device (`USER_DEVICE_COUNT__TO_DEVICE`) that sync
//! drains once the client has acknowledged a position past a message, and the
//! `m.direct_to_device` EDUs for other servers' users. `/sendToDevice` transaction ids are
//! claimed in the rooms service's transaction table, which room sends use too.

use std::collections::{BTreeMap, BTreeSet};

use plexus_store::{schema, Batch, StoreError};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{json, Map, Value};

use super::{E2ee, E2eeError};
use crate::service::{appservices, federation::sender::Sender, rooms::Rooms, App, Services};

/// Most messages one sync delivers to a device; the rest wait for the next.
const SYNC_LIMIT: usize = 100;

/// One message for one device of a local user (`*` while the endpoint has not yet made it
/// one for each of the user's devices).
pub struct Delivery {
    pub user: OwnedUserId,
    pub device: String,
    pub content: Value,
}

/// Into the device's inbox, or, when `appservice` takes the user's messages, into that
/// appservice's queue: its devices get their messages in transactions (MSC2409).
fn stage_message(
    b: &mut Batch,
    d: &Delivery,
    appservice: Option<&str>,
    (count, seq): (u64, u32),
    sender: &str,
    kind: &str,
) -> Result<(), StoreError> {
    match appservice {
        Some(id) => appservices::sender::stage_to_device(
            b,
            id,
            (count, seq),
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

impl E2ee {
    /// Store a client's to-device messages once per transaction `txn` of `(sender, scope)`
    /// (claimed in `rooms`' transaction table in the same batch): for local devices (each with
    /// the appservice that takes it, if any) and as an EDU per other server. Answers the
    /// stream position and whether the transaction was new. Not yet durable: the caller
    /// flushes.
    #[allow(clippy::too_many_arguments)]
    pub fn send_to_device(
        &self,
        rooms: &Rooms,
        sender: &UserId,
        scope: &str,
        txn: &str,
        kind: &str,
        targets: &[(&Delivery, Option<&str>)],
        remote: &BTreeMap<OwnedServerName, Map<String, Value>>,
    ) -> Result<(u64, bool), E2eeError> {
        let (count, fresh) = self.store.commit_with_count(|count, b| {
            if !rooms.stage_to_device_txn(b, sender, scope, txn)? {
                return Ok(false);
            }
            let sender = sender.as_str();
            for (seq, (d, appservice)) in targets.iter().enumerate() {
                stage_message(b, d, *appservice, (count, seq as u32), sender, kind)?;
            }
            for (dest, messages) in remote {
                let edu = json!({
                    "edu_type": "m.direct_to_device",
                    "content": {
                        "sender": sender, "type": kind, "message_id": count.to_string(),
                        "messages": messages,
                    },
                });
                Sender::stage_edu(b, dest.as_str(), count, &edu)?;
            }
            Ok(true)
        })?;
        Ok((count, fresh))
    }

    /// Store to-device messages another server sent for local devices; answers the stream
    /// position. Not yet durable.
    pub fn receive_to_device(
        &self,
        sender: &str,
        kind: &str,
        targets: &[(&Delivery, Option<&str>)],
    ) -> Result<u64, E2eeError> {
        let (count, ()) = self.store.commit_with_count(|count, b| {
            for (seq, (d, appservice)) in targets.iter().enumerate() {
                stage_message(b, d, *appservice, (count, seq as u32), sender, kind)?;
            }
            Ok(())
        })?;
        Ok(count)
    }

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
    ) -> Result<(Vec<Value>, Option<u64>), E2eeError> {
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

impl Services {
    /// The appservice that takes `user`'s to-device messages in its transactions, if one
    /// that receives ephemeral data may act as them (MSC2409).
    fn to_device_appservice(&self, user: &UserId) -> Option<&str> {
        let server = self.server_name().as_str();
        self.appservices
            .regs
            .iter()
            .find(|r| r.receive_ephemeral && r.may_act_as(user.as_str(), server))
            .map(|r| r.id.as_str())
    }

    /// `/sendToDevice`: store the messages for local devices and the EDUs for other servers'
    /// users once per transaction, durably, and wake the recipients and the federation
    /// sender. A repeated transaction changes nothing.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        scope: &str,
        txn: &str,
        kind: &str,
        targets: Vec<Delivery>,
        remote: BTreeMap<OwnedServerName, Map<String, Value>>,
    ) -> Result<(), E2eeError> {
        let recipients: BTreeSet<&UserId> = targets.iter().map(|d| d.user.as_ref()).collect();
        let routed: Vec<(&Delivery, Option<&str>)> = targets
            .iter()
            .map(|d| (d, self.to_device_appservice(&d.user)))
            .collect();
        let (count, fresh) =
            self.e2ee
                .send_to_device(&self.rooms, sender, scope, txn, kind, &routed, &remote)?;
        if fresh {
            self.store.flush().await?;
            self.notifier.wake(recipients, count);
            if let Some(fed) = &self.federation {
                for dest in remote.keys() {
                    fed.sender.wake(dest);
                }
            }
        }
        Ok(())
    }

    /// Messages from another server's `sender` for local devices: stored durably, recipients
    /// woken.
    pub async fn receive_to_device(
        &self,
        sender: &str,
        kind: &str,
        targets: Vec<Delivery>,
    ) -> Result<(), E2eeError> {
        let routed: Vec<(&Delivery, Option<&str>)> = targets
            .iter()
            .map(|d| (d, self.to_device_appservice(&d.user)))
            .collect();
        let count = self.e2ee.receive_to_device(sender, kind, &routed)?;
        self.store.flush().await?;
        let recipients: BTreeSet<&UserId> = targets.iter().map(|d| d.user.as_ref()).collect();
        self.notifier.wake(recipients, count);
        Ok(())
    }
}

/// `*` becomes every device of the user; messages for devices that do not exist are dropped.
pub fn expand(app: &Services, deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, E2eeError> {
    let mut out = vec![];
    for d in deliveries {
        if d.device == "*" {
            for (device, _) in app.accounts.devices(&d.user)? {
                out.push(Delivery {
                    user: d.user.clone(),
                    device,
                    content: d.content.clone(),
                });
            }
        } else if app.accounts.device(&d.user, &d.device)?.is_some() {
            out.push(d);
        }
    }
    Ok(out)
}

/// An `m.direct_to_device` EDU from `origin`: its sender must be one of origin's users, and
/// only messages for our users are taken. A retried transaction's message is taken once.
pub async fn receive(app: &App, origin: &ServerName, content: &Value) -> Result<(), E2eeError> {
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
