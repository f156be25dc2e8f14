//! Server discovery (spec: "Resolving server names"): IP literals, explicit ports,
//! `/.well-known/matrix/server` delegation, then port 8448. Results are cached for an hour.
//!
//! SRV records (`_matrix-fed._tcp`) are not looked up yet: a name without well-known
//! delegation goes to port 8448 of its own host.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::ServerName;
use serde_json::Value;

const CACHE_FOR: Duration = Duration::from_secs(3600);
const DEFAULT_PORT: u16 = 8448;

/// Where to connect for a server name, and the `Host` it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `https://host:port`
    pub base: String,
    pub host_header: String,
}

#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<String, (Destination, Instant)>>,
}

/// `host` and optional port of a server name; IPv6 literals keep their brackets.
pub fn split(name: &str) -> (&str, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &name[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match name.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (name, None),
        },
        None => (name, None),
    }
}

pub fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

/// Steps 1 and 2 of the spec, which need no network.
fn direct(name: &str) -> Option<Destination> {
    let (host, port) = split(name);
    if is_ip_literal(host) || port.is_some() {
        let port = port.unwrap_or(DEFAULT_PORT);
        return Some(Destination {
            base: format!("https://{host}:{port}"),
            host_header: name.to_owned(),
        });
    }
    None
}

impl Resolver {
    pub async fn resolve(&self, http: &reqwest::Client, name: &ServerName) -> Destination {
        if let Some(d) = direct(name.as_str()) {
            return d;
        }
        if let Some((d, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name.as_str())
        {
            if at.elapsed() < CACHE_FOR {
                return d.clone();
            }
        }
        let d = match well_known(http, name.as_str()).await {
            Some(delegated) => direct(&delegated).unwrap_or(Destination {
                base: format!("https://{delegated}:{DEFAULT_PORT}"),
                host_header: delegated,
            }),
            None => Destination {
                base: format!("https://{name}:{DEFAULT_PORT}"),
                host_header: name.to_string(),
            },
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (d.clone(), Instant::now()));
        d
    }
}

async fn well_known(http: &reqwest::Client, host: &str) -> Option<String> {
    let resp = http
        .get(format!("https://{host}/.well-known/matrix/server"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: Value = resp.json().await.ok()?;
    let server = v.get("m.server")?.as_str()?;
    // The delegated name must itself be a valid server name.
    <&ServerName>::try_from(server).ok()?;
    Some(server.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_ports_need_no_lookup() {
        assert_eq!(split("[::1]:8448"), ("[::1]", Some(8448)));
        assert_eq!(split("[::1]"), ("[::1]", None));
        assert_eq!(split("example.org"), ("example.org", None));
        let d = direct("127.0.0.1:18448").unwrap();
        assert_eq!(d.base, "https://127.0.0.1:18448");
        assert_eq!(d.host_header, "127.0.0.1:18448");
        assert_eq!(direct("1.2.3.4").unwrap().base, "https://1.2.3.4:8448");
        assert_eq!(direct("[::1]").unwrap().base, "https://[::1]:8448");
        assert_eq!(
            direct("matrix.example.org:443").unwrap().host_header,
            "matrix.example.org:443"
        );
        assert!(direct("example.org").is_none());
    }
}
