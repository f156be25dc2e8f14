//! The Application Service API, homeserver side: the endpoints appservices call, transactions
//! pushed to each appservice, and the questions this server asks appservices (users, aliases,
//! third-party lookups, ping). Who an `as_token` may act as is `service::appservices`.

pub mod client;
pub mod outbound;
pub mod sender;
