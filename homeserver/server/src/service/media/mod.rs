//! What the store knows of media: one record per `mxc://` URI (local or cached from another
//! server), cached thumbnails, ids reserved for a later upload, and the bytes each user
//! uploaded (the quota). The one owner of those tables; the bytes themselves are blobs in
//! `plexus-media`.

pub mod remote;
mod repo;

use std::{sync::Arc, time::Duration};

use plexus_store::{schema, Batch, First, Store, StoreError};
use serde::{Deserialize, Serialize};

pub use repo::Repo;

/// Longest a download waits for a reserved id's upload, whatever `timeout_ms` asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// `timeout_ms` when the request names none (the spec's default).
pub const DEFAULT_WAIT_MS: u64 = 20_000;

/// What the store knows of one `mxc://` URI.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// The content's digest; absent while a reserved id waits for its upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The local user who uploaded (or reserved) it; none for other servers' media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    pub created_ts: u64,
    /// For a reserved id: when it is given up if nothing was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_expires_at: Option<u64>,
}

/// A cached thumbnail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThumbRecord {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

/// A thumbnail's place in the cache: width, height and method.
pub type ThumbKey<'a> = (u32, u32, &'a str);

/// Why a media record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MediaRecordsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The upload would take its uploader past the per-user quota (in bytes).
    #[error("your uploads have reached their quota of {0} bytes")]
    OverQuota(u64),
    /// The user already holds as many reservations as allowed.
    #[error("Too many pending media uploads")]
    TooManyPending { retry_after_ms: u64 },
}

pub struct MediaRecords {
    store: Arc<Store>,
}

impl MediaRecords {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    pub fn get(&self, server: &str, id: &str) -> Result<Option<Record>, StoreError> {
        schema::ORIGIN_MEDIA__RECORD.get(&self.store.kv, (server, id))
    }

    /// A record, in a batch with the writes that go with it (quota, reservation).
    fn stage(b: &mut Batch, server: &str, id: &str, rec: &Record) -> Result<(), StoreError> {
        schema::ORIGIN_MEDIA__RECORD.put(b, (server, id), rec)
    }

    /// Store a record on its own (remote media cached here).
    pub fn put(&self, server: &str, id: &str, rec: &Record) -> Result<(), StoreError> {
        let mut b = Batch::default();
        Self::stage(&mut b, server, id, rec)?;
        self.store.commit(b)
    }

    pub fn thumbnail(
        &self,
        server: &str,
        id: &str,
        (width, height, method): ThumbKey<'_>,
    ) -> Result<Option<ThumbRecord>, StoreError> {
        schema::ORIGIN_MEDIA_SIZE_METHOD__THUMBNAIL
            .get(&self.store.kv, (server, id, width, height, method))
    }

    /// Cache a thumbnail. Not flushed: losing it in a crash only means making it again.
    pub fn put_thumbnail(
        &self,
        server: &str,
        id: &str,
        (width, height, method): ThumbKey<'_>,
        t: &ThumbRecord,
    ) -> Result<(), StoreError> {
        let mut b = Batch::default();
        schema::ORIGIN_MEDIA_SIZE_METHOD__THUMBNAIL.put(
            &mut b,
            (server, id, width, height, method),
            t,
        )?;
        self.store.commit(b)
    }

    /// Bytes `user` has uploaded in all (what the per-user quota counts).
    pub fn used_bytes(&self, user: &str) -> Result<u64, StoreError> {
        Ok(schema::USER__MEDIA_BYTES
            .get(&self.store.kv, user)?
            .unwrap_or(0))
    }

    /// Count an upload of `size` bytes against `user`'s quota (`quota` 0: none), in the batch
    /// that records it.
    fn stage_charge(
        &self,
        b: &mut Batch,
        user: &str,
        size: u64,
        quota: u64,
    ) -> Result<(), MediaRecordsError> {
        if quota == 0 {
            return Ok(());
        }
        let used = self.used_bytes(user)?.saturating_add(size);
        if used > quota {
            return Err(MediaRecordsError::OverQuota(quota));
        }
        schema::USER__MEDIA_BYTES.put(b, user, &used)?;
        Ok(())
    }

    /// Record an upload by `user` and charge it to the user's quota (`quota` 0: none), in one
    /// batch; for an id the user `reserved`, the reservation ends in the same batch. The caller
    /// holds the media write lock, so two uploads cannot both fit in the last bytes. Not yet
    /// durable: the caller flushes.
    pub fn record_upload(
        &self,
        server: &str,
        id: &str,
        rec: &Record,
        user: &str,
        quota: u64,
        reserved: bool,
    ) -> Result<(), MediaRecordsError> {
        let mut b = Batch::default();
        Self::stage(&mut b, server, id, rec)?;
        self.stage_charge(&mut b, user, rec.size, quota)?;
        if reserved {
            Self::stage_reservation_done(&mut b, user, id);
        }
        Ok(self.store.commit(b)?)
    }

    /// Reserve `id` for a later upload by `user`, until `expires`. The user's expired
    /// reservations (records without content) are dropped first, and stay dropped when the
    /// user already holds `max_pending` live ones and nothing is reserved. Not yet durable: the
    /// caller flushes.
    pub fn reserve(
        &self,
        server: &str,
        user: &str,
        id: &str,
        now: u64,
        expires: u64,
        max_pending: usize,
    ) -> Result<(), MediaRecordsError> {
        let mut b = Batch::default();
        let mut live = Vec::new();
        for (old, exp) in self.reservations(user)? {
            if exp <= now {
                Self::stage_reservation_done(&mut b, user, &old);
                Self::stage_forget(&mut b, server, &old);
            } else {
                live.push(exp);
            }
        }
        if live.len() >= max_pending {
            self.store.commit(b)?;
            let soonest = live.iter().min().copied().unwrap_or(now);
            return Err(MediaRecordsError::TooManyPending {
                retry_after_ms: soonest.saturating_sub(now),
            });
        }
        let rec = Record {
            uploader: Some(user.to_owned()),
            created_ts: now,
            unused_expires_at: Some(expires),
            ..Record::default()
        };
        Self::stage(&mut b, server, id, &rec)?;
        Self::stage_reservation(&mut b, user, id, expires)?;
        Ok(self.store.commit(b)?)
    }

    /// The ids `user` reserved and has not uploaded to yet, with when each expires.
    pub fn reservations(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        schema::USER_MEDIA__PENDING_EXPIRY
            .prefix::<First<1>, u64>(&self.store.kv, (user,))
            .map(|r| r.map(|((_, id), expires)| (id, expires)))
            .collect()
    }

    fn stage_reservation(
        b: &mut Batch,
        user: &str,
        id: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        schema::USER_MEDIA__PENDING_EXPIRY.put(b, (user, id), &expires)
    }

    /// The reservation is over: uploaded to, or given up.
    fn stage_reservation_done(b: &mut Batch, user: &str, id: &str) {
        schema::USER_MEDIA__PENDING_EXPIRY.delete(b, (user, id));
    }

    /// Forget a record (an expired reservation that never received content).
    fn stage_forget(b: &mut Batch, server: &str, id: &str) {
        schema::ORIGIN_MEDIA__RECORD.delete(b, (server, id));
    }
}
