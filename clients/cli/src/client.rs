//! The client: a session on a homeserver plus its crypto [`Machine`], kept in one state file
//! that is rewritten (atomically) after every step that changes it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use ruma::api::client::{
    keys::{claim_keys, get_keys, upload_keys},
    membership::{
        invite_user::{self, v3::InviteUserId},
        join_room_by_id_or_alias, joined_members, joined_rooms,
    },
    message::{get_message_events, send_message_event},
    room::create_room::{self, v3::RoomPreset},
    state::get_state_event_for_key,
    sync::sync_events,
    to_device::send_event_to_device,
};
use ruma::api::Direction;
use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::events::{StateEventType, ToDeviceEventType};
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedRoomId, OwnedUserId, UInt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    api::{as_json, parse_id, raw, Api, Session},
    crypto::{DeviceInfo, Machine, MachinePickle, MEGOLM},
    Error,
};

/// A room message as the user reads it.
#[derive(Debug, Clone)]
pub struct Message {
    pub room: String,
    pub event_id: String,
    pub sender: String,
    /// The text, if the event could be read.
    pub body: Option<String>,
    pub encrypted: bool,
    /// Why an encrypted event could not be read.
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    base: String,
    token: String,
    user_id: String,
    device_id: String,
    next_batch: Option<String>,
    machine: MachinePickle,
    #[serde(default)]
    waiting: Vec<(String, Value)>,
}

pub struct Client {
    pub api: Api,
    pub user_id: String,
    pub device_id: String,
    pub machine: Machine,
    next_batch: Option<String>,
    /// Encrypted events (room, event) that came before their room key: the key travels as a
    /// to-device message, which may arrive after the event. Read again when keys arrive.
    waiting: Vec<(String, Value)>,
    path: Option<PathBuf>,
    /// To-device messages that could not be decrypted, for the curious.
    pub warnings: Vec<String>,
}

/// The `/keys/upload` body [`Machine::keys_to_upload`] gives, as the fields of ruma's request.
#[derive(Deserialize)]
struct KeysUpload {
    device_keys: Option<Raw<DeviceKeys>>,
    #[serde(default)]
    one_time_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// How many unreadable events wait for their keys (the oldest give way).
const MAX_WAITING: usize = 256;

fn txn() -> String {
    use rand::Rng;
    format!("pc{:016x}", rand::thread_rng().gen::<u64>())
}

impl Client {
    /// Register a new account (open registration) and set up encryption for its device.
    pub async fn register(
        base: &str,
        user: &str,
        password: &str,
        state: Option<&Path>,
    ) -> Result<Client, Error> {
        let answer = Api::new(base, None).register(user, password).await?;
        Self::start(base, &answer, state).await
    }

    /// Log in as a new device and set up encryption for it.
    pub async fn login(
        base: &str,
        user: &str,
        password: &str,
        state: Option<&Path>,
    ) -> Result<Client, Error> {
        let answer = Api::new(base, None).login(user, password).await?;
        Self::start(base, &answer, state).await
    }

    async fn start(base: &str, answer: &Session, state: Option<&Path>) -> Result<Client, Error> {
        let Session {
            user_id,
            device_id,
            access_token: token,
        } = answer.clone();
        let mut c = Client {
            api: Api::new(base, Some(token)),
            machine: Machine::new(&user_id, &device_id),
            user_id,
            device_id,
            next_batch: None,
            waiting: vec![],
            path: state.map(Path::to_owned),
            warnings: vec![],
        };
        c.upload_keys(0).await?;
        c.save()?;
        Ok(c)
    }

    /// The client saved in a state file.
    pub fn load(path: &Path) -> Result<Client, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::State(format!("{}: {e}", path.display())))?;
        let s: Stored = serde_json::from_str(&text)
            .map_err(|e| Error::State(format!("{}: {e}", path.display())))?;
        Ok(Client {
            api: Api::new(&s.base, Some(s.token)),
            user_id: s.user_id,
            device_id: s.device_id,
            machine: Machine::from_pickle(s.machine),
            next_batch: s.next_batch,
            waiting: s.waiting,
            path: Some(path.to_owned()),
            warnings: vec![],
        })
    }

    /// Write the state file (readable by its owner only), through a rename so a crash leaves
    /// the old or the new state, never half of one.
    pub fn save(&self) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let s = Stored {
            base: self.api.base.clone(),
            token: self.api.token.clone().unwrap_or_default(),
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            next_batch: self.next_batch.clone(),
            machine: self.machine.pickle(),
            waiting: self.waiting.clone(),
        };
        let text = serde_json::to_string(&s).map_err(|e| Error::State(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            use std::io::Write;
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Error::State(format!("{}: {e}", path.display())))
    }

    /// Publish device keys (first time) and top one-time keys up.
    async fn upload_keys(&mut self, published: usize) -> Result<(), Error> {
        if let Some(body) = self.machine.keys_to_upload(published) {
            let keys: KeysUpload = serde_json::from_str(&body.to_string())
                .map_err(|e| Error::Other(format!("keys to upload: {e}")))?;
            let mut request = upload_keys::v3::Request::new();
            request.device_keys = keys.device_keys;
            request.one_time_keys = keys.one_time_keys;
            self.api.send(request).await?;
            self.machine.keys_uploaded();
            self.save()?;
        }
        Ok(())
    }

    /// One `/sync`: to-device messages (room keys) first, then device list changes and key
    /// counts, then earlier events whose key has now come, then the new room messages,
    /// decrypted where we hold the key.
    pub async fn sync_once(&mut self, timeout_ms: u64) -> Result<Vec<Message>, Error> {
        let mut request = sync_events::v3::Request::new();
        request.since = self.next_batch.clone();
        request.timeout = Some(Duration::from_millis(timeout_ms));
        let s = self.api.send(request).await?;
        for ev in s.to_device.events.iter().map(as_json) {
            if ev["type"] == "m.room.encrypted" {
                let sender = ev["sender"].as_str().unwrap_or_default();
                if let Err(e) = self.machine.olm_decrypt(sender, &ev["content"]) {
                    self.warnings.push(format!("to-device from {sender}: {e}"));
                }
            }
        }
        for u in &s.device_lists.changed {
            self.machine.outdated.insert(u.to_string());
        }
        for u in &s.device_lists.left {
            self.machine.devices.remove(u.as_str());
        }
        let mut out = vec![];
        for (room, ev) in std::mem::take(&mut self.waiting) {
            if self.machine.has_room_key(&room, &ev["content"]) {
                out.extend(self.read_event(&room, &ev));
            } else {
                self.waiting.push((room, ev));
            }
        }
        for (room, r) in &s.rooms.join {
            for ev in r.timeline.events.iter().map(as_json) {
                if let Some(m) = self.read_event(room.as_str(), &ev) {
                    out.push(m);
                }
            }
        }
        self.next_batch = Some(s.next_batch.clone());
        self.save()?;
        let published = s
            .device_one_time_keys_count
            .get(&OneTimeKeyAlgorithm::SignedCurve25519)
            .map_or(0, |n| u64::from(*n)) as usize;
        self.upload_keys(published).await?;
        Ok(out)
    }

    /// A room message event as the user reads it (`None` for other events).
    pub fn read_event(&mut self, room: &str, ev: &Value) -> Option<Message> {
        let base = |body: Option<String>, encrypted: bool, error: Option<String>| Message {
            room: room.to_owned(),
            event_id: ev["event_id"].as_str().unwrap_or_default().to_owned(),
            sender: ev["sender"].as_str().unwrap_or_default().to_owned(),
            body,
            encrypted,
            error,
        };
        match ev["type"].as_str()? {
            "m.room.message" => Some(base(
                ev["content"]["body"].as_str().map(str::to_owned),
                false,
                None,
            )),
            "m.room.encrypted" => match self.machine.megolm_decrypt(room, &ev["content"]) {
                Ok(d) if d.event_type == "m.room.message" => Some(base(
                    d.content["body"].as_str().map(str::to_owned),
                    true,
                    None,
                )),
                Ok(_) => None,
                Err(e) => {
                    let known = self
                        .waiting
                        .iter()
                        .any(|(_, w)| w["event_id"] == ev["event_id"]);
                    if !known && !self.machine.has_room_key(room, &ev["content"]) {
                        if self.waiting.len() == MAX_WAITING {
                            self.waiting.remove(0);
                        }
                        self.waiting.push((room.to_owned(), ev.clone()));
                    }
                    Some(base(None, true, Some(e.to_string())))
                }
            },
            _ => None,
        }
    }

    pub async fn create_room(
        &mut self,
        encrypted: bool,
        invite: &[String],
    ) -> Result<String, Error> {
        let mut request = create_room::v3::Request::new();
        request.preset = Some(RoomPreset::PrivateChat);
        request.invite = invite
            .iter()
            .map(|u| parse_id("user id", u))
            .collect::<Result<Vec<OwnedUserId>, Error>>()?;
        if encrypted {
            request.initial_state = vec![raw(&json!({
                "type": "m.room.encryption", "state_key": "",
                "content": { "algorithm": MEGOLM },
            }))?];
        }
        Ok(self.api.send(request).await?.room_id.to_string())
    }

    pub async fn join(&mut self, room: &str) -> Result<String, Error> {
        let request =
            join_room_by_id_or_alias::v3::Request::new(parse_id("room id or alias", room)?);
        Ok(self.api.send(request).await?.room_id.to_string())
    }

    pub async fn invite(&mut self, room: &str, user: &str) -> Result<(), Error> {
        let recipient = InviteUserId::new(parse_id("user id", user)?);
        let request = invite_user::v3::Request::new(parse_id("room id", room)?, recipient.into());
        self.api.send(request).await.map(|_| ())
    }

    pub async fn joined_rooms(&self) -> Result<Vec<String>, Error> {
        let r = self.api.send(joined_rooms::v3::Request::new()).await?;
        Ok(r.joined_rooms.iter().map(ToString::to_string).collect())
    }

    pub async fn is_encrypted(&self, room: &str) -> Result<bool, Error> {
        let request = get_state_event_for_key::v3::Request::new(
            parse_id("room id", room)?,
            StateEventType::RoomEncryption,
            String::new(),
        );
        match self.api.send(request).await {
            Ok(c) => {
                let c: Value = serde_json::from_str(c.event_or_content.get()).unwrap_or_default();
                Ok(c["algorithm"] == MEGOLM)
            }
            Err(Error::Matrix { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Send a text message, encrypted if the room is.
    pub async fn send_text(&mut self, room: &str, body: &str) -> Result<String, Error> {
        let room_id: OwnedRoomId = parse_id("room id", room)?;
        let content = json!({ "msgtype": "m.text", "body": body });
        let (kind, content) = if self.is_encrypted(room).await? {
            self.share_room_key(room).await?;
            let c = self
                .machine
                .megolm_encrypt(room, "m.room.message", content)?;
            // The session's index moved on: keep that before the event leaves.
            self.save()?;
            ("m.room.encrypted", c)
        } else {
            ("m.room.message", content)
        };
        let request = send_message_event::v3::Request::new_raw(
            room_id,
            txn().into(),
            kind.into(),
            raw(&content)?,
        );
        Ok(self.api.send(request).await?.event_id.to_string())
    }

    /// Make sure every device of every joined member (ours included) has the room's current
    /// key: query device lists we lack or that changed, claim one-time keys for devices we
    /// have no Olm session with, and send the key over Olm to those that lack it.
    pub async fn share_room_key(&mut self, room: &str) -> Result<(), Error> {
        let members = self
            .api
            .send(joined_members::v3::Request::new(parse_id("room id", room)?))
            .await?;
        let users: Vec<String> = members.joined.keys().map(ToString::to_string).collect();
        let stale: Vec<String> = users
            .iter()
            .filter(|u| {
                !self.machine.devices.contains_key(*u) || self.machine.outdated.contains(*u)
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            let mut request = get_keys::v3::Request::new();
            request.device_keys = stale
                .iter()
                .map(|u| parse_id("user id", u).map(|u: OwnedUserId| (u, Vec::new())))
                .collect::<Result<BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>, Error>>()?;
            let answer = self.api.send(request).await?;
            let device_keys = serde_json::to_value(&answer.device_keys)
                .map_err(|e| Error::Other(format!("keys/query answer: {e}")))?;
            self.machine
                .receive_keys(&json!({ "device_keys": device_keys }), &stale);
        }
        let mut targets: Vec<(String, String, DeviceInfo)> = vec![];
        for u in &users {
            for (d, info) in self.machine.devices.get(u).into_iter().flatten() {
                if !(u == &self.user_id && d == &self.device_id) {
                    targets.push((u.clone(), d.clone(), info.clone()));
                }
            }
        }
        let recipients: BTreeSet<String> = targets.iter().map(|t| t.2.curve25519.clone()).collect();
        let (_, key, missing) = self.machine.room_key_needs(room, &recipients);
        let targets: Vec<_> = targets
            .into_iter()
            .filter(|t| missing.contains(&t.2.curve25519))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        // Olm sessions for devices we have none with.
        let mut claim: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>> =
            BTreeMap::new();
        for (u, d, info) in &targets {
            if !self.machine.has_session(&info.curve25519) {
                claim
                    .entry(parse_id("user id", u)?)
                    .or_default()
                    .insert(d.as_str().into(), OneTimeKeyAlgorithm::SignedCurve25519);
            }
        }
        if !claim.is_empty() {
            let answer = self.api.send(claim_keys::v3::Request::new(claim)).await?;
            let claimed = serde_json::to_value(&answer.one_time_keys)
                .map_err(|e| Error::Other(format!("keys/claim answer: {e}")))?;
            for (u, d, info) in &targets {
                let k = &claimed[u][d];
                if k.is_object() {
                    if let Err(e) = self.machine.create_session(u, d, info, k) {
                        self.warnings.push(e.to_string());
                    }
                }
            }
        }
        let mut messages: send_event_to_device::v3::Messages = BTreeMap::new();
        let mut shared = vec![];
        for (u, d, info) in &targets {
            if !self.machine.has_session(&info.curve25519) {
                continue;
            }
            let user: OwnedUserId = parse_id("user id", u)?;
            let c = self
                .machine
                .olm_encrypt(u, info, "m.room_key", key.clone())?;
            messages
                .entry(user)
                .or_default()
                .insert(DeviceIdOrAllDevices::DeviceId(d.as_str().into()), raw(&c)?);
            shared.push(info.curve25519.clone());
        }
        self.save()?;
        if !messages.is_empty() {
            let request = send_event_to_device::v3::Request::new_raw(
                ToDeviceEventType::from("m.room.encrypted"),
                txn().into(),
                messages,
            );
            self.api.send(request).await?;
        }
        self.machine.room_key_shared(room, shared);
        self.save()
    }

    /// The latest `limit` messages of a room, oldest first, decrypted where we can.
    pub async fn messages(&mut self, room: &str, limit: u32) -> Result<Vec<Message>, Error> {
        let mut request =
            get_message_events::v3::Request::new(parse_id("room id", room)?, Direction::Backward);
        request.limit = UInt::from(limit);
        let r = self.api.send(request).await?;
        let mut out: Vec<Message> = r
            .chunk
            .iter()
            .map(as_json)
            .filter_map(|ev| self.read_event(room, &ev))
            .collect();
        out.reverse();
        self.save()?;
        Ok(out)
    }
}
