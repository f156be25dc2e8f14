//! Push, the service side: every new room event is run through the push rules of each local
//! user it concerns (`evaluate`, with the rules cached per user in `user_cache`), and what they
//! say becomes unread counts and the notification list (`unread`), written in the event's own
//! batch. The workers in `gateway` deliver notifications to push gateways; the pusher
//! endpoints are `crate::push`.

pub mod evaluate;
pub mod gateway;
pub mod pushers;
pub mod unread;
pub mod user_cache;

use plexus_store::StoreError;

use crate::service::{
    account_data::AccountDataError, federation::client::FedError, rooms::RoomsError,
};
use pushers::PushersError;

/// Why push rules could not be run on an event, or a notification not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    #[error(transparent)]
    AccountData(#[from] AccountDataError),
    #[error(transparent)]
    Pushers(#[from] PushersError),
    /// The HTTP client for push gateways could not be built.
    #[error(transparent)]
    Fed(#[from] FedError),
    /// 502: the push gateway is refused, unreachable, or answered an error.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error: {0}")]
    Internal(String),
}
