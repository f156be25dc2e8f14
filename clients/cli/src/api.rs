//! The Matrix client-server HTTP calls the client makes: ruma's typed requests and answers
//! ([`Api::send`]), and JSON in and out ([`Api::call`]) for what ruma does not define or what
//! a caller wants raw.

use std::borrow::Cow;

use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::account::register;
use ruma::api::client::session::login::{
    self,
    v3::{LoginInfo, Password},
};
use ruma::api::client::uiaa::{AuthData, Dummy, MatrixUserIdentifier};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{
    IncomingResponseExt, MatrixVersion, Metadata, OutgoingRequest, OutgoingRequestExt,
    SupportedVersions,
};
use ruma::serde::Raw;
use ruma::IdParseError;
use serde_json::Value;

use crate::Error;

/// Percent-encode one path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` as a ruma identifier (room id, user id, ...), or [`Error::Other`] naming `what`.
pub fn parse_id<T>(what: &str, s: &str) -> Result<T, Error>
where
    T: for<'a> TryFrom<&'a str, Error = IdParseError>,
{
    T::try_from(s).map_err(|e| Error::Other(format!("{what} {s:?}: {e}")))
}

/// Free-form JSON (event content, keys) as the raw JSON ruma's types carry.
pub fn raw<T>(v: &Value) -> Result<Raw<T>, Error> {
    serde_json::value::to_raw_value(v)
        .map(Raw::from_json)
        .map_err(|e| Error::Other(format!("JSON: {e}")))
}

/// Raw JSON from ruma's types back as a `Value` (`Null` if it is not JSON, which ruma's
/// `Raw` never holds).
pub fn as_json<T>(raw: &Raw<T>) -> Value {
    serde_json::from_str(raw.json().get()).unwrap_or(Value::Null)
}

/// What a homeserver gave a new session.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
}

/// A homeserver and, once logged in, the session on it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

/// An error answer as [`Error::Matrix`].
fn matrix_error(status: u16, text: &str) -> Error {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    Error::Matrix {
        status,
        errcode: v["errcode"].as_str().unwrap_or("").to_owned(),
        error: v["error"].as_str().unwrap_or(text).to_owned(),
        body: v,
    }
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// One of ruma's typed requests, with the session's token where the endpoint needs one;
    /// a Matrix error answer becomes [`Error::Matrix`].
    pub async fn send<R>(&self, request: R) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let token = match &self.token {
            Some(t) => SendAccessToken::IfRequired(t),
            None => SendAccessToken::None,
        };
        let versions = SupportedVersions {
            versions: [MatrixVersion::V1_15].into(),
            features: Default::default(),
        };
        let built = request
            .try_into_http_request::<Vec<u8>>(&self.base, token, Cow::Owned(versions))
            .map_err(|e| Error::Other(format!("building a request: {e}")))?;
        let (parts, body) = built.into_parts();
        let url = parts.uri.to_string();
        let mut req = self.http.request(parts.method, &url).headers(parts.headers);
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(matrix_error(
                status.as_u16(),
                &String::from_utf8_lossy(&bytes),
            ));
        }
        let mut response = http::Response::new(&bytes[..]);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        R::IncomingResponse::try_from_http_response(response)
            .map_err(|e| Error::Other(format!("unexpected answer from {url}: {e}")))
    }

    /// One request as JSON; a Matrix error answer becomes [`Error::Matrix`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::Other(e.to_string()))?;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Http(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(matrix_error(status, &text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call("POST", path, Some(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call("PUT", path, Some(&body)).await
    }

    /// Register with the dummy stage (servers with open registration).
    pub async fn register(&self, user: &str, password: &str) -> Result<Session, Error> {
        let mut request = register::v3::Request::new();
        request.username = Some(user.to_owned());
        request.password = Some(password.to_owned());
        request.initial_device_display_name = Some("plexus-cli".to_owned());
        let session = match self.send(request.clone()).await {
            Ok(done) => return registered(done),
            Err(Error::Matrix {
                status: 401,
                body: b,
                ..
            }) => b["session"].as_str().map(str::to_owned),
            Err(e) => return Err(e),
        };
        let mut dummy = Dummy::new();
        dummy.session = session;
        request.auth = Some(AuthData::Dummy(dummy));
        registered(self.send(request).await?)
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Session, Error> {
        let identifier = MatrixUserIdentifier::new(user.to_owned());
        let mut request = login::v3::Request::new(LoginInfo::Password(Password::new(
            identifier.into(),
            password.to_owned(),
        )));
        request.initial_device_display_name = Some("plexus-cli".to_owned());
        let answer = self.send(request).await?;
        Ok(Session {
            user_id: answer.user_id.to_string(),
            device_id: answer.device_id.to_string(),
            access_token: answer.access_token,
        })
    }
}

/// The session a registration made (it has one: the request did not inhibit login).
fn registered(answer: register::v3::Response) -> Result<Session, Error> {
    let missing = |k: &str| Error::Other(format!("register answer has no {k}"));
    Ok(Session {
        user_id: answer.user_id.to_string(),
        device_id: answer
            .device_id
            .ok_or_else(|| missing("device_id"))?
            .to_string(),
        access_token: answer.access_token.ok_or_else(|| missing("access_token"))?,
    })
}
