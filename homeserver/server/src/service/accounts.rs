//! Accounts, passwords, devices, access and refresh tokens, user-interactive auth sessions.

use std::{collections::HashMap, sync::Mutex};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use plexus_core::signing::random_alnum;
use plexus_store::{schema, Batch, First, StoreError};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_ms, ratelimit::Action, Services};
use crate::error::{ApiError, ApiResult};

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Set for access tokens that come with a refresh token.
    pub expires_at: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    /// The SHA-256 of the device's access token, in hex (the token itself is never stored).
    pub access_token: String,
    /// The SHA-256 of its refresh token, in hex.
    pub refresh_token: Option<String>,
    pub last_seen_ts: u64,
}

/// The account named in login credentials (`identifier.user`, or the older `user`).
fn login_name(creds: &Value) -> Option<&str> {
    creds
        .get("identifier")
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("m.id.user"))
        .and_then(|i| i.get("user"))
        .or_else(|| creds.get("user"))
        .and_then(Value::as_str)
}

/// A device id a client chooses: the spec leaves it opaque, but it is shown in device lists,
/// sent to every room-mate's server and used in store keys, so it must be short printable text.
pub fn valid_device_id(d: &str) -> ApiResult<()> {
    if d.is_empty() || d.len() > 255 || d.chars().any(|c| c.is_control()) {
        return Err(ApiError::InvalidParam(
            "device_id must be 1 to 255 bytes of printable text".into(),
        ));
    }
    Ok(())
}

/// The store key of a token: its SHA-256, so the database alone gives no working token.
/// Tokens carry 190 random bits, so a plain hash (no salt, no stretching) is enough.
pub fn token_key(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
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
    pub fn device(&self) -> ApiResult<&ruma::DeviceId> {
        self.device_id.as_deref().ok_or_else(|| {
            ApiError::MissingParam(
                "this request acts for a device: an appservice must pass device_id".into(),
            )
        })
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
    pub fn require_self(&self, user: &str) -> ApiResult<()> {
        if self.user_id.as_str() != user {
            return Err(ApiError::Forbidden(
                "Cannot access another user's data".into(),
            ));
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

/// Open user-interactive auth sessions. Not persisted: a session that is lost on restart only
/// makes the client start the flow again; nothing acknowledged depends on it.
#[derive(Default)]
pub struct UiaSessions {
    inner: Mutex<HashMap<String, UiaState>>,
}

#[derive(Clone, Default)]
struct UiaState {
    completed: Vec<String>,
    /// The account that proved itself in this session, if any.
    user: Option<OwnedUserId>,
    /// When the session was opened (ms).
    opened: u64,
}

const UIA_SESSIONS_MAX: usize = 10_000;
/// How long a user-interactive auth session lives.
const UIA_SESSION_MS: u64 = 15 * 60 * 1000;

/// Open a new session. At the cap, expired sessions go first, then the oldest: a flood of new
/// sessions never wipes out the ones people are in the middle of.
fn open_session(sessions: &mut HashMap<String, UiaState>) -> String {
    if sessions.len() >= UIA_SESSIONS_MAX {
        let now = now_ms();
        sessions.retain(|_, s| now.saturating_sub(s.opened) < UIA_SESSION_MS);
        while sessions.len() >= UIA_SESSIONS_MAX {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
    }
    let id = random_alnum(24);
    sessions.insert(
        id.clone(),
        UiaState {
            opened: now_ms(),
            ..UiaState::default()
        },
    );
    id
}

/// The flow for actions that need the account's password again.
pub const PASSWORD_FLOW: &[&[&str]] = &[&["m.login.password"]];

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

    /// A new device with fresh tokens (or the named device, replacing its tokens).
    pub async fn issue_device(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        display_name: Option<String>,
        refreshable: bool,
    ) -> ApiResult<(OwnedDeviceId, IssuedTokens)> {
        let device_id: OwnedDeviceId = match device_id {
            Some(d) => {
                valid_device_id(d)?;
                d.into()
            }
            None => random_alnum(10).to_uppercase().into(),
        };
        let mut batch = Batch::default();
        let existing = self.device(user_id, device_id.as_str())?;
        if let Some(old) = &existing {
            self.revoke_tokens(old, &mut batch);
        }
        let tokens = self.new_tokens(user_id, &device_id, refreshable, &mut batch)?;
        let rec = DeviceRecord {
            display_name: display_name.or_else(|| existing.and_then(|e| e.display_name)),
            access_token: hex(&token_key(&tokens.access_token)),
            refresh_token: tokens.refresh_token.as_deref().map(|t| hex(&token_key(t))),
            last_seen_ts: now_ms(),
        };
        self.put_device(user_id, device_id.as_str(), &rec, &mut batch)?;
        self.store.commit(batch)?;
        self.store.flush().await?;
        Ok((device_id, tokens))
    }

    fn new_tokens(
        &self,
        user_id: &UserId,
        device_id: &ruma::DeviceId,
        refreshable: bool,
        batch: &mut Batch,
    ) -> Result<IssuedTokens, StoreError> {
        let access_token = format!("px_{}", random_alnum(32));
        let lifetime = self.settings.refreshable_token_lifetime_ms;
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

    fn revoke_tokens(&self, dev: &DeviceRecord, batch: &mut Batch) {
        schema::TOKEN__SESSION.delete(batch, &key_of_recorded(&dev.access_token));
        if let Some(r) = &dev.refresh_token {
            schema::REFRESH_TOKEN__SESSION.delete(batch, &key_of_recorded(r));
        }
    }

    /// Exchange a refresh token for new tokens; the old pair stops working. The token is taken
    /// from the store atomically, so of two concurrent refreshes with it only one succeeds.
    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<IssuedTokens> {
        // A refresh that cannot be written must not use the token up.
        self.store.kv.health()?;
        let key = token_key(refresh_token);
        let taken: SessionRecord = schema::REFRESH_TOKEN__SESSION
            .take(&self.store.kv, &key)?
            .ok_or(ApiError::UnknownToken { soft_logout: false })?;
        let committed = self.rotate_tokens(&taken);
        match committed {
            Ok(tokens) => {
                self.store.flush().await?;
                Ok(tokens)
            }
            Err(e) => {
                // Nothing was written: put the token back, the client may try again with it.
                if !matches!(e, ApiError::UnknownToken { .. }) {
                    let mut b = Batch::default();
                    if schema::REFRESH_TOKEN__SESSION
                        .put(&mut b, &key, &taken)
                        .is_ok()
                    {
                        let _ = self.store.commit(b);
                    }
                }
                Err(e)
            }
        }
    }

    /// Replace the tokens of the device a taken refresh token belonged to, in one batch.
    fn rotate_tokens(&self, s: &SessionRecord) -> ApiResult<IssuedTokens> {
        let mut dev = self
            .device(&s.user_id, s.device_id.as_str())?
            .ok_or(ApiError::UnknownToken { soft_logout: false })?;
        let mut batch = Batch::default();
        self.revoke_tokens(&dev, &mut batch);
        let tokens = self.new_tokens(&s.user_id, &s.device_id, true, &mut batch)?;
        dev.access_token = hex(&token_key(&tokens.access_token));
        dev.refresh_token = tokens.refresh_token.as_deref().map(|t| hex(&token_key(t)));
        self.put_device(&s.user_id, s.device_id.as_str(), &dev, &mut batch)?;
        self.store.commit(batch)?;
        Ok(tokens)
    }

    /// Resolve an access token.
    pub fn session(&self, token: &str) -> ApiResult<Session> {
        let s: SessionRecord = schema::TOKEN__SESSION
            .get(&self.store.kv, &token_key(token))?
            .ok_or(ApiError::UnknownToken { soft_logout: false })?;
        if s.expires_at.is_some_and(|t| t <= now_ms()) {
            return Err(ApiError::UnknownToken { soft_logout: true });
        }
        Ok(Session {
            user_id: s.user_id,
            device_id: Some(s.device_id),
            access_token: token.to_owned(),
            appservice: None,
        })
    }

    pub fn device(&self, user_id: &UserId, device_id: &str) -> ApiResult<Option<DeviceRecord>> {
        Ok(schema::USER_DEVICE__DEVICE.get(&self.store.kv, (user_id.as_str(), device_id))?)
    }

    pub fn devices(&self, user_id: &UserId) -> ApiResult<Vec<(String, DeviceRecord)>> {
        schema::USER_DEVICE__DEVICE
            .prefix::<First<1>, DeviceRecord>(&self.store.kv, (user_id.as_str(),))
            .map(|r| {
                let ((_, device), rec) = r?;
                Ok((device, rec))
            })
            .collect()
    }

    pub fn put_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        rec: &DeviceRecord,
        b: &mut Batch,
    ) -> Result<(), StoreError> {
        schema::USER_DEVICE__DEVICE.put(b, (user_id.as_str(), device_id), rec)
    }

    /// Store a device's record as its user changed it (its display name). Other users see
    /// device names in key queries: this is a device list change too.
    pub async fn update_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        rec: DeviceRecord,
    ) -> ApiResult<()> {
        let mut b = Batch::default();
        self.put_device(user_id, device_id, &rec, &mut b)?;
        let change = crate::service::e2ee::device_lists::Change::Device {
            keys: self.e2ee.device_keys(user_id, device_id)?,
            id: device_id.to_owned(),
            display_name: rec.display_name,
        };
        self.commit_device_list_changes(user_id, vec![change], b)
            .await
    }

    /// Remove devices, their tokens and their keys; the user's room-mates hear the devices
    /// are gone.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> ApiResult<()> {
        let mut batch = Batch::default();
        let mut changes = vec![];
        for d in device_ids {
            if let Some(dev) = self.device(user_id, d)? {
                self.revoke_tokens(&dev, &mut batch);
                schema::USER_DEVICE__DEVICE.delete(&mut batch, (user_id.as_str(), d));
                schema::USER_DEVICE__LAST_SEEN.delete(&mut batch, (user_id.as_str(), d));
                self.e2ee.stage_delete_device_keys(user_id, d, &mut batch)?;
                changes.push(super::e2ee::device_lists::Change::Deleted { id: d.clone() });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        super::push::pushers::stage_delete_for_devices(self, user_id, device_ids, &mut batch)?;
        self.commit_device_list_changes(user_id, changes, batch)
            .await?;
        for d in device_ids {
            self.last_seen.forget(user_id, d);
        }
        Ok(())
    }

    // ---- user-interactive auth ----

    /// [`Self::uia_step`] off the async workers: a password stage runs Argon2, which would
    /// otherwise stall every request sharing the worker.
    pub async fn uia(
        self: &std::sync::Arc<Self>,
        auth: Option<Value>,
        flows: &'static [&'static [&'static str]],
        expected_user: Option<OwnedUserId>,
    ) -> ApiResult<Option<OwnedUserId>> {
        let app = self.clone();
        blocking(move || app.uia_step(auth.as_ref(), flows, expected_user.as_deref())).await?
    }

    /// Run one step of user-interactive auth with the given flows. Returns `Ok(user)` once a flow
    /// is complete (the user that proved itself with a password, if any).
    pub fn uia_step(
        &self,
        auth: Option<&Value>,
        flows: &[&[&str]],
        expected_user: Option<&UserId>,
    ) -> ApiResult<Option<OwnedUserId>> {
        let challenge = |session: &str, completed: &[String], error: Option<(&str, &str)>| {
            let mut body = json!({
                "flows": flows.iter().map(|f| json!({"stages": f})).collect::<Vec<_>>(),
                "params": {},
                "session": session,
                "completed": completed,
            });
            if let Some((code, msg)) = error {
                body["errcode"] = json!(code);
                body["error"] = json!(msg);
            }
            ApiError::Uia(body)
        };
        // A password is checked (Argon2, tens of milliseconds) before the sessions are locked,
        // so one slow check never holds up every other user-interactive auth.
        let stage = auth
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let password_user = match auth {
            Some(a) if stage == "m.login.password" && flows.iter().any(|f| f.contains(&stage)) => {
                self.password_login(a)?
            }
            _ => None,
        };
        let mut sessions = self.uia.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(auth) = auth else {
            let id = open_session(&mut sessions);
            return Err(challenge(&id, &[], None));
        };
        let session_id = auth
            .get("session")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let live = sessions
            .get(&session_id)
            .filter(|s| now_ms().saturating_sub(s.opened) < UIA_SESSION_MS)
            .cloned();
        let mut state = live.clone().unwrap_or_default();
        let session_id = if live.is_some() {
            session_id
        } else {
            sessions.remove(&session_id);
            let id = open_session(&mut sessions);
            state.opened = sessions.get(&id).map_or(0, |s| s.opened);
            id
        };
        let allowed = flows.iter().any(|f| f.contains(&stage));
        if !allowed {
            return Err(challenge(&session_id, &state.completed, None));
        }
        let outcome: Result<(), (&str, &str)> = match stage {
            "m.login.dummy" => Ok(()),
            "m.login.registration_token" => {
                let token = auth
                    .get("token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if self.settings.registration_tokens.iter().any(|t| t == token) {
                    Ok(())
                } else {
                    Err(("M_FORBIDDEN", "Invalid registration token"))
                }
            }
            "m.login.password" => match password_user {
                Some(user) if expected_user.is_none_or(|e| e == user) => {
                    state.user = Some(user);
                    Ok(())
                }
                _ => Err(("M_FORBIDDEN", "Invalid username or password")),
            },
            _ => Err(("M_UNRECOGNIZED", "Unknown auth stage")),
        };
        if let Err(e) = outcome {
            return Err(challenge(&session_id, &state.completed, Some(e)));
        }
        if !state.completed.iter().any(|c| c == stage) {
            state.completed.push(stage.to_owned());
        }
        let done = flows
            .iter()
            .any(|f| f.iter().all(|s| state.completed.iter().any(|c| c == s)));
        if done {
            sessions.remove(&session_id);
            Ok(state.user)
        } else {
            sessions.insert(session_id.clone(), state.clone());
            Err(challenge(&session_id, &state.completed, None))
        }
    }

    /// Check an `m.login.password` body (identifier or legacy `user`); the user it names.
    /// A password check for login or user-interactive auth, under the account's failed-login
    /// limit: refused at once (`M_LIMIT_EXCEEDED`) while the account has no attempt left, and
    /// every wrong password uses one up, from whatever address it came.
    pub fn password_login(&self, creds: &Value) -> ApiResult<Option<OwnedUserId>> {
        let account = login_name(creds).and_then(|n| self.parse_user_name(n).ok());
        if let Some(a) = &account {
            self.limiter.peek(Action::FailedLogin, a.as_str())?;
        }
        let user = self.password_auth(creds);
        if let (None, Some(a)) = (&user, &account) {
            self.limiter.charge(Action::FailedLogin, a.as_str());
        }
        Ok(user)
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
