//! Plexus room core: room versions, PDUs, hashing, signing, redaction and event auth.
//!
//! Pure logic only (no I/O, no async) so that it is cheap to unit-test and to reuse from the
//! federation, client and appservice paths alike.

pub mod appservice;
pub mod auth;
pub mod builder;
pub mod client_event;
pub mod error;
pub mod pdu;
pub mod room_version;
pub mod signing;
#[doc(hidden)]
pub mod testing;

pub use error::CoreError;
pub use pdu::Pdu;

pub use ruma;
