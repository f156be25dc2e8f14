//! When and from where each device was last seen, for `GET /devices`. Every authenticated
//! request reports here; the store is written at most once per [`GRANULARITY_MS`] per device
//! (or when its address changes), so the hot path pays one map lookup.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

use plexus_store::{schema, Batch};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{Accounts, AccountsError};
use crate::service::now_ms;

/// How stale a stored last-seen time may be (Synapse keeps 2 minutes).
const GRANULARITY_MS: u64 = 60_000;
/// Users remembered in memory before the stale entries are dropped.
const MAX_TRACKED: usize = 100_000;

/// The stored record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    pub ts: u64,
    pub ip: String,
}

/// When and from where a user's devices were last written.
type Written = HashMap<OwnedDeviceId, (u64, IpAddr)>;

/// What was last written per user and device.
#[derive(Default)]
pub struct LastSeen {
    written: Mutex<HashMap<OwnedUserId, Written>>,
}

impl LastSeen {
    /// Whether a request at `now` from `ip` should be written: the stored record is older
    /// than the granularity, or from another address. Records it as written if so.
    fn due(&self, user: &UserId, device: &OwnedDeviceId, ip: IpAddr, now: u64) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |e: &(u64, IpAddr)| now.saturating_sub(e.0) < GRANULARITY_MS;
        if let Some(e) = written.get(user).and_then(|d| d.get(device)) {
            if e.1 == ip && recent(e) {
                return false;
            }
        }
        if written.len() >= MAX_TRACKED && !written.contains_key(user) {
            // Forgetting costs at most one more write per device: drop the stale entries, or
            // everything if a minute's traffic alone fills the map.
            written.retain(|_, devices| {
                devices.retain(|_, e| recent(e));
                !devices.is_empty()
            });
            if written.len() >= MAX_TRACKED {
                written.clear();
            }
        }
        written
            .entry(user.to_owned())
            .or_default()
            .insert(device.clone(), (now, ip));
        true
    }

    /// A deleted device: a device made again under its id starts unseen.
    pub fn forget(&self, user: &UserId, device: &str) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(devices) = written.get_mut(user) {
            devices.retain(|d, _| d.as_str() != device);
        }
    }
}

impl Accounts {
    /// A device made a request from `ip`. Never fails the request: a store error is logged.
    pub fn saw_device(&self, user: &UserId, device: &OwnedDeviceId, ip: IpAddr) {
        let now = now_ms();
        if !self.last_seen.due(user, device, ip, now) {
            return;
        }
        let mut b = Batch::default();
        let seen = Seen {
            ts: now,
            ip: ip.to_string(),
        };
        let written = schema::USER_DEVICE__LAST_SEEN
            .put(&mut b, (user.as_str(), device.as_str()), &seen)
            .and_then(|()| self.store.commit(b));
        if let Err(e) = written {
            tracing::warn!(user = %user, device = %device, error = %e, "last seen not recorded");
        }
    }

    /// When and from where the device was last seen, if it made a request since this was
    /// recorded.
    pub fn device_seen(&self, user: &UserId, device: &str) -> Result<Option<Seen>, AccountsError> {
        Ok(schema::USER_DEVICE__LAST_SEEN.get(&self.store.kv, (user.as_str(), device))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once_per_minute_or_on_a_new_address() {
        let seen = LastSeen::default();
        let user = ruma::user_id!("@a:x");
        let dev: OwnedDeviceId = "D".into();
        let (home, away) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(seen.due(user, &dev, home, 1_000));
        assert!(!seen.due(user, &dev, home, 30_000));
        assert!(seen.due(user, &dev, away, 31_000));
        assert!(!seen.due(user, &dev, away, 31_000 + GRANULARITY_MS - 1));
        assert!(seen.due(user, &dev, away, 31_000 + GRANULARITY_MS));
    }
}
