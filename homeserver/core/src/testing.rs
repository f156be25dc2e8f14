//! An in-memory room that builds real signed PDUs and runs them through the auth rules, for
//! unit tests and benchmarks of the room logic (never used by the server itself).
// A failure in a fixture is the test failing, so fixtures may panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};

use ruma::{
    room_version_rules::RoomVersionRules, OwnedEventId, OwnedRoomId, RoomVersionId, UserId,
};
use serde_json::{json, Value};

use crate::{
    auth::{auth_types, check},
    builder::{build_pdu, EventRef, NewEvent, RoomContext},
    room_version,
    signing::ServerKey,
    CoreError, Pdu,
};

/// A single server's view of a room: events, current state and the tip of the DAG.
#[derive(Clone)]
pub struct TestRoom {
    pub rules: RoomVersionRules,
    pub key: std::sync::Arc<ServerKey>,
    pub room_id: Option<OwnedRoomId>,
    pub events: HashMap<OwnedEventId, Pdu>,
    pub state: HashMap<(String, String), OwnedEventId>,
    pub last: Option<OwnedEventId>,
    pub depth: u64,
}

impl TestRoom {
    pub fn new(version: RoomVersionId, creator: &str) -> Self {
        let mut room = TestRoom {
            rules: room_version::rules(&version).unwrap(),
            key: std::sync::Arc::new(ServerKey::generate().unwrap()),
            room_id: None,
            events: HashMap::new(),
            state: HashMap::new(),
            last: None,
            depth: 0,
        };
        if !room.rules.authorization.room_create_event_id_as_room_id {
            room.room_id = Some("!room:example.org".try_into().unwrap());
        }
        let mut create = json!({"room_version": version.as_str()});
        if !room.rules.authorization.use_room_create_sender {
            create["creator"] = json!(creator);
        }
        room.send(creator, "m.room.create", Some(""), create)
            .unwrap();
        room.send(
            creator,
            "m.room.member",
            Some(creator),
            json!({"membership": "join"}),
        )
        .unwrap();
        room
    }

    /// Build an event from the current state and accept it only if auth passes.
    pub fn send(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<OwnedEventId, CoreError> {
        let sender = UserId::parse(sender).unwrap();
        let types = auth_types(&self.rules, kind, &sender, state_key, &content)?;
        let auth_events: Vec<EventRef> = types
            .iter()
            .filter_map(|(t, k)| self.state.get(&(t.to_string(), k.clone())))
            .map(|id| EventRef::of(&self.events[id]))
            .collect();
        self.depth += 1;
        let ctx = RoomContext {
            room_id: self.room_id.as_deref(),
            rules: &self.rules,
            sender: &sender,
            origin: ruma::server_name!("example.org"),
            prev_events: self
                .last
                .iter()
                .map(|id| EventRef::of(&self.events[id]))
                .collect(),
            auth_events,
            depth: self.depth,
            origin_server_ts: 1_700_000_000_000 + self.depth,
        };
        let ev = NewEvent {
            kind: kind.into(),
            content,
            state_key: state_key.map(str::to_owned),
            redacts: None,
        };
        let built = build_pdu(&ev, &ctx, &self.key)?;
        check(
            &self.rules,
            &built.pdu,
            |id| self.events.get(id).cloned(),
            |t, k| {
                self.state
                    .get(&(t.to_string(), k.to_owned()))
                    .and_then(|id| self.events.get(id).cloned())
            },
        )?;
        if self.room_id.is_none() {
            let id = format!("!{}", &built.event_id.as_str()[1..]);
            self.room_id = Some(id.try_into().unwrap());
        }
        if let Some(sk) = state_key {
            self.state
                .insert((kind.into(), sk.into()), built.event_id.clone());
        }
        self.last = Some(built.event_id.clone());
        self.events.insert(built.event_id.clone(), built.pdu);
        Ok(built.event_id)
    }

    /// The recursive `auth_events` of the given events (for state resolution).
    pub fn auth_chain(&self, ids: impl IntoIterator<Item = OwnedEventId>) -> HashSet<OwnedEventId> {
        let mut seen = HashSet::new();
        let mut stack: Vec<OwnedEventId> = ids.into_iter().collect();
        while let Some(id) = stack.pop() {
            if let Some(ev) = self.events.get(&id) {
                for a in &ev.auth_events {
                    if seen.insert(a.clone()) {
                        stack.push(a.clone());
                    }
                }
            }
        }
        seen
    }
}
