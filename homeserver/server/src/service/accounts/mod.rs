//! Accounts: users and their passwords, devices (`devices`), access and refresh tokens
//! (`tokens`), user-interactive auth sessions (`uia`).

pub mod devices;
pub mod tokens;
pub mod uia;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{now_ms, Services};
use crate::error::{ApiError, ApiResult};
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

impl Services {
    pub fn user(&self, user_id: &UserId) -> ApiResult<Option<UserRecord>> {
        Ok(schema::USER__ACCOUNT.get(&self.store.kv, user_id.as_str())?)
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name()
    }

    /// Replace a user's account record. Not yet durable: the caller flushes.
    pub fn save_user(&self, user_id: &UserId, rec: &UserRecord) -> ApiResult<()> {
        let mut b = Batch::default();
        schema::USER__ACCOUNT.put(&mut b, user_id.as_str(), rec)?;
        Ok(self.store.commit(b)?)
    }

    /// What a new password must be: not empty (an empty one would log anybody in who tries
    /// it) and at most 512 bytes (Argon2 input stays bounded).
    pub fn password_policy(password: &str) -> ApiResult<()> {
        if password.is_empty() || password.len() > 512 {
            return Err(ApiError::WeakPassword(
                "password must be 1 to 512 bytes".into(),
            ));
        }
        Ok(())
    }

    pub fn hash_password(password: &str) -> ApiResult<String> {
        let salt = SaltString::encode_b64(random_alnum(16).as_bytes())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))
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

    /// Create an account. Fails with `M_USER_IN_USE` if taken.
    pub async fn create_user(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
    ) -> ApiResult<()> {
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
            return Err(ApiError::UserInUse("User ID already taken".into()));
        }
        self.store.flush().await?;
        Ok(())
    }

    pub fn password_auth(&self, body: &Value) -> Option<OwnedUserId> {
        let name = login_name(body)?;
        let password = body.get("password").and_then(Value::as_str)?;
        let user_id = self.parse_user_name(name).ok()?;
        let rec = self.user(&user_id).ok()??;
        (!rec.deactivated && Self::check_password(&rec, password)).then_some(user_id)
    }

    /// `alice` or `@alice:server` → a local user id.
    pub fn parse_user_name(&self, name: &str) -> ApiResult<OwnedUserId> {
        let id = if name.starts_with('@') {
            UserId::parse(name)
        } else {
            UserId::parse_with_server_name(name.to_lowercase(), self.server_name())
        }
        .map_err(|e| ApiError::InvalidUsername(format!("invalid user id: {e}")))?;
        if !self.is_local(&id) {
            return Err(ApiError::InvalidParam("user is not on this server".into()));
        }
        Ok(id)
    }
}

/// Run CPU-heavy work (password hashing, building sync responses) on the blocking pool, at
/// most one job per core at a time, so it never occupies the async workers that answer every
/// other request, and a burst queues rather than multiplies memory (each Argon2 hash takes
/// 19 MiB: 16 at once peaked at 312 MiB RSS before this bound).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(cores)
    });
    let _slot = slots
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("blocking pool closed: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))
}
