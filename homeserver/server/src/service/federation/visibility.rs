//! What a peer may read of a room. A server may read a room only while one of its users is
//! joined to it (as Synapse asks too); each event it reads is then judged by the room's history
//! visibility at that event and by the memberships its users had there, and an event it may not
//! see goes out as a redacted copy (still signed and hashed, so the peer can check and store it).

use std::collections::HashMap;

use plexus_core::pdu::Pdu;
use ruma::{
    canonical_json::{redact, try_from_json_map},
    room_version_rules::RoomVersionRules,
    OwnedRoomId, ServerName,
};
use serde_json::Value;

use super::{sender::federation_form, FederationError};
use crate::service::{rooms::RoomRef, Services};

/// The room, if `origin` has a user joined to it now and the room's ACL lets it in.
pub fn room_for_peer(
    app: &Services,
    room_id: &str,
    origin: &ServerName,
) -> Result<RoomRef, FederationError> {
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| FederationError::InvalidParam(format!("invalid room id: {e}")))?;
    let room = app
        .rooms
        .room(&room_id)?
        .ok_or_else(|| FederationError::NotFound("Unknown room".into()))?;
    let joined = app
        .rooms
        .room_members(room.short)?
        .into_iter()
        .any(|(u, m)| u.server_name() == origin && m == "join");
    if !joined {
        return Err(FederationError::Forbidden(format!(
            "{origin} is not in this room"
        )));
    }
    super::acl::ensure(app, room.short, origin)?;
    Ok(room)
}

/// What one server may see of one room's events. Judgements are cached per state snapshot, so
/// a page of events in one stretch of history costs a few state reads, not one per event.
pub struct ServerView<'a> {
    app: &'a Services,
    origin: &'a ServerName,
    rules: RoomVersionRules,
    /// The origin's users that ever had a membership in the room.
    users: Vec<ruma::OwnedUserId>,
    by_snapshot: HashMap<u64, bool>,
}

impl<'a> ServerView<'a> {
    pub fn new(
        app: &'a Services,
        room: &RoomRef,
        origin: &'a ServerName,
    ) -> Result<Self, FederationError> {
        let users = app
            .rooms
            .room_members(room.short)?
            .into_iter()
            .map(|(u, _)| u)
            .filter(|u| u.server_name() == origin)
            .collect();
        Ok(Self {
            app,
            origin,
            rules: plexus_core::room_version::rules(&room.meta.version)?,
            users,
            by_snapshot: HashMap::new(),
        })
    }

    /// The event in federation form: whole if the server may see it, redacted otherwise.
    pub fn form(
        &mut self,
        short: u64,
        pdu: &Pdu,
        stored: &Value,
    ) -> Result<Value, FederationError> {
        let out = federation_form(stored);
        if self.may_see(short, pdu)? {
            return Ok(out);
        }
        let Value::Object(map) = out else {
            return Err(FederationError::Internal(
                "stored event is not an object".into(),
            ));
        };
        let obj = try_from_json_map(map).map_err(|e| FederationError::Internal(e.to_string()))?;
        let redacted = redact(obj, &self.rules.redaction, None)
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        serde_json::to_value(redacted).map_err(|e| FederationError::Internal(e.to_string()))
    }

    /// The spec's rule for servers: world-readable and shared history is visible to a server in
    /// the room; `invited` history to a server with a user invited or joined at the event;
    /// `joined` history to a server with a user joined at the event. A server always sees its
    /// own users' membership events.
    pub fn may_see(&mut self, short: u64, pdu: &Pdu) -> Result<bool, FederationError> {
        if pdu.membership().is_some()
            && pdu
                .state_key
                .as_deref()
                .and_then(|k| ruma::UserId::parse(k).ok())
                .is_some_and(|u| u.server_name() == self.origin)
        {
            return Ok(true);
        }
        let before = self.app.rooms.event_state(short)?.map_or(0, |(b, _)| b);
        if let Some(v) = self.by_snapshot.get(&before) {
            return Ok(*v);
        }
        let visibility = self.app.rooms.history_visibility(before)?;
        let visible = match visibility.as_str() {
            "invited" => self.any_member_is(before, &["join", "invite"])?,
            "joined" => self.any_member_is(before, &["join"])?,
            // world_readable, shared, and values the spec does not know (read as shared).
            _ => true,
        };
        self.by_snapshot.insert(before, visible);
        Ok(visible)
    }

    fn any_member_is(&self, hash: u64, memberships: &[&str]) -> Result<bool, FederationError> {
        for user in &self.users {
            let m = self
                .app
                .rooms
                .state_pdu(hash, "m.room.member", user.as_str())?
                .and_then(|p| p.membership());
            if m.is_some_and(|m| memberships.contains(&m.as_str())) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
