//! Cross-signing: each user's master, self-signing and user-signing keys
//! (`USER_USAGE__CROSS_SIGNING_KEY`), and the signatures a user made with their user-signing
//! key on other users' master keys (`SIGNER_TARGET_KEYID__SIGNATURES`), which only the signer
//! sees. Uploads that compare with the stored keys hold
//! [`E2ee::cross_signing_lock`](super::E2ee::cross_signing_lock).

use plexus_store::{schema, Batch, StoreError};
use ruma::UserId;
use serde_json::{json, Value};

use super::{signatures::merge_signatures, E2ee, E2eeError};
use crate::service::Services;

pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// The one `ed25519:<public key>` entry a cross-signing key has: (key id, public key).
pub fn public_key(key: &Value) -> Option<(String, String)> {
    let map = key.get("keys")?.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (id, pk) = map.iter().next()?;
    let pk = pk.as_str()?;
    (id.strip_prefix("ed25519:") == Some(pk)).then(|| (id.clone(), pk.to_owned()))
}

/// A user's cross-signing key of `usage` (`None` removes it), in `b`.
pub(super) fn stage_key(
    b: &mut Batch,
    user: &str,
    usage: &str,
    key: Option<&Value>,
) -> Result<(), StoreError> {
    match key {
        Some(k) => schema::USER_USAGE__CROSS_SIGNING_KEY.put(b, (user, usage), k),
        None => {
            schema::USER_USAGE__CROSS_SIGNING_KEY.delete(b, (user, usage));
            Ok(())
        }
    }
}

impl E2ee {
    pub fn cross_signing_key(
        &self,
        user: &UserId,
        usage: &str,
    ) -> Result<Option<Value>, E2eeError> {
        Ok(schema::USER_USAGE__CROSS_SIGNING_KEY.get(&self.store.kv, (user.as_str(), usage))?)
    }

    /// A user's master key as `viewer` sees it: with the signatures the viewer made on it.
    pub fn master_key_for(
        &self,
        user: &UserId,
        viewer: Option<&UserId>,
    ) -> Result<Option<Value>, E2eeError> {
        let Some(mut key) = self.cross_signing_key(user, MASTER)? else {
            return Ok(None);
        };
        if let Some(v) = viewer {
            self.add_viewer_signatures(&mut key, user, v)?;
        }
        Ok(Some(key))
    }

    /// Signatures `viewer` made with their user-signing key on `user`'s master key.
    pub fn add_viewer_signatures(
        &self,
        key: &mut Value,
        user: &UserId,
        viewer: &UserId,
    ) -> Result<(), E2eeError> {
        if viewer == user {
            return Ok(());
        }
        if let Some((id, _)) = public_key(key) {
            let row = (viewer.as_str(), user.as_str(), id.as_str());
            if let Some(sigs) =
                schema::SIGNER_TARGET_KEYID__SIGNATURES.get::<Value>(&self.store.kv, row)?
            {
                merge_signatures(key, &json!({ "signatures": sigs }));
            }
        }
        Ok(())
    }
}

impl Services {
    /// Store the signatures `signer` made on `target`'s master key `key_id` (`ed25519:...`),
    /// durably; `target`'s device list changes for those who share a room with them.
    pub async fn commit_signature_on_other(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        signatures: &Value,
    ) -> Result<(), E2eeError> {
        let mut b = Batch::default();
        schema::SIGNER_TARGET_KEYID__SIGNATURES.put(
            &mut b,
            (signer.as_str(), target.as_str(), key_id),
            signatures,
        )?;
        self.commit_remote_device_list_change(target, b).await
    }
}
