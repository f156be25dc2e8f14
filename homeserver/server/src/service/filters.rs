//! Filters clients upload once and name by id in `/sync`. The one owner of
//! `USER_FILTERID__FILTER`; what a filter means is `client::filter`'s.

use std::sync::Arc;

use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, Store, StoreError};
use ruma::UserId;
use serde_json::Value;

pub struct Filters {
    store: Arc<Store>,
}

impl Filters {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Keep a filter; answers its id. Not yet durable: the caller flushes.
    pub fn create(&self, user: &UserId, filter: &Value) -> Result<String, StoreError> {
        let id = random_alnum(12);
        let mut b = Batch::default();
        schema::USER_FILTERID__FILTER.put(&mut b, (user.as_str(), &id), filter)?;
        self.store.commit(b)?;
        Ok(id)
    }

    /// A filter of the user's, as uploaded.
    pub fn get(&self, user: &UserId, id: &str) -> Result<Option<Value>, StoreError> {
        schema::USER_FILTERID__FILTER.get(&self.store.kv, (user.as_str(), id))
    }
}
