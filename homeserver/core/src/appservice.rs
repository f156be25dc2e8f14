//! Application service registrations: the YAML file an operator gives both the homeserver and
//! the appservice, parsed and validated once, with the namespace questions both sides ask.
//!
//! Shared by the homeserver (which enforces the namespaces) and the appservice kit (which acts
//! inside them), so the two can never disagree on what a namespace matches.

use regex::Regex;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistrationError {
    #[error("not a valid registration: {0}")]
    Parse(String),
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`as_token` and `hs_token` must differ")]
    SameTokens,
    #[error("`sender_localpart` {0:?} is not a valid user localpart")]
    BadLocalpart(String),
    #[error("`url` {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("namespaces.{kind}[{index}].regex {regex:?}: {why}")]
    BadRegex {
        kind: &'static str,
        index: usize,
        regex: String,
        why: String,
    },
}

/// What the file says, as written. Unknown keys are ignored: files in the wild carry keys for
/// other servers, and a strict parser that refuses them breaks bridges.
#[derive(Debug, Deserialize)]
struct RawRegistration {
    id: String,
    #[serde(default)]
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: RawNamespaces,
    #[serde(default)]
    rate_limited: Option<bool>,
    #[serde(default)]
    protocols: Option<Vec<String>>,
    #[serde(default)]
    receive_ephemeral: Option<bool>,
    /// MSC2409's unstable name; many files carry both.
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    push_ephemeral_unstable: Option<bool>,
    /// MSC3202: device masquerading, device lists and one-time key counts for the
    /// appservice's users.
    #[serde(default, rename = "org.matrix.msc3202")]
    msc3202: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawNamespaces {
    #[serde(default)]
    users: Option<Vec<RawNamespace>>,
    #[serde(default)]
    aliases: Option<Vec<RawNamespace>>,
    #[serde(default)]
    rooms: Option<Vec<RawNamespace>>,
}

#[derive(Debug, Deserialize)]
struct RawNamespace {
    #[serde(default)]
    exclusive: bool,
    regex: String,
}

/// One namespace entry, its regex compiled.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: Regex,
}

#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
}

/// A validated registration. Its `Debug` form leaves the tokens out: configurations get
/// printed and logged.
#[derive(Clone)]
pub struct Registration {
    pub id: String,
    /// `None`: the appservice wants no traffic.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    pub receive_ephemeral: bool,
    pub msc3202: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("as_token", &"<redacted>")
            .field("hs_token", &"<redacted>")
            .field("sender_localpart", &self.sender_localpart)
            .field("namespaces", &self.namespaces)
            .field("rate_limited", &self.rate_limited)
            .field("protocols", &self.protocols)
            .field("receive_ephemeral", &self.receive_ephemeral)
            .field("msc3202", &self.msc3202)
            .finish()
    }
}

/// Which kind of identifier a namespace question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Alias,
    Room,
}

impl Registration {
    /// Parse and validate a registration file's text (YAML, of which JSON is a subset).
    pub fn parse(text: &str) -> Result<Self, RegistrationError> {
        let raw: RawRegistration =
            serde_yaml::from_str(text).map_err(|e| RegistrationError::Parse(e.to_string()))?;
        for (name, v) in [
            ("id", &raw.id),
            ("as_token", &raw.as_token),
            ("hs_token", &raw.hs_token),
            ("sender_localpart", &raw.sender_localpart),
        ] {
            if v.trim().is_empty() {
                return Err(RegistrationError::Empty(name));
            }
        }
        if raw.as_token == raw.hs_token {
            return Err(RegistrationError::SameTokens);
        }
        if !valid_localpart(&raw.sender_localpart) {
            return Err(RegistrationError::BadLocalpart(raw.sender_localpart));
        }
        // A YAML `url: null` is "no traffic"; so is an empty string, as some generators write.
        let url = raw.url.filter(|u| !u.is_empty());
        if let Some(u) = &url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(RegistrationError::BadUrl(u.clone()));
            }
        }
        let compile = |kind: &'static str, list: Option<Vec<RawNamespace>>| {
            list.unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(index, ns)| {
                    // Anchored at the start like Python's `re.match`, which is what the
                    // registrations in the wild were written against.
                    Regex::new(&format!("^(?:{})", ns.regex))
                        .map(|regex| Namespace {
                            exclusive: ns.exclusive,
                            regex,
                        })
                        .map_err(|e| RegistrationError::BadRegex {
                            kind,
                            index,
                            regex: ns.regex.clone(),
                            why: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let namespaces = Namespaces {
            users: compile("users", raw.namespaces.users)?,
            aliases: compile("aliases", raw.namespaces.aliases)?,
            rooms: compile("rooms", raw.namespaces.rooms)?,
        };
        Ok(Registration {
            id: raw.id,
            url: url.map(|u| u.trim_end_matches('/').to_owned()),
            as_token: raw.as_token,
            hs_token: raw.hs_token,
            sender_localpart: raw.sender_localpart,
            namespaces,
            rate_limited: raw.rate_limited.unwrap_or(true),
            protocols: raw.protocols.unwrap_or_default(),
            receive_ephemeral: raw.receive_ephemeral.unwrap_or(false)
                || raw.push_ephemeral_unstable.unwrap_or(false),
            msc3202: raw.msc3202.unwrap_or(false),
        })
    }

    fn list(&self, kind: Kind) -> &[Namespace] {
        match kind {
            Kind::User => &self.namespaces.users,
            Kind::Alias => &self.namespaces.aliases,
            Kind::Room => &self.namespaces.rooms,
        }
    }

    /// Whether `id` falls in any of the appservice's namespaces of this kind.
    pub fn matches(&self, kind: Kind, id: &str) -> bool {
        self.list(kind).iter().any(|n| n.regex.is_match(id))
    }

    /// Whether `id` falls in an exclusive namespace of this kind: nobody else may claim it.
    pub fn exclusive(&self, kind: Kind, id: &str) -> bool {
        self.list(kind)
            .iter()
            .any(|n| n.exclusive && n.regex.is_match(id))
    }

    /// The appservice's own user on `server`.
    pub fn sender(&self, server: &str) -> String {
        format!("@{}:{server}", self.sender_localpart)
    }

    /// Whether the appservice may act as `user_id` (of this server): its sender, or any user
    /// in its user namespaces.
    pub fn may_act_as(&self, user_id: &str, server: &str) -> bool {
        user_id == self.sender(server) || self.matches(Kind::User, user_id)
    }
}

/// The characters the spec allows in a new user's localpart.
pub fn valid_localpart(l: &str) -> bool {
    !l.is_empty()
        && l.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r##"
id: irc
url: "http://127.0.0.1:9000/"
as_token: "secret-as"
hs_token: "secret-hs"
sender_localpart: _irc_bot
rate_limited: false
receive_ephemeral: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
some.other.server.key: 7
protocols: ["irc"]
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_.*:example\\.org"
  aliases:
    - exclusive: false
      regex: "#_irc_.*"
"##;

    #[test]
    fn parses_both_ephemeral_names_and_ignores_unknown_keys() {
        let r = Registration::parse(FILE).unwrap();
        assert_eq!(r.id, "irc");
        assert_eq!(r.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(r.receive_ephemeral, "either name switches ephemeral on");
        assert!(r.msc3202);
        assert!(!r.rate_limited);
        assert_eq!(r.protocols, vec!["irc"]);
        assert!(r.namespaces.rooms.is_empty());
        let shown = format!("{r:?}");
        assert!(!shown.contains("secret-"), "tokens never printed: {shown}");
    }

    #[test]
    fn namespaces_are_anchored_at_the_start() {
        let r = Registration::parse(FILE).unwrap();
        assert!(r.exclusive(Kind::User, "@_irc_alice:example.org"));
        assert!(!r.matches(Kind::User, "@x_irc_alice:example.org"));
        assert!(r.matches(Kind::Alias, "#_irc_chan:example.org"));
        assert!(!r.exclusive(Kind::Alias, "#_irc_chan:example.org"));
        assert!(r.may_act_as("@_irc_bot:example.org", "example.org"));
        assert!(!r.may_act_as("@alice:example.org", "example.org"));
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let swap = |from: &str, to: &str| Registration::parse(&FILE.replace(from, to));
        assert_eq!(
            swap("secret-hs", "secret-as").unwrap_err(),
            RegistrationError::SameTokens
        );
        assert!(matches!(
            swap("@_irc_.*", "@_irc_(").unwrap_err(),
            RegistrationError::BadRegex {
                kind: "users",
                index: 0,
                ..
            }
        ));
        assert!(matches!(
            swap("_irc_bot", "Bad Bot").unwrap_err(),
            RegistrationError::BadLocalpart(_)
        ));
        assert!(matches!(
            swap("http://127.0.0.1:9000/", "ftp://x").unwrap_err(),
            RegistrationError::BadUrl(_)
        ));
        assert!(matches!(
            swap("id: irc", "").unwrap_err(),
            RegistrationError::Parse(_)
        ));
        assert_eq!(
            Registration::parse(&FILE.replace("url: \"http://127.0.0.1:9000/\"", "url: null"))
                .unwrap()
                .url,
            None
        );
    }
}
