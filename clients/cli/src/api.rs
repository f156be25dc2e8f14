//! The Matrix client-server HTTP calls the client makes, as JSON in and out.

use serde_json::{json, Value};

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

/// A homeserver and, once logged in, the session on it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    /// One request; a Matrix error answer becomes [`Error::Matrix`].
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
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(Error::Matrix {
                status,
                errcode: v["errcode"].as_str().unwrap_or("").to_owned(),
                error: v["error"].as_str().unwrap_or(&text).to_owned(),
                body: v,
            });
        }
        Ok(v)
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
    pub async fn register(&self, user: &str, password: &str) -> Result<Value, Error> {
        let path = "/_matrix/client/v3/register";
        let body = json!({ "username": user, "password": password,
            "initial_device_display_name": "plexus-cli" });
        let session = match self.post(path, body.clone()).await {
            Ok(done) => return Ok(done),
            Err(Error::Matrix {
                status: 401,
                body: b,
                ..
            }) => b["session"].as_str().unwrap_or_default().to_owned(),
            Err(e) => return Err(e),
        };
        let mut body = body;
        body["auth"] = json!({ "type": "m.login.dummy", "session": session });
        self.post(path, body).await
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Value, Error> {
        self.post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
                "initial_device_display_name": "plexus-cli",
            }),
        )
        .await
    }
}
