//! Configuration: embedded defaults, then the TOML file, then `PLEXUS_*` environment overrides,
//! validated once at start-up with errors that name the key.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {why}")]
    Read { path: String, why: String },
    #[error("config file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationPolicy {
    Disabled,
    Token,
    Open,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The server name in user ids and room aliases (`@alice:<server_name>`).
    pub server_name: String,
    /// Where sled, media and the search index live.
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub registration: RegistrationConfig,
    pub limits: Limits,
    pub rate_limits: crate::service::ratelimit::RateLimits,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub federation: FederationConfig,
    pub media: MediaConfig,
    pub push: PushConfig,
    pub appservice: AppserviceConfig,
    pub turn: TurnConfig,
    /// The server's ed25519 signing key file (`<version> <base64 PKCS#8>`), created on first
    /// start if missing. Absent: the key lives in the store.
    pub signing_key_path: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Federation listener (TLS), `host:port`. Federation is off (no inbound or outbound
    /// traffic at all) unless this is set.
    pub listen: Option<String>,
    /// PEM certificate chain and private key; both absent: a self-signed pair is generated in
    /// the data dir on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Verify peers' TLS certificates. Only test networks turn this off.
    pub verify_tls: bool,
    /// Allow talking to peers on 127.0.0.0/8 and ::1 (test networks); off, loopback and other
    /// private destinations are refused so remote input cannot aim us at internal services.
    pub allow_loopback: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: None,
            tls_cert: None,
            tls_key: None,
            verify_tls: true,
            allow_loopback: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest file accepted from a client or fetched from another server, in bytes.
    pub max_upload_bytes: u64,
    /// How long a media id reserved with `/media/v1/create` waits for its upload, in seconds.
    pub unused_expiry_secs: u64,
    /// Reserved ids one user may hold at a time before `/media/v1/create` answers 429.
    pub max_pending_uploads: usize,
    /// Bytes one user may upload in all; 0: no quota.
    pub max_bytes_per_user: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            unused_expiry_secs: 24 * 3600,
            max_pending_uploads: 10,
            max_bytes_per_user: 0,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Allow push gateways on 127.0.0.0/8 and ::1 (a gateway on the same host, tests). Off,
    /// loopback and private addresses are refused, so a pusher URL cannot aim this server at
    /// internal services.
    pub allow_loopback: bool,
}

/// The TURN server that clients relay VoIP media through (`/voip/turnServer`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// URIs given to clients, e.g. `turn:turn.example.org:3478?transport=udp`. Empty: no TURN
    /// server, and `/voip/turnServer` answers `{}` (clients then try without one).
    pub uris: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`): each user gets
    /// credentials that expire after `user_lifetime_secs`.
    pub shared_secret: Option<String>,
    /// Fixed credentials, for a TURN server without a shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long credentials stay valid.
    pub user_lifetime_secs: u64,
}

/// Without the secret and the password: settings get logged.
impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("TurnConfig")
            .field("uris", &self.uris)
            .field("shared_secret", &hidden(&self.shared_secret))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("user_lifetime_secs", &self.user_lifetime_secs)
            .finish()
    }
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: vec![],
            shared_secret: None,
            username: None,
            password: None,
            user_lifetime_secs: 3600,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppserviceConfig {
    /// Registration files (YAML) of the application services this server talks to.
    pub registrations: Vec<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// Client-server API, `host:port`.
    pub client: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// `disabled`, `token` or `open`. Absent: `open` on a loopback listener, else `disabled`.
    pub policy: Option<RegistrationPolicy>,
    /// Tokens accepted by the `m.login.registration_token` stage when `policy = "token"`.
    pub tokens: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Largest `limit` a client may ask of `/messages` and friends.
    pub max_page: usize,
    /// Writes are refused (503) while the data dir's disk has fewer bytes free; 0: never.
    pub min_free_disk_bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `plexus=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Lifetime of access tokens issued together with a refresh token, in seconds.
    pub refreshable_token_lifetime_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            data_dir: PathBuf::from("./plexus-data"),
            listeners: Listeners::default(),
            registration: RegistrationConfig::default(),
            limits: Limits::default(),
            rate_limits: Default::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            federation: FederationConfig::default(),
            media: MediaConfig::default(),
            push: PushConfig::default(),
            appservice: AppserviceConfig::default(),
            turn: TurnConfig::default(),
            signing_key_path: None,
        }
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            client: "127.0.0.1:8008".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 65_536,
            max_page: 1000,
            min_free_disk_bytes: 100 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refreshable_token_lifetime_secs: 300,
        }
    }
}

/// The validated, ready-to-use configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server_name: ruma::OwnedServerName,
    pub data_dir: PathBuf,
    pub client_listen: SocketAddr,
    pub registration: RegistrationPolicy,
    pub registration_tokens: Vec<String>,
    pub max_request_bytes: usize,
    pub max_page: usize,
    pub rate_limits: crate::service::ratelimit::RateLimits,
    pub min_free_disk_bytes: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    pub refreshable_token_lifetime_ms: u64,
    /// `None`: federation is switched off.
    pub federation: Option<FederationSettings>,
    pub signing_key_path: Option<PathBuf>,
    pub media: MediaConfig,
    pub push: PushConfig,
    pub turn: TurnConfig,
    /// Loaded and validated registrations, in the order configured.
    pub appservices: Vec<std::sync::Arc<plexus_core::appservice::Registration>>,
}

#[derive(Clone, Debug)]
pub struct FederationSettings {
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub verify_tls: bool,
    pub allow_loopback: bool,
}

impl Config {
    /// Defaults, then the file (if any), then environment overrides.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    why: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    why: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("PLEXUS_SERVER_NAME") {
            self.server_name = v;
        }
        if let Some(v) = var("PLEXUS_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("PLEXUS_CLIENT_LISTEN") {
            self.listeners.client = v;
        }
        if let Some(v) = var("PLEXUS_REGISTRATION") {
            self.registration.policy = Some(match v.as_str() {
                "disabled" => RegistrationPolicy::Disabled,
                "token" => RegistrationPolicy::Token,
                "open" => RegistrationPolicy::Open,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "PLEXUS_REGISTRATION",
                        why: format!("`{other}` is not one of disabled, token, open"),
                    })
                }
            });
        }
        if let Some(v) = var("PLEXUS_REGISTRATION_TOKEN") {
            self.registration.tokens.push(v);
        }
        if let Some(v) = var("PLEXUS_RATE_LIMITS") {
            self.rate_limits.enabled = match v.as_str() {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "PLEXUS_RATE_LIMITS",
                        why: format!("`{other}` is not one of on, off"),
                    })
                }
            };
        }
        if let Some(v) = var("PLEXUS_MIN_FREE_DISK_BYTES") {
            self.limits.min_free_disk_bytes = v.parse().map_err(|e| ConfigError::Invalid {
                key: "PLEXUS_MIN_FREE_DISK_BYTES",
                why: format!("not a number of bytes: {e}"),
            })?;
        }
        if let Some(v) = var("PLEXUS_LOG") {
            self.log.level = v;
        }
        if let Some(v) = var("PLEXUS_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "PLEXUS_LOG_FORMAT",
                        why: format!("{v:?} is neither \"pretty\" nor \"json\""),
                    })
                }
            };
        }
        if let Some(v) = var("PLEXUS_SIGNING_KEY_PATH") {
            self.signing_key_path = Some(v.into());
        }
        if let Some(v) = var("PLEXUS_MEDIA_MAX_UPLOAD_BYTES") {
            self.media.max_upload_bytes = v.parse().map_err(|e| ConfigError::Invalid {
                key: "PLEXUS_MEDIA_MAX_UPLOAD_BYTES",
                why: format!("not a number of bytes: {e}"),
            })?;
        }
        if let Some(v) = var("PLEXUS_MEDIA_MAX_BYTES_PER_USER") {
            self.media.max_bytes_per_user = v.parse().map_err(|e| ConfigError::Invalid {
                key: "PLEXUS_MEDIA_MAX_BYTES_PER_USER",
                why: format!("not a number of bytes: {e}"),
            })?;
        }
        if let Some(v) = var("PLEXUS_PUSH_ALLOW_LOOPBACK") {
            self.push.allow_loopback = parse_bool("PLEXUS_PUSH_ALLOW_LOOPBACK", &v)?;
        }
        if let Some(v) = var("PLEXUS_TURN_URIS") {
            self.turn.uris = v
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("PLEXUS_TURN_SHARED_SECRET") {
            self.turn.shared_secret = Some(v);
        }
        if let Some(v) = var("PLEXUS_FEDERATION_LISTEN") {
            self.federation.listen = Some(v);
        }
        if let Some(v) = var("PLEXUS_TLS_CERT") {
            self.federation.tls_cert = Some(v.into());
        }
        if let Some(v) = var("PLEXUS_TLS_KEY") {
            self.federation.tls_key = Some(v.into());
        }
        if let Some(v) = var("PLEXUS_FEDERATION_VERIFY_TLS") {
            self.federation.verify_tls = parse_bool("PLEXUS_FEDERATION_VERIFY_TLS", &v)?;
        }
        if let Some(v) = var("PLEXUS_FEDERATION_ALLOW_LOOPBACK") {
            self.federation.allow_loopback = parse_bool("PLEXUS_FEDERATION_ALLOW_LOOPBACK", &v)?;
        }
        if let Some(v) = var("PLEXUS_APPSERVICE_REGISTRATIONS") {
            self.appservice.registrations = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let server_name =
            ruma::OwnedServerName::try_from(self.server_name.as_str()).map_err(|e| {
                ConfigError::Invalid {
                    key: "server_name",
                    why: format!("not a valid server name: {e}"),
                }
            })?;
        let client_listen: SocketAddr =
            self.listeners
                .client
                .parse()
                .map_err(|e| ConfigError::Invalid {
                    key: "listeners.client",
                    why: format!("expected host:port: {e}"),
                })?;
        let loopback = client_listen.ip().is_loopback();
        let registration = match self.registration.policy {
            Some(p) => p,
            None if loopback => RegistrationPolicy::Open,
            None => RegistrationPolicy::Disabled,
        };
        if registration == RegistrationPolicy::Open && !loopback {
            return Err(ConfigError::Invalid {
                key: "registration.policy",
                why: "`open` registration is only allowed on a loopback client listener; use \
                      `token` (with registration.tokens) or create users with `plexus create-user`"
                    .into(),
            });
        }
        if registration == RegistrationPolicy::Token && self.registration.tokens.is_empty() {
            return Err(ConfigError::Invalid {
                key: "registration.tokens",
                why: "policy `token` needs at least one token".into(),
            });
        }
        if self.limits.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_request_bytes",
                why: "must be at least 1024".into(),
            });
        }
        self.rate_limits
            .validate()
            .map_err(|why| ConfigError::Invalid {
                key: "rate_limits",
                why,
            })?;
        if self.limits.max_page == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_page",
                why: "must be > 0".into(),
            });
        }
        if self.media.max_upload_bytes == 0 || self.media.unused_expiry_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "media",
                why: "max_upload_bytes and unused_expiry_secs must be > 0".into(),
            });
        }
        if self.auth.refreshable_token_lifetime_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.refreshable_token_lifetime_secs",
                why: "must be > 0".into(),
            });
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::Invalid {
                key: "log.level",
                why: e.to_string(),
            }
        })?;
        let federation = match &self.federation.listen {
            None => None,
            Some(l) => {
                let listen = l.parse().map_err(|e| ConfigError::Invalid {
                    key: "federation.listen",
                    why: format!("expected host:port: {e}"),
                })?;
                let f = &self.federation;
                if f.tls_cert.is_some() != f.tls_key.is_some() {
                    return Err(ConfigError::Invalid {
                        key: "federation.tls_cert",
                        why: "tls_cert and tls_key go together".into(),
                    });
                }
                for (key, p) in [
                    ("federation.tls_cert", &f.tls_cert),
                    ("federation.tls_key", &f.tls_key),
                ] {
                    if let Some(p) = p {
                        if !p.is_file() {
                            return Err(ConfigError::Invalid {
                                key,
                                why: format!("{} is not a readable file", p.display()),
                            });
                        }
                    }
                }
                Some(FederationSettings {
                    listen,
                    tls_cert: f.tls_cert.clone(),
                    tls_key: f.tls_key.clone(),
                    verify_tls: f.verify_tls,
                    allow_loopback: f.allow_loopback,
                })
            }
        };
        let appservices = load_registrations(&self.appservice.registrations)?;
        let t = &self.turn;
        if !t.uris.is_empty()
            && t.shared_secret.is_none()
            && (t.username.is_none() || t.password.is_none())
        {
            return Err(ConfigError::Invalid {
                key: "turn.uris",
                why: "a TURN server needs shared_secret, or username and password".into(),
            });
        }
        if let Some(u) = t.uris.iter().find(|u| {
            !["turn:", "turns:", "stun:"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return Err(ConfigError::Invalid {
                key: "turn.uris",
                why: format!("`{u}` is not a turn:, turns: or stun: URI"),
            });
        }
        Ok(Settings {
            server_name,
            data_dir: self.data_dir.clone(),
            client_listen,
            registration,
            registration_tokens: self.registration.tokens.clone(),
            max_request_bytes: self.limits.max_request_bytes,
            max_page: self.limits.max_page,
            rate_limits: self.rate_limits.clone(),
            min_free_disk_bytes: self.limits.min_free_disk_bytes,
            log_level: self.log.level.clone(),
            log_format: self.log.format,
            refreshable_token_lifetime_ms: self.auth.refreshable_token_lifetime_secs * 1000,
            federation,
            signing_key_path: self.signing_key_path.clone(),
            media: self.media.clone(),
            push: self.push.clone(),
            turn: self.turn.clone(),
            appservices,
        })
    }
}

/// Every registration file, parsed and checked against the others: ids, tokens and sender users
/// must be unique, or requests could not be told apart.
fn load_registrations(
    paths: &[PathBuf],
) -> Result<Vec<std::sync::Arc<plexus_core::appservice::Registration>>, ConfigError> {
    let mut out: Vec<std::sync::Arc<plexus_core::appservice::Registration>> = vec![];
    for p in paths {
        let bad = |why: String| ConfigError::Parse {
            path: p.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
            path: p.display().to_string(),
            why: e.to_string(),
        })?;
        let reg =
            plexus_core::appservice::Registration::parse(&text).map_err(|e| bad(e.to_string()))?;
        for other in &out {
            let clash = if other.id == reg.id {
                Some("id")
            } else if [&other.as_token, &other.hs_token].contains(&&reg.as_token)
                || [&other.as_token, &other.hs_token].contains(&&reg.hs_token)
            {
                Some("as_token/hs_token")
            } else if other.sender_localpart == reg.sender_localpart {
                Some("sender_localpart")
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(bad(format!(
                    "`{what}` is the same as appservice `{}`'s",
                    other.id
                )));
            }
        }
        out.push(std::sync::Arc::new(reg));
    }
    Ok(out)
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ConfigError::Invalid {
            key,
            why: format!("`{other}` is not one of true, false"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_open_on_loopback() {
        let s = Config::default().validate().unwrap();
        assert_eq!(s.registration, RegistrationPolicy::Open);
        assert_eq!(s.client_listen.to_string(), "127.0.0.1:8008");
    }

    #[test]
    fn open_registration_refused_off_loopback() {
        let mut c = Config::default();
        c.listeners.client = "0.0.0.0:8008".into();
        assert_eq!(
            c.validate().unwrap().registration,
            RegistrationPolicy::Disabled
        );
        c.registration.policy = Some(RegistrationPolicy::Open);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("registration.policy"), "{err}");
    }

    #[test]
    fn env_overrides_and_bad_values_name_the_key() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "PLEXUS_SERVER_NAME" => Some("example.org".to_owned()),
            "PLEXUS_CLIENT_LISTEN" => Some("127.0.0.1:9999".to_owned()),
            "PLEXUS_REGISTRATION" => Some("token".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("registration.tokens"), "{err}");
        c.registration.tokens.push("t".into());
        let s = c.validate().unwrap();
        assert_eq!(s.server_name.as_str(), "example.org");
        assert_eq!(s.client_listen.port(), 9999);

        let mut c = Config::default();
        let err = c
            .apply_env(|k| (k == "PLEXUS_REGISTRATION").then(|| "yes".into()))
            .unwrap_err();
        assert!(err.to_string().contains("PLEXUS_REGISTRATION"));
        c.server_name = "bad name!".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server_name"));
    }

    #[test]
    fn a_turn_server_needs_credentials_and_turn_uris() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "PLEXUS_TURN_URIS").then(|| "turn:t.example.org".into()))
            .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("turn.uris") && err.contains("shared_secret"),
            "{err}"
        );
        c.turn.shared_secret = Some("s".into());
        assert_eq!(c.validate().unwrap().turn.uris, vec!["turn:t.example.org"]);
        c.turn.uris.push("http://t.example.org".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("http://t.example.org"), "{err}");
    }

    #[test]
    fn federation_is_off_unless_listening() {
        assert!(Config::default().validate().unwrap().federation.is_none());
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "PLEXUS_FEDERATION_LISTEN" => Some("127.0.0.1:8448".into()),
            "PLEXUS_FEDERATION_VERIFY_TLS" => Some("false".into()),
            "PLEXUS_FEDERATION_ALLOW_LOOPBACK" => Some("true".into()),
            _ => None,
        })
        .unwrap();
        let f = c.validate().unwrap().federation.unwrap();
        assert_eq!(f.listen.port(), 8448);
        assert!(!f.verify_tls && f.allow_loopback);
        let err = Config::default()
            .apply_env(|k| (k == "PLEXUS_FEDERATION_VERIFY_TLS").then(|| "no".into()))
            .unwrap_err();
        assert!(err.to_string().contains("PLEXUS_FEDERATION_VERIFY_TLS"));
        c.federation.tls_cert = Some("/nonexistent.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("federation.tls_cert"), "{err}");
    }

    #[test]
    fn unknown_keys_in_file_are_errors() {
        let err = toml::from_str::<Config>("servr_name = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("servr_name"), "{err}");
    }
}
