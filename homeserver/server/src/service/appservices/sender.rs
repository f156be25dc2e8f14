//! Transactions to each appservice: a task per appservice follows the global stream (events,
//! then ephemeral data, to-device messages, device lists and key counts for its users) and
//! pushes what concerns it, in order, one transaction at a time.
//!
//! Before a transaction is sent it is stored with its id; after a crash it is resent exactly
//! as it was, so an appservice that de-duplicates by transaction id sees everything once.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use plexus_core::appservice::{Kind, Registration};
use plexus_store::{schema, Batch, StoreError};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::AppserviceError;
use crate::service::{rooms::RoomsError, Services};

/// Most timeline events in one transaction; the rest follow in the next.
const MAX_EVENTS: usize = 100;
/// Most to-device messages in one transaction.
const MAX_TO_DEVICE: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A sender's progress, stored per appservice.
#[derive(Default, Serialize, Deserialize)]
struct Progress {
    /// Everything on the stream up to here has been delivered (or did not concern it).
    upto: u64,
    next_txn: u64,
    pending: Option<Pending>,
}

/// A transaction built and stored, not yet acknowledged.
#[derive(Serialize, Deserialize)]
struct Pending {
    txn_id: String,
    body: Value,
    /// Where `upto` moves once this is acknowledged.
    upto: u64,
}

/// A to-device message for one of `appservice`'s users into its queue, in the batch that
/// stores the message at stream position `count` (`seq` orders the messages there); the
/// sender delivers it in a transaction and deletes it once acknowledged.
pub fn stage_to_device(
    b: &mut Batch,
    appservice: &str,
    (count, seq): (u64, u32),
    message: &Value,
) -> Result<(), StoreError> {
    schema::APPSERVICE_COUNT_SEQ__TO_DEVICE.put(b, (appservice, count, seq), message)
}

/// Start a sender for every appservice that wants traffic.
pub fn start(app: &Arc<Services>) {
    for reg in &app.appservices.regs {
        if reg.url.is_some() {
            tokio::spawn(run(Arc::downgrade(app), reg.clone()));
        }
    }
}

fn load(svc: &Services, reg: &Registration) -> Result<Progress, AppserviceError> {
    match schema::APPSERVICE__SENDER_STATE.get(&svc.store.kv, reg.id.as_str())? {
        Some(p) => Ok(p),
        // A new appservice starts from now: it is not sent the server's whole history.
        None => {
            let p = Progress {
                upto: svc.store.current_count(),
                next_txn: 1,
                pending: None,
            };
            save(svc, reg, &p, Batch::default())?;
            Ok(p)
        }
    }
}

fn save(
    svc: &Services,
    reg: &Registration,
    p: &Progress,
    mut batch: Batch,
) -> Result<(), AppserviceError> {
    schema::APPSERVICE__SENDER_STATE.put(&mut batch, reg.id.as_str(), p)?;
    Ok(svc.store.commit(batch)?)
}

#[tracing::instrument(name = "appservice_sender", skip_all, fields(appservice = %reg.id))]
async fn run(app: Weak<Services>, reg: Arc<Registration>) {
    let mut backoff = Duration::ZERO;
    let mut view = View::default();
    let mut woken = match app.upgrade() {
        Some(svc) => {
            // Fix the starting point now, before anything is written.
            if let Err(e) = load(&svc, &reg) {
                tracing::error!(appservice = %reg.id, error = %e, "cannot read sender progress");
            }
            svc.notifier.subscribe_any()
        }
        None => return,
    };
    loop {
        woken.borrow_and_update();
        let Some(svc) = app.upgrade() else { return };
        let step = send_next(&svc, &reg, &mut view).await;
        drop(svc);
        match step {
            Ok(true) => backoff = Duration::ZERO,
            Ok(false) => {
                // Nothing new: wait for a write. A periodic look also covers changes that wake
                // nobody in particular.
                let _ = tokio::time::timeout(Duration::from_secs(30), woken.changed()).await;
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::warn!(appservice = %reg.id, error = %e, retry_in = ?backoff, "transaction failed");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Send the stored transaction, or build and send the next one. `Ok(false)`: nothing to send.
async fn send_next(
    svc: &Services,
    reg: &Registration,
    view: &mut View,
) -> Result<bool, AppserviceError> {
    let mut progress = load(svc, reg)?;
    let pending = match progress.pending.take() {
        Some(p) => p,
        None => {
            let now = svc.store.current_count();
            // Key counts change without moving the stream: with MSC3202, look anyway.
            if now <= progress.upto {
                if !reg.msc3202 {
                    return Ok(false);
                }
                // A wake that did not move the stream: keys were uploaded or claimed, maybe
                // on a device it has not seen yet (logins write no stream row).
                view.key_devices = None;
            }
            let (body, upto) = view.build(svc, reg, progress.upto, now.max(progress.upto))?;
            if body.is_empty() {
                if upto == progress.upto {
                    return Ok(false);
                }
                progress.upto = upto;
                save(svc, reg, &progress, Batch::default())?;
                return Ok(true);
            }
            let p = Pending {
                txn_id: progress.next_txn.to_string(),
                body: Value::Object(body),
                upto,
            };
            progress.next_txn += 1;
            progress.pending = Some(p);
            save(svc, reg, &progress, Batch::default())?;
            svc.store.flush().await?;
            progress
                .pending
                .take()
                .ok_or_else(|| AppserviceError::Internal("pending transaction".into()))?
        }
    };
    put_transaction(svc, reg, &pending).await?;
    tracing::debug!(appservice = %reg.id, txn = %pending.txn_id, "transaction delivered");
    // Delivered: the to-device messages it carried are gone, the position moves on.
    let mut batch = Batch::default();
    let queue = schema::APPSERVICE_COUNT_SEQ__TO_DEVICE;
    let id = reg.id.as_str();
    let end = (id, pending.upto.saturating_add(1), 0);
    for item in queue.range::<serde::de::IgnoredAny>(&svc.store.kv, (id, 0, 0), end) {
        let (k, _) = item?;
        queue.delete(&mut batch, (id, k.1, k.2));
    }
    progress.upto = pending.upto;
    save(svc, reg, &progress, batch)?;
    view.delivered();
    Ok(true)
}

async fn put_transaction(
    svc: &Services,
    reg: &Registration,
    p: &Pending,
) -> Result<(), AppserviceError> {
    let url = reg
        .url
        .as_deref()
        .ok_or(AppserviceError::UrlNotSet)?
        .to_owned();
    let res = svc
        .appservices
        .http
        .put(format!("{url}/_matrix/app/v1/transactions/{}", p.txn_id))
        .bearer_auth(&reg.hs_token)
        .json(&p.body)
        .send()
        .await
        .map_err(|e| AppserviceError::ConnectionFailed(e.to_string()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(AppserviceError::BadStatus {
            status: res.status().as_u16(),
            body: res.text().await.unwrap_or_default(),
        })
    }
}

/// What the sender knows of the appservice's part of the server, kept between transactions.
#[derive(Default)]
struct View {
    /// Whether a room concerns the appservice (a member in its namespace, or an alias in it).
    rooms: HashMap<OwnedRoomId, bool>,
    /// Rooms where one of its users is joined or whose id is in its room namespace: where its
    /// ephemeral data comes from (spec v1.13). Filled on first use, then kept current from the
    /// events that pass.
    member_rooms: Option<BTreeSet<OwnedRoomId>>,
    /// Its users' devices (MSC3202 key counts), filled on first use and again after one of its
    /// users' device lists changed.
    key_devices: Option<BTreeSet<(OwnedUserId, String)>>,
    /// Key counts as last delivered, so unchanged ones are not repeated.
    sent_counts: HashMap<(OwnedUserId, String), (Value, Vec<String>)>,
    /// Counts in the transaction in flight, recorded once it is acknowledged.
    unsent_counts: HashMap<(OwnedUserId, String), (Value, Vec<String>)>,
}

impl View {
    fn build(
        &mut self,
        svc: &Services,
        reg: &Registration,
        from: u64,
        now: u64,
    ) -> Result<(Map<String, Value>, u64), AppserviceError> {
        let server = svc.server_name().as_str().to_owned();
        let mut body = Map::new();
        let mut upto = now;
        let mut events = vec![];
        // Users who left one of its rooms: candidates for MSC3202's `left`.
        let mut departed = BTreeSet::new();
        for item in svc.rooms.events_since(from, now) {
            let (count, short) = item?;
            if events.len() >= MAX_EVENTS {
                upto = count.saturating_sub(1);
                break;
            }
            let Some(stored) = svc.rooms.pdu_json(short)? else {
                continue;
            };
            let Some(room_id) = stored
                .get("room_id")
                .and_then(Value::as_str)
                .and_then(|r| RoomId::parse(r).ok())
            else {
                continue;
            };
            if reg.matches(Kind::Room, room_id.as_str()) {
                if let Some(rooms) = self.member_rooms.as_mut() {
                    rooms.insert(room_id.clone());
                }
            }
            let kind = stored.get("type").and_then(Value::as_str).unwrap_or("");
            let state_key = stored.get("state_key").and_then(Value::as_str);
            if matches!(kind, "m.room.member" | "m.room.canonical_alias") {
                self.rooms.remove(&room_id);
            }
            if kind == "m.room.member" {
                if let Some(user) = state_key {
                    let membership = stored["content"]["membership"].as_str().unwrap_or("");
                    self.member_changed(
                        svc,
                        reg,
                        &server,
                        &room_id,
                        user,
                        membership,
                        &mut departed,
                    )?;
                }
            }
            if self.wants(svc, reg, &server, &room_id, &stored)? {
                events.push(svc.client_event_inner(short, &stored, &room_id, None, true)?);
            }
        }
        if !events.is_empty() {
            body.insert("events".into(), Value::Array(events));
        }
        if reg.receive_ephemeral {
            let ephemeral = self.ephemeral(svc, reg, &server, from, upto)?;
            if !ephemeral.is_empty() {
                // The stable name (spec 1.13) and MSC2409's, as Synapse sends both.
                body.insert("ephemeral".into(), Value::Array(ephemeral.clone()));
                body.insert(
                    "de.sorunome.msc2409.ephemeral".into(),
                    Value::Array(ephemeral),
                );
            }
            let mut to_device = vec![];
            let id = reg.id.as_str();
            for item in schema::APPSERVICE_COUNT_SEQ__TO_DEVICE.range::<Value>(
                &svc.store.kv,
                (id, from.saturating_add(1), 0),
                (id, upto.saturating_add(1), 0),
            ) {
                let ((_, at, _), message) = item?;
                if to_device.len() >= MAX_TO_DEVICE {
                    // Stop before this message's position; the rest go in the next one.
                    upto = upto.min(at.saturating_sub(1));
                    break;
                }
                to_device.push(message);
            }
            if !to_device.is_empty() {
                body.insert(
                    "de.sorunome.msc2409.to_device".into(),
                    Value::Array(to_device),
                );
            }
        }
        if reg.msc3202 {
            self.device_data(svc, reg, &server, from, upto, &departed, &mut body)?;
        }
        if body.is_empty() {
            return Ok((body, upto));
        }
        body.entry("events").or_insert_with(|| json!([]));
        Ok((body, upto))
    }

    /// Whether an event goes to the appservice: its sender or (for member events) its subject
    /// is one of its users, or its room concerns it.
    fn wants(
        &mut self,
        svc: &Services,
        reg: &Registration,
        server: &str,
        room_id: &RoomId,
        stored: &Value,
    ) -> Result<bool, AppserviceError> {
        let in_ns = |u: &str| reg.may_act_as(u, server);
        if stored
            .get("sender")
            .and_then(Value::as_str)
            .is_some_and(in_ns)
        {
            return Ok(true);
        }
        if stored.get("type").and_then(Value::as_str) == Some("m.room.member")
            && stored
                .get("state_key")
                .and_then(Value::as_str)
                .is_some_and(in_ns)
        {
            return Ok(true);
        }
        if reg.matches(Kind::Room, room_id.as_str()) {
            return Ok(true);
        }
        if let Some(known) = self.rooms.get(room_id) {
            return Ok(*known);
        }
        let Some(room) = svc.rooms.room(room_id)? else {
            return Ok(false);
        };
        let mut wanted = svc
            .rooms
            .room_members(room.short)?
            .iter()
            .any(|(u, m)| (m == "join" || m == "invite") && in_ns(u.as_str()));
        if !wanted {
            for (alias, _) in svc.directory.room_aliases(room_id)? {
                if reg.matches(Kind::Alias, &alias) {
                    wanted = true;
                    break;
                }
            }
        }
        self.rooms.insert(room_id.to_owned(), wanted);
        Ok(wanted)
    }

    fn member_rooms(
        &mut self,
        svc: &Services,
        reg: &Registration,
        server: &str,
    ) -> Result<&mut BTreeSet<OwnedRoomId>, AppserviceError> {
        if self.member_rooms.is_none() {
            let mut rooms = BTreeSet::new();
            for user in local_users(svc, reg, server)? {
                for (room, m) in svc.rooms.user_rooms(&user)? {
                    if m.membership == "join" {
                        rooms.insert(room);
                    }
                }
            }
            let scan = match reg.namespaces.rooms.is_empty() {
                true => None,
                false => Some(svc.rooms.all_rooms()),
            };
            for item in scan.into_iter().flatten() {
                let (id, _) = item?;
                if reg.matches(Kind::Room, &id) {
                    if let Ok(room) = OwnedRoomId::try_from(id) {
                        rooms.insert(room);
                    }
                }
            }
            self.member_rooms = Some(rooms);
        }
        Ok(self.member_rooms.get_or_insert_with(BTreeSet::new))
    }

    #[allow(clippy::too_many_arguments)]
    fn member_changed(
        &mut self,
        svc: &Services,
        reg: &Registration,
        server: &str,
        room_id: &RoomId,
        user: &str,
        membership: &str,
        departed: &mut BTreeSet<OwnedUserId>,
    ) -> Result<(), AppserviceError> {
        let ours = reg.may_act_as(user, server);
        let rooms = self.member_rooms(svc, reg, server)?;
        if ours {
            if membership == "join" {
                rooms.insert(room_id.to_owned());
            } else {
                // Still a member room while another of its users is joined.
                let still = match svc.rooms.room(room_id)? {
                    Some(r) => svc.rooms.room_members(r.short)?.iter().any(|(u, m)| {
                        m == "join" && u.as_str() != user && reg.may_act_as(u.as_str(), server)
                    }),
                    None => false,
                };
                if !still && !reg.matches(Kind::Room, room_id.as_str()) {
                    rooms.remove(room_id);
                }
            }
        } else if matches!(membership, "leave" | "ban") && rooms.contains(room_id) {
            if let Ok(u) = OwnedUserId::try_from(user) {
                departed.insert(u);
            }
        }
        Ok(())
    }

    /// Typing, receipts and presence in the rooms its users are joined to (MSC2409).
    fn ephemeral(
        &mut self,
        svc: &Services,
        reg: &Registration,
        server: &str,
        from: u64,
        upto: u64,
    ) -> Result<Vec<Value>, AppserviceError> {
        let rooms: Vec<OwnedRoomId> = self
            .member_rooms(svc, reg, server)?
            .iter()
            .cloned()
            .collect();
        let mut out = vec![];
        let mut seen_users = BTreeSet::new();
        for room_id in rooms {
            let Some(room) = svc.rooms.room(&room_id)? else {
                continue;
            };
            if let Some(users) = svc.typing.since(&room_id, Some(from)) {
                out.push(json!({
                    "type": "m.typing", "room_id": room_id, "content": { "user_ids": users },
                }));
            }
            // Private receipts of every user it acts for (spec v1.13).
            let ours = |u: &str| reg.may_act_as(u, server);
            if let Some(content) = svc.receipts.since(room.short, Some(from), &ours)? {
                out.push(json!({ "type": "m.receipt", "room_id": room_id, "content": content }));
            }
            for (user, m) in svc.rooms.room_members(room.short)? {
                if m != "join" || !seen_users.insert(user.clone()) {
                    continue;
                }
                if let Some(rec) = svc.presence.get(&user)? {
                    if rec.count > from && rec.count <= upto {
                        out.push(json!({
                            "type": "m.presence", "sender": user, "content": rec.content(),
                        }));
                    }
                }
            }
        }
        Ok(out)
    }

    /// MSC3202: device list changes of users sharing a room with its users, and one-time and
    /// fallback key state of its users' devices when it changed.
    #[allow(clippy::too_many_arguments)]
    fn device_data(
        &mut self,
        svc: &Services,
        reg: &Registration,
        server: &str,
        from: u64,
        upto: u64,
        departed: &BTreeSet<OwnedUserId>,
        body: &mut Map<String, Value>,
    ) -> Result<(), AppserviceError> {
        let rooms = self.member_rooms(svc, reg, server)?.clone();
        let shares = |user: &UserId| -> Result<bool, RoomsError> {
            for room_id in &rooms {
                if let Some(r) = svc.rooms.room(room_id)? {
                    let m = svc.rooms.membership_in(r.short, user)?;
                    if m.as_deref() == Some("join") {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        };
        let mut changed = BTreeSet::new();
        for item in svc.e2ee.changed_between(from, upto) {
            let user = item?;
            let Ok(user) = OwnedUserId::try_from(user) else {
                continue;
            };
            if reg.may_act_as(user.as_str(), server) {
                // One of its own users: its devices may have new keys.
                self.key_devices = None;
            }
            if shares(&user)? {
                changed.insert(user);
            }
        }
        let mut left = vec![];
        for user in departed {
            if !shares(user)? {
                left.push(user.clone());
            }
        }
        if !changed.is_empty() || !left.is_empty() {
            body.insert(
                "org.matrix.msc3202.device_lists".into(),
                json!({ "changed": changed, "left": left }),
            );
        }
        if self.key_devices.is_none() {
            let mut devices = BTreeSet::new();
            for user in local_users(svc, reg, server)? {
                for (device, _) in svc.accounts.devices(&user)? {
                    devices.insert((user.clone(), device));
                }
            }
            self.key_devices = Some(devices);
        }
        let mut otk: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut fallback: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        self.unsent_counts.clear();
        for (user, device) in self.key_devices.iter().flatten() {
            let counts = svc.e2ee.one_time_key_counts(user, device)?;
            let types = svc.e2ee.unused_fallback_key_types(user, device)?;
            let key = (user.clone(), device.clone());
            if self.sent_counts.get(&key) == Some(&(counts.clone(), types.clone())) {
                continue;
            }
            otk.entry(user.to_string())
                .or_default()
                .insert(device.clone(), counts.clone());
            fallback
                .entry(user.to_string())
                .or_default()
                .insert(device.clone(), json!(types));
            self.unsent_counts.insert(key, (counts, types));
        }
        if !otk.is_empty() {
            // Synapse sends the count under both spellings; appservice libraries read either.
            body.insert(
                "org.matrix.msc3202.device_one_time_keys_count".into(),
                json!(otk),
            );
            body.insert(
                "org.matrix.msc3202.device_one_time_key_counts".into(),
                json!(otk),
            );
            body.insert(
                "org.matrix.msc3202.device_unused_fallback_key_types".into(),
                json!(fallback),
            );
        }
        Ok(())
    }

    /// A transaction was acknowledged: the key counts it carried are now what it knows.
    fn delivered(&mut self) {
        self.sent_counts.extend(self.unsent_counts.drain());
    }
}

/// This server's users in the appservice's namespace (and its sender).
fn local_users(
    svc: &Services,
    reg: &Registration,
    server: &str,
) -> Result<Vec<OwnedUserId>, AppserviceError> {
    Ok(svc
        .accounts
        .local_users(|name| reg.may_act_as(name, server))?)
}
