//! Reports of content and users, kept for the server's admins. The one owner of
//! `REPORTID__REPORT`.

use std::sync::Arc;

use plexus_store::{schema, Batch, Store, StoreError};
use ruma::UserId;
use serde_json::{json, Value};

pub struct Reports {
    store: Arc<Store>,
}

impl Reports {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Record a report; answers its id. Not yet durable: the caller flushes.
    pub fn file(
        &self,
        reporter: &UserId,
        subject: &Value,
        reason: Option<&str>,
    ) -> Result<u64, StoreError> {
        let id = self.store.kv.unique_id()?;
        let mut b = Batch::default();
        schema::REPORTID__REPORT.put(
            &mut b,
            id,
            &json!({
                "reporter": reporter, "subject": subject, "reason": reason, "ts": super::now_ms(),
            }),
        )?;
        self.store.commit(b)?;
        Ok(id)
    }
}
