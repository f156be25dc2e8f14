//! Keys as an E2EE client makes them: device identity keys, one-time and fallback keys and
//! cross-signing keys, signed with real ed25519 keys so the server's checks are exercised.
//! (Curve25519 keys are random bytes: the server stores them and never uses them.)

use base64::Engine;
use plexus_core::ruma::{
    signatures::{sign_json, Ed25519KeyPair},
    CanonicalJsonObject,
};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// An ed25519 key that signs as `ed25519:<name>`.
pub struct Signer {
    pair: Ed25519KeyPair,
    /// Unpadded base64 public key.
    pub public: String,
}

impl Signer {
    /// A key named `name` (a device id), or after its own public key when `None`
    /// (cross-signing keys).
    pub fn new(name: Option<&str>) -> Signer {
        let doc = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&doc, "x".into()).expect("key");
        let public = b64(&probe.public_key());
        let version = name.map(str::to_owned).unwrap_or_else(|| public.clone());
        let pair = Ed25519KeyPair::from_der(&doc, version).expect("key");
        Signer { pair, public }
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// `object` with this key's signature as `user` added.
    pub fn sign(&self, user: &str, object: Value) -> Value {
        let mut obj: CanonicalJsonObject = serde_json::from_value(object).expect("object");
        sign_json(user, &self.pair, &mut obj).expect("sign");
        serde_json::to_value(obj).expect("json")
    }
}

/// 43 base64 characters: the shape of an unpadded 32-byte curve25519 key.
fn random_curve() -> String {
    plexus_core::signing::random_alnum(43)
}

/// One device's keys.
pub struct Device {
    pub user: String,
    pub device: String,
    pub signer: Signer,
    pub curve25519: String,
}

impl Device {
    pub fn new(user: &str, device: &str) -> Device {
        Device {
            user: user.to_owned(),
            device: device.to_owned(),
            signer: Signer::new(Some(device)),
            curve25519: random_curve(),
        }
    }

    /// The signed `device_keys` object.
    pub fn device_keys(&self) -> Value {
        self.signer.sign(
            &self.user,
            json!({
                "user_id": self.user,
                "device_id": self.device,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {
                    format!("curve25519:{}", self.device): self.curve25519,
                    format!("ed25519:{}", self.device): self.signer.public,
                },
            }),
        )
    }

    /// A signed curve25519 key (`fallback` marks it as a fallback key).
    pub fn signed_key(&self, fallback: bool) -> Value {
        let mut k = json!({ "key": random_curve() });
        if fallback {
            k["fallback"] = json!(true);
        }
        self.signer.sign(&self.user, k)
    }

    /// `n` signed one-time keys named `<prefix>0`, `<prefix>1`, ...
    pub fn one_time_keys(&self, prefix: &str, n: usize) -> Value {
        let mut m = serde_json::Map::new();
        for i in 0..n {
            m.insert(
                format!("signed_curve25519:{prefix}{i}"),
                self.signed_key(false),
            );
        }
        Value::Object(m)
    }
}

/// A user's three cross-signing keys.
pub struct CrossSigning {
    pub user: String,
    pub master: Signer,
    pub self_signing: Signer,
    pub user_signing: Signer,
}

impl CrossSigning {
    pub fn new(user: &str) -> CrossSigning {
        CrossSigning {
            user: user.to_owned(),
            master: Signer::new(None),
            self_signing: Signer::new(None),
            user_signing: Signer::new(None),
        }
    }

    fn key(&self, s: &Signer, usage: &str) -> Value {
        json!({ "user_id": self.user, "usage": [usage], "keys": { s.key_id(): s.public } })
    }

    pub fn master_key(&self) -> Value {
        self.key(&self.master, "master")
    }

    /// Signed by the master key, as the spec requires.
    pub fn self_signing_key(&self) -> Value {
        self.master
            .sign(&self.user, self.key(&self.self_signing, "self_signing"))
    }

    pub fn user_signing_key(&self) -> Value {
        self.master
            .sign(&self.user, self.key(&self.user_signing, "user_signing"))
    }

    /// The `/keys/device_signing/upload` body (without auth).
    pub fn upload_body(&self) -> Value {
        json!({
            "master_key": self.master_key(),
            "self_signing_key": self.self_signing_key(),
            "user_signing_key": self.user_signing_key(),
        })
    }
}
