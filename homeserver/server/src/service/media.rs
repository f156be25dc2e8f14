//! What the store knows of media: one record per `mxc://` URI (local or cached from another
//! server), cached thumbnails, ids reserved for a later upload, and the bytes each user
//! uploaded (the quota). The one owner of those tables; the bytes themselves are blobs in
//! `plexus-media`.

use std::sync::Arc;

use plexus_store::{schema, Batch, First, Store, StoreError};
use serde::{Deserialize, Serialize};

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
    pub fn stage(b: &mut Batch, server: &str, id: &str, rec: &Record) -> Result<(), StoreError> {
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

    pub fn stage_used_bytes(b: &mut Batch, user: &str, used: u64) -> Result<(), StoreError> {
        schema::USER__MEDIA_BYTES.put(b, user, &used)
    }

    /// The ids `user` reserved and has not uploaded to yet, with when each expires.
    pub fn reservations(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        schema::USER_MEDIA__PENDING_EXPIRY
            .prefix::<First<1>, u64>(&self.store.kv, (user,))
            .map(|r| r.map(|((_, id), expires)| (id, expires)))
            .collect()
    }

    pub fn stage_reservation(
        b: &mut Batch,
        user: &str,
        id: &str,
        expires: u64,
    ) -> Result<(), StoreError> {
        schema::USER_MEDIA__PENDING_EXPIRY.put(b, (user, id), &expires)
    }

    /// The reservation is over: uploaded to, or given up.
    pub fn stage_reservation_done(b: &mut Batch, user: &str, id: &str) {
        schema::USER_MEDIA__PENDING_EXPIRY.delete(b, (user, id));
    }

    /// Forget a record (an expired reservation that never received content).
    pub fn stage_forget(b: &mut Batch, server: &str, id: &str) {
        schema::ORIGIN_MEDIA__RECORD.delete(b, (server, id));
    }
}
