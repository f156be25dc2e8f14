//! The server's federation machinery: the inbound PDU pipeline and the transactions behind
//! `/send`, the outbound per-destination sender, backfill, remote joins and invites, other
//! servers' keys, server discovery, the signed HTTP client, server ACLs, what a peer may see,
//! EDUs both ways, and the TLS listener. The endpoints that use it are in `crate::federation`.

pub mod acl;
pub mod backfill;
pub mod client;
pub mod edu;
pub mod hierarchy;
pub mod ingest;
pub mod invite;
pub mod join;
pub mod keys;
pub mod resolve;
pub mod send;
pub mod sender;
#[cfg(test)]
mod state_graphs;
pub mod tls;
pub mod visibility;
pub mod x_matrix;

use plexus_core::CoreError;
use plexus_store::StoreError;

use crate::{
    config::FederationSettings,
    service::{
        accounts::AccountsError, e2ee::E2eeError, ephemeral::EphemeralError,
        presence::PresenceError, push::PushError, rooms::RoomsError,
    },
};

/// Why a federation service call failed, besides a request to another server (`FedError`)
/// and an inbound PDU's checks (`IngestError`): the refusals a peer or client is answered
/// with, and the errors of the domains it reads and writes (mapped in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A request to another server failed or was refused there.
    #[error(transparent)]
    Fed(#[from] client::FedError),
    /// The domains an inbound PDU or EDU writes to, and the profile in our member events.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error(transparent)]
    Ephemeral(#[from] EphemeralError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
    #[error(transparent)]
    E2ee(#[from] E2eeError),
    #[error(transparent)]
    Push(#[from] PushError),
    /// 403: a server not in the room, or denied by its ACL; our join refused by its state.
    #[error("{0}")]
    Forbidden(String),
    /// 404: an unknown room or event, or no server to ask.
    #[error("{0}")]
    NotFound(String),
    /// 400 `M_INVALID_PARAM`: a malformed id from a peer.
    #[error("{0}")]
    InvalidParam(String),
    /// 400 `M_BAD_JSON`: a request body to sign that is not canonical JSON.
    #[error("{0}")]
    BadJson(String),
    /// 502: another server answered with something we cannot use.
    #[error("{0}")]
    BadGateway(String),
    /// 404 `M_UNRECOGNIZED`: a federation-only endpoint with federation off.
    #[error("unrecognized request")]
    Unrecognized,
    /// 500: what should not happen (unencodable JSON, TLS setup, state resolution failing).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Outbound federation state, present only when federation is switched on.
pub struct Federation {
    pub settings: FederationSettings,
    pub http: reqwest::Client,
    pub resolver: resolve::Resolver,
    pub keys: keys::KeyCache,
    pub sender: sender::Sender,
}

impl Federation {
    pub fn new(settings: FederationSettings) -> Result<Self, FederationError> {
        let resolver = resolve::Resolver::default();
        Ok(Self {
            http: client::http_client(
                settings.verify_tls,
                settings.allow_loopback,
                resolver.targets.clone(),
            )?,
            settings,
            resolver,
            keys: keys::KeyCache::default(),
            sender: sender::Sender::default(),
        })
    }
}
