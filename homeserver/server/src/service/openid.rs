//! OpenID tokens: short-lived proof of who a user is, for a third party (an integration, a
//! voice SFU) that asks this server over federation. The one owner of `OPENID_TOKEN__GRANT`;
//! tokens are stored hashed, like access tokens.

use std::sync::Arc;

use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, Store, StoreError};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{accounts::token_key, now_ms};

/// How long a token vouches for its user.
pub const LIFETIME_SECS: u64 = 3600;

#[derive(Serialize, Deserialize)]
struct Grant {
    user_id: OwnedUserId,
    expires_at: u64,
}

pub struct OpenId {
    store: Arc<Store>,
}

impl OpenId {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// A new token for `user`, valid for [`LIFETIME_SECS`]. Not yet durable: the caller
    /// flushes.
    pub fn issue(&self, user: &UserId) -> Result<String, StoreError> {
        let token = random_alnum(32);
        let grant = Grant {
            user_id: user.to_owned(),
            expires_at: now_ms() + LIFETIME_SECS * 1000,
        };
        let mut b = Batch::default();
        schema::OPENID_TOKEN__GRANT.put(&mut b, &token_key(&token), &grant)?;
        self.store.commit(b)?;
        Ok(token)
    }

    /// The user a token vouches for, while it is valid.
    pub fn user_of(&self, token: &str) -> Result<Option<OwnedUserId>, StoreError> {
        let grant: Option<Grant> =
            schema::OPENID_TOKEN__GRANT.get(&self.store.kv, &token_key(token))?;
        Ok(grant
            .filter(|g| g.expires_at >= now_ms())
            .map(|g| g.user_id))
    }
}
