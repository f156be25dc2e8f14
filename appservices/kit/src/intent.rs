//! Acting as one user: the appservice's own (its `sender_localpart`) or any in its user
//! namespaces, through the Client-Server API with the `as_token` and `?user_id=` (identity
//! assertion), so no per-user login or access token exists.

use bytes::Bytes;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::client::{
    account::register::{self, LoginType},
    alias::{create_alias, get_alias},
    media::create_content,
    membership::{
        invite_user::{self, v3::InviteUserId},
        join_room_by_id_or_alias, leave_room, Invite3pid,
    },
    message::send_message_event,
    profile::set_profile_field,
    room::{
        create_room::{
            self,
            v3::{CreationContent, RoomPreset},
            RoomPowerLevelsContentOverride,
        },
        Visibility,
    },
    state::{get_state_event_for_key, send_state_event},
};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{Metadata, OutgoingRequest};
use ruma::events::AnyInitialStateEvent;
use ruma::profile::ProfileFieldValue;
use ruma::serde::Raw;
use ruma::{IdParseError, OwnedMxcUri, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{Body, Method};
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

/// `s` as a ruma identifier, or [`Error::InvalidRequest`] naming `what`.
fn parse_id<T>(what: &str, s: &str) -> Result<T, Error>
where
    T: for<'a> TryFrom<&'a str, Error = IdParseError>,
{
    T::try_from(s).map_err(|e| Error::InvalidRequest {
        what: format!("{what} {s:?}"),
        why: e.to_string(),
    })
}

/// Free-form JSON (event content) as the raw JSON ruma's request types carry.
fn raw<T>(content: &Value) -> Result<Raw<T>, Error> {
    serde_json::value::to_raw_value(content)
        .map(Raw::from_json)
        .map_err(|e| Error::InvalidRequest {
            what: "event content".into(),
            why: e.to_string(),
        })
}

/// The `createRoom` body [`Intent::create_room`] takes, read into the fields of ruma's request
/// type. A field the endpoint does not define is refused rather than dropped unseen.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoomBody {
    creation_content: Option<Raw<CreationContent>>,
    #[serde(default)]
    initial_state: Vec<Raw<AnyInitialStateEvent>>,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    #[serde(default)]
    invite_3pid: Vec<Invite3pid>,
    #[serde(default)]
    is_direct: bool,
    name: Option<String>,
    power_level_content_override: Option<Raw<RoomPowerLevelsContentOverride>>,
    preset: Option<RoomPreset>,
    room_alias_name: Option<String>,
    room_version: Option<RoomVersionId>,
    topic: Option<String>,
    #[serde(default)]
    visibility: Visibility,
}

impl CreateRoomBody {
    fn into_request(self) -> create_room::v3::Request {
        let mut request = create_room::v3::Request::new();
        request.creation_content = self.creation_content;
        request.initial_state = self.initial_state;
        request.invite = self.invite;
        request.invite_3pid = self.invite_3pid;
        request.is_direct = self.is_direct;
        request.name = self.name;
        request.power_level_content_override = self.power_level_content_override;
        request.preset = self.preset;
        request.room_alias_name = self.room_alias_name;
        request.room_version = self.room_version;
        request.topic = self.topic;
        request.visibility = self.visibility;
        request
    }
}

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

    /// The user's id as ruma's type.
    fn ruma_user_id(&self) -> Result<OwnedUserId, Error> {
        parse_id("user id", &self.user_id)
    }

    /// A typed request as this user (the appservice's token, `?user_id=` naming the user),
    /// after making sure the user exists: a ghost is created on first use. The appservice's own
    /// user is taken to exist (homeservers create it from the registration).
    async fn send<R>(&self, request: R) -> Result<R::IncomingResponse, Error>
    where
        R: OutgoingRequest + Metadata<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let user = self.ruma_user_id()?;
        if !self.is_bot() {
            self.ensure_registered().await?;
        }
        self.service.client().send(request, Some(&*user)).await
    }

    /// A request ruma has no type for, as this user: the appservice's token, `?user_id=`
    /// naming the user.
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

    /// [`Intent::call`] after making sure the user exists, as [`Intent::send`] does.
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

    /// Create the user if it does not exist yet (`M_USER_IN_USE` means it does). Remembered, so
    /// only the first call per user and process makes a request. The other methods call this
    /// themselves.
    pub async fn ensure_registered(&self) -> Result<(), Error> {
        if self.service.is_registered(&self.user_id) {
            return Ok(());
        }
        let mut request = register::v3::Request::new();
        request.login_type = Some(LoginType::ApplicationService);
        request.username = Some(self.localpart().to_owned());
        // The appservice never needs the access token a login would make.
        request.inhibit_login = true;
        // No `user_id` here: asserting a user that does not exist yet is refused by some servers.
        match self.service.client().send(request, None).await {
            Ok(_) => {}
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => {}
            Err(e) => return Err(e),
        }
        self.service.mark_registered(&self.user_id);
        Ok(())
    }

    /// `POST /createRoom` with `body` (the endpoint's JSON body, read into ruma's request
    /// type: a field it does not define is [`Error::InvalidRequest`]); the new room's id.
    pub async fn create_room(&self, body: Value) -> Result<String, Error> {
        let body: CreateRoomBody =
            serde_json::from_str(&body.to_string()).map_err(|e| Error::InvalidRequest {
                what: "createRoom body".into(),
                why: e.to_string(),
            })?;
        let response = self.send(body.into_request()).await?;
        Ok(response.room_id.to_string())
    }

    /// Join a room by id or alias; the room's id.
    pub async fn join(&self, room_id_or_alias: &str) -> Result<String, Error> {
        self.join_via(room_id_or_alias, &[]).await
    }

    /// Join through the given servers (for rooms the homeserver is not in yet).
    pub async fn join_via(&self, room_id_or_alias: &str, via: &[&str]) -> Result<String, Error> {
        let mut request = join_room_by_id_or_alias::v3::Request::new(parse_id(
            "room id or alias",
            room_id_or_alias,
        )?);
        request.via = via
            .iter()
            .map(|s| parse_id("server name", s))
            .collect::<Result<Vec<OwnedServerName>, Error>>()?;
        let response = self.send(request).await?;
        Ok(response.room_id.to_string())
    }

    /// Invite `user_id` to the room.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), Error> {
        let recipient = InviteUserId::new(parse_id("user id", user_id)?);
        let request =
            invite_user::v3::Request::new(parse_id("room id", room_id)?, recipient.into());
        self.send(request).await.map(drop)
    }

    /// Leave the room (or refuse an invite).
    pub async fn leave(&self, room_id: &str) -> Result<(), Error> {
        let request = leave_room::v3::Request::new(parse_id("room id", room_id)?);
        self.send(request).await.map(drop)
    }

    /// Send an event; its id. The transaction id is fresh per call and kept across retries,
    /// so a retry after a lost answer does not send twice.
    pub async fn send_message(
        &self,
        room_id: &str,
        event_type: &str,
        content: Value,
    ) -> Result<String, Error> {
        let room: OwnedRoomId = parse_id("room id", room_id)?;
        let txn = self.service.next_txn_id();
        let request = send_message_event::v3::Request::new_raw(
            room,
            txn.into(),
            event_type.into(),
            raw(&content)?,
        );
        let response = self.send(request).await?;
        Ok(response.event_id.to_string())
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

    /// Set a state event; its id. An empty state key is sent as ruma builds it, with a
    /// trailing slash (`.../state/{type}/`), which the spec allows.
    pub async fn set_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Result<String, Error> {
        let request = send_state_event::v3::Request::new_raw(
            parse_id("room id", room_id)?,
            event_type.into(),
            state_key.to_owned(),
            raw(&content)?,
        );
        let response = self.send(request).await?;
        Ok(response.event_id.to_string())
    }

    /// A state event's content; `None` if the room has no such state (`M_NOT_FOUND`).
    pub async fn state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, Error> {
        let request = get_state_event_for_key::v3::Request::new(
            parse_id("room id", room_id)?,
            event_type.into(),
            state_key.to_owned(),
        );
        match self.send(request).await {
            Ok(response) => serde_json::from_str(response.event_or_content.get())
                .map(Some)
                .map_err(|e| Error::BadResponse {
                    url: "state".into(),
                    why: e.to_string(),
                }),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set the user's display name.
    pub async fn set_displayname(&self, name: &str) -> Result<(), Error> {
        self.set_profile_field(ProfileFieldValue::DisplayName(name.to_owned()))
            .await
    }

    /// Set the user's avatar (an `mxc://` URI, e.g. from [`Intent::upload`]).
    pub async fn set_avatar_url(&self, mxc: &str) -> Result<(), Error> {
        self.set_profile_field(ProfileFieldValue::AvatarUrl(OwnedMxcUri::from(mxc)))
            .await
    }

    async fn set_profile_field(&self, value: ProfileFieldValue) -> Result<(), Error> {
        let request = set_profile_field::v3::Request::new(self.ruma_user_id()?, value);
        self.send(request).await.map(drop)
    }

    /// Upload media as this user; its `mxc://` URI.
    pub async fn upload(
        &self,
        data: impl Into<Bytes>,
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<String, Error> {
        let data: Bytes = data.into();
        let mut request = create_content::v3::Request::new(Vec::from(data));
        request.content_type = Some(content_type.to_owned());
        request.filename = filename.map(str::to_owned);
        let uri = self.send(request).await?.content_uri;
        if !uri.as_str().starts_with("mxc://") {
            return Err(Error::BadResponse {
                url: "upload".into(),
                why: format!("content_uri {uri:?} is not an mxc URI"),
            });
        }
        Ok(uri.to_string())
    }

    /// Point `alias` at `room_id`.
    pub async fn create_alias(&self, alias: &str, room_id: &str) -> Result<(), Error> {
        let request = create_alias::v3::Request::new(
            parse_id("alias", alias)?,
            parse_id("room id", room_id)?,
        );
        self.send(request).await.map(drop)
    }

    /// Where `alias` points; `None` if nowhere (`M_NOT_FOUND`).
    pub async fn resolve_alias(&self, alias: &str) -> Result<Option<ResolvedAlias>, Error> {
        let request = get_alias::v3::Request::new(parse_id("alias", alias)?);
        match self.send(request).await {
            Ok(response) => Ok(Some(ResolvedAlias {
                room_id: response.room_id.to_string(),
                servers: response.servers.iter().map(ToString::to_string).collect(),
            })),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Any other Client-Server request as this user, for what the methods above do not cover
    /// (and ruma does not define). `segments` is the whole path, e.g. `["_matrix", "client",
    /// "v3", "rooms", room, "typing", user]`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_room_bodies_become_ruma_requests() {
        let body = json!({
            "preset": "private_chat",
            "name": "kit room",
            "invite": ["@a:hs"],
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }],
        });
        let request = serde_json::from_str::<CreateRoomBody>(&body.to_string())
            .unwrap()
            .into_request();
        assert_eq!(request.name.as_deref(), Some("kit room"));
        assert_eq!(
            request.invite,
            vec![OwnedUserId::try_from("@a:hs").unwrap()]
        );
        assert_eq!(request.initial_state.len(), 1);
        assert!(matches!(request.preset, Some(RoomPreset::PrivateChat)));
        // A misspelt field is refused, not silently dropped.
        assert!(serde_json::from_str::<CreateRoomBody>(r#"{"nmae": "x"}"#).is_err());
    }
}
