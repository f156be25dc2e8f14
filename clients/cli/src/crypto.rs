//! Olm and Megolm on one device, through vodozemac: the account and its published keys, Olm
//! sessions with other devices, outbound Megolm sessions per room and the inbound ones other
//! devices shared with us. Everything here is pure (no I/O) and serialisable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use vodozemac::{
    megolm::{
        GroupSession, GroupSessionPickle, InboundGroupSession, InboundGroupSessionPickle,
        MegolmMessage, SessionConfig as MegolmConfig, SessionKey,
    },
    olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle},
    Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature,
};

use crate::Error;

pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";
/// How many one-time keys the client keeps published.
const OTK_TARGET: usize = 50;

/// Canonical JSON (sorted keys, no spaces): what signatures cover.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String((*k).clone()), canonical(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Whether `object` is signed by `user`'s key `ed25519:<key_name>` with public key `key`.
pub fn verify_signed(object: &Value, user: &str, key_name: &str, key: &str) -> bool {
    let Some(sig) = object["signatures"][user][format!("ed25519:{key_name}")].as_str() else {
        return false;
    };
    let (Ok(pk), Ok(sig)) = (
        Ed25519PublicKey::from_base64(key),
        Ed25519Signature::from_base64(sig),
    ) else {
        return false;
    };
    let mut unsigned = object.clone();
    if let Some(o) = unsigned.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    pk.verify(canonical(&unsigned).as_bytes(), &sig).is_ok()
}

/// Another device's identity keys, from a verified `/keys/query` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceInfo {
    pub curve25519: String,
    pub ed25519: String,
}

/// A room key someone shared with us.
#[derive(Serialize, Deserialize)]
struct Inbound {
    session: InboundGroupSessionPickle,
    /// Curve25519 key of the device that sent it over Olm.
    sender_key: String,
}

/// Our Megolm session for a room and the devices that have its key.
#[derive(Serialize, Deserialize)]
struct Outbound {
    session: GroupSessionPickle,
    shared_with: BTreeSet<String>,
}

/// What a decrypted room event says, and who sent it.
#[derive(Debug, Clone)]
pub struct Decrypted {
    pub event_type: String,
    pub content: Value,
    pub sender_key: String,
}

/// A device's whole crypto state.
pub struct Machine {
    pub user_id: String,
    pub device_id: String,
    account: Account,
    /// Olm sessions by the other device's curve25519 key, newest last.
    sessions: HashMap<String, Vec<Session>>,
    outbound: HashMap<String, Outbound>,
    /// Inbound Megolm sessions by `room \0 session id`.
    inbound: HashMap<String, Inbound>,
    /// Known devices: user → device → keys.
    pub devices: BTreeMap<String, BTreeMap<String, DeviceInfo>>,
    /// Users whose device lists changed since we last asked.
    pub outdated: BTreeSet<String>,
    keys_uploaded: bool,
}

/// [`Machine`] as stored on disk.
#[derive(Serialize, Deserialize)]
pub struct MachinePickle {
    user_id: String,
    device_id: String,
    account: AccountPickle,
    sessions: HashMap<String, Vec<SessionPickle>>,
    outbound: HashMap<String, Outbound>,
    inbound: HashMap<String, Inbound>,
    devices: BTreeMap<String, BTreeMap<String, DeviceInfo>>,
    outdated: BTreeSet<String>,
    keys_uploaded: bool,
}

fn inbound_key(room: &str, session_id: &str) -> String {
    format!("{room}\0{session_id}")
}

impl Machine {
    pub fn new(user_id: &str, device_id: &str) -> Machine {
        Machine {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            account: Account::new(),
            sessions: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            devices: BTreeMap::new(),
            outdated: BTreeSet::new(),
            keys_uploaded: false,
        }
    }

    pub fn pickle(&self) -> MachinePickle {
        MachinePickle {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            account: self.account.pickle(),
            sessions: self
                .sessions
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(Session::pickle).collect()))
                .collect(),
            outbound: self.outbound.clone_pickle(),
            inbound: self.inbound.clone_pickle(),
            devices: self.devices.clone(),
            outdated: self.outdated.clone(),
            keys_uploaded: self.keys_uploaded,
        }
    }

    pub fn from_pickle(p: MachinePickle) -> Machine {
        Machine {
            user_id: p.user_id,
            device_id: p.device_id,
            account: Account::from_pickle(p.account),
            sessions: p
                .sessions
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().map(Session::from_pickle).collect()))
                .collect(),
            outbound: p.outbound,
            inbound: p.inbound,
            devices: p.devices,
            outdated: p.outdated,
            keys_uploaded: p.keys_uploaded,
        }
    }

    pub fn curve25519(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    pub fn ed25519(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    fn sign(&self, object: Value) -> Value {
        let sig = self.account.sign(canonical(&object)).to_base64();
        let mut object = object;
        object["signatures"] =
            json!({ &self.user_id: { format!("ed25519:{}", self.device_id): sig } });
        object
    }

    /// The `/keys/upload` body that tops our one-time keys up to the target, given how many
    /// the server still holds (and our device keys, the first time). `None` if nothing to do.
    pub fn keys_to_upload(&mut self, published: usize) -> Option<Value> {
        let mut body = json!({});
        if !self.keys_uploaded {
            body["device_keys"] = self.sign(json!({
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM, MEGOLM],
                "keys": {
                    format!("curve25519:{}", self.device_id): self.curve25519(),
                    format!("ed25519:{}", self.device_id): self.ed25519(),
                },
            }));
        }
        if published < OTK_TARGET / 2 {
            self.account.generate_one_time_keys(OTK_TARGET - published);
        }
        let mut otks = Map::new();
        for (id, key) in self.account.one_time_keys() {
            let signed = self.sign(json!({ "key": key.to_base64() }));
            otks.insert(format!("signed_curve25519:{}", id.to_base64()), signed);
        }
        if !otks.is_empty() {
            body["one_time_keys"] = Value::Object(otks);
        }
        (body.as_object().is_some_and(|o| !o.is_empty())).then_some(body)
    }

    /// The server stored what [`Self::keys_to_upload`] gave.
    pub fn keys_uploaded(&mut self) {
        self.keys_uploaded = true;
        self.account.mark_keys_as_published();
    }

    /// Take a `/keys/query` answer for `users`: devices whose self-signature verifies.
    pub fn receive_keys(&mut self, answer: &Value, users: &[String]) {
        for user in users {
            let mut found = BTreeMap::new();
            for (device, keys) in answer["device_keys"][user]
                .as_object()
                .into_iter()
                .flatten()
            {
                let ed = keys["keys"][format!("ed25519:{device}")].as_str();
                let curve = keys["keys"][format!("curve25519:{device}")].as_str();
                let (Some(ed), Some(curve)) = (ed, curve) else {
                    continue;
                };
                if keys["user_id"] != user.as_str()
                    || keys["device_id"] != device.as_str()
                    || !verify_signed(keys, user, device, ed)
                {
                    continue;
                }
                // A device that changes identity keys is not the same device.
                if let Some(old) = self.devices.get(user).and_then(|d| d.get(device)) {
                    if old.ed25519 != ed {
                        continue;
                    }
                }
                found.insert(
                    device.clone(),
                    DeviceInfo {
                        curve25519: curve.to_owned(),
                        ed25519: ed.to_owned(),
                    },
                );
            }
            self.devices.insert(user.clone(), found);
            self.outdated.remove(user);
        }
    }

    /// Whether we have an Olm session with this device.
    pub fn has_session(&self, curve: &str) -> bool {
        self.sessions.get(curve).is_some_and(|s| !s.is_empty())
    }

    /// Start an Olm session with a device from one of its claimed one-time keys (whose
    /// signature must be the device's).
    pub fn create_session(
        &mut self,
        user: &str,
        device: &str,
        info: &DeviceInfo,
        claimed: &Value,
    ) -> Result<(), Error> {
        let key = claimed
            .as_object()
            .and_then(|m| m.values().next())
            .ok_or_else(|| Error::Crypto(format!("no one-time key for {user} {device}")))?;
        if !verify_signed(key, user, device, &info.ed25519) {
            return Err(Error::Crypto(format!(
                "one-time key of {user} {device} is not signed by the device"
            )));
        }
        let otk = key["key"]
            .as_str()
            .and_then(|k| Curve25519PublicKey::from_base64(k).ok())
            .ok_or_else(|| Error::Crypto("malformed one-time key".into()))?;
        let identity = Curve25519PublicKey::from_base64(&info.curve25519)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let session =
            self.account
                .create_outbound_session(SessionConfig::version_1(), identity, otk);
        self.sessions
            .entry(info.curve25519.clone())
            .or_default()
            .push(session);
        Ok(())
    }

    /// An `m.room.encrypted` to-device content carrying `event_type`/`content` to one device
    /// over our newest Olm session with it.
    pub fn olm_encrypt(
        &mut self,
        user: &str,
        device: &DeviceInfo,
        event_type: &str,
        content: Value,
    ) -> Result<Value, Error> {
        let payload = json!({
            "type": event_type,
            "content": content,
            "sender": self.user_id,
            "sender_device": self.device_id,
            "keys": { "ed25519": self.ed25519() },
            "recipient": user,
            "recipient_keys": { "ed25519": device.ed25519 },
        });
        let sender_key = self.curve25519();
        let session = self
            .sessions
            .get_mut(&device.curve25519)
            .and_then(|s| s.last_mut())
            .ok_or_else(|| Error::Crypto(format!("no Olm session with a device of {user}")))?;
        let (kind, body) = session.encrypt(payload.to_string()).to_parts();
        Ok(json!({
            "algorithm": OLM,
            "sender_key": sender_key,
            "ciphertext": { &device.curve25519: {
                "type": kind, "body": vodozemac::base64_encode(body),
            } },
        }))
    }

    /// Decrypt an Olm to-device message to us; room keys in it are kept. Answers the
    /// decrypted payload.
    pub fn olm_decrypt(&mut self, sender: &str, content: &Value) -> Result<Value, Error> {
        let sender_key = content["sender_key"]
            .as_str()
            .ok_or_else(|| Error::Crypto("olm message without sender_key".into()))?
            .to_owned();
        let mine = &content["ciphertext"][self.curve25519()];
        let (Some(kind), Some(body)) = (mine["type"].as_u64(), mine["body"].as_str()) else {
            return Err(Error::Crypto("olm message not for this device".into()));
        };
        let bytes = vodozemac::base64_decode(body).map_err(|e| Error::Crypto(e.to_string()))?;
        let message = OlmMessage::from_parts(kind as usize, &bytes)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let mut plaintext = None;
        for s in self
            .sessions
            .entry(sender_key.clone())
            .or_default()
            .iter_mut()
            .rev()
        {
            if let Ok(p) = s.decrypt(&message) {
                plaintext = Some(p);
                break;
            }
        }
        let plaintext = match (plaintext, &message) {
            (Some(p), _) => p,
            (None, OlmMessage::PreKey(pre)) => {
                let identity = Curve25519PublicKey::from_base64(&sender_key)
                    .map_err(|e| Error::Crypto(e.to_string()))?;
                let created = self
                    .account
                    .create_inbound_session(identity, pre)
                    .map_err(|e| Error::Crypto(e.to_string()))?;
                self.sessions
                    .entry(sender_key.clone())
                    .or_default()
                    .push(created.session);
                created.plaintext
            }
            (None, _) => return Err(Error::Crypto("no Olm session decrypts it".into())),
        };
        let payload: Value =
            serde_json::from_slice(&plaintext).map_err(|e| Error::Crypto(e.to_string()))?;
        if payload["sender"] != sender
            || payload["recipient"] != self.user_id.as_str()
            || payload["recipient_keys"]["ed25519"] != self.ed25519().as_str()
        {
            return Err(Error::Crypto(
                "olm payload is not from its sender to us".into(),
            ));
        }
        if payload["type"] == "m.room_key" && payload["content"]["algorithm"] == MEGOLM {
            let c = &payload["content"];
            let (Some(room), Some(id), Some(key)) = (
                c["room_id"].as_str(),
                c["session_id"].as_str(),
                c["session_key"].as_str(),
            ) else {
                return Err(Error::Crypto("malformed m.room_key".into()));
            };
            let key = SessionKey::from_base64(key).map_err(|e| Error::Crypto(e.to_string()))?;
            let session = InboundGroupSession::new(&key, MegolmConfig::version_1());
            if session.session_id() != id {
                return Err(Error::Crypto("m.room_key session id does not match".into()));
            }
            self.inbound.insert(
                inbound_key(room, id),
                Inbound {
                    session: session.pickle(),
                    sender_key,
                },
            );
        }
        Ok(payload)
    }

    /// Our outbound session for the room, and the devices (`curve25519` keys) of `recipients`
    /// that lack its key. A device that had the key and is no longer a recipient means a new
    /// session, so it cannot read what comes next.
    pub fn room_key_needs(
        &mut self,
        room: &str,
        recipients: &BTreeSet<String>,
    ) -> (String, Value, BTreeSet<String>) {
        let stale = self
            .outbound
            .get(room)
            .is_some_and(|o| !o.shared_with.is_subset(recipients));
        if stale || !self.outbound.contains_key(room) {
            let s = GroupSession::new(MegolmConfig::version_1());
            // Our own devices read what we send with this same session.
            let inbound = InboundGroupSession::new(&s.session_key(), MegolmConfig::version_1());
            self.inbound.insert(
                inbound_key(room, &s.session_id()),
                Inbound {
                    session: inbound.pickle(),
                    sender_key: self.curve25519(),
                },
            );
            self.outbound.insert(
                room.to_owned(),
                Outbound {
                    session: s.pickle(),
                    shared_with: BTreeSet::new(),
                },
            );
        }
        let o = &self.outbound[room];
        let s = GroupSession::from_pickle(o.session.clone_pickle());
        let content = json!({
            "algorithm": MEGOLM,
            "room_id": room,
            "session_id": s.session_id(),
            "session_key": s.session_key().to_base64(),
        });
        let missing = recipients.difference(&o.shared_with).cloned().collect();
        (s.session_id(), content, missing)
    }

    /// These devices now have the room's key.
    pub fn room_key_shared(&mut self, room: &str, devices: impl IntoIterator<Item = String>) {
        if let Some(o) = self.outbound.get_mut(room) {
            o.shared_with.extend(devices);
        }
    }

    /// Encrypt a room event with the room's outbound session (see [`Self::room_key_needs`]).
    pub fn megolm_encrypt(
        &mut self,
        room: &str,
        event_type: &str,
        content: Value,
    ) -> Result<Value, Error> {
        let sender_key = self.curve25519();
        let device_id = self.device_id.clone();
        let o = self
            .outbound
            .get_mut(room)
            .ok_or_else(|| Error::Crypto("no outbound session for the room".into()))?;
        let mut s = GroupSession::from_pickle(o.session.clone_pickle());
        let plaintext = json!({ "type": event_type, "content": content, "room_id": room });
        let message = s.encrypt(plaintext.to_string());
        o.session = s.pickle();
        Ok(json!({
            "algorithm": MEGOLM,
            "sender_key": sender_key,
            "ciphertext": message.to_base64(),
            "session_id": s.session_id(),
            "device_id": device_id,
        }))
    }

    /// Decrypt an `m.room.encrypted` room event's content.
    /// Whether the room key an encrypted event names is here (an event that arrived before its
    /// key can be read once the key comes).
    pub fn has_room_key(&self, room: &str, content: &Value) -> bool {
        content["session_id"]
            .as_str()
            .is_some_and(|id| self.inbound.contains_key(&inbound_key(room, id)))
    }

    pub fn megolm_decrypt(&mut self, room: &str, content: &Value) -> Result<Decrypted, Error> {
        if content["algorithm"] != MEGOLM {
            return Err(Error::Crypto("not a megolm event".into()));
        }
        let (Some(id), Some(ciphertext)) = (
            content["session_id"].as_str(),
            content["ciphertext"].as_str(),
        ) else {
            return Err(Error::Crypto("malformed megolm event".into()));
        };
        let entry = self
            .inbound
            .get_mut(&inbound_key(room, id))
            .ok_or_else(|| Error::Crypto(format!("no room key for session {id}")))?;
        let message =
            MegolmMessage::from_base64(ciphertext).map_err(|e| Error::Crypto(e.to_string()))?;
        let mut s = InboundGroupSession::from_pickle(entry.session.clone_pickle());
        let out = s
            .decrypt(&message)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        entry.session = s.pickle();
        let v: Value =
            serde_json::from_slice(&out.plaintext).map_err(|e| Error::Crypto(e.to_string()))?;
        if v["room_id"] != room {
            return Err(Error::Crypto("decrypted event is for another room".into()));
        }
        Ok(Decrypted {
            event_type: v["type"].as_str().unwrap_or_default().to_owned(),
            content: v["content"].clone(),
            sender_key: entry.sender_key.clone(),
        })
    }
}

/// vodozemac's pickles are not `Clone`; a round trip through JSON copies one.
trait ClonePickle {
    fn clone_pickle(&self) -> Self;
}

impl<T: Serialize + serde::de::DeserializeOwned> ClonePickle for T {
    #[expect(
        clippy::expect_used,
        reason = "a value serialised by its own type always reads back as that type"
    )]
    fn clone_pickle(&self) -> Self {
        serde_json::from_value(serde_json::to_value(self).expect("pickle serialises"))
            .expect("pickle deserialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_of(m: &Machine) -> DeviceInfo {
        DeviceInfo {
            curve25519: m.curve25519(),
            ed25519: m.ed25519(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            canonical(&json!({"b": 1, "a": {"d": [1, "x"], "c": null}})),
            r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#
        );
    }

    #[test]
    fn olm_then_megolm_between_two_devices() {
        let mut alice = Machine::new("@alice:x", "A");
        let mut bob = Machine::new("@bob:x", "B");
        let upload = bob.keys_to_upload(0).unwrap();
        bob.keys_uploaded();
        let keys = upload["device_keys"].clone();
        assert!(verify_signed(&keys, "@bob:x", "B", &bob.ed25519()));
        // Alice claims one of Bob's one-time keys and starts a session.
        let (id, otk) = upload["one_time_keys"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        let bob_dev = device_of(&bob);
        alice
            .create_session("@bob:x", "B", &bob_dev, &json!({ id: otk }))
            .unwrap();
        let room = "!r:x";
        let recipients: BTreeSet<String> = [bob_dev.curve25519.clone()].into();
        let (_, key, missing) = alice.room_key_needs(room, &recipients);
        assert_eq!(missing, recipients);
        let wrapped = alice
            .olm_encrypt("@bob:x", &bob_dev, "m.room_key", key)
            .unwrap();
        alice.room_key_shared(room, missing);
        let payload = bob.olm_decrypt("@alice:x", &wrapped).unwrap();
        assert_eq!(payload["type"], "m.room_key");
        let ev = alice
            .megolm_encrypt(room, "m.room.message", json!({"body": "hi"}))
            .unwrap();
        // Both the recipient and the sender's own machine read it; a pickle round trip keeps
        // the sessions.
        let mut bob = Machine::from_pickle(bob.pickle());
        assert_eq!(bob.megolm_decrypt(room, &ev).unwrap().content["body"], "hi");
        assert_eq!(
            alice.megolm_decrypt(room, &ev).unwrap().content["body"],
            "hi"
        );
        assert!(bob.megolm_decrypt("!other:x", &ev).is_err());
        // A device leaving rotates the session.
        let (first, _, _) = alice.room_key_needs(room, &recipients);
        let (second, _, _) = alice.room_key_needs(room, &BTreeSet::new());
        assert_ne!(first, second);
    }
}
