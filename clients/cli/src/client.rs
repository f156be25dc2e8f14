//! The client: a session on a homeserver plus its crypto [`Machine`], kept in one state file
//! that is rewritten (atomically) after every step that changes it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    api::{enc, Api},
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

    async fn start(base: &str, answer: &Value, state: Option<&Path>) -> Result<Client, Error> {
        let field = |k: &str| {
            answer[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::Other(format!("login answer has no {k}")))
        };
        let (token, user_id, device_id) = (
            field("access_token")?,
            field("user_id")?,
            field("device_id")?,
        );
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
            self.api
                .post("/_matrix/client/v3/keys/upload", body)
                .await?;
            self.machine.keys_uploaded();
            self.save()?;
        }
        Ok(())
    }

    /// One `/sync`: to-device messages (room keys) first, then device list changes and key
    /// counts, then earlier events whose key has now come, then the new room messages,
    /// decrypted where we hold the key.
    pub async fn sync_once(&mut self, timeout_ms: u64) -> Result<Vec<Message>, Error> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(nb) = &self.next_batch {
            path.push_str(&format!("&since={}", enc(nb)));
        }
        let s = self.api.get(&path).await?;
        for ev in s["to_device"]["events"].as_array().into_iter().flatten() {
            if ev["type"] == "m.room.encrypted" {
                let sender = ev["sender"].as_str().unwrap_or_default();
                if let Err(e) = self.machine.olm_decrypt(sender, &ev["content"]) {
                    self.warnings.push(format!("to-device from {sender}: {e}"));
                }
            }
        }
        for u in s["device_lists"]["changed"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(u) = u.as_str() {
                self.machine.outdated.insert(u.to_owned());
            }
        }
        for u in s["device_lists"]["left"].as_array().into_iter().flatten() {
            if let Some(u) = u.as_str() {
                self.machine.devices.remove(u);
            }
        }
        let mut out = vec![];
        for (room, ev) in std::mem::take(&mut self.waiting) {
            if self.machine.has_room_key(&room, &ev["content"]) {
                out.extend(self.read_event(&room, &ev));
            } else {
                self.waiting.push((room, ev));
            }
        }
        for (room, r) in s["rooms"]["join"].as_object().into_iter().flatten() {
            for ev in r["timeline"]["events"].as_array().into_iter().flatten() {
                if let Some(m) = self.read_event(room, ev) {
                    out.push(m);
                }
            }
        }
        self.next_batch = s["next_batch"].as_str().map(str::to_owned);
        self.save()?;
        let published = s["device_one_time_keys_count"]["signed_curve25519"]
            .as_u64()
            .unwrap_or(0) as usize;
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
        let mut body = json!({ "preset": "private_chat", "invite": invite });
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption", "state_key": "",
                "content": { "algorithm": MEGOLM },
            }]);
        }
        let r = self.api.post("/_matrix/client/v3/createRoom", body).await?;
        r["room_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Other("createRoom answered no room_id".into()))
    }

    pub async fn join(&mut self, room: &str) -> Result<String, Error> {
        let r = self
            .api
            .post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({}))
            .await?;
        Ok(r["room_id"].as_str().unwrap_or(room).to_owned())
    }

    pub async fn invite(&mut self, room: &str, user: &str) -> Result<(), Error> {
        self.api
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
                json!({ "user_id": user }),
            )
            .await
            .map(|_| ())
    }

    pub async fn joined_rooms(&self) -> Result<Vec<String>, Error> {
        let r = self.api.get("/_matrix/client/v3/joined_rooms").await?;
        Ok(r["joined_rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    pub async fn is_encrypted(&self, room: &str) -> Result<bool, Error> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.encryption/",
            enc(room)
        );
        match self.api.get(&path).await {
            Ok(c) => Ok(c["algorithm"] == MEGOLM),
            Err(Error::Matrix { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Send a text message, encrypted if the room is.
    pub async fn send_text(&mut self, room: &str, body: &str) -> Result<String, Error> {
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
        let r = self
            .api
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/{kind}/{}",
                    enc(room),
                    txn()
                ),
                content,
            )
            .await?;
        r["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Other("send answered no event_id".into()))
    }

    /// Make sure every device of every joined member (ours included) has the room's current
    /// key: query device lists we lack or that changed, claim one-time keys for devices we
    /// have no Olm session with, and send the key over Olm to those that lack it.
    pub async fn share_room_key(&mut self, room: &str) -> Result<(), Error> {
        let members = self
            .api
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                enc(room)
            ))
            .await?;
        let users: Vec<String> = members["joined"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let stale: Vec<String> = users
            .iter()
            .filter(|u| {
                !self.machine.devices.contains_key(*u) || self.machine.outdated.contains(*u)
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            let query: Map<String, Value> = stale.iter().map(|u| (u.clone(), json!([]))).collect();
            let answer = self
                .api
                .post(
                    "/_matrix/client/v3/keys/query",
                    json!({ "device_keys": query }),
                )
                .await?;
            self.machine.receive_keys(&answer, &stale);
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
        let mut claim: Map<String, Value> = Map::new();
        for (u, d, info) in &targets {
            if !self.machine.has_session(&info.curve25519) {
                claim.entry(u.clone()).or_insert_with(|| json!({}))[d] = json!("signed_curve25519");
            }
        }
        if !claim.is_empty() {
            let claimed = self
                .api
                .post(
                    "/_matrix/client/v3/keys/claim",
                    json!({ "one_time_keys": claim }),
                )
                .await?;
            for (u, d, info) in &targets {
                let k = &claimed["one_time_keys"][u][d];
                if k.is_object() {
                    if let Err(e) = self.machine.create_session(u, d, info, k) {
                        self.warnings.push(e.to_string());
                    }
                }
            }
        }
        let mut messages: Map<String, Value> = Map::new();
        let mut shared = vec![];
        for (u, d, info) in &targets {
            if !self.machine.has_session(&info.curve25519) {
                continue;
            }
            let c = self
                .machine
                .olm_encrypt(u, info, "m.room_key", key.clone())?;
            messages.entry(u.clone()).or_insert_with(|| json!({}))[d] = c;
            shared.push(info.curve25519.clone());
        }
        self.save()?;
        if !messages.is_empty() {
            self.api
                .put(
                    &format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/{}", txn()),
                    json!({ "messages": messages }),
                )
                .await?;
        }
        self.machine.room_key_shared(room, shared);
        self.save()
    }

    /// The latest `limit` messages of a room, oldest first, decrypted where we can.
    pub async fn messages(&mut self, room: &str, limit: u32) -> Result<Vec<Message>, Error> {
        let r = self
            .api
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
                enc(room)
            ))
            .await?;
        let mut out: Vec<Message> = r["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ev| self.read_event(room, ev))
            .collect();
        out.reverse();
        self.save()?;
        Ok(out)
    }
}
