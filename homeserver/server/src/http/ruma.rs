//! The typed edge: endpoints that ruma defines take ruma's request type and answer its
//! response type.
//!
//! [`Ruma<R>`] reads a request in a fixed order, so every endpoint fails the same way:
//! 1. who is calling, by the scheme `R`'s metadata names ([`EdgeAuth`]): a missing or bad
//!    token, or an X-Matrix header whose origin's key cannot be had, is refused before any
//!    body is read (a federation signature, which covers the body, is checked once it is);
//! 2. the body, under the shared in-flight budget (`M_TOO_LARGE`, `M_LIMIT_EXCEEDED`);
//! 3. the body must be empty (read as `{}`) or a JSON object, all of it (`M_NOT_JSON`,
//!    `M_BAD_JSON`), even where the endpoint takes no fields, so garbage is never silently
//!    accepted;
//! 4. path, query and body into `R` (`M_BAD_JSON`, `M_MISSING_PARAM`, `M_INVALID_PARAM`).
//!
//! [`RumaRoutes::ruma`] registers a handler at every path `R`'s metadata lists, with `R`'s
//! method, so a path is typed once, in ruma.

use std::{future::Future, net::IpAddr, sync::Arc};

use axum::{
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, State},
    http::request::Parts,
    response::{IntoResponse, Response},
    routing::{on, MethodFilter, MethodRouter},
    Router,
};
use bytes::BytesMut;
use plexus_core::appservice::Registration;
use ruma::api::federation::authentication::ServerSignatures;
use ruma::api::{
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, AuthScheme,
        NoAccessToken, NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError, HeaderDeserializationError},
    path_builder::PathBuilder as _,
    IncomingRequest, IncomingRequestExt as _, OutgoingResponse, OutgoingResponseExt as _,
};
use ruma::OwnedServerName;

use super::{
    body::BodyPermit,
    extract::{access_token, authenticated, client_ip, content_length, AppserviceCaller},
    x_matrix::PendingOrigin,
};
use crate::{
    error::{ApiError, ApiResult},
    service::{accounts::Session, App},
};

/// What each of ruma's authentication schemes asks of a request, and who it says is calling.
/// Two steps: [`check`](EdgeAuth::check) sees only the headers, so a caller who may not call
/// is refused before its body is read; [`finish`](EdgeAuth::finish) also sees the body.
pub trait EdgeAuth: AuthScheme {
    /// What the headers established.
    type Pending: Send + 'static;
    /// Who is calling.
    type Caller: Send + 'static;

    fn check(app: &App, parts: &Parts) -> impl Future<Output = ApiResult<Self::Pending>> + Send;

    fn finish(app: &App, pending: Self::Pending, body: &[u8]) -> ApiResult<Self::Caller>;

    /// The most a request's body may hold.
    fn body_cap(app: &App, _parts: &Parts) -> usize {
        app.settings.max_request_bytes
    }
}

/// The schemes whose caller the headers alone establish.
macro_rules! header_only {
    ($scheme:ty, $caller:ty, |$app:ident, $parts:ident| $check:expr) => {
        impl EdgeAuth for $scheme {
            type Pending = $caller;
            type Caller = $caller;

            async fn check($app: &App, $parts: &Parts) -> ApiResult<$caller> {
                $check
            }

            fn finish(_: &App, caller: $caller, _: &[u8]) -> ApiResult<$caller> {
                Ok(caller)
            }
        }
    };
}

header_only!(NoAuthentication, (), |_app, _parts| Ok(()));
header_only!(NoAccessToken, (), |_app, _parts| Ok(()));
header_only!(AccessToken, Session, |app, parts| authenticated(app, parts));
// No token is `None`; a bad one is still `M_UNKNOWN_TOKEN`.
header_only!(AccessTokenOptional, Option<Session>, |app, parts| {
    match access_token(parts) {
        None => Ok(None),
        Some(_) => authenticated(app, parts).map(Some),
    }
});
// Only an appservice's `as_token`: a user's token is `M_FORBIDDEN`, one that is no one's
// still `M_UNKNOWN_TOKEN`.
header_only!(AppserviceToken, Arc<Registration>, |app, parts| {
    let token = access_token(parts).ok_or(ApiError::MissingToken)?;
    if let Some(reg) = app.appservices.by_token(&token) {
        return Ok(reg.clone());
    }
    authenticated(app, parts)?;
    Err(ApiError::Forbidden(
        "only an appservice may call this".into(),
    ))
});
// Registering and logging in: an appservice may call them, and so may anyone else.
header_only!(AppserviceTokenOptional, AppserviceCaller, |app, parts| {
    Ok(AppserviceCaller::of(app, parts))
});

/// Another server, by its X-Matrix signature: the caller is the origin. Its key is fetched
/// before the body is read, and the signature over method, URI and body checked once it has
/// arrived.
impl EdgeAuth for ServerSignatures {
    type Pending = PendingOrigin;
    type Caller = OwnedServerName;

    async fn check(app: &App, parts: &Parts) -> ApiResult<PendingOrigin> {
        PendingOrigin::check(app, parts).await
    }

    fn finish(app: &App, pending: PendingOrigin, body: &[u8]) -> ApiResult<OwnedServerName> {
        let body: Option<serde_json::Value> = match body.is_empty() {
            true => None,
            false => Some(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::NotJson(format!("Content not JSON: {e}")))?,
            ),
        };
        pending.verify(app, body.as_ref())
    }

    fn body_cap(_: &App, parts: &Parts) -> usize {
        super::x_matrix::body_cap(parts.uri.path())
    }
}

/// A request of ruma type `R`, read and checked as the module doc says.
pub struct Ruma<R>
where
    R: IncomingRequest,
    R::Authentication: EdgeAuth,
{
    pub body: R,
    /// Who is calling, as `R`'s authentication scheme establishes it.
    pub caller: <R::Authentication as EdgeAuth>::Caller,
    /// The client's address (behind a trusted proxy, the one it forwards for).
    pub ip: IpAddr,
    /// The path parameters as sent (percent-decoded), in order: where ruma's type would change
    /// a value, such as an event type it knows under another name.
    pub path: Vec<String>,
    /// The body's share of the in-flight budget, held while the handler runs.
    _permit: BodyPermit,
}

/// A body must be empty or a JSON object, all of it: a parser ruma wrote by hand
/// (`send_state_event`'s) reads the first value and ignores what follows.
fn check_object(body: &[u8]) -> ApiResult<()> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_none() {
        return Ok(());
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => Err(ApiError::NotJson(format!("Content not JSON: {e}"))),
        Ok(_) if first == Some(&b'{') => Ok(()),
        Ok(_) => Err(ApiError::BadJson("Body must be a JSON object".into())),
    }
}

/// An empty body reads as `{}`, as in ruma's generated parsers and the untyped extractors:
/// the parsers ruma wrote by hand (`send_state_event`, `knock_room`,
/// `join_room_by_id_or_alias`) would call it not JSON, and one missing a required field is
/// `M_BAD_JSON` as for `{}`.
fn json_body(bytes: &[u8]) -> &[u8] {
    if bytes.is_empty() {
        &b"{}"[..]
    } else {
        bytes
    }
}

impl<R> FromRequest<App> for Ruma<R>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: EdgeAuth,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let pending = <R::Authentication as EdgeAuth>::check(app, &parts).await?;
        let ip = client_ip(&parts, app);
        let declared = content_length(&parts.headers);
        let cap = <R::Authentication as EdgeAuth>::body_cap(app, &parts);
        let (bytes, permit) = app.bodies.read_bytes(body, declared, cap).await?;
        check_object(&bytes)?;
        let caller = <R::Authentication as EdgeAuth>::finish(app, pending, &bytes)?;
        let path = RawPathParams::from_request_parts(&mut parts, app)
            .await
            .map_err(|e| ApiError::InvalidParam(format!("invalid path parameter: {e}")))?;
        let args: Vec<&str> = path.iter().map(|(_, v)| v).collect();
        let json = json_body(&bytes);
        let request = http::Request::from_parts(parts, json);
        let body = R::try_from_http_request(request, &args).map_err(parse_error)?;
        Ok(Ruma {
            body,
            caller,
            ip,
            path: args.into_iter().map(str::to_owned).collect(),
            _permit: permit,
        })
    }
}

/// ruma's parse errors as the spec's (the body is JSON by now, see [`check_object`]): JSON of
/// the wrong shape is `M_BAD_JSON`; a query parameter that is absent is `M_MISSING_PARAM`, and a
/// path or query parameter that is malformed `M_INVALID_PARAM`.
fn parse_error(e: FromHttpRequestError) -> ApiError {
    use DeserializationError as De;
    match e {
        FromHttpRequestError::Deserialization(De::Json(e)) => {
            if is_bad_identifier(&e.to_string()) {
                ApiError::InvalidParam(e.to_string())
            } else {
                ApiError::BadJson(e.to_string())
            }
        }
        FromHttpRequestError::Deserialization(De::Query(e)) => {
            let why = e.to_string();
            if why.starts_with("missing field") {
                ApiError::MissingParam(why)
            } else {
                ApiError::InvalidParam(format!("invalid parameter: {why}"))
            }
        }
        FromHttpRequestError::Deserialization(De::Header(
            HeaderDeserializationError::MissingHeader(h),
        )) => ApiError::MissingParam(format!("missing header {h}")),
        FromHttpRequestError::MethodMismatch { .. } => ApiError::MethodNotAllowed,
        other => ApiError::InvalidParam(other.to_string()),
    }
}

/// JSON the server holds as a ruma `Raw<T>` for a response.
pub fn raw_json<T>(v: &impl serde::Serialize) -> ApiResult<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(crate::service::raw_value(v)?))
}

/// Whether a body error is a malformed Matrix identifier (a user, room or event id, a server
/// name): `M_INVALID_PARAM`, as for one in the path, rather than `M_BAD_JSON`. serde keeps
/// only the message of ruma's `IdParseError`, so it is recognised by its wording.
fn is_bad_identifier(why: &str) -> bool {
    const ID_ERRORS: [&str; 8] = [
        "identifier or required part of it is empty",
        "identifier contains invalid characters",
        "invalid matrix ID",
        "server name is not a valid IP address or domain name",
        "ID exceeds 255 bytes",
        "required colon is missing",
        "leading sigil is incorrect or missing",
        "invalid Server Name",
    ];
    ID_ERRORS.iter().any(|p| why.starts_with(p))
}

/// A ruma response as HTTP: its status, headers and body as ruma writes them.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|b| axum::body::Body::from(b.freeze())),
            Err(e) => ApiError::Internal(format!("response serialization: {e}")).into_response(),
        }
    }
}

/// A handler of one ruma endpoint: `async fn(App, Ruma<R>) -> ApiResult<R::OutgoingResponse>`.
pub trait RumaHandler<R>: Clone + Send + Sync + 'static
where
    R: IncomingRequest,
    R::Authentication: EdgeAuth,
{
    fn call(
        &self,
        app: App,
        req: Ruma<R>,
    ) -> impl Future<Output = ApiResult<R::OutgoingResponse>> + Send + 'static;
}

impl<R, F, Fut> RumaHandler<R> for F
where
    R: IncomingRequest,
    R::Authentication: EdgeAuth,
    F: Fn(App, Ruma<R>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ApiResult<R::OutgoingResponse>> + Send + 'static,
{
    fn call(
        &self,
        app: App,
        req: Ruma<R>,
    ) -> impl Future<Output = ApiResult<R::OutgoingResponse>> + Send + 'static {
        self(app, req)
    }
}

/// Every path a ruma endpoint is served at: those its metadata lists (stable and unstable),
/// and for each client `v3` path its `r0` twin, which clients from before v1.1 still call.
pub fn paths<R: IncomingRequest>() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |p: String| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for p in R::PATH_BUILDER.all_paths() {
        add(p.to_owned());
        if let Some(rest) = p.strip_prefix("/_matrix/client/v3/") {
            add(format!("/_matrix/client/r0/{rest}"));
        }
    }
    out
}

/// Registering ruma endpoints on the router.
pub trait RumaRoutes {
    /// Serve `h` at every path of `R` ([`paths`]) for `R`'s method.
    fn ruma<R, H>(self, h: H) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: EdgeAuth,
        R::OutgoingResponse: Send,
        H: RumaHandler<R>;

    /// Serve `h` also at `path`, which ruma's metadata does not list: one whose parameters
    /// are the leading ones of `R`'s path and which `R`'s parser accepts without the rest
    /// (an empty state key, which axum never matches as a segment of its own).
    fn ruma_at<R, H>(self, path: &str, h: H) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: EdgeAuth,
        R::OutgoingResponse: Send,
        H: RumaHandler<R>;
}

/// `h` as an axum method router for `R`'s method; `None` for a method axum cannot route.
fn method_router<R, H>(h: H) -> Option<MethodRouter<App>>
where
    R: IncomingRequest + Send + 'static,
    R::Authentication: EdgeAuth,
    R::OutgoingResponse: Send,
    H: RumaHandler<R>,
{
    let Ok(filter) = MethodFilter::try_from(R::METHOD) else {
        tracing::error!(method = %R::METHOD, "a ruma endpoint with a method axum cannot route");
        return None;
    };
    Some(on(filter, move |State(app): State<App>, req: Ruma<R>| {
        let h = h.clone();
        async move { h.call(app, req).await.map(RumaResponse) }
    }))
}

impl RumaRoutes for Router<App> {
    fn ruma<R, H>(self, h: H) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: EdgeAuth,
        R::OutgoingResponse: Send,
        H: RumaHandler<R>,
    {
        let Some(handler) = method_router::<R, H>(h) else {
            return self;
        };
        paths::<R>()
            .iter()
            .fold(self, |router, p| router.route(p, handler.clone()))
    }

    fn ruma_at<R, H>(self, path: &str, h: H) -> Self
    where
        R: IncomingRequest + Send + 'static,
        R::Authentication: EdgeAuth,
        R::OutgoingResponse: Send,
        H: RumaHandler<R>,
    {
        match method_router::<R, H>(h) {
            Some(handler) => self.route(path, handler),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_paths_also_answer_at_r0() {
        use ruma::api::client::account::whoami;
        let p = paths::<whoami::v3::Request>();
        assert!(p.contains(&"/_matrix/client/v3/account/whoami".to_owned()));
        assert!(p.contains(&"/_matrix/client/r0/account/whoami".to_owned()));
        assert_eq!(
            p.len(),
            p.iter().collect::<std::collections::HashSet<_>>().len()
        );
    }

    #[test]
    fn bad_identifiers_in_bodies_are_invalid_params() {
        use ruma::api::client::membership::kick_user;
        let req = http::Request::post("/_matrix/client/v3/rooms/!r:x/kick")
            .body(&br#"{"user_id": "bob"}"#[..])
            .unwrap();
        let e = kick_user::v3::Request::try_from_http_request(req, &["!r:x"]).unwrap_err();
        assert!(matches!(parse_error(e), ApiError::InvalidParam(_)));
        let req = http::Request::post("/_matrix/client/v3/rooms/!r:x/kick")
            .body(&br#"{"user_id": 5}"#[..])
            .unwrap();
        let e = kick_user::v3::Request::try_from_http_request(req, &["!r:x"]).unwrap_err();
        assert!(matches!(parse_error(e), ApiError::BadJson(_)));
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(check_object(b"").is_ok());
        assert!(check_object(b" {\"a\":1}").is_ok());
        assert!(matches!(check_object(b"[1]"), Err(ApiError::BadJson(_))));
        assert!(matches!(check_object(b"nope"), Err(ApiError::NotJson(_))));
        assert!(matches!(
            check_object(b"{\"a\":1} x"),
            Err(ApiError::NotJson(_))
        ));
        assert!(matches!(
            check_object(b"{\"a\":"),
            Err(ApiError::NotJson(_))
        ));
        assert_eq!(json_body(b""), &b"{}"[..]);
    }

    #[test]
    fn state_paths_without_a_key_have_the_empty_one() {
        use ruma::api::client::state::send_state_event;
        let req = http::Request::put("/_matrix/client/v3/rooms/!r:x/state/m.room.topic/")
            .body(json_body(b""))
            .unwrap();
        let r =
            send_state_event::v3::Request::try_from_http_request(req, &["!r:x", "m.room.topic"])
                .unwrap();
        assert_eq!(r.state_key, "");
        assert_eq!(r.body.json().get(), "{}");
    }
}
