//! Requests this server makes to appservices outside transactions: "does this user / alias
//! exist?" for ids in their namespaces, pings, and third-party lookups passed through.

use std::time::{Duration, Instant};

use plexus_core::appservice::{Kind, Registration};
use ruma::{RoomAliasId, UserId};
use serde_json::Value;

use super::AppserviceError;
use crate::service::{federation::sender::enc, Services};

/// Queries are answered quickly or not at all: a client is waiting.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

impl Services {
    /// Ask the appservices whose namespaces hold an unknown local user whether it exists; one
    /// that answers 200 has registered it before answering.
    pub async fn ask_appservices_for_user(&self, user: &UserId) -> bool {
        let path = format!("/_matrix/app/v1/users/{}", enc(user.as_str()));
        self.ask_appservices(Kind::User, user.as_str(), &path).await
    }

    /// The same for an unknown alias of this server: a 200 means it made the room and alias.
    pub async fn ask_appservices_for_alias(&self, alias: &RoomAliasId) -> bool {
        let path = format!("/_matrix/app/v1/rooms/{}", enc(alias.as_str()));
        self.ask_appservices(Kind::Alias, alias.as_str(), &path)
            .await
    }

    async fn ask_appservices(&self, kind: Kind, id: &str, path: &str) -> bool {
        for reg in self.appservices.regs.iter().filter(|r| r.matches(kind, id)) {
            if ask(self, reg, path).await {
                tracing::info!(appservice = %reg.id, id, "made on query");
                return true;
            }
        }
        false
    }

    /// `POST /_matrix/app/v1/ping`: how long the appservice took to answer.
    pub async fn ping_appservice(
        &self,
        reg: &Registration,
        txn: Option<&str>,
    ) -> Result<u64, AppserviceError> {
        let url = reg.url.as_deref().ok_or(AppserviceError::UrlNotSet)?;
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
                    AppserviceError::ConnectionTimeout
                } else {
                    AppserviceError::ConnectionFailed(format!("Ping failed: {e}"))
                }
            })?;
        let elapsed = started.elapsed().as_millis() as u64;
        if !res.status().is_success() {
            return Err(AppserviceError::BadStatus {
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
        let pairs: Vec<(String, String)> = crate::http::extract::query_pairs(query)
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
