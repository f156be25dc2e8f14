//! Our copy of other servers' users' device lists (`USER__REMOTE_DEVICES`), as their
//! `/user/devices` answered and their device list EDUs updated it. Kept only while a local user
//! shares a room with the user: the EDUs stop then, and the copy would go stale.

use plexus_store::{schema, Batch};
use ruma::UserId;
use serde_json::Value;

use super::{E2ee, E2eeError};
use crate::service::Services;

/// What an EDU does to our copy of a remote user's device list.
pub enum RemoteCopy {
    /// Nothing (we hold none).
    Keep,
    /// The copy as updated.
    Replace(Value),
    /// An update was missed: drop the copy, to be fetched again.
    Forget,
}

impl E2ee {
    /// Our copy of a remote user's device list, if we hold one.
    pub fn remote_devices(&self, user: &UserId) -> Result<Option<Value>, E2eeError> {
        Ok(schema::USER__REMOTE_DEVICES.get(&self.store.kv, user.as_str())?)
    }

    /// Keep a remote user's device list as fetched. Not flushed: a lost copy is fetched again.
    pub fn keep_remote_devices(&self, user: &UserId, list: &Value) -> Result<(), E2eeError> {
        let mut b = Batch::default();
        schema::USER__REMOTE_DEVICES.put(&mut b, user.as_str(), list)?;
        Ok(self.store.commit(b)?)
    }

    /// Drop our copy of a remote user's device list, if we hold one.
    pub fn forget_remote_devices(&self, user: &UserId) -> Result<(), E2eeError> {
        if schema::USER__REMOTE_DEVICES.contains(&self.store.kv, user.as_str())? {
            let mut b = Batch::default();
            schema::USER__REMOTE_DEVICES.delete(&mut b, user.as_str());
            self.store.commit(b)?;
        }
        Ok(())
    }
}

impl Services {
    /// A remote user's device list changed: write what it does to our copy with the change
    /// row, durably; local users who share a room with them see it in their next sync.
    pub async fn remote_device_list_changed(
        &self,
        user: &UserId,
        copy: RemoteCopy,
    ) -> Result<(), E2eeError> {
        let mut b = Batch::default();
        match copy {
            RemoteCopy::Keep => {}
            RemoteCopy::Replace(list) => {
                schema::USER__REMOTE_DEVICES.put(&mut b, user.as_str(), &list)?
            }
            RemoteCopy::Forget => schema::USER__REMOTE_DEVICES.delete(&mut b, user.as_str()),
        }
        self.commit_remote_device_list_change(user, b).await
    }
}
