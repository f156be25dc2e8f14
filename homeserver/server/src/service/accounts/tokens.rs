//! Access and refresh tokens (`TOKEN__SESSION`, `REFRESH_TOKEN__SESSION`): issued with a
//! device, rotated on refresh, resolved to the session a request acts in.

use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, StoreError};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{Accounts, AccountsError, DeviceRecord};
use crate::service::now_ms;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Set for access tokens that come with a refresh token.
    pub expires_at: Option<u64>,
}

/// The store key of a token: its SHA-256, so the database alone gives no working token.
/// Tokens carry 190 random bits, so a plain hash (no salt, no stretching) is enough.
pub fn token_key(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key a device record's token field stands for: its hex hash, or (in a store written
/// before tokens were hashed) the token itself.
fn key_of_recorded(recorded: &str) -> Vec<u8> {
    let digits = recorded.as_bytes();
    if digits.len() == 64 && digits.iter().all(u8::is_ascii_hexdigit) {
        digits
            .chunks(2)
            .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
            .collect()
    } else {
        recorded.as_bytes().to_vec()
    }
}

/// An authenticated request's identity.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    /// `None` only for an appservice acting without naming a device.
    pub device_id: Option<OwnedDeviceId>,
    pub access_token: String,
    /// Set when the request came with an appservice's `as_token`.
    pub appservice: Option<std::sync::Arc<plexus_core::appservice::Registration>>,
}

impl Session {
    /// The device the request acts for. Device-scoped endpoints (keys, to-device, logout)
    /// need one; an appservice names it with `device_id` (MSC3202).
    pub fn device(&self) -> Result<&ruma::DeviceId, AccountsError> {
        self.device_id.as_deref().ok_or(AccountsError::NoDevice)
    }

    /// What transaction ids are unique within: the device, or for an appservice acting
    /// without one, the appservice (a name no device id can take).
    pub fn txn_scope(&self) -> String {
        match (&self.device_id, &self.appservice) {
            (Some(d), _) => d.to_string(),
            (None, Some(a)) => format!("\u{1}appservice\u{1}{}", a.id),
            (None, None) => String::new(),
        }
    }

    /// Per-user endpoints (`/user/{userId}/...`) act only on the caller's own data.
    pub fn require_self(&self, user: &str) -> Result<(), AccountsError> {
        if self.user_id.as_str() != user {
            return Err(AccountsError::NotSelf);
        }
        Ok(())
    }
}

/// Tokens handed out at login or register.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

impl Accounts {
    pub(super) fn new_tokens(
        &self,
        user_id: &UserId,
        device_id: &ruma::DeviceId,
        refreshable: bool,
        batch: &mut Batch,
    ) -> Result<IssuedTokens, StoreError> {
        let access_token = format!("px_{}", random_alnum(32));
        let lifetime = self.refreshable_token_lifetime_ms;
        let session = SessionRecord {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            expires_at: refreshable.then(|| now_ms() + lifetime),
        };
        schema::TOKEN__SESSION.put(batch, &token_key(&access_token), &session)?;
        let refresh_token = match refreshable {
            true => {
                let t = format!("pxr_{}", random_alnum(32));
                let s = SessionRecord {
                    expires_at: None,
                    ..session.clone()
                };
                schema::REFRESH_TOKEN__SESSION.put(batch, &token_key(&t), &s)?;
                Some(t)
            }
            false => None,
        };
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            expires_in_ms: refreshable.then_some(lifetime),
        })
    }

    pub(super) fn revoke_tokens(&self, dev: &DeviceRecord, batch: &mut Batch) {
        schema::TOKEN__SESSION.delete(batch, &key_of_recorded(&dev.access_token));
        if let Some(r) = &dev.refresh_token {
            schema::REFRESH_TOKEN__SESSION.delete(batch, &key_of_recorded(r));
        }
    }

    /// Exchange a refresh token for new tokens; the old pair stops working. The token is taken
    /// from the store atomically, so of two concurrent refreshes with it only one succeeds.
    /// Not yet durable: the caller flushes.
    pub fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens, AccountsError> {
        // A refresh that cannot be written must not use the token up.
        self.store.kv.health()?;
        let key = token_key(refresh_token);
        let taken: SessionRecord = schema::REFRESH_TOKEN__SESSION
            .take(&self.store.kv, &key)?
            .ok_or(AccountsError::UnknownToken { soft_logout: false })?;
        let committed = self.rotate_tokens(&taken);
        if let Err(e) = &committed {
            // Nothing was written: put the token back, the client may try again with it.
            if !matches!(e, AccountsError::UnknownToken { .. }) {
                let mut b = Batch::default();
                if schema::REFRESH_TOKEN__SESSION
                    .put(&mut b, &key, &taken)
                    .is_ok()
                {
                    let _ = self.store.commit(b);
                }
            }
        }
        committed
    }

    /// Replace the tokens of the device a taken refresh token belonged to, in one batch.
    fn rotate_tokens(&self, s: &SessionRecord) -> Result<IssuedTokens, AccountsError> {
        let mut dev = self
            .device(&s.user_id, s.device_id.as_str())?
            .ok_or(AccountsError::UnknownToken { soft_logout: false })?;
        let mut batch = Batch::default();
        self.revoke_tokens(&dev, &mut batch);
        let tokens = self.new_tokens(&s.user_id, &s.device_id, true, &mut batch)?;
        dev.access_token = hex(&token_key(&tokens.access_token));
        dev.refresh_token = tokens.refresh_token.as_deref().map(|t| hex(&token_key(t)));
        self.stage_device(&s.user_id, s.device_id.as_str(), &dev, &mut batch)?;
        self.store.commit(batch)?;
        Ok(tokens)
    }

    /// Resolve an access token.
    pub fn session(&self, token: &str) -> Result<Session, AccountsError> {
        let s: SessionRecord = schema::TOKEN__SESSION
            .get(&self.store.kv, &token_key(token))?
            .ok_or(AccountsError::UnknownToken { soft_logout: false })?;
        if s.expires_at.is_some_and(|t| t <= now_ms()) {
            return Err(AccountsError::UnknownToken { soft_logout: true });
        }
        Ok(Session {
            user_id: s.user_id,
            device_id: Some(s.device_id),
            access_token: token.to_owned(),
            appservice: None,
        })
    }
}
