use thiserror::Error;

/// Failures of the pure room logic. The HTTP edge maps them to Matrix error codes.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    #[error("event is not valid JSON for a PDU: {0}")]
    BadPdu(String),
    /// Its size in canonical JSON. Refused from 65,536 bytes on: the spec allows exactly that
    /// many, ruma (and so every ruma-based peer) one fewer.
    #[error("PDU is {0} bytes; it must be under 65536")]
    TooLarge(usize),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("signing key could not be loaded: {0}")]
    Key(String),
    #[error("event auth failed: {0}")]
    Auth(String),
}
