//! Accounts: users and their passwords (`USER__ACCOUNT`), devices (`devices`), access and
//! refresh tokens (`tokens`), user-interactive auth sessions (`uia`) and when each device was
//! last seen (`last_seen`). [`Accounts`] is the one owner of those tables.

pub mod devices;
pub mod last_seen;
pub mod tokens;
pub mod uia;

use std::sync::Arc;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, Store, StoreError};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{e2ee::E2eeError, now_ms, push::pushers::PushersError, ratelimit::RateLimitError};
use crate::config::Settings;
use uia::login_name;

pub use devices::{valid_device_id, DeviceRecord};
pub use tokens::{token_key, IssuedTokens, Session, SessionRecord};
pub use uia::{UiaSessions, PASSWORD_FLOW};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserRecord {
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub admin: bool,
    pub created_ts: u64,
}

/// Why an account read or write failed. Besides the store's errors, the refusals a client sees
/// as Matrix errors (mapped in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Work for the blocking pool did not run.
    #[error(transparent)]
    Blocking(#[from] BlockingError),
    /// 400 `M_USER_IN_USE`.
    #[error("User ID already taken")]
    UserInUse,
    /// 400 `M_INVALID_USERNAME`: a name that is no user id.
    #[error("invalid user id: {0}")]
    InvalidUserId(String),
    /// 400 `M_INVALID_PARAM`: a user id of another server.
    #[error("user is not on this server")]
    NotLocal,
    /// 400 `M_WEAK_PASSWORD`.
    #[error("password must be 1 to 512 bytes")]
    WeakPassword,
    /// 500: Argon2 refused to hash.
    #[error("{0}")]
    Hash(String),
    /// 400 `M_INVALID_PARAM`.
    #[error("device_id must be 1 to 255 bytes of printable text")]
    InvalidDeviceId,
    /// 401 `M_UNKNOWN_TOKEN`; `soft_logout` when the token only expired (refreshing works).
    #[error("unknown access token")]
    UnknownToken { soft_logout: bool },
    /// 401: user-interactive auth goes on; the body is its state.
    #[error("user-interactive authentication required")]
    Uia(Value),
    /// 400 `M_MISSING_PARAM`: a device-scoped request from an appservice that named no device.
    #[error("this request acts for a device: an appservice must pass device_id")]
    NoDevice,
    /// 403: a per-user endpoint asked about another user.
    #[error("Cannot access another user's data")]
    NotSelf,
    /// 429: the account's failed logins are used up for now.
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    /// A device change's keys or device list rows (boxed: `E2eeError` holds an `AccountsError`).
    #[error(transparent)]
    E2ee(Box<E2eeError>),
    /// Removing the pushers of deleted devices.
    #[error(transparent)]
    Pushers(#[from] PushersError),
}

impl From<E2eeError> for AccountsError {
    fn from(e: E2eeError) -> Self {
        AccountsError::E2ee(Box::new(e))
    }
}

/// The accounts tables, and what their rules read from the configuration.
pub struct Accounts {
    store: Arc<Store>,
    server_name: OwnedServerName,
    /// How long an access token issued with a refresh token lives.
    refreshable_token_lifetime_ms: u64,
    /// What `m.login.registration_token` accepts.
    registration_tokens: Vec<String>,
    uia: UiaSessions,
    last_seen: last_seen::LastSeen,
}

impl Accounts {
    pub fn new(store: Arc<Store>, settings: &Settings) -> Self {
        Self {
            store,
            server_name: settings.server_name.clone(),
            refreshable_token_lifetime_ms: settings.refreshable_token_lifetime_ms,
            registration_tokens: settings.registration_tokens.clone(),
            uia: UiaSessions::default(),
            last_seen: Default::default(),
        }
    }

    pub fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>, AccountsError> {
        Ok(schema::USER__ACCOUNT.get(&self.store.kv, user_id.as_str())?)
    }

    /// Replace a user's account record. Not yet durable: the caller flushes.
    pub fn save_user(&self, user_id: &UserId, rec: &UserRecord) -> Result<(), AccountsError> {
        let mut b = Batch::default();
        schema::USER__ACCOUNT.put(&mut b, user_id.as_str(), rec)?;
        Ok(self.store.commit(b)?)
    }

    /// The users of this server whose ids `keep` accepts, in id order.
    pub fn local_users(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<OwnedUserId>, AccountsError> {
        let mut out = vec![];
        for item in schema::USER__ACCOUNT.iter::<serde::de::IgnoredAny>(&self.store.kv) {
            let (name, _) = item?;
            if keep(&name) {
                if let Ok(u) = OwnedUserId::try_from(name) {
                    out.push(u);
                }
            }
        }
        Ok(out)
    }

    /// What a new password must be: not empty (an empty one would log anybody in who tries
    /// it) and at most 512 bytes (Argon2 input stays bounded).
    pub fn password_policy(password: &str) -> Result<(), AccountsError> {
        if password.is_empty() || password.len() > 512 {
            return Err(AccountsError::WeakPassword);
        }
        Ok(())
    }

    pub fn hash_password(password: &str) -> Result<String, AccountsError> {
        let salt = SaltString::encode_b64(random_alnum(16).as_bytes())
            .map_err(|e| AccountsError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountsError::Hash(e.to_string()))
    }

    pub fn check_password(rec: &UserRecord, password: &str) -> bool {
        let Some(hash) = rec.password_hash.as_ref().filter(|_| !password.is_empty()) else {
            return false;
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    /// Create an account. Fails with `UserInUse` if taken. Not yet durable: the caller
    /// flushes.
    pub async fn create_user(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
    ) -> Result<(), AccountsError> {
        let rec = UserRecord {
            password_hash: match password {
                Some(p) => {
                    Self::password_policy(p)?;
                    let p = p.to_owned();
                    Some(blocking(move || Self::hash_password(&p)).await??)
                }
                None => None,
            },
            displayname: Some(user_id.localpart().to_owned()),
            avatar_url: None,
            deactivated: false,
            admin,
            created_ts: now_ms(),
        };
        if !schema::USER__ACCOUNT.insert_new(&self.store.kv, user_id.as_str(), &rec)? {
            return Err(AccountsError::UserInUse);
        }
        Ok(())
    }

    /// The user an `m.login.password` body (identifier or legacy `user`) proves itself as:
    /// a local, active account whose password it has.
    pub fn password_auth(&self, body: &Value) -> Option<OwnedUserId> {
        let name = login_name(body)?;
        let password = body.get("password").and_then(Value::as_str)?;
        let user_id = self.parse_user_name(name).ok()?;
        let rec = self.user(&user_id).ok()??;
        (!rec.deactivated && Self::check_password(&rec, password)).then_some(user_id)
    }

    /// `alice` or `@alice:server` → a local user id.
    pub fn parse_user_name(&self, name: &str) -> Result<OwnedUserId, AccountsError> {
        let id = if name.starts_with('@') {
            UserId::parse(name)
        } else {
            UserId::parse_with_server_name(name.to_lowercase(), &self.server_name)
        }
        .map_err(|e| AccountsError::InvalidUserId(e.to_string()))?;
        if id.server_name() != &*self.server_name {
            return Err(AccountsError::NotLocal);
        }
        Ok(id)
    }
}

/// Why work sent to the blocking pool did not run.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error("blocking pool closed: {0}")]
    Closed(tokio::sync::AcquireError),
    #[error("blocking task failed: {0}")]
    Failed(tokio::task::JoinError),
}

/// Run CPU-heavy work (password hashing, building sync responses) on the blocking pool, at
/// most one job per core at a time, so it never occupies the async workers that answer every
/// other request, and a burst queues rather than multiplies memory (each Argon2 hash takes
/// 19 MiB: 16 at once peaked at 312 MiB RSS before this bound).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BlockingError> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(cores)
    });
    let _slot = slots.acquire().await.map_err(BlockingError::Closed)?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(BlockingError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        (dir, Accounts::new(store, &settings))
    }

    #[test]
    fn user_names_are_local_user_ids() {
        let (_dir, accounts) = service();
        assert_eq!(
            accounts.parse_user_name("Alice").unwrap().as_str(),
            "@alice:localhost"
        );
        assert!(matches!(
            accounts.parse_user_name("@bob:elsewhere"),
            Err(AccountsError::NotLocal)
        ));
        assert!(matches!(
            accounts.parse_user_name("@"),
            Err(AccountsError::InvalidUserId(_))
        ));
    }

    #[test]
    fn a_refresh_replaces_both_tokens_once_and_a_deleted_device_has_none() {
        let (_dir, accounts) = service();
        let alice = ruma::user_id!("@alice:localhost");
        let (device, first) = accounts.issue_device(alice, None, None, true).unwrap();
        let session = accounts.session(&first.access_token).unwrap();
        assert_eq!(session.device_id, Some(device.clone()));
        let refresh = first.refresh_token.unwrap();
        let second = accounts.refresh(&refresh).unwrap();
        assert!(matches!(
            accounts.session(&first.access_token),
            Err(AccountsError::UnknownToken { soft_logout: false })
        ));
        assert!(matches!(
            accounts.refresh(&refresh),
            Err(AccountsError::UnknownToken { soft_logout: false })
        ));
        assert!(accounts.session(&second.access_token).is_ok());
        let mut b = Batch::default();
        assert!(accounts
            .stage_delete_device(alice, device.as_str(), &mut b)
            .unwrap());
        accounts.store.commit(b).unwrap();
        assert!(accounts.session(&second.access_token).is_err());
        assert!(accounts.devices(alice).unwrap().is_empty());
    }
}
