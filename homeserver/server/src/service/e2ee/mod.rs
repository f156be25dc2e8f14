//! End-to-end encryption, the service side. The server never decrypts: it keeps and routes
//! device keys, one-time and fallback keys (`keys`), cross-signing keys and signatures
//! (`cross_signing`), key backups (`backup`), to-device messages (`to_device`), the device list
//! change stream (`device_lists`) and its copy of other servers' users' device lists
//! (`remote_devices`). [`E2ee`] is the one owner of those tables; the endpoints are
//! `crate::api::e2ee`.

pub mod backup;
pub mod cross_signing;
pub mod device_lists;
pub mod federation;
pub mod keys;
pub mod remote_devices;
pub mod signatures;
pub mod to_device;

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use plexus_store::{Store, StoreError};

use super::{accounts::AccountsError, rooms::RoomsError};

/// Why an E2EE read or write failed. Besides the store's errors, the refusals a client sees as
/// Matrix errors (mapped in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum E2eeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 404: the backup version does not exist, or was deleted.
    #[error("Unknown backup version")]
    UnknownBackupVersion,
    /// 404: the user has no backup.
    #[error("No current backup version")]
    NoCurrentBackup,
    /// 403: keys written to a version that is not the current one.
    #[error("Wrong backup version")]
    WrongBackupVersion { current: u64 },
    /// The devices a to-device message names.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// Who shares a room with a user whose device list changed.
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}

/// The E2EE tables, and the locks that keep read-modify-write sequences on them whole.
pub struct E2ee {
    store: Arc<Store>,
    /// Key backup writes update a version's count and etag: one at a time.
    pub backup_lock: tokio::sync::Mutex<()>,
    /// Claims take a one-time key out of the store: two claims must not both get the same key.
    pub claim_lock: tokio::sync::Mutex<()>,
    /// Cross-signing uploads compare with the stored keys before writing.
    pub cross_signing_lock: tokio::sync::Mutex<()>,
    /// The ids of to-device messages already taken from federation.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// How many inbound to-device message ids are remembered, to drop a retried transaction's.
const SEEN_MAX: usize = 10_000;

impl E2ee {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            backup_lock: Default::default(),
            claim_lock: Default::default(),
            cross_signing_lock: Default::default(),
            seen: Default::default(),
        }
    }

    /// Whether `origin`'s to-device message `id` is new (and remember it).
    pub fn first_sight(&self, origin: &str, id: &str) -> bool {
        let key = format!("{origin}\0{id}");
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.ids.insert(key.clone()) {
            return false;
        }
        seen.order.push_back(key);
        if seen.order.len() > SEEN_MAX {
            if let Some(old) = seen.order.pop_front() {
                seen.ids.remove(&old);
            }
        }
        true
    }
}
