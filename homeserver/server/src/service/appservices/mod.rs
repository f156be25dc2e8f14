//! The configured appservices: who an `as_token` may act as, and the namespaces normal users
//! may not claim. Request authentication starts here, since any access token may be an
//! appservice's. The transaction sender (`sender`) and the other requests to appservices
//! (`outbound`) are here too.

pub mod outbound;
pub mod sender;

use std::{sync::Arc, time::Duration};

use plexus_core::appservice::{Kind, Registration};
use plexus_store::StoreError;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use crate::service::{
    accounts::{AccountsError, Session},
    directory::DirectoryError,
    e2ee::E2eeError,
    ephemeral::ReceiptsError,
    presence::PresenceError,
    rooms::RoomsError,
    Services,
};

/// Why an appservice request was refused, or a request to an appservice (a ping, a
/// transaction) failed.
#[derive(Debug, thiserror::Error)]
pub enum AppserviceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Receipts(#[from] ReceiptsError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    E2ee(#[from] E2eeError),
    /// 400 `M_EXCLUSIVE`: an id in an appservice's exclusive namespace.
    #[error("{0}")]
    Exclusive(String),
    /// 403: a user the appservice may not act as.
    #[error("{0}")]
    Forbidden(String),
    /// 400 `M_INVALID_PARAM`.
    #[error("{0}")]
    InvalidParam(String),
    /// 400 `M_UNKNOWN_DEVICE` (MSC3202): a device its user does not have.
    #[error("{0}")]
    UnknownDevice(String),
    /// 400 `M_URL_NOT_SET`: the appservice wants no traffic.
    #[error("Application service doesn't have a URL configured")]
    UrlNotSet,
    /// 502 `M_BAD_STATUS`: the appservice answered with an error.
    #[error("Ping returned status {status}")]
    BadStatus { status: u16, body: String },
    /// 502 `M_CONNECTION_FAILED`: the appservice could not be reached.
    #[error("{0}")]
    ConnectionFailed(String),
    /// 504 `M_CONNECTION_TIMEOUT`.
    #[error("Connection to application service timed out")]
    ConnectionTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The configured appservices, their HTTP client and the wake-ups of their senders.
pub struct Appservices {
    pub regs: Vec<Arc<Registration>>,
    pub http: reqwest::Client,
}

impl Appservices {
    pub fn new(regs: Vec<Arc<Registration>>) -> Result<Self, AppserviceError> {
        // No private-address guard here: appservices usually run on the same host, and their
        // URLs come from the operator, not from users.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AppserviceError::Internal(format!("appservice HTTP client: {e}")))?;
        Ok(Self { regs, http })
    }

    pub fn by_token(&self, token: &str) -> Option<&Arc<Registration>> {
        self.regs.iter().find(|r| r.as_token == token)
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Registration>> {
        self.regs.iter().find(|r| r.id == id)
    }

    /// The appservice that holds `id` in an exclusive namespace, if any.
    pub fn exclusive_owner(&self, kind: Kind, id: &str) -> Option<&Arc<Registration>> {
        self.regs.iter().find(|r| r.exclusive(kind, id))
    }

    /// Refuse `id` to anyone but the appservice whose exclusive namespace holds it.
    pub fn check_exclusive(
        &self,
        kind: Kind,
        id: &str,
        caller: Option<&Registration>,
    ) -> Result<(), AppserviceError> {
        match self.exclusive_owner(kind, id) {
            Some(owner) if caller.is_none_or(|c| c.id != owner.id) => Err(
                AppserviceError::Exclusive(format!("{id} is reserved by an application service")),
            ),
            _ => Ok(()),
        }
    }
}

impl Services {
    /// The identity of a request made with an appservice's `as_token`: its sender user, or the
    /// user named by `user_id`, which must be in its namespace and registered; with `device_id`
    /// (MSC3202), one of that user's devices.
    pub fn appservice_session(
        &self,
        reg: &Arc<Registration>,
        token: &str,
        query: Option<&str>,
    ) -> Result<Session, AppserviceError> {
        let pairs = crate::http::extract::query_pairs(query);
        let param = |names: &[&str]| {
            pairs
                .iter()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| v.clone())
        };
        let server = self.server_name().as_str();
        let user_id: OwnedUserId = match param(&["user_id"]) {
            None => UserId::parse(reg.sender(server))
                .map_err(|e| AppserviceError::Internal(format!("appservice sender: {e}")))?,
            Some(u) => {
                let user = UserId::parse(u.as_str())
                    .map_err(|e| AppserviceError::InvalidParam(format!("user_id: {e}")))?;
                if user.server_name() != server || !reg.may_act_as(user.as_str(), server) {
                    return Err(AppserviceError::Forbidden(format!(
                        "Application service cannot masquerade as this user ({user})"
                    )));
                }
                if user.as_str() != reg.sender(server) && self.accounts.user(&user)?.is_none() {
                    return Err(AppserviceError::Forbidden(
                        "Application service has not registered this user".into(),
                    ));
                }
                user
            }
        };
        let device_id = match param(&["device_id", "org.matrix.msc3202.device_id"]) {
            None => None,
            Some(d) => {
                if self.accounts.device(&user_id, &d)?.is_none() {
                    return Err(AppserviceError::UnknownDevice(format!(
                        "Application service trying to use a device that doesn't exist ({d} for {user_id})"
                    )));
                }
                Some(OwnedDeviceId::from(d))
            }
        };
        Ok(Session {
            user_id,
            device_id,
            access_token: token.to_owned(),
            appservice: Some(reg.clone()),
        })
    }

    /// Resolve any access token: an appservice's, or a user's.
    pub fn authenticate(
        &self,
        token: &str,
        query: Option<&str>,
    ) -> Result<Session, AppserviceError> {
        match self.appservices.by_token(token) {
            Some(reg) => self.appservice_session(reg, token, query),
            None => Ok(self.accounts.session(token)?),
        }
    }

    /// Each appservice's sender user exists from the start, as the spec expects.
    pub async fn ensure_appservice_senders(&self) -> Result<(), AppserviceError> {
        for reg in &self.appservices.regs {
            let user = UserId::parse(reg.sender(self.server_name().as_str()))
                .map_err(|e| AppserviceError::Internal(format!("appservice {}: {e}", reg.id)))?;
            if self.accounts.user(&user)?.is_none() {
                self.accounts.create_user(&user, None, false).await?;
                self.store.flush().await?;
                tracing::info!(appservice = %reg.id, user = %user, "created appservice sender");
            }
        }
        Ok(())
    }
}
