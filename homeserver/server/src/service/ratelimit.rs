//! Rate limits: a token bucket per (action, who). Abusable endpoints take a token before they
//! do any work and answer `M_LIMIT_EXCEEDED` with `retry_after_ms` when none is left. Failed
//! logins drain a bucket of their own per account, so password guessing against one account is
//! slow from any number of addresses.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// Why an action was refused: its bucket is empty.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("Too many requests")]
    LimitExceeded { retry_after_ms: u64 },
}

/// A bucket's shape: `burst` actions at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    const fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }
}

/// The limits, each configurable under `[rate_limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Off: no limit applies (test networks and benchmarks).
    pub enabled: bool,
    /// `POST /login` attempts per client address.
    pub login_per_ip: Rate,
    /// Failed password checks per account (login and user-interactive auth), from anywhere.
    pub failed_logins_per_account: Rate,
    /// `POST /register` requests per client address.
    pub register_per_ip: Rate,
    /// Events sent (messages, state, redactions) per user.
    pub events_per_user: Rate,
    /// Rooms created, joined, knocked on and invitations sent, per user.
    pub room_actions_per_user: Rate,
    /// Media uploads per user.
    pub uploads_per_user: Rate,
    /// Proxies whose `X-Forwarded-For` names the client (the addresses of a reverse proxy in
    /// front of Plexus). Other peers are limited by their own address.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            login_per_ip: Rate::new(0.5, 20.0),
            failed_logins_per_account: Rate::new(0.1, 5.0),
            register_per_ip: Rate::new(0.2, 20.0),
            events_per_user: Rate::new(10.0, 100.0),
            room_actions_per_user: Rate::new(1.0, 30.0),
            uploads_per_user: Rate::new(2.0, 30.0),
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }
}

impl RateLimits {
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("login_per_ip", self.login_per_ip),
            ("failed_logins_per_account", self.failed_logins_per_account),
            ("register_per_ip", self.register_per_ip),
            ("events_per_user", self.events_per_user),
            ("room_actions_per_user", self.room_actions_per_user),
            ("uploads_per_user", self.uploads_per_user),
        ] {
            if !(r.per_second > 0.0 && r.per_second.is_finite() && r.burst >= 1.0) {
                return Err(format!("{name}: per_second must be > 0 and burst >= 1"));
            }
        }
        Ok(())
    }
}

impl crate::service::Services {
    /// One action of a signed-in user under its per-user limit; appservices (bridges acting for
    /// many users) are not limited.
    pub fn limit_user(
        &self,
        s: &crate::service::accounts::Session,
        action: Action,
    ) -> Result<(), RateLimitError> {
        if s.appservice.is_some() {
            return Ok(());
        }
        self.limiter.check(action, s.user_id.as_str())
    }
}

/// What a bucket limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    LoginIp,
    FailedLogin,
    RegisterIp,
    Events,
    RoomActions,
    Uploads,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets beyond this many are pruned of the full ones (a full bucket is the same as none).
const MAX_BUCKETS: usize = 100_000;

pub struct Limiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate(&self, action: Action) -> Rate {
        let l = &self.limits;
        match action {
            Action::LoginIp => l.login_per_ip,
            Action::FailedLogin => l.failed_logins_per_account,
            Action::RegisterIp => l.register_per_ip,
            Action::Events => l.events_per_user,
            Action::RoomActions => l.room_actions_per_user,
            Action::Uploads => l.uploads_per_user,
        }
    }

    /// Take `cost` tokens (0 only looks) from the bucket of `who`, or say how long to wait.
    fn draw(&self, action: Action, who: &str, cost: f64) -> Result<(), RateLimitError> {
        if !self.limits.enabled {
            return Ok(());
        }
        let rate = self.rate(action);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|(a, _), b| {
                let r = self.rate(*a);
                b.tokens + now.duration_since(b.at).as_secs_f64() * r.per_second < r.burst
            });
        }
        let b = buckets.entry((action, who.to_owned())).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second).min(rate.burst);
        b.at = now;
        let needed = cost.max(1.0);
        if b.tokens >= needed {
            b.tokens -= cost;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((needed - b.tokens) / rate.per_second);
        Err(RateLimitError::LimitExceeded {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        })
    }

    /// One action of `who`: allowed, or `M_LIMIT_EXCEEDED`.
    pub fn check(&self, action: Action, who: &str) -> Result<(), RateLimitError> {
        self.draw(action, who, 1.0)
    }

    /// Whether `who` has a token left, without taking it (failed logins are charged after the
    /// password check, and only when it fails).
    pub fn peek(&self, action: Action, who: &str) -> Result<(), RateLimitError> {
        self.draw(action, who, 0.0)
    }

    /// Record one action that already happened, even if it empties the bucket.
    pub fn charge(&self, action: Action, who: &str) {
        let _ = self.draw(action, who, 1.0);
    }

    /// The client's address: the peer, or for a trusted proxy the last untrusted address of
    /// its `X-Forwarded-For` chain.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.limits.trusted_proxies.contains(ip);
        if !trusted(&peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        let hops: Vec<IpAddr> = chain
            .split(',')
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !trusted(ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_says_when() {
        let l = Limiter::new(RateLimits {
            login_per_ip: Rate::new(10.0, 3.0),
            ..RateLimits::default()
        });
        for _ in 0..3 {
            l.check(Action::LoginIp, "1.2.3.4").unwrap();
        }
        match l.check(Action::LoginIp, "1.2.3.4") {
            Err(RateLimitError::LimitExceeded { retry_after_ms }) => {
                assert!((1..=100).contains(&retry_after_ms), "{retry_after_ms}")
            }
            other => panic!("{other:?}"),
        }
        l.check(Action::LoginIp, "5.6.7.8").unwrap();
        std::thread::sleep(Duration::from_millis(120));
        l.check(Action::LoginIp, "1.2.3.4").unwrap();
    }

    #[test]
    fn peek_takes_nothing_and_charge_can_empty() {
        let l = Limiter::new(RateLimits {
            failed_logins_per_account: Rate::new(0.01, 2.0),
            ..RateLimits::default()
        });
        for _ in 0..5 {
            l.peek(Action::FailedLogin, "@a:x").unwrap();
        }
        l.charge(Action::FailedLogin, "@a:x");
        l.charge(Action::FailedLogin, "@a:x");
        assert!(l.peek(Action::FailedLogin, "@a:x").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = Limiter::new(RateLimits::default());
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let outside: IpAddr = "203.0.113.9".parse().unwrap();
        let claimed = Some("198.51.100.1, 203.0.113.7");
        assert_eq!(l.client_ip(outside, claimed), outside);
        assert_eq!(
            l.client_ip(proxy, claimed),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(l.client_ip(proxy, None), proxy);
        assert_eq!(l.client_ip(proxy, Some("127.0.0.1")), proxy);
    }
}
