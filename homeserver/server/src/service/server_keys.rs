//! Other servers' signing keys as last fetched, kept across restarts. The one owner of
//! `SERVER__KEYS`; what the record holds and when to refetch is `federation::keys`.

use std::sync::Arc;

use plexus_store::{schema, Batch, Store, StoreError};
use ruma::ServerName;
use serde::{de::DeserializeOwned, Serialize};

pub struct ServerKeys {
    store: Arc<Store>,
}

impl ServerKeys {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    pub fn get<T: DeserializeOwned>(&self, server: &ServerName) -> Result<Option<T>, StoreError> {
        schema::SERVER__KEYS.get(&self.store.kv, server.as_str())
    }

    /// Replace what is known of `server`. Not flushed: keys can be fetched again.
    pub fn put<T: Serialize>(&self, server: &ServerName, keys: &T) -> Result<(), StoreError> {
        let mut b = Batch::default();
        schema::SERVER__KEYS.put(&mut b, server.as_str(), keys)?;
        self.store.commit(b)
    }
}
