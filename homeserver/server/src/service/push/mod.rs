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
