//! Acting as one user: the appservice's own (its `sender_localpart`) or any in its user
//! namespaces, through the Client-Server API with the `as_token` and `?user_id=` (identity
//! assertion), so no per-user login or access token exists.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::{str_field, Body, Method};
use crate::error::Error;
use crate::AppService;

/// A user the appservice acts as. Cheap to clone. Made by [`AppService::intent`], which refuses
/// users outside the namespaces, so every request here is one the homeserver should allow.
#[derive(Clone, Debug)]
pub struct Intent {
    service: AppService,
    user_id: String,
}

/// Where an alias points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAlias {
    pub room_id: String,
    /// Servers that know the room, for joining over federation.
    pub servers: Vec<String>,
}

const V3: [&str; 3] = ["_matrix", "client", "v3"];

impl Intent {
    pub(crate) fn new(service: AppService, user_id: String) -> Self {
        Intent { service, user_id }
    }

    /// The user's id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The part between `@` and `:`.
    pub fn localpart(&self) -> &str {
        let rest = self.user_id.strip_prefix('@').unwrap_or(&self.user_id);
        rest.split_once(':').map_or(rest, |(l, _)| l)
    }

    /// Whether this is the appservice's own user (its `sender_localpart`).
    pub fn is_bot(&self) -> bool {
        self.user_id == self.service.bot_user_id()
    }

    /// A request as this user: the appservice's token, `?user_id=` naming the user.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<Value, Error> {
        let mut q = Vec::with_capacity(query.len() + 1);
        q.push(("user_id", self.user_id.as_str()));
        q.extend_from_slice(query);
        self.service
            .client()
            .request(method, segments, &q, body)
            .await
    }

    /// [`Intent::call`] after making sure the user exists: a ghost is created on first use.
    /// The appservice's own user is taken to exist (homeservers create it from the
    /// registration).
    async fn act(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<Value, Error> {
        if !self.is_bot() {
            self.ensure_registered().await?;
        }
        self.call(method, segments, query, body).await
    }

    /// `/_matrix/client/v3/...` as this user.
    async fn v3(&self, method: Method, path: &[&str], body: Body) -> Result<Value, Error> {
        let segments: Vec<&str> = V3.iter().chain(path).copied().collect();
        self.act(method, &segments, &[], body).await
    }

    /// Create the user if it does not exist yet (`M_USER_IN_USE` means it does). Remembered, so
    /// only the first call per user and process makes a request. The other methods call this
    /// themselves.
    pub async fn ensure_registered(&self) -> Result<(), Error> {
        if self.service.is_registered(&self.user_id) {
            return Ok(());
        }
        let body = json!({
            "type": "m.login.application_service",
            "username": self.localpart(),
            // The appservice never needs the access token a login would make.
            "inhibit_login": true,
        });
        // No `user_id` here: asserting a user that does not exist yet is refused by some servers.
        let segments: Vec<&str> = V3.iter().chain(&["register"]).copied().collect();
        match self
            .service
            .client()
            .request(Method::POST, &segments, &[], Body::Json(body))
            .await
        {
            Ok(_) => {}
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {}
            Err(e) => return Err(e),
        }
        self.service.mark_registered(&self.user_id);
        Ok(())
    }

    /// `POST /createRoom` with `body` as given; the new room's id.
    pub async fn create_room(&self, body: Value) -> Result<String, Error> {
        let v = self
            .v3(Method::POST, &["createRoom"], Body::Json(body))
            .await?;
        str_field(&v, "room_id", "createRoom")
    }

    /// Join a room by id or alias; the room's id.
    pub async fn join(&self, room_id_or_alias: &str) -> Result<String, Error> {
        self.join_via(room_id_or_alias, &[]).await
    }

    /// Join through the given servers (for rooms the homeserver is not in yet).
    pub async fn join_via(&self, room_id_or_alias: &str, via: &[&str]) -> Result<String, Error> {
        let segments: Vec<&str> = V3
            .iter()
            .chain(&["join", room_id_or_alias])
            .copied()
            .collect();
        // Both names: `via` is the current one, `server_name` what older servers read.
        let query: Vec<(&str, &str)> = via
            .iter()
            .flat_map(|s| [("via", *s), ("server_name", *s)])
            .collect();
        let v = self
            .act(Method::POST, &segments, &query, Body::Json(json!({})))
            .await?;
        str_field(&v, "room_id", "join")
    }

    /// Invite `user_id` to the room.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), Error> {
        self.v3(
            Method::POST,
            &["rooms", room_id, "invite"],
            Body::Json(json!({ "user_id": user_id })),
        )
        .await
        .map(drop)
    }

    /// Leave the room (or refuse an invite).
    pub async fn leave(&self, room_id: &str) -> Result<(), Error> {
        self.v3(
            Method::POST,
            &["rooms", room_id, "leave"],
            Body::Json(json!({})),
        )
        .await
        .map(drop)
    }

    /// Send an event; its id. The transaction id is fresh per call and kept across retries,
    /// so a retry after a lost answer does not send twice.
    pub async fn send_message(
        &self,
        room_id: &str,
        event_type: &str,
        content: Value,
    ) -> Result<String, Error> {
        let txn = self.service.next_txn_id();
        let v = self
            .v3(
                Method::PUT,
                &["rooms", room_id, "send", event_type, &txn],
                Body::Json(content),
            )
            .await?;
        str_field(&v, "event_id", "send")
    }

    /// Send an `m.text` message.
    pub async fn send_text(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_message(
            room_id,
            "m.room.message",
            json!({"msgtype": "m.text", "body": body}),
        )
        .await
    }

    /// Send an `m.notice`: what bots send, so other bots do not answer it.
    pub async fn send_notice(&self, room_id: &str, body: &str) -> Result<String, Error> {
        self.send_message(
            room_id,
            "m.room.message",
            json!({"msgtype": "m.notice", "body": body}),
        )
        .await
    }

    /// Path of a state event. An empty state key leaves the segment out, which the spec allows
    /// and which avoids a trailing slash that some routers do not match.
    fn state_path<'a>(room_id: &'a str, event_type: &'a str, state_key: &'a str) -> Vec<&'a str> {
        let mut p = vec!["rooms", room_id, "state", event_type];
        if !state_key.is_empty() {
            p.push(state_key);
        }
        p
    }

    /// Set a state event; its id.
    pub async fn set_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Result<String, Error> {
        let v = self
            .v3(
                Method::PUT,
                &Self::state_path(room_id, event_type, state_key),
                Body::Json(content),
            )
            .await?;
        str_field(&v, "event_id", "state")
    }

    /// A state event's content; `None` if the room has no such state (`M_NOT_FOUND`).
    pub async fn state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, Error> {
        match self
            .v3(
                Method::GET,
                &Self::state_path(room_id, event_type, state_key),
                Body::Empty,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set the user's display name.
    pub async fn set_displayname(&self, name: &str) -> Result<(), Error> {
        self.set_profile_field("displayname", name).await
    }

    /// Set the user's avatar (an `mxc://` URI, e.g. from [`Intent::upload`]).
    pub async fn set_avatar_url(&self, mxc: &str) -> Result<(), Error> {
        self.set_profile_field("avatar_url", mxc).await
    }

    async fn set_profile_field(&self, field: &str, value: &str) -> Result<(), Error> {
        let user = self.user_id.clone();
        self.v3(
            Method::PUT,
            &["profile", &user, field],
            Body::Json(json!({ field: value })),
        )
        .await
        .map(drop)
    }

    /// Upload media as this user; its `mxc://` URI.
    pub async fn upload(
        &self,
        data: impl Into<Bytes>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<String, Error> {
        let query: Vec<(&str, &str)> = filename.map(|f| ("filename", f)).into_iter().collect();
        let v = self
            .act(
                Method::POST,
                &["_matrix", "media", "v3", "upload"],
                &query,
                Body::Bytes {
                    data: data.into(),
                    content_type: content_type.to_owned(),
                },
            )
            .await?;
        let uri = str_field(&v, "content_uri", "upload")?;
        if !uri.starts_with("mxc://") {
            return Err(Error::BadResponse {
                url: "upload".into(),
                why: format!("content_uri {uri:?} is not an mxc URI"),
            });
        }
        Ok(uri)
    }

    /// Point `alias` at `room_id`.
    pub async fn create_alias(&self, alias: &str, room_id: &str) -> Result<(), Error> {
        self.v3(
            Method::PUT,
            &["directory", "room", alias],
            Body::Json(json!({ "room_id": room_id })),
        )
        .await
        .map(drop)
    }

    /// Where `alias` points; `None` if nowhere (`M_NOT_FOUND`).
    pub async fn resolve_alias(&self, alias: &str) -> Result<Option<ResolvedAlias>, Error> {
        let v = match self
            .v3(Method::GET, &["directory", "room", alias], Body::Empty)
            .await
        {
            Ok(v) => v,
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => return Ok(None),
            Err(e) => return Err(e),
        };
        let servers = v
            .get("servers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(ResolvedAlias {
            room_id: str_field(&v, "room_id", "directory")?,
            servers,
        }))
    }

    /// Any other Client-Server request as this user, for what the methods above do not cover.
    /// `segments` is the whole path, e.g. `["_matrix", "client", "v3", "rooms", room, "typing",
    /// user]`.
    pub async fn raw(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<Value, Error> {
        self.act(method, segments, query, body).await
    }
}
