//! The server's ed25519 signing key.

use base64::Engine;
use ruma::signatures::{Ed25519KeyPair, KeyPair};

use crate::CoreError;

/// The server's signing key with its key id version (`ed25519:<version>`).
pub struct ServerKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl ServerKey {
    /// A fresh key with a random version name.
    pub fn generate() -> Result<Self, CoreError> {
        let doc = Ed25519KeyPair::generate();
        let version = format!("a_{}", random_alnum(4));
        Self::from_pkcs8(&doc, version)
    }

    pub fn from_pkcs8(doc: &[u8], version: String) -> Result<Self, CoreError> {
        let pair =
            Ed25519KeyPair::from_der(doc, version).map_err(|e| CoreError::Key(e.to_string()))?;
        Ok(Self {
            pair,
            pkcs8: doc.to_vec(),
        })
    }

    /// Serialised form kept in the store: `version` and the PKCS#8 document in base64.
    pub fn to_stored(&self) -> (String, String) {
        (
            self.pair.version().to_owned(),
            base64::engine::general_purpose::STANDARD.encode(&self.pkcs8),
        )
    }

    pub fn from_stored(version: &str, pkcs8_b64: &str) -> Result<Self, CoreError> {
        let doc = base64::engine::general_purpose::STANDARD
            .decode(pkcs8_b64)
            .map_err(|e| CoreError::Key(e.to_string()))?;
        Self::from_pkcs8(&doc, version.to_owned())
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// Unpadded base64 of the public key, as the key server publishes it.
    pub fn public_key_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_bytes().to_vec()
    }
}

/// Random `[A-Za-z0-9]` string, for key versions, device ids and tokens.
pub fn random_alnum(len: usize) -> String {
    use rand::{distributions::Alphanumeric, Rng};
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
