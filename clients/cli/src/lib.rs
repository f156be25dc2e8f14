//! A Matrix client library with end-to-end encryption: log in, sync, send and read messages in
//! encrypted rooms (Olm for sharing room keys with every device of every member, Megolm for
//! the messages), with the whole client state persisted to one file. The `plexus-cli` binary
//! is a thin command line over it; the spec-tests use it for E2EE tests.

pub mod api;
pub mod client;
pub mod crypto;

pub use client::{Client, Message};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{status} {errcode}: {error}")]
    Matrix {
        status: u16,
        errcode: String,
        error: String,
        body: serde_json::Value,
    },
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("state file: {0}")]
    State(String),
    #[error("{0}")]
    Other(String),
}
