//! Push, the API side: the pusher and `/notifications` endpoints, and the workers that deliver
//! notifications to push gateways. Rule evaluation and unread counts are `service::push`.

pub mod gateway;
pub mod notifications;
pub mod pushers;
