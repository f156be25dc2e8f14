//! User-interactive auth: the open sessions (in memory) and the stages they complete.

use std::{collections::HashMap, sync::Mutex};

use plexus_core::signing::random_alnum;
use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value};

use super::{blocking, Accounts, AccountsError};
use crate::service::{now_ms, ratelimit::Action, Services};

/// The account named in login credentials (`identifier.user`, or the older `user`).
pub(super) fn login_name(creds: &Value) -> Option<&str> {
    creds
        .get("identifier")
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("m.id.user"))
        .and_then(|i| i.get("user"))
        .or_else(|| creds.get("user"))
        .and_then(Value::as_str)
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

impl Accounts {
    /// One step of user-interactive auth with the given flows, once any password in `auth` has
    /// been checked: `password_user` is the account it proved, if it did. Returns `Ok(user)`
    /// once a flow is complete (the user that proved itself with a password, if any).
    pub fn uia_step(
        &self,
        auth: Option<&Value>,
        flows: &[&[&str]],
        expected_user: Option<&UserId>,
        password_user: Option<OwnedUserId>,
    ) -> Result<Option<OwnedUserId>, AccountsError> {
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
            AccountsError::Uia(body)
        };
        let stage = auth
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default();
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
                if self.registration_tokens.iter().any(|t| t == token) {
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
}

impl Services {
    /// [`Self::uia_step`] off the async workers: a password stage runs Argon2, which would
    /// otherwise stall every request sharing the worker.
    pub async fn uia(
        self: &std::sync::Arc<Self>,
        auth: Option<Value>,
        flows: &'static [&'static [&'static str]],
        expected_user: Option<OwnedUserId>,
    ) -> Result<Option<OwnedUserId>, AccountsError> {
        let app = self.clone();
        blocking(move || app.uia_step(auth.as_ref(), flows, expected_user.as_deref())).await?
    }

    /// Run one step of user-interactive auth with the given flows. Returns `Ok(user)` once a flow
    /// is complete (the user that proved itself with a password, if any). A password is checked
    /// here, under the failed-login limit; the session is the accounts service's.
    pub fn uia_step(
        &self,
        auth: Option<&Value>,
        flows: &[&[&str]],
        expected_user: Option<&UserId>,
    ) -> Result<Option<OwnedUserId>, AccountsError> {
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
        self.accounts
            .uia_step(auth, flows, expected_user, password_user)
    }

    /// Check an `m.login.password` body (identifier or legacy `user`); the user it names.
    /// A password check for login or user-interactive auth, under the account's failed-login
    /// limit: refused at once (`M_LIMIT_EXCEEDED`) while the account has no attempt left, and
    /// every wrong password uses one up, from whatever address it came.
    pub fn password_login(&self, creds: &Value) -> Result<Option<OwnedUserId>, AccountsError> {
        let account = login_name(creds).and_then(|n| self.accounts.parse_user_name(n).ok());
        if let Some(a) = &account {
            self.limiter.peek(Action::FailedLogin, a.as_str())?;
        }
        let user = self.accounts.password_auth(creds);
        if let (None, Some(a)) = (&user, &account) {
            self.limiter.charge(Action::FailedLogin, a.as_str());
        }
        Ok(user)
    }
}
