//! Devices: their records (`USER_DEVICE__DEVICE`), new devices with their tokens, renames and
//! deletions.

use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, First};
use ruma::{OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};

use super::{
    tokens::{hex, token_key},
    Accounts, AccountsError, IssuedTokens,
};
use crate::service::{now_ms, Services};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    /// The SHA-256 of the device's access token, in hex (the token itself is never stored).
    pub access_token: String,
    /// The SHA-256 of its refresh token, in hex.
    pub refresh_token: Option<String>,
    pub last_seen_ts: u64,
}

/// A device id a client chooses: the spec leaves it opaque, but it is shown in device lists,
/// sent to every room-mate's server and used in store keys, so it must be short printable text.
pub fn valid_device_id(d: &str) -> Result<(), AccountsError> {
    if d.is_empty() || d.len() > 255 || d.chars().any(|c| c.is_control()) {
        return Err(AccountsError::InvalidDeviceId);
    }
    Ok(())
}

impl Accounts {
    pub fn device(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, AccountsError> {
        Ok(schema::USER_DEVICE__DEVICE.get(&self.store.kv, (user_id.as_str(), device_id))?)
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(String, DeviceRecord)>, AccountsError> {
        schema::USER_DEVICE__DEVICE
            .prefix::<First<1>, DeviceRecord>(&self.store.kv, (user_id.as_str(),))
            .map(|r| {
                let ((_, device), rec) = r?;
                Ok((device, rec))
            })
            .collect()
    }

    /// Put a device's record in `b`.
    pub fn stage_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        rec: &DeviceRecord,
        b: &mut Batch,
    ) -> Result<(), AccountsError> {
        Ok(schema::USER_DEVICE__DEVICE.put(b, (user_id.as_str(), device_id), rec)?)
    }

    /// A new device with fresh tokens (or the named device, replacing its tokens). Not yet
    /// durable: the caller flushes.
    pub fn issue_device(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        display_name: Option<String>,
        refreshable: bool,
    ) -> Result<(OwnedDeviceId, IssuedTokens), AccountsError> {
        let device_id: OwnedDeviceId = match device_id {
            Some(d) => {
                valid_device_id(d)?;
                d.into()
            }
            None => random_alnum(10).to_uppercase().into(),
        };
        let mut batch = Batch::default();
        let existing = self.device(user_id, device_id.as_str())?;
        if let Some(old) = &existing {
            self.revoke_tokens(old, &mut batch);
        }
        let tokens = self.new_tokens(user_id, &device_id, refreshable, &mut batch)?;
        let rec = DeviceRecord {
            display_name: display_name.or_else(|| existing.and_then(|e| e.display_name)),
            access_token: hex(&token_key(&tokens.access_token)),
            refresh_token: tokens.refresh_token.as_deref().map(|t| hex(&token_key(t))),
            last_seen_ts: now_ms(),
        };
        self.stage_device(user_id, device_id.as_str(), &rec, &mut batch)?;
        self.store.commit(batch)?;
        Ok((device_id, tokens))
    }

    /// Remove a device, its tokens and when it was last seen, in `b`. Whether it existed.
    pub fn stage_delete_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        b: &mut Batch,
    ) -> Result<bool, AccountsError> {
        let Some(dev) = self.device(user_id, device_id)? else {
            return Ok(false);
        };
        self.revoke_tokens(&dev, b);
        schema::USER_DEVICE__DEVICE.delete(b, (user_id.as_str(), device_id));
        schema::USER_DEVICE__LAST_SEEN.delete(b, (user_id.as_str(), device_id));
        Ok(true)
    }
}

impl Services {
    /// Store a device's record as its user changed it (its display name). Other users see
    /// device names in key queries: this is a device list change too.
    pub async fn update_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        rec: DeviceRecord,
    ) -> Result<(), AccountsError> {
        let mut b = Batch::default();
        self.accounts
            .stage_device(user_id, device_id, &rec, &mut b)?;
        let change = crate::service::e2ee::device_lists::Change::Device {
            keys: self.e2ee.device_keys(user_id, device_id)?,
            id: device_id.to_owned(),
            display_name: rec.display_name,
        };
        Ok(self
            .commit_device_list_changes(user_id, vec![change], b)
            .await?)
    }

    /// Remove every device of the user (logout from all of them, deactivation).
    pub async fn delete_all_devices(&self, user_id: &UserId) -> Result<(), AccountsError> {
        let all: Vec<String> = self
            .accounts
            .devices(user_id)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        self.delete_devices(user_id, &all).await
    }

    /// Remove devices, their tokens and their keys; the user's room-mates hear the devices
    /// are gone.
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> Result<(), AccountsError> {
        let mut batch = Batch::default();
        let mut changes = vec![];
        for d in device_ids {
            if self.accounts.stage_delete_device(user_id, d, &mut batch)? {
                self.e2ee.stage_delete_device_keys(user_id, d, &mut batch)?;
                changes.push(crate::service::e2ee::device_lists::Change::Deleted { id: d.clone() });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.pusher_records
            .stage_delete_for_devices(user_id, device_ids, &mut batch)?;
        self.commit_device_list_changes(user_id, changes, batch)
            .await?;
        for d in device_ids {
            self.accounts.last_seen.forget(user_id, d);
        }
        Ok(())
    }
}
