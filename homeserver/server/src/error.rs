//! Errors as types, mapped to Matrix errors (`errcode`, HTTP status) only at the HTTP edge.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use plexus_core::CoreError;
use plexus_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    NotJson(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("request too large")]
    TooLarge,
    #[error("missing access token")]
    MissingToken,
    #[error("unknown access token")]
    UnknownToken { soft_logout: bool },
    #[error("unrecognized request")]
    Unrecognized,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    UserInUse(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    RoomInUse(String),
    /// 409: the resource exists already (room aliases).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedRoomVersion(String),
    #[error("{0}")]
    Exclusive(String),
    #[error("registration token invalid")]
    RegistrationTokenInvalid,
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    Unknown(String),
    #[error("guest access is not allowed")]
    GuestAccessForbidden,
    #[error("this account has been deactivated")]
    UserDeactivated,
    /// User-interactive auth must continue: the body is the UIA state.
    #[error("user-interactive authentication required")]
    Uia(serde_json::Value),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    IncompatibleRoomVersion(String),
    /// 400: this server binds no email addresses or phone numbers to accounts.
    #[error("{0}")]
    ThreepidMediumNotSupported(String),
    /// A remote server refused: its Matrix error is passed on to the client.
    #[error("{error}")]
    Remote {
        status: u16,
        errcode: String,
        error: String,
    },
    /// 429: slow down.
    #[error("{why}")]
    LimitExceeded { why: String, retry_after_ms: u64 },
    /// 503: the server cannot take writes for now (its disk is full).
    #[error("{0}")]
    Unavailable(String),
    /// 413: the uploader's media quota is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 409: a reserved media id that already has its content.
    #[error("{0}")]
    CannotOverwriteMedia(String),
    /// 504: reserved media whose upload has not arrived in time.
    #[error("content has not yet been uploaded")]
    NotYetUploaded,
    /// 502: another server's file is larger than this server accepts.
    #[error("remote content is larger than this server accepts")]
    RemoteTooLarge,
    /// 400: a restricted join this server cannot decide: it is in none of the allowed rooms.
    #[error("this server is in none of the rooms that grant access, so cannot grant the join")]
    UnableToGrantJoin,
    /// 400: a restricted join this server cannot vouch for: no member here may invite.
    #[error("no user on this server may authorise the join")]
    UnableToAuthoriseJoin,
    /// A remote server could not be reached or answered nonsense.
    /// 400 `M_INVALID_SIGNATURE`: a key or signature that does not verify.
    #[error("{0}")]
    InvalidSignature(String),
    /// 403 `M_WRONG_ROOM_KEYS_VERSION`: a key backup write to a version that is not current.
    #[error("Wrong backup version")]
    WrongRoomKeysVersion { current: Option<String> },
    /// 400 `M_UNKNOWN_DEVICE` (MSC3202): an appservice named a device its user does not have.
    #[error("{0}")]
    UnknownDevice(String),
    /// 400 `M_URL_NOT_SET`: a ping to an appservice that wants no traffic.
    #[error("Application service doesn't have a URL configured")]
    UrlNotSet,
    /// 502 `M_BAD_STATUS`: the appservice answered a ping with an error.
    #[error("Ping returned status {status}")]
    BadStatus { status: u16, body: String },
    /// 502 `M_CONNECTION_FAILED`: the appservice could not be reached.
    #[error("{0}")]
    ConnectionFailed(String),
    /// 504 `M_CONNECTION_TIMEOUT`: the appservice did not answer in time.
    #[error("Connection to application service timed out")]
    ConnectionTimeout,
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
            TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            UnknownToken { .. } => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            UserInUse(_) => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            InvalidUsername(_) => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            RoomInUse(_) => (StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
            Conflict(_) => (StatusCode::CONFLICT, "M_UNKNOWN"),
            UnsupportedRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
            Exclusive(_) => (StatusCode::BAD_REQUEST, "M_EXCLUSIVE"),
            RegistrationTokenInvalid => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            WeakPassword(_) => (StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD"),
            Unknown(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            GuestAccessForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            UserDeactivated => (StatusCode::FORBIDDEN, "M_USER_DEACTIVATED"),
            Uia(_) => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            IncompatibleRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION"),
            ThreepidMediumNotSupported(_) => {
                (StatusCode::BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
            }
            Remote { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                "M_UNKNOWN",
            ),
            LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            CannotOverwriteMedia(_) => (StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
            QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            NotYetUploaded => (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
            RemoteTooLarge => (StatusCode::BAD_GATEWAY, "M_TOO_LARGE"),
            UnableToGrantJoin => (StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN"),
            UnableToAuthoriseJoin => (StatusCode::BAD_REQUEST, "M_UNABLE_TO_AUTHORISE_JOIN"),
            InvalidSignature(_) => (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
            WrongRoomKeysVersion { .. } => (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
            UnknownDevice(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN_DEVICE"),
            UrlNotSet => (StatusCode::BAD_REQUEST, "M_URL_NOT_SET"),
            BadStatus { .. } => (StatusCode::BAD_GATEWAY, "M_BAD_STATUS"),
            ConnectionFailed(_) => (StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED"),
            ConnectionTimeout => (StatusCode::GATEWAY_TIMEOUT, "M_CONNECTION_TIMEOUT"),
            BadGateway(_) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.parts();
        let errcode_default = errcode;
        let body = match &self {
            ApiError::Uia(state) => state.clone(),
            ApiError::UnknownToken { soft_logout } => {
                json!({"errcode": errcode, "error": self.to_string(), "soft_logout": soft_logout})
            }
            ApiError::Remote { errcode, error, .. } => {
                let code = if errcode.starts_with("M_") {
                    errcode.as_str()
                } else {
                    errcode_default
                };
                json!({"errcode": code, "error": error})
            }
            ApiError::WrongRoomKeysVersion { current } => {
                json!({"errcode": errcode, "error": self.to_string(), "current_version": current})
            }
            ApiError::BadStatus { status, body } => {
                json!({"errcode": errcode, "error": self.to_string(), "status": status, "body": body})
            }
            ApiError::LimitExceeded { retry_after_ms, .. } => {
                json!({"errcode": errcode, "error": self.to_string(), "retry_after_ms": retry_after_ms})
            }
            ApiError::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                json!({"errcode": errcode, "error": "Internal server error"})
            }
            _ => json!({"errcode": errcode, "error": self.to_string()}),
        };
        let mut res = (status, Json(body)).into_response();
        if matches!(self, ApiError::TooLarge) {
            // The rest of an oversized body is never read, so the connection cannot be reused.
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull { .. } => {
                tracing::warn!(error = %e, "write refused");
                ApiError::Unavailable(
                    "The server's disk is full: nothing was changed; try again later".into(),
                )
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::service::account_data::AccountDataError> for ApiError {
    fn from(e: crate::service::account_data::AccountDataError) -> Self {
        use crate::service::account_data::AccountDataError::*;
        match e {
            Store(e) => e.into(),
            Unreadable { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::service::accounts::AccountsError> for ApiError {
    fn from(e: crate::service::accounts::AccountsError) -> Self {
        use crate::service::accounts::AccountsError::*;
        match e {
            Store(e) => e.into(),
            Blocking(e) => e.into(),
            UserInUse => ApiError::UserInUse(e.to_string()),
            InvalidUserId(_) => ApiError::InvalidUsername(e.to_string()),
            NotLocal => ApiError::InvalidParam(e.to_string()),
            WeakPassword => ApiError::WeakPassword(e.to_string()),
            Hash(why) => ApiError::Internal(why),
            InvalidDeviceId => ApiError::InvalidParam(e.to_string()),
            UnknownToken { soft_logout } => ApiError::UnknownToken { soft_logout },
            Uia(body) => ApiError::Uia(body),
            NoDevice => ApiError::MissingParam(e.to_string()),
            NotSelf => ApiError::Forbidden(e.to_string()),
            RateLimit(e) => e.into(),
            E2ee(e) => (*e).into(),
            Pushers(e) => e.into(),
        }
    }
}

impl From<crate::service::accounts::BlockingError> for ApiError {
    fn from(e: crate::service::accounts::BlockingError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::service::directory::DirectoryError> for ApiError {
    fn from(e: crate::service::directory::DirectoryError) -> Self {
        use crate::service::directory::DirectoryError::*;
        match e {
            Store(e) => e.into(),
            AliasTaken(_) => ApiError::Conflict("Room alias already exists".into()),
            UnknownNetwork(_) => ApiError::InvalidParam(e.to_string()),
            Corrupt(_) => ApiError::Internal(e.to_string()),
            InvalidParam(why) => ApiError::InvalidParam(why),
            Rooms(e) => e.into(),
        }
    }
}

impl From<crate::service::ephemeral::ReceiptsError> for ApiError {
    fn from(e: crate::service::ephemeral::ReceiptsError) -> Self {
        use crate::service::ephemeral::ReceiptsError::*;
        match e {
            Store(e) => e.into(),
            Content => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::service::presence::PresenceError> for ApiError {
    fn from(e: crate::service::presence::PresenceError) -> Self {
        use crate::service::presence::PresenceError::*;
        match e {
            Store(e) => e.into(),
            Rooms(e) => e.into(),
        }
    }
}

impl From<crate::service::rooms::RoomsError> for ApiError {
    fn from(e: crate::service::rooms::RoomsError) -> Self {
        use crate::service::rooms::RoomsError::*;
        match e {
            Store(e) => e.into(),
            NotInRoom => ApiError::Forbidden(e.to_string()),
            UnknownRoom => ApiError::NotFound(e.to_string()),
            Corrupt(why) => ApiError::Internal(why),
            Core(e) => e.into(),
        }
    }
}

impl From<crate::service::ratelimit::RateLimitError> for ApiError {
    fn from(e: crate::service::ratelimit::RateLimitError) -> Self {
        use crate::service::ratelimit::RateLimitError::*;
        match e {
            LimitExceeded { retry_after_ms } => ApiError::LimitExceeded {
                why: e.to_string(),
                retry_after_ms,
            },
        }
    }
}

impl From<crate::service::user_directory::UserDirectoryError> for ApiError {
    fn from(e: crate::service::user_directory::UserDirectoryError) -> Self {
        use crate::service::user_directory::UserDirectoryError::*;
        match e {
            Rooms(e) => e.into(),
            Directory(e) => e.into(),
        }
    }
}

impl From<crate::service::restricted::RestrictedJoinError> for ApiError {
    fn from(e: crate::service::restricted::RestrictedJoinError) -> Self {
        use crate::service::restricted::RestrictedJoinError::*;
        match e {
            Rooms(e) => e.into(),
            Core(e) => e.into(),
            NotAllowed => ApiError::Forbidden(e.to_string()),
            UnableToGrant => ApiError::UnableToGrantJoin,
            UnableToAuthorise => ApiError::UnableToAuthoriseJoin,
        }
    }
}

impl From<crate::service::ephemeral::EphemeralError> for ApiError {
    fn from(e: crate::service::ephemeral::EphemeralError) -> Self {
        use crate::service::ephemeral::EphemeralError::*;
        match e {
            Store(e) => e.into(),
            Rooms(e) => e.into(),
        }
    }
}

impl From<crate::service::writer::WriteError> for ApiError {
    fn from(e: crate::service::writer::WriteError) -> Self {
        use crate::service::writer::WriteError::*;
        match e {
            Store(e) => e.into(),
            Rooms(e) => e.into(),
            Core(e) => e.into(),
            Push(e) => e.into(),
            Forbidden(why) => ApiError::Forbidden(why),
            BadJson(why) => ApiError::BadJson(why),
            Internal(why) => ApiError::Internal(why),
        }
    }
}

impl From<crate::service::StartError> for ApiError {
    fn from(e: crate::service::StartError) -> Self {
        use crate::service::StartError::*;
        match e {
            Store(e) => e.into(),
            Federation(e) => e.into(),
            Media(e) => e.into(),
            Appservices(e) => e.into(),
            Search(e) => e.into(),
            Internal(why) => ApiError::Internal(why),
        }
    }
}

impl From<crate::service::SerializeError> for ApiError {
    fn from(e: crate::service::SerializeError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::service::media::MediaRecordsError> for ApiError {
    fn from(e: crate::service::media::MediaRecordsError) -> Self {
        use crate::service::media::MediaRecordsError::*;
        match e {
            Store(e) => e.into(),
            OverQuota(_) => ApiError::QuotaExceeded(e.to_string()),
            TooManyPending { retry_after_ms } => ApiError::LimitExceeded {
                why: e.to_string(),
                retry_after_ms,
            },
        }
    }
}

impl From<crate::service::e2ee::E2eeError> for ApiError {
    fn from(e: crate::service::e2ee::E2eeError) -> Self {
        use crate::service::e2ee::E2eeError::*;
        match e {
            Store(e) => e.into(),
            UnknownBackupVersion | NoCurrentBackup => ApiError::NotFound(e.to_string()),
            WrongBackupVersion { current } => ApiError::WrongRoomKeysVersion {
                current: Some(current.to_string()),
            },
            Accounts(e) => e.into(),
            Rooms(e) => e.into(),
        }
    }
}

impl From<crate::service::push::pushers::PushersError> for ApiError {
    fn from(e: crate::service::push::pushers::PushersError) -> Self {
        use crate::service::push::pushers::PushersError::*;
        match e {
            Store(e) => e.into(),
            TooMany => ApiError::Forbidden(e.to_string()),
            BadUser { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::service::push::PushError> for ApiError {
    fn from(e: crate::service::push::PushError) -> Self {
        use crate::service::push::PushError::*;
        match e {
            Store(e) => e.into(),
            Rooms(e) => e.into(),
            AccountData(e) => e.into(),
            Pushers(e) => e.into(),
            Fed(e) => e.into(),
            BadGateway(why) => ApiError::BadGateway(why),
            Internal(why) => ApiError::Internal(why),
        }
    }
}

impl From<crate::service::search::IndexingError> for ApiError {
    fn from(e: crate::service::search::IndexingError) -> Self {
        use crate::service::search::IndexingError::*;
        match e {
            Index(e) => e.into(),
            Rooms(e) => e.into(),
        }
    }
}

impl From<crate::service::media::remote::RemoteMediaError> for ApiError {
    fn from(e: crate::service::media::remote::RemoteMediaError) -> Self {
        use crate::service::media::remote::RemoteMediaError::*;
        match e {
            Store(e) => e.into(),
            Media(e) => e.into(),
            Fed(e) => e.into(),
            NotFound => ApiError::NotFound("Media not found".into()),
            NotYetUploaded => ApiError::NotYetUploaded,
            TooLarge => ApiError::RemoteTooLarge,
            BadGateway(why) => ApiError::BadGateway(why),
        }
    }
}

impl From<crate::service::appservices::AppserviceError> for ApiError {
    fn from(e: crate::service::appservices::AppserviceError) -> Self {
        use crate::service::appservices::AppserviceError::*;
        match e {
            Store(e) => e.into(),
            Accounts(e) => e.into(),
            Rooms(e) => e.into(),
            Directory(e) => e.into(),
            Receipts(e) => e.into(),
            Presence(e) => e.into(),
            E2ee(e) => e.into(),
            Exclusive(why) => ApiError::Exclusive(why),
            Forbidden(why) => ApiError::Forbidden(why),
            InvalidParam(why) => ApiError::InvalidParam(why),
            UnknownDevice(why) => ApiError::UnknownDevice(why),
            UrlNotSet => ApiError::UrlNotSet,
            BadStatus { status, body } => ApiError::BadStatus { status, body },
            ConnectionFailed(why) => ApiError::ConnectionFailed(why),
            ConnectionTimeout => ApiError::ConnectionTimeout,
            Internal(why) => ApiError::Internal(why),
        }
    }
}

/// The text a client reads for a service error, for answers that carry a failure's text in
/// their body (a key query's `failures`) rather than as the response's error.
pub fn client_text<E: Into<ApiError>>(e: E) -> String {
    e.into().to_string()
}

impl From<plexus_search::SearchError> for ApiError {
    fn from(e: plexus_search::SearchError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Auth(why) => ApiError::Forbidden(why),
            CoreError::TooLarge(_) => ApiError::TooLarge,
            CoreError::UnsupportedRoomVersion(v) => {
                ApiError::UnsupportedRoomVersion(format!("room version {v} is not supported"))
            }
            CoreError::BadPdu(why) => ApiError::BadJson(why),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<plexus_media::MediaError> for ApiError {
    fn from(e: plexus_media::MediaError) -> Self {
        use plexus_media::MediaError::*;
        match e {
            TooLarge { .. } => ApiError::TooLarge,
            Interrupted(why) => ApiError::Unknown(format!("upload interrupted: {why}")),
            NotThumbnailable(why) => {
                ApiError::Unknown(format!("Cannot generate a thumbnail: {why}"))
            }
            Multipart(why) => ApiError::BadGateway(format!("remote media: {why}")),
            Io(e) => ApiError::Internal(format!("media storage: {e}")),
        }
    }
}

/// Remote refusals keep their Matrix error for the client; anything else is a 502.
impl From<crate::service::federation::client::FedError> for ApiError {
    fn from(e: crate::service::federation::client::FedError) -> Self {
        use crate::service::federation::client::FedError;
        match e {
            FedError::Status {
                status,
                errcode,
                error,
            } if (400..500).contains(&status) => ApiError::Remote {
                status,
                errcode,
                error,
            },
            FedError::Internal(why) => ApiError::Internal(why),
            e => ApiError::BadGateway(e.to_string()),
        }
    }
}

impl From<crate::service::federation::FederationError> for ApiError {
    fn from(e: crate::service::federation::FederationError) -> Self {
        use crate::service::federation::FederationError::*;
        match e {
            Store(e) => e.into(),
            Rooms(e) => e.into(),
            Core(e) => e.into(),
            Fed(e) => e.into(),
            Accounts(e) => e.into(),
            Ephemeral(e) => e.into(),
            Presence(e) => e.into(),
            E2ee(e) => e.into(),
            Push(e) => e.into(),
            Forbidden(why) => ApiError::Forbidden(why),
            NotFound(why) => ApiError::NotFound(why),
            InvalidParam(why) => ApiError::InvalidParam(why),
            BadJson(why) => ApiError::BadJson(why),
            BadGateway(why) => ApiError::BadGateway(why),
            Unrecognized => ApiError::Unrecognized,
            Internal(why) => ApiError::Internal(why),
        }
    }
}

/// A local failure while making a request to another server: kept as the text of the Matrix
/// error it maps to, which is what a client is shown of it.
impl From<crate::service::federation::FederationError>
    for crate::service::federation::client::FedError
{
    fn from(e: crate::service::federation::FederationError) -> Self {
        crate::service::federation::client::FedError::Local(ApiError::from(e).to_string())
    }
}
