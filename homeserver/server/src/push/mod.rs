//! Push: every new room event is run through the push rules of each local user it concerns;
//! what they say becomes unread counts for sync, the `/notifications` list and, for users with
//! pushers, requests to their push gateways.

pub mod evaluate;
pub mod gateway;
pub mod notifications;
pub mod pushers;
pub mod unread;
pub mod user_cache;
