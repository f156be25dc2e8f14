//! Outbound federation HTTP: discovery, X-Matrix signing, timeouts, and a guard that keeps
//! remote input from aiming us at loopback or private addresses.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http::Method;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ruma::ServerName;
use serde_json::Value;

use super::{resolve::Destination, x_matrix, Federation};
use crate::service::Services;

/// Why a request to another server failed. Mapped in `crate::error`: a remote refusal keeps its
/// Matrix error for the client, a client that cannot be built is a 500, anything else a 502.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("{0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("refusing to contact {0}: {1}")]
    Refused(String, String),
    #[error("remote answered {status}: {errcode}: {error}")]
    Status {
        status: u16,
        errcode: String,
        error: String,
    },
    #[error("bad response: {0}")]
    BadResponse(String),
    /// A failure here while making the request, as the text its Matrix error has (built from
    /// a [`super::FederationError`] in `crate::error`).
    #[error("{0}")]
    Local(String),
    /// 500: no request can be made at all (the HTTP client cannot be built).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Addresses that remote input must not make us contact.
pub fn forbidden_ip(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() {
        return (!allow_loopback).then_some("loopback address");
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("unspecified or multicast address");
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
            {
                return Some("private address");
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 {
                return Some("private address");
            }
        }
    }
    None
}

/// Why a URL whose host is an IP address must not be contacted, if so.
pub fn literal_ip_refused(url: &reqwest::Url, allow_loopback: bool) -> Option<&'static str> {
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    forbidden_ip(ip, allow_loopback)
}

/// DNS for outbound federation: the system resolver, minus forbidden addresses, so a name
/// cannot be pointed at internal services after the check (no time-of-check gap).
struct GuardedResolver {
    allow_loopback: bool,
    /// Names whose SRV record points elsewhere: connect to the target's addresses.
    targets: super::resolve::SrvTargets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_loopback;
        let target = self
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name.as_str())
            .cloned();
        Box::pin(async move {
            let host = format!("{}:0", target.as_deref().unwrap_or(name.as_str()));
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| forbidden_ip(a.ip(), allow).is_none())
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} resolves to no permitted address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub fn http_client(
    verify_tls: bool,
    allow_loopback: bool,
    targets: super::resolve::SrvTargets,
) -> Result<reqwest::Client, FedError> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(!verify_tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            // Names go through the guarded resolver; an address in the URL does not.
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if let Some(why) = literal_ip_refused(attempt.url(), allow_loopback) {
                attempt.error(format!("redirect to a {why}"))
            } else {
                attempt.follow()
            }
        }))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_loopback,
            targets,
        }))
        .user_agent(concat!("plexus/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FedError::Internal(format!("http client: {e}")))
}

impl Federation {
    /// One federation request to `dest`; `signed` adds the X-Matrix header (everything but
    /// the key server). Answers the response JSON or the remote's Matrix error.
    pub async fn request(
        &self,
        app: &Services,
        dest: &ServerName,
        method: Method,
        path: &str,
        body: Option<Value>,
        signed: bool,
    ) -> Result<Value, FedError> {
        let resp = self
            .send(app, dest, method, path, body.as_ref(), signed)
            .await?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| FedError::Unreachable(dest.to_string(), error_chain(&e)))?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(status_error(status, &json));
        }
        if json.is_null() {
            return Err(FedError::BadResponse(format!("{dest}{path}: not JSON")));
        }
        Ok(json)
    }

    /// Sends a request and answers the response as it arrives, whatever its status, for
    /// callers that read something other than JSON (media).
    pub async fn send(
        &self,
        app: &Services,
        dest: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<reqwest::Response, FedError> {
        if dest == app.server_name() {
            return Err(FedError::Refused(
                dest.to_string(),
                "that is this server".into(),
            ));
        }
        let Destination { base, host_header } = self.resolver.resolve(&self.http, dest).await;
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| FedError::Refused(dest.to_string(), format!("bad URL: {e}")))?;
        if let Some(why) = literal_ip_refused(&url, self.settings.allow_loopback) {
            return Err(FedError::Refused(dest.to_string(), why.into()));
        }
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(http::header::HOST, host_header);
        if signed {
            let auth = x_matrix::authorization(app, dest, method.as_str(), path, body)
                .map_err(FedError::from)?;
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send()
            .await
            .map_err(|e| FedError::Unreachable(dest.to_string(), error_chain(&e)))
    }
}

/// A non-success answer as the remote's Matrix error (empty fields if it sent none).
pub fn status_error(status: http::StatusCode, json: &Value) -> FedError {
    let field = |k: &str| json.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    FedError::Status {
        status: status.as_u16(),
        errcode: field("errcode"),
        error: field("error"),
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_addresses_are_guarded() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(forbidden_ip(ip("127.0.0.1"), false).is_some());
        assert!(forbidden_ip(ip("127.0.0.1"), true).is_none());
        assert!(forbidden_ip(ip("::1"), false).is_some());
        assert!(forbidden_ip(ip("::ffff:127.0.0.1"), false).is_some());
        assert!(forbidden_ip(ip("10.1.2.3"), true).is_some());
        assert!(forbidden_ip(ip("192.168.0.1"), true).is_some());
        assert!(forbidden_ip(ip("169.254.169.254"), true).is_some());
        assert!(forbidden_ip(ip("fd00::1"), true).is_some());
        assert!(forbidden_ip(ip("0.0.0.0"), true).is_some());
        assert!(forbidden_ip(ip("8.8.8.8"), false).is_none());
        assert!(forbidden_ip(ip("2001:4860::8888"), false).is_none());
    }
}
