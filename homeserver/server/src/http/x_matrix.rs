//! Inbound `Authorization: X-Matrix` requests: the body caps, and the extractor that checks the
//! signature before a handler runs. Signing what we send is `service::federation::x_matrix`.

use axum::{
    extract::{FromRequest, Request},
    http::header,
};
use ruma::{
    canonical_json::{CanonicalJsonObject, CanonicalJsonValue},
    OwnedServerName,
};
use serde_json::Value;

use crate::{
    error::ApiError,
    http::{body::BodyPermit, extract::content_length},
    service::{
        federation::x_matrix::{parse, signed_object, XMatrix},
        App,
    },
};

/// Largest transaction body: up to 50 PDUs of at most 64 KiB each, and 100 EDUs.
pub const MAX_TRANSACTION_BODY: usize = 8 * 1024 * 1024;
/// Largest body of any other federation request: one PDU with its invite or knock state, or a
/// key query.
pub const MAX_FEDERATION_BODY: usize = 1024 * 1024;

/// The body cap for a federation path.
/// The most a federation request to `path` may send.
pub fn body_cap(path: &str) -> usize {
    if path.starts_with("/_matrix/federation/v1/send/") {
        MAX_TRANSACTION_BODY
    } else {
        MAX_FEDERATION_BODY
    }
}

/// A verified inbound federation request: the origin server and the JSON body (`Null` if none).
pub struct FedRequest {
    pub origin: OwnedServerName,
    pub body: Value,
    /// The body's share of the in-flight budget, held while the handler runs.
    _permit: BodyPermit,
}

/// An X-Matrix request checked as far as it can be before its body is read: the header parses,
/// names this server, and the origin's signing key is known.
pub struct PendingOrigin {
    origin: OwnedServerName,
    xm: XMatrix,
    keys: ruma::signatures::PublicKeyMap,
    method: String,
    uri: String,
}

impl PendingOrigin {
    /// Check the header. The origin's key comes before the body: a request from a server whose
    /// key cannot be had is refused without reading (or holding memory for) what it sent.
    pub async fn check(app: &App, parts: &axum::http::request::Parts) -> Result<Self, ApiError> {
        let fed = app.federation.as_ref().ok_or(ApiError::Unrecognized)?;
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("missing X-Matrix authorization".into()))?;
        let xm = parse(header)
            .ok_or_else(|| ApiError::Unauthorized("malformed X-Matrix authorization".into()))?;
        if let Some(dest) = &xm.destination {
            if dest != app.server_name().as_str() {
                return Err(ApiError::Unauthorized(format!(
                    "request is for {dest}, not for this server"
                )));
            }
        }
        let origin = OwnedServerName::try_from(xm.origin.as_str())
            .map_err(|_| ApiError::Unauthorized("origin is not a server name".into()))?;
        if origin == app.server_name() {
            return Err(ApiError::Unauthorized(
                "requests from our own name are not accepted".into(),
            ));
        }
        // The URI exactly as sent: it is what the origin signed.
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        if content_length(&parts.headers).is_some_and(|len| len > body_cap(parts.uri.path())) {
            return Err(ApiError::TooLarge);
        }
        let keys = fed
            .keys
            .verify_keys(
                app,
                &origin,
                std::slice::from_ref(&xm.key),
                Some(crate::service::now_ms()),
            )
            .await
            .map_err(|e| ApiError::Unauthorized(format!("cannot get keys of {origin}: {e}")))?;
        Ok(PendingOrigin {
            origin,
            xm,
            keys,
            method: parts.method.as_str().to_owned(),
            uri,
        })
    }

    /// Check the signature over the request and its body; the origin, once it checks out.
    pub fn verify(self, app: &App, body: Option<&Value>) -> Result<OwnedServerName, ApiError> {
        let origin = self.origin;
        let mut obj = signed_object(
            &self.method,
            &self.uri,
            origin.as_str(),
            app.server_name().as_str(),
            body,
        )?;
        let mut sigs = CanonicalJsonObject::new();
        let mut one = CanonicalJsonObject::new();
        one.insert(self.xm.key, CanonicalJsonValue::String(self.xm.sig));
        sigs.insert(origin.to_string(), CanonicalJsonValue::Object(one));
        obj.insert("signatures".into(), CanonicalJsonValue::Object(sigs));
        ruma::signatures::verify_json(&self.keys, &obj)
            .map_err(|e| ApiError::Unauthorized(format!("bad X-Matrix signature: {e}")))?;
        if let Some(fed) = &app.federation {
            fed.sender.peer_is_up(&origin);
        }
        crate::http::trace::record_origin(origin.as_str());
        Ok(origin)
    }
}

impl FromRequest<App> for FedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let pending = PendingOrigin::check(app, &parts).await?;
        let cap = body_cap(parts.uri.path());
        let declared = content_length(&parts.headers);
        let (body, permit) = app.bodies.read_json(body, declared, cap).await?;
        let origin = pending.verify(app, body.as_ref())?;
        Ok(FedRequest {
            origin,
            body: body.unwrap_or(Value::Null),
            _permit: permit,
        })
    }
}

impl FedRequest {
    /// The body as `T`; `M_BAD_JSON` if it has the wrong shape.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        T::deserialize(&self.body).map_err(|e| ApiError::BadJson(e.to_string()))
    }
}
