use thiserror::Error;

/// Failures of the pure room logic. The HTTP edge maps them to Matrix error codes.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("unsupported room version {0}")]
    UnsupportedRoomVersion(String),
    #[error("event is not valid JSON for a PDU: {0}")]
    BadPdu(String),
    #[error("event exceeds 65536 bytes")]
    TooLarge,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("signing key could not be loaded: {0}")]
    Key(String),
    #[error("event auth failed: {0}")]
    Auth(String),
}
