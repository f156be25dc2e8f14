//! Server-side key backups: versions with opaque auth data (`USER_VERSION__BACKUP`), and the
//! session keys stored in each (`USER_VERSION_ROOM_SESSION__BACKUP_KEY`), with a count and an
//! etag that changes whenever the keys do. Writes that read first hold
//! [`E2ee::backup_lock`](super::E2ee::backup_lock).

use std::collections::BTreeMap;

use plexus_store::{schema, Batch, First};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{E2ee, E2eeError};

/// One backup version as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct BackupVersion {
    pub algorithm: String,
    pub auth_data: Value,
    pub etag: u64,
    pub count: u64,
    #[serde(default)]
    pub deleted: bool,
}

/// Versions are numbers here; anything else names no backup.
fn parse_version(v: &str) -> Option<u64> {
    v.parse().ok()
}

/// Whether `new` should replace `old`: verified beats unverified, then the lower first
/// message index, then the lower forwarded count.
fn better(new: &Value, old: &Value) -> bool {
    let key = |k: &Value| {
        (
            !k["is_verified"].as_bool().unwrap_or(false),
            k["first_message_index"].as_u64().unwrap_or(u64::MAX),
            k["forwarded_count"].as_u64().unwrap_or(u64::MAX),
        )
    };
    key(new) < key(old)
}

impl E2ee {
    /// Write a version record with the rest of `b`. Not yet durable: the caller flushes.
    fn commit_backup_version(
        &self,
        user: &UserId,
        n: u64,
        rec: &BackupVersion,
        mut b: Batch,
    ) -> Result<(), E2eeError> {
        schema::USER_VERSION__BACKUP.put(&mut b, (user.as_str(), n), rec)?;
        Ok(self.store.commit(b)?)
    }

    /// The newest version ever created (deleted or not), and the newest live one.
    fn latest_backup(
        &self,
        user: &UserId,
    ) -> Result<(u64, Option<(u64, BackupVersion)>), E2eeError> {
        let mut newest = 0;
        let mut live = None;
        for item in schema::USER_VERSION__BACKUP
            .prefix::<First<1>, BackupVersion>(&self.store.kv, (user.as_str(),))
            .rev()
        {
            let ((_, n), rec) = item?;
            newest = newest.max(n);
            if !rec.deleted {
                live = Some((n, rec));
                break;
            }
        }
        Ok((newest, live))
    }

    /// The user's current backup: the newest version not deleted.
    pub fn current_backup(&self, user: &UserId) -> Result<Option<(u64, BackupVersion)>, E2eeError> {
        Ok(self.latest_backup(user)?.1)
    }

    /// A live version by the name clients use; `UnknownBackupVersion` when there is none.
    pub fn backup_version(
        &self,
        user: &UserId,
        v: &str,
    ) -> Result<(u64, BackupVersion), E2eeError> {
        let n = parse_version(v).ok_or(E2eeError::UnknownBackupVersion)?;
        let rec: BackupVersion = schema::USER_VERSION__BACKUP
            .get(&self.store.kv, (user.as_str(), n))?
            .ok_or(E2eeError::UnknownBackupVersion)?;
        if rec.deleted {
            return Err(E2eeError::UnknownBackupVersion);
        }
        Ok((n, rec))
    }

    /// A new version after every one ever made; answers its number. Not yet durable.
    pub async fn create_backup_version(
        &self,
        user: &UserId,
        algorithm: String,
        auth_data: Value,
    ) -> Result<u64, E2eeError> {
        let _guard = self.backup_lock.lock().await;
        let (newest, _) = self.latest_backup(user)?;
        let n = newest + 1;
        let rec = BackupVersion {
            algorithm,
            auth_data,
            etag: 0,
            count: 0,
            deleted: false,
        };
        self.commit_backup_version(user, n, &rec, Batch::default())?;
        Ok(n)
    }

    /// Replace a version's record (new auth data). The caller holds
    /// [`E2ee::backup_lock`](super::E2ee::backup_lock) since it read the record. Not yet durable.
    pub fn save_backup_version(
        &self,
        user: &UserId,
        n: u64,
        rec: &BackupVersion,
    ) -> Result<(), E2eeError> {
        self.commit_backup_version(user, n, rec, Batch::default())
    }

    /// Delete a version and every key in it. Not yet durable.
    pub async fn delete_backup_version(
        &self,
        user: &UserId,
        version: &str,
    ) -> Result<(), E2eeError> {
        let _guard = self.backup_lock.lock().await;
        let (n, mut rec) = self.backup_version(user, version)?;
        let mut b = Batch::default();
        self.stage_delete_backup_keys(user, n, None, None, &mut b)?;
        rec.deleted = true;
        rec.count = 0;
        self.commit_backup_version(user, n, &rec, b)
    }

    /// Delete stored keys of a version (all, one room's, or one session's) in `b`; answers how
    /// many.
    fn stage_delete_backup_keys(
        &self,
        user: &UserId,
        n: u64,
        room: Option<&str>,
        session: Option<&str>,
        b: &mut Batch,
    ) -> Result<u64, E2eeError> {
        let keys = schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY;
        let kv = &self.store.kv;
        let user = user.as_str();
        if let (Some(r), Some(s)) = (room, session) {
            let there = keys.contains(kv, (user, n, r, s))?;
            if there {
                keys.delete(b, (user, n, r, s));
            }
            return Ok(u64::from(there));
        }
        type Rows = Vec<((String, u64, String, String), serde::de::IgnoredAny)>;
        let rows: Rows = match room {
            Some(r) => keys
                .prefix::<First<3>, _>(kv, (user, n, r))
                .collect::<Result<_, _>>()?,
            None => keys
                .prefix::<First<2>, _>(kv, (user, n))
                .collect::<Result<_, _>>()?,
        };
        for ((_, _, r, s), _) in &rows {
            keys.delete(b, (user, n, r, s));
        }
        Ok(rows.len() as u64)
    }

    /// Store `{room: {session: key}}` in the current version, keeping the better of two copies
    /// of a session; answers the version's etag and count. `version` must be the current one
    /// (`NoCurrentBackup`, `WrongBackupVersion`). Not yet durable.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        rooms: Vec<(OwnedRoomId, Vec<(String, Value)>)>,
    ) -> Result<(u64, u64), E2eeError> {
        let _guard = self.backup_lock.lock().await;
        let (_, live) = self.latest_backup(user)?;
        let Some((current, mut rec)) = live else {
            return Err(E2eeError::NoCurrentBackup);
        };
        if parse_version(version) != Some(current) {
            return Err(E2eeError::WrongBackupVersion { current });
        }
        let mut b = Batch::default();
        let mut changed = false;
        for (room, sessions) in rooms {
            for (session, k) in sessions {
                let row = (user.as_str(), current, room.as_str(), session.as_str());
                let old: Option<Value> =
                    schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY.get(&self.store.kv, row)?;
                let keep = match old {
                    Some(old) => better(&k, &old),
                    None => {
                        rec.count += 1;
                        true
                    }
                };
                if keep {
                    schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY.put(&mut b, row, &k)?;
                    changed = true;
                }
            }
        }
        if changed {
            rec.etag += 1;
            self.commit_backup_version(user, current, &rec, b)?;
        }
        Ok((rec.etag, rec.count))
    }

    /// Stored keys of version `n` (all rooms', or one room's), by room and session.
    pub fn backup_keys(
        &self,
        user: &UserId,
        n: u64,
        room: Option<&RoomId>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Value>>, E2eeError> {
        let keys = schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY;
        let kv = &self.store.kv;
        let user = user.as_str();
        let rows: Box<dyn Iterator<Item = _>> = match room {
            Some(r) => Box::new(keys.prefix::<First<3>, Value>(kv, (user, n, r.as_str()))),
            None => Box::new(keys.prefix::<First<2>, Value>(kv, (user, n))),
        };
        let mut rooms: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for item in rows {
            let ((_, _, r, s), key) = item?;
            rooms.entry(r).or_default().insert(s, key);
        }
        Ok(rooms)
    }

    /// One session's stored key in version `n`.
    pub fn backup_key(
        &self,
        user: &UserId,
        n: u64,
        room: &RoomId,
        session: &str,
    ) -> Result<Option<Value>, E2eeError> {
        let row = (user.as_str(), n, room.as_str(), session);
        Ok(schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY.get(&self.store.kv, row)?)
    }

    /// Delete keys from a version (which need not be current); answers its new etag and
    /// count. Not yet durable.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<(u64, u64), E2eeError> {
        let _guard = self.backup_lock.lock().await;
        let (n, mut rec) = self.backup_version(user, version)?;
        let mut b = Batch::default();
        let removed = self.stage_delete_backup_keys(user, n, room, session, &mut b)?;
        if removed > 0 {
            rec.count = rec.count.saturating_sub(removed);
            rec.etag += 1;
            self.commit_backup_version(user, n, &rec, b)?;
        }
        Ok((rec.etag, rec.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn better_copies_win() {
        let k = |v: bool, i: u64, f: u64| json!({"is_verified": v, "first_message_index": i, "forwarded_count": f});
        assert!(better(&k(true, 9, 9), &k(false, 0, 0)));
        assert!(!better(&k(false, 0, 0), &k(true, 9, 9)));
        assert!(better(&k(false, 1, 9), &k(false, 2, 0)));
        assert!(better(&k(false, 1, 0), &k(false, 1, 1)));
        assert!(!better(&k(false, 1, 1), &k(false, 1, 1)));
    }
}
