//! Requests this server makes to appservices outside transactions: "does this user / alias
//! exist?" for ids in their namespaces, pings, and third-party lookups passed through.

use std::time::{Duration, Instant};

use plexus_core::appservice::{Kind, Registration};
use ruma::{RoomAliasId, UserId};
use serde_json::Value;

use crate::{
    error::{ApiError, ApiResult},
    service::Services,
};

/// Queries are answered quickly or not at all: a client is waiting.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Percent-encode one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Services {
    /// A local user exists, or an appservice whose namespace holds the id says it made it
    /// just now (it registers the user before answering 200).
    pub async fn local_user_exists(&self, user: &UserId) -> ApiResult<bool> {
        if self.user(user)?.is_some() {
            return Ok(true);
        }
        for reg in self
            .appservices
            .regs
            .iter()
            .filter(|r| r.matches(Kind::User, user.as_str()))
        {
            let path = format!("/_matrix/app/v1/users/{}", segment(user.as_str()));
            if ask(self, reg, &path).await && self.user(user)?.is_some() {
                tracing::info!(appservice = %reg.id, %user, "user made on query");
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The room an alias of this server points to, asking the appservice whose namespace holds
    /// an unknown alias (it creates the room and the alias before answering 200).
    pub async fn resolve_local_alias(&self, alias: &RoomAliasId) -> ApiResult<Option<String>> {
        let look = || -> ApiResult<Option<String>> {
            Ok(self
                .store
                .kv
                .get(plexus_store::Table::Alias, alias.as_bytes())?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        };
        if let Some(room) = look()? {
            return Ok(Some(room));
        }
        for reg in self
            .appservices
            .regs
            .iter()
            .filter(|r| r.matches(Kind::Alias, alias.as_str()))
        {
            let path = format!("/_matrix/app/v1/rooms/{}", segment(alias.as_str()));
            if ask(self, reg, &path).await {
                if let Some(room) = look()? {
                    tracing::info!(appservice = %reg.id, %alias, "alias made on query");
                    return Ok(Some(room));
                }
            }
        }
        Ok(None)
    }

    /// `POST /_matrix/app/v1/ping`: how long the appservice took to answer.
    pub async fn ping_appservice(&self, reg: &Registration, txn: Option<&str>) -> ApiResult<u64> {
        let url = reg.url.as_deref().ok_or(ApiError::UrlNotSet)?;
        let mut body = serde_json::json!({});
        if let Some(t) = txn {
            body["transaction_id"] = Value::String(t.to_owned());
        }
        let started = Instant::now();
        let res = self
            .appservices
            .http
            .post(format!("{url}/_matrix/app/v1/ping"))
            .bearer_auth(&reg.hs_token)
            .timeout(QUERY_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ApiError::ConnectionTimeout
                } else {
                    ApiError::ConnectionFailed(format!("Ping failed: {e}"))
                }
            })?;
        let elapsed = started.elapsed().as_millis() as u64;
        if !res.status().is_success() {
            return Err(ApiError::BadStatus {
                status: res.status().as_u16(),
                body: res.text().await.unwrap_or_default(),
            });
        }
        Ok(elapsed)
    }

    /// A third-party lookup (`/_matrix/app/v1/thirdparty/...`) on one appservice: its JSON
    /// answer, or `None` when it failed or did not answer.
    pub async fn thirdparty_query(
        &self,
        reg: &Registration,
        path: &str,
        query: Option<&str>,
    ) -> Option<Value> {
        let url = reg.url.as_deref()?;
        // The client's own access token never goes to the appservice.
        let pairs: Vec<(String, String)> = query
            .and_then(|q| serde_html_form::from_str::<Vec<(String, String)>>(q).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "access_token")
            .collect();
        let q = serde_html_form::to_string(&pairs).unwrap_or_default();
        let full = if q.is_empty() {
            format!("{url}/_matrix/app/v1/thirdparty/{path}")
        } else {
            format!("{url}/_matrix/app/v1/thirdparty/{path}?{q}")
        };
        let res = self
            .appservices
            .http
            .get(full)
            .bearer_auth(&reg.hs_token)
            .timeout(QUERY_TIMEOUT)
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            tracing::debug!(appservice = %reg.id, status = %res.status(), path, "third-party lookup failed");
            return None;
        }
        res.json().await.ok()
    }
}

/// A user or alias query: true when the appservice answered 2xx.
async fn ask(svc: &Services, reg: &Registration, path: &str) -> bool {
    let Some(url) = reg.url.as_deref() else {
        return false;
    };
    match svc
        .appservices
        .http
        .get(format!("{url}{path}"))
        .bearer_auth(&reg.hs_token)
        .timeout(QUERY_TIMEOUT)
        .send()
        .await
    {
        Ok(res) => res.status().is_success(),
        Err(e) => {
            tracing::info!(appservice = %reg.id, error = %e, path, "appservice query failed");
            false
        }
    }
}
