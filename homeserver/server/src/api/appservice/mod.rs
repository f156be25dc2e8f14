//! The Application Service API, homeserver side: the endpoints that concern appservices. Who
//! an `as_token` may act as, the transactions pushed to each appservice and the questions this
//! server asks appservices are `service::appservices`.

pub mod client;
