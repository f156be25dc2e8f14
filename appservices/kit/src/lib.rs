//! The kit Plexus's appservices (git bridge, kanban, AI bot) are built on.
//!
//! It speaks only the standard Application Service API (the homeserver calls us) and
//! Client-Server API (we call the homeserver, as the appservice), so every appservice built on
//! it runs against any homeserver, Synapse included.
//!
//! - [`registration::load`] reads the registration file both sides are given.
//! - [`AppService::router`] / [`AppService::serve`]: the endpoints the homeserver calls, handing
//!   transactions (deduplicated, in order) to a [`Handler`].
//! - [`AppService::intent`]: act as the bot or any namespaced user, through a [`Client`] that
//!   retries what is worth retrying and reports Matrix errors with their `errcode`.
//! - [`Command::parse`]: `!command args` messages.
//!
//! ```no_run
//! use plexus_appservice::{registration, AppService, Command, Handler, HandlerError, Transaction, TxnStore};
//!
//! struct Echo(AppService);
//!
//! impl Handler for Echo {
//!     async fn transaction(&self, txn: Transaction) -> Result<(), HandlerError> {
//!         for ev in &txn.events {
//!             let Some(cmd) = Command::from_event(ev, "!") else { continue };
//!             let room = ev["room_id"].as_str().unwrap_or_default();
//!             if cmd.name == "echo" {
//!                 self.0.bot().send_notice(room, &cmd.rest).await?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
//! let reg = registration::load("echo-registration.yaml")?;
//! let service = AppService::new(reg, "http://127.0.0.1:8008", "example.org")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! let store = TxnStore::open("echo-txns.log", 10_000).await?;
//! service.serve(listener, Echo(service.clone()), store).await?;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod command;
pub mod error;
pub mod intent;
pub mod registration;
pub mod server;
pub mod transaction;
pub mod txn_store;

#[cfg(test)]
mod server_tests;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use ruma::api::client::appservice::{request_ping, set_room_visibility};
use ruma::api::client::room::Visibility;
use ruma::OwnedRoomId;

pub use client::{Body, Client, Method, RetryPolicy};
pub use command::Command;
pub use error::{Error, HandlerError, MatrixError};
pub use intent::{Intent, ResolvedAlias};
pub use registration::{Kind, Registration};
pub use server::{router, unrecognized, Handler};
pub use transaction::{DeviceLists, Transaction};
pub use txn_store::TxnStore;

/// One appservice: its registration, the homeserver it talks to, and what it remembers
/// (registered users, transaction ids for its sends). Cheap to clone; clones share all of it.
#[derive(Clone)]
pub struct AppService {
    inner: Arc<Inner>,
}

struct Inner {
    registration: Registration,
    server_name: String,
    client: Client,
    registered: Mutex<HashSet<String>>,
    /// Per process, so transaction ids never repeat across restarts (a repeated id would be
    /// taken by the homeserver as a retry and the message silently dropped).
    txn_prefix: String,
    txn_counter: AtomicU64,
}

/// Without the tokens, which `Registration`'s own `Debug` would print into logs.
impl fmt::Debug for AppService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppService")
            .field("id", &self.inner.registration.id)
            .field("server_name", &self.inner.server_name)
            .field("homeserver", &self.inner.client.base_url().as_str())
            .finish()
    }
}

impl AppService {
    /// `homeserver_url` is the client API base (e.g. `http://127.0.0.1:8008`); `server_name` the
    /// homeserver's name, the part after `:` in its user ids.
    pub fn new(
        registration: Registration,
        homeserver_url: &str,
        server_name: &str,
    ) -> Result<Self, Error> {
        Self::with_retry_policy(
            registration,
            homeserver_url,
            server_name,
            RetryPolicy::default(),
        )
    }

    /// [`AppService::new`] with another retry policy than the default.
    pub fn with_retry_policy(
        registration: Registration,
        homeserver_url: &str,
        server_name: &str,
        policy: RetryPolicy,
    ) -> Result<Self, Error> {
        let client = Client::new(homeserver_url, &registration.as_token, policy)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(AppService {
            inner: Arc::new(Inner {
                registration,
                server_name: server_name.to_owned(),
                client,
                registered: Mutex::new(HashSet::new()),
                txn_prefix: format!("pxas{nanos:x}"),
                txn_counter: AtomicU64::new(0),
            }),
        })
    }

    pub fn registration(&self) -> &Registration {
        &self.inner.registration
    }

    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// The client, authenticated as the appservice (no `user_id`: acts as the bot).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The appservice's own user, `@{sender_localpart}:{server_name}`.
    pub fn bot_user_id(&self) -> String {
        self.inner.registration.sender(&self.inner.server_name)
    }

    /// Whether the appservice may act as `user_id`: its bot, or a user in its namespaces on
    /// this server.
    pub fn may_act_as(&self, user_id: &str) -> bool {
        let suffix_ok = user_id
            .split_once(':')
            .is_some_and(|(l, server)| l.starts_with('@') && server == self.inner.server_name);
        suffix_ok
            && self
                .inner
                .registration
                .may_act_as(user_id, &self.inner.server_name)
    }

    /// Act as `user_id`. Refused here, before any request, if the appservice may not
    /// ([`AppService::may_act_as`]).
    pub fn intent(&self, user_id: &str) -> Result<Intent, Error> {
        if !self.may_act_as(user_id) {
            return Err(Error::NotInNamespace {
                user_id: user_id.to_owned(),
            });
        }
        Ok(Intent::new(self.clone(), user_id.to_owned()))
    }

    /// Act as the appservice's own user.
    pub fn bot(&self) -> Intent {
        Intent::new(self.clone(), self.bot_user_id())
    }

    pub(crate) fn is_registered(&self, user_id: &str) -> bool {
        self.inner
            .registered
            .lock()
            .map(|s| s.contains(user_id))
            .unwrap_or(false)
    }

    pub(crate) fn mark_registered(&self, user_id: &str) {
        if let Ok(mut s) = self.inner.registered.lock() {
            s.insert(user_id.to_owned());
        }
    }

    /// A transaction id no other send of this appservice uses.
    pub fn next_txn_id(&self) -> String {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.inner.txn_prefix)
    }

    /// Ask the homeserver to ping us (`POST /_matrix/client/v1/appservice/{id}/ping`), which
    /// checks both directions: our `as_token` there, its `hs_token` and our URL here. The
    /// round trip in milliseconds as the homeserver measured it. Not retried: it reports how
    /// things are now (a 502 `M_CONNECTION_FAILED` means the homeserver could not reach us).
    pub async fn ping(&self) -> Result<u64, Error> {
        let mut request = request_ping::v1::Request::new(self.inner.registration.id.clone());
        request.transaction_id = Some(self.next_txn_id().into());
        let response = self
            .inner
            .client
            .with_policy(RetryPolicy::no_retries())
            .send(request, None)
            .await?;
        Ok(u64::try_from(response.duration.as_millis()).unwrap_or(u64::MAX))
    }

    /// Publish the room in (or remove it from) the appservice's room directory for
    /// `network_id` (one of its protocols' networks).
    pub async fn set_room_directory_visibility(
        &self,
        network_id: &str,
        room_id: &str,
        public: bool,
    ) -> Result<(), Error> {
        let room_id = OwnedRoomId::try_from(room_id).map_err(|e| Error::InvalidRequest {
            what: format!("room id {room_id:?}"),
            why: e.to_string(),
        })?;
        let visibility = if public {
            Visibility::Public
        } else {
            Visibility::Private
        };
        let request =
            set_room_visibility::v3::Request::new(network_id.to_owned(), room_id, visibility);
        self.inner.client.send(request, None).await.map(drop)
    }

    /// The endpoints the homeserver calls, checking this registration's `hs_token`, with
    /// transaction ids remembered in memory (see [`router`]).
    pub fn router<H: Handler>(&self, handler: H) -> Router {
        self.router_with_store(handler, TxnStore::default())
    }

    /// [`AppService::router`] with a given store, e.g. [`TxnStore::open`] to remember handled
    /// transactions across restarts.
    pub fn router_with_store<H: Handler>(&self, handler: H, store: TxnStore) -> Router {
        router(&self.inner.registration.hs_token, handler, store)
    }

    /// Serve the endpoints on `listener` until the server fails, answering other paths 404
    /// `M_UNRECOGNIZED`.
    pub async fn serve<H: Handler>(
        &self,
        listener: tokio::net::TcpListener,
        handler: H,
        store: TxnStore,
    ) -> std::io::Result<()> {
        let app = self
            .router_with_store(handler, store)
            .fallback(unrecognized);
        axum::serve(listener, app).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> AppService {
        let reg = Registration::parse(
            r#"
id: kit
url: http://127.0.0.1:9
as_token: as
hs_token: hs
sender_localpart: kitbot
namespaces:
  users: [{exclusive: true, regex: "@_kit_.*:hs\\.test"}]
"#,
        )
        .unwrap();
        AppService::new(reg, "http://127.0.0.1:9", "hs.test").unwrap()
    }

    #[test]
    fn intents_only_inside_the_namespace() {
        let s = service();
        assert_eq!(s.bot_user_id(), "@kitbot:hs.test");
        assert!(s.bot().is_bot());
        let ghost = s.intent("@_kit_alice:hs.test").unwrap();
        assert_eq!(ghost.localpart(), "_kit_alice");
        assert!(!ghost.is_bot());
        assert!(s.intent("@kitbot:hs.test").unwrap().is_bot());
        for outside in [
            "@alice:hs.test",
            "@_kit_alice:other.test",
            "@_kit_alice:hs.test.evil",
            "_kit_alice:hs.test",
            "@kitbot:other",
        ] {
            assert!(
                matches!(s.intent(outside), Err(Error::NotInNamespace { .. })),
                "{outside}"
            );
        }
    }

    #[test]
    fn txn_ids_are_unique_and_debug_hides_tokens() {
        let s = service();
        assert_ne!(s.next_txn_id(), s.next_txn_id());
        let shown = format!("{s:?} {:?}", s.client());
        assert!(
            !shown.contains("\"as\"") && !shown.contains("hs_token"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn refusal_happens_before_any_request() {
        // The homeserver URL points nowhere: an attempt would be a transport error instead.
        let s = service();
        let err = s.intent("@alice:hs.test").unwrap_err();
        assert!(matches!(err, Error::NotInNamespace { .. }));
        assert_eq!(
            err.to_string(),
            "@alice:hs.test is not a user this appservice may act as"
        );
    }
}
