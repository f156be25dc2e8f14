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

use crate::{config::FederationSettings, error::ApiError};

/// Outbound federation state, present only when federation is switched on.
pub struct Federation {
    pub settings: FederationSettings,
    pub http: reqwest::Client,
    pub resolver: resolve::Resolver,
    pub keys: keys::KeyCache,
    pub sender: sender::Sender,
}

impl Federation {
    pub fn new(settings: FederationSettings) -> Result<Self, ApiError> {
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
