//! The kit's error types. Bridges branch on what the homeserver said (`errcode`), so a Matrix
//! error keeps it, with the HTTP status and the whole body, instead of flattening to a string.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;
use thiserror::Error;

use crate::registration::LoadError;

/// An error answer from the homeserver (any 4xx, or a 5xx/429 once retries ran out).
#[derive(Clone, Debug, Error, PartialEq)]
#[error("{errcode}: {error} (HTTP {status})")]
pub struct MatrixError {
    /// The HTTP status code.
    pub status: u16,
    /// The Matrix error code, `M_UNKNOWN` when the body carried none (e.g. a proxy's HTML page).
    pub errcode: String,
    /// The human-readable message, empty when the body carried none.
    pub error: String,
    /// `retry_after_ms` from a rate-limit answer.
    pub retry_after_ms: Option<u64>,
    /// The body as sent, for the extra fields some errors carry (`status` and `body` of a failed
    /// ping, `flows` of a 401, ...). `Null` if it was not JSON.
    pub body: Value,
}

impl MatrixError {
    /// Read an error answer. Lenient: the body may be anything.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let field = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
        let error = field("error").unwrap_or_else(|| {
            if json.is_null() {
                String::from_utf8_lossy(body).chars().take(200).collect()
            } else {
                String::new()
            }
        });
        MatrixError {
            status,
            errcode: field("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
            error,
            retry_after_ms: json.get("retry_after_ms").and_then(Value::as_u64),
            body: json,
        }
    }
}

/// Everything the kit's client side can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The homeserver answered with an error.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// Refused locally, before any request: the user is neither the appservice's sender nor in
    /// its user namespaces on this server, so the homeserver would refuse it anyway.
    #[error("{user_id} is not a user this appservice may act as")]
    NotInNamespace { user_id: String },
    /// Refused locally, before any request: an argument the endpoint cannot take (a malformed
    /// room id, alias, user id or server name; a `createRoom` body with a field the endpoint
    /// does not define), or a request that could not be built.
    #[error("invalid {what}: {why}")]
    InvalidRequest { what: String, why: String },
    /// The homeserver could not be reached (after the retries).
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer that is not what the endpoint promises.
    #[error("unexpected answer from {url}: {why}")]
    BadResponse { url: String, why: String },
    /// The homeserver base URL given to the kit is unusable.
    #[error("homeserver URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// The registration file could not be used.
    #[error(transparent)]
    Registration(#[from] LoadError),
    /// The transaction-id log could not be read or written.
    #[error("transaction log {path}: {source}")]
    TxnLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The Matrix `errcode`, if the homeserver answered with one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Error::Matrix(e) => Some(&e.errcode),
            _ => None,
        }
    }

    /// The HTTP status, if the homeserver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Matrix(e) => Some(e.status),
            _ => None,
        }
    }
}

/// What a [`Handler`](crate::Handler) method fails with: any error, boxed, so handlers can use
/// `?` on whatever they call. The homeserver is answered 500 and retries the transaction.
///
/// Deliberately not `std::error::Error` itself (like `anyhow::Error`): that is what lets every
/// error type convert into it with `?`.
pub struct HandlerError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl HandlerError {
    /// An error from a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        HandlerError(message.to_string().into())
    }

    /// The boxed error.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.0
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError(Box::new(e))
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_leniently() {
        let e = MatrixError::from_response(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}"#,
        );
        assert_eq!(e.errcode, "M_LIMIT_EXCEEDED");
        assert_eq!(e.error, "slow down");
        assert_eq!(e.retry_after_ms, Some(1500));
        let e = MatrixError::from_response(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.errcode, "M_UNKNOWN");
        assert_eq!(e.error, "<html>Bad Gateway</html>");
        assert_eq!(e.body, Value::Null);
        let e = Error::from(e);
        assert_eq!(e.errcode(), Some("M_UNKNOWN"));
        assert_eq!(e.status(), Some(502));
    }

    #[test]
    fn any_error_converts_into_a_handler_error() {
        fn fails() -> Result<(), HandlerError> {
            let _: Value = serde_json::from_str("{")?;
            Ok(())
        }
        assert!(fails().unwrap_err().to_string().contains("EOF"));
        assert_eq!(HandlerError::msg("nope").to_string(), "nope");
    }
}
