//! Request extractors. Each answers with the spec's error instead of axum's plain-text rejections.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{
    error::ApiError,
    service::{accounts::Session, App},
};

/// A JSON body: `M_TOO_LARGE` over the configured limit, `M_NOT_JSON` if it is not JSON at all,
/// `M_BAD_JSON` if it is JSON of the wrong shape. An empty body reads as `{}`.
pub struct Body<T>(pub T);

/// The raw JSON body, for endpoints whose content is arbitrary (events, account data).
pub struct JsonObject(pub serde_json::Map<String, serde_json::Value>);

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

async fn read_json(req: Request, app: &App) -> Result<serde_json::Value, ApiError> {
    let declared = content_length(req.headers());
    let (value, _permit) = app
        .bodies
        .read_json(req.into_body(), declared, app.settings.max_request_bytes)
        .await?;
    Ok(value.unwrap_or_else(|| serde_json::Value::Object(Default::default())))
}

impl<T: DeserializeOwned> FromRequest<App> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let value = read_json(req, app).await?;
        if !value.is_object() {
            return Err(ApiError::BadJson("Body must be a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::BadJson(e.to_string()))
    }
}

impl FromRequest<App> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        match read_json(req, app).await? {
            serde_json::Value::Object(o) => Ok(JsonObject(o)),
            _ => Err(ApiError::BadJson("Body must be a JSON object".into())),
        }
    }
}

/// Query parameters; a malformed one is `M_INVALID_PARAM`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_html_form::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::InvalidParam(format!("invalid query parameter: {e}")))
    }
}

/// Path parameters, percent-decoded; a malformed one is `M_INVALID_PARAM`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::InvalidParam(format!("invalid path parameter: {e}")))
    }
}

/// The caller's access token, from the `Authorization: Bearer` header or the deprecated
/// `access_token` query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(h) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return h.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    query_pairs(parts.uri.query())
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

/// A query string's decoded `key=value` pairs, in order; a malformed one has none.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_html_form::from_str(q).ok())
        .unwrap_or_default()
}

/// A room id from a path or query parameter; `M_INVALID_PARAM` if it is not one.
pub fn parse_room_id(s: &str) -> Result<ruma::OwnedRoomId, ApiError> {
    ruma::RoomId::parse(s).map_err(|e| ApiError::InvalidParam(format!("invalid room id: {e}")))
}

/// A stream or pagination token (a stream position); `M_INVALID_PARAM` otherwise.
pub fn parse_token(t: &str) -> Result<u64, ApiError> {
    t.parse::<u64>()
        .map_err(|_| ApiError::InvalidParam(format!("invalid pagination token {t:?}")))
}

/// An authenticated request: `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN` otherwise.
pub struct Auth(pub Session);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        authenticated(app, parts).map(Auth)
    }
}

/// The session a request's access token names, recorded in the request's span and as the
/// device's last sighting: `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN` otherwise.
pub fn authenticated(app: &App, parts: &Parts) -> Result<Session, ApiError> {
    let token = access_token(parts).ok_or(ApiError::MissingToken)?;
    let session = app.authenticate(&token, parts.uri.query())?;
    super::trace::record_session(
        session.user_id.as_str(),
        session.device_id.as_ref().map(|d| d.as_str()),
    );
    if let Some(device) = &session.device_id {
        app.accounts
            .saw_device(&session.user_id, device, client_ip(parts, app));
    }
    Ok(session)
}

/// The appservice whose `as_token` a request carries, with no `user_id` resolution: registering
/// and logging in act on users that may not exist yet (mautrix registers a ghost with
/// `?user_id=` naming the ghost itself).
pub struct AppserviceCaller {
    /// Whether any access token came with the request.
    pub present: bool,
    pub reg: Option<std::sync::Arc<plexus_core::appservice::Registration>>,
}

impl AppserviceCaller {
    /// The appservice whose token the request carries, if any.
    pub fn of(app: &App, parts: &Parts) -> Self {
        let token = access_token(parts);
        AppserviceCaller {
            present: token.is_some(),
            reg: token.and_then(|t| app.appservices.by_token(&t).cloned()),
        }
    }

    /// The appservice, or the error for a request that is not from one.
    pub fn require(
        self,
    ) -> Result<std::sync::Arc<plexus_core::appservice::Registration>, ApiError> {
        match (self.present, self.reg) {
            (_, Some(r)) => Ok(r),
            (false, None) => Err(ApiError::MissingToken),
            (true, None) => Err(ApiError::Forbidden(
                "m.login.application_service needs an appservice's as_token".into(),
            )),
        }
    }
}

impl FromRequestParts<App> for AppserviceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(AppserviceCaller::of(app, parts))
    }
}

/// For endpoints where authentication is optional: no token is `None`, a bad one is still
/// `M_UNKNOWN_TOKEN`.
pub struct MaybeAuth(pub Option<Session>);

impl FromRequestParts<App> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match access_token(parts) {
            None => Ok(MaybeAuth(None)),
            Some(_) => Ok(MaybeAuth(Some(
                Auth::from_request_parts(parts, app).await?.0,
            ))),
        }
    }
}

/// A page size from a `limit` query parameter: `default` when absent, at least 1 and at most
/// `max`; anything but a non-negative integer is `M_INVALID_PARAM`.
pub fn page_limit(limit: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::InvalidParam("limit must be a non-negative integer".into())),
    }
    .map(|n| n.clamp(1, max.max(1)))
}

/// The client's address, for per-address rate limits: the connection's peer, or behind a
/// trusted reverse proxy the address it forwards for.
pub struct ClientIp(pub std::net::IpAddr);

impl FromRequestParts<App> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, app)))
    }
}

/// The connection's peer, or behind a trusted reverse proxy the address it forwards for.
pub fn client_ip(parts: &Parts, app: &App) -> std::net::IpAddr {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    app.limiter.client_ip(peer, forwarded)
}
