//! Push, the API side: the pusher and `/notifications` endpoints. Rule evaluation, unread
//! counts and the workers that deliver notifications to push gateways are `service::push`.

pub mod notifications;
pub mod pushers;
