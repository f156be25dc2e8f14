//! Server discovery (spec: "Resolving server names"): IP literals, explicit ports,
//! `/.well-known/matrix/server` delegation, SRV records (`_matrix-fed._tcp`, then the
//! deprecated `_matrix._tcp`), then port 8448. Results are cached for an hour.
//!
//! An SRV target is reached through [`SrvTargets`]: the URL keeps the server's own host name
//! (so TLS checks the certificate against it, as the spec requires) and the guarded DNS
//! resolver connects to the target's addresses instead.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_resolver::{proto::rr::RData, TokioResolver};
use ruma::ServerName;
use serde_json::Value;

/// Host name → the SRV target to connect to for it.
pub type SrvTargets = Arc<Mutex<HashMap<String, String>>>;

const CACHE_FOR: Duration = Duration::from_secs(3600);
const DEFAULT_PORT: u16 = 8448;

/// Where to connect for a server name, and the `Host` it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `https://host:port`
    pub base: String,
    pub host_header: String,
}

pub struct Resolver {
    cache: Mutex<HashMap<String, (Destination, Instant)>>,
    dns: Option<TokioResolver>,
    pub targets: SrvTargets,
}

impl Default for Resolver {
    fn default() -> Self {
        let dns = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| tracing::warn!(error = %e, "no DNS resolver: SRV records are not used"))
            .ok();
        Self {
            cache: Mutex::default(),
            dns,
            targets: SrvTargets::default(),
        }
    }
}

/// Where a name goes after steps 1 and 2: its SRV record's target and port (connecting to the
/// target while naming `host`), else port 8448 of `host` itself.
fn via_srv(host: &str, srv: Option<(String, u16)>) -> (Destination, Option<String>) {
    match srv {
        Some((target, port)) => (
            Destination {
                base: format!("https://{host}:{port}"),
                host_header: host.to_owned(),
            },
            Some(target),
        ),
        None => (
            Destination {
                base: format!("https://{host}:{DEFAULT_PORT}"),
                host_header: host.to_owned(),
            },
            None,
        ),
    }
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
        let host = well_known(http, name.as_str())
            .await
            .unwrap_or_else(|| name.to_string());
        let d = match direct(&host) {
            Some(d) => d,
            None => {
                let (d, target) = via_srv(&host, self.srv(&host).await);
                let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
                match target {
                    Some(t) => targets.insert(host.clone(), t),
                    None => targets.remove(&host),
                };
                d
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (d.clone(), Instant::now()));
        d
    }
}

impl Resolver {
    /// The best `_matrix-fed._tcp` record of `host`, else the best deprecated `_matrix._tcp` one.
    async fn srv(&self, host: &str) -> Option<(String, u16)> {
        let dns = self.dns.as_ref()?;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let name = format!("{service}.{host}.");
            let Ok(found) = dns
                .lookup(name.as_str(), hickory_resolver::proto::rr::RecordType::SRV)
                .await
            else {
                continue;
            };
            let best = found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv),
                    _ => None,
                })
                .min_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
            if let Some(srv) = best {
                let target = srv.target.to_ascii();
                let target = target.trim_end_matches('.');
                if !target.is_empty() {
                    return Some((target.to_owned(), srv.port));
                }
            }
        }
        None
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

    #[test]
    fn srv_targets_keep_the_server_name_for_tls() {
        let (d, target) = via_srv("example.org", Some(("matrix.host.net".into(), 8443)));
        assert_eq!(d.base, "https://example.org:8443");
        assert_eq!(d.host_header, "example.org");
        assert_eq!(target.as_deref(), Some("matrix.host.net"));
        let (d, target) = via_srv("example.org", None);
        assert_eq!(d.base, "https://example.org:8448");
        assert!(target.is_none());
    }
}
