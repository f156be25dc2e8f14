//! Event authorization: the spec's auth rules through ruma's state-res.

use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res, EventId, UserId,
};

use crate::{CoreError, Pdu};

/// The `(type, state_key)` pairs whose current events an event must cite as `auth_events`.
pub fn auth_types(
    rules: &RoomVersionRules,
    kind: &str,
    sender: &UserId,
    state_key: Option<&str>,
    content: &serde_json::Value,
) -> Result<Vec<(StateEventType, String)>, CoreError> {
    let raw =
        serde_json::value::to_raw_value(content).map_err(|e| CoreError::BadPdu(e.to_string()))?;
    state_res::auth_types_for_event(
        &TimelineEventType::from(kind),
        sender,
        state_key,
        &raw,
        &rules.authorization,
    )
    .map_err(CoreError::BadPdu)
}

/// Check `pdu` against its own auth events (`fetch_event`) and against a state snapshot
/// (`fetch_state`): the state before it, or the current state for soft-fail.
pub fn check(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), CoreError> {
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .map_err(CoreError::Auth)?;
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(CoreError::Auth)
}

#[cfg(test)]
mod tests {
    //! A tiny in-memory room that builds real signed PDUs and runs them through the spec's rules.
    use std::collections::HashMap;

    use ruma::{room_version_rules::RoomVersionRules, OwnedEventId, OwnedRoomId, RoomVersionId};
    use serde_json::{json, Value};

    use super::*;
    use crate::{
        builder::{build_pdu, EventRef, NewEvent, RoomContext},
        room_version,
        signing::ServerKey,
    };

    struct Room {
        rules: RoomVersionRules,
        key: ServerKey,
        room_id: Option<OwnedRoomId>,
        events: HashMap<OwnedEventId, Pdu>,
        state: HashMap<(String, String), OwnedEventId>,
        last: Option<OwnedEventId>,
        depth: u64,
    }

    impl Room {
        fn new(version: RoomVersionId, creator: &str) -> Self {
            let mut room = Room {
                rules: room_version::rules(&version).unwrap(),
                key: ServerKey::generate().unwrap(),
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
        fn send(
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
    }

    const ALICE: &str = "@alice:example.org";
    const BOB: &str = "@bob:example.org";

    fn join(room: &mut Room, user: &str) -> Result<OwnedEventId, CoreError> {
        room.send(
            user,
            "m.room.member",
            Some(user),
            json!({"membership": "join"}),
        )
    }

    fn power_levels(room: &mut Room, users: Value) -> Result<OwnedEventId, CoreError> {
        room.send(
            ALICE,
            "m.room.power_levels",
            Some(""),
            json!({"users": users, "state_default": 50}),
        )
    }

    #[test]
    fn non_member_cannot_send() {
        for v in [
            RoomVersionId::V6,
            RoomVersionId::V10,
            RoomVersionId::V11,
            RoomVersionId::V12,
        ] {
            let mut room = Room::new(v.clone(), ALICE);
            assert!(room
                .send(ALICE, "m.room.message", None, json!({"body": "hi"}))
                .is_ok());
            let err = room.send(BOB, "m.room.message", None, json!({"body": "hi"}));
            assert!(matches!(err, Err(CoreError::Auth(_))), "v{v}: {err:?}");
        }
    }

    #[test]
    fn invite_only_needs_invite() {
        let mut room = Room::new(RoomVersionId::V11, ALICE);
        power_levels(&mut room, json!({ALICE: 100})).unwrap();
        room.send(
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "invite"}),
        )
        .unwrap();
        assert!(join(&mut room, BOB).is_err(), "uninvited join must fail");
        room.send(
            ALICE,
            "m.room.member",
            Some(BOB),
            json!({"membership": "invite"}),
        )
        .unwrap();
        join(&mut room, BOB).unwrap();
        room.send(BOB, "m.room.message", None, json!({"body": "in"}))
            .unwrap();
    }

    #[test]
    fn public_room_join_and_power_levels() {
        let mut room = Room::new(RoomVersionId::V11, ALICE);
        power_levels(&mut room, json!({ALICE: 100})).unwrap();
        room.send(
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        )
        .unwrap();
        join(&mut room, BOB).unwrap();
        // Bob (power 0) may not change state that needs 50.
        let err = room.send(BOB, "m.room.topic", Some(""), json!({"topic": "mine"}));
        assert!(err.is_err());
        // Nor raise himself.
        assert!(room
            .send(
                BOB,
                "m.room.power_levels",
                Some(""),
                json!({"users": {BOB: 100, ALICE: 100}})
            )
            .is_err());
        // Bob may not kick Alice; Alice may kick Bob.
        assert!(room
            .send(
                BOB,
                "m.room.member",
                Some(ALICE),
                json!({"membership": "leave"})
            )
            .is_err());
        room.send(
            ALICE,
            "m.room.member",
            Some(BOB),
            json!({"membership": "leave"}),
        )
        .unwrap();
        // Banned users cannot rejoin.
        room.send(
            ALICE,
            "m.room.member",
            Some(BOB),
            json!({"membership": "ban"}),
        )
        .unwrap();
        assert!(join(&mut room, BOB).is_err());
    }

    #[test]
    fn v12_creator_has_unlimited_power_and_cannot_be_listed() {
        let mut room = Room::new(RoomVersionId::V12, ALICE);
        // In v12 the creator must not appear in `users`; an event that lists it is refused.
        assert!(power_levels(&mut room, json!({ALICE: 100})).is_err());
        power_levels(&mut room, json!({BOB: 50})).unwrap();
        room.send(
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        )
        .unwrap();
        join(&mut room, BOB).unwrap();
        // Bob at 50 cannot kick the creator, whose power is unlimited.
        assert!(room
            .send(
                BOB,
                "m.room.member",
                Some(ALICE),
                json!({"membership": "leave"})
            )
            .is_err());
        // Bob at 50 may set the topic (state_default 50).
        room.send(BOB, "m.room.topic", Some(""), json!({"topic": "ok"}))
            .unwrap();
        assert!(room.room_id.as_ref().unwrap().as_str().starts_with('!'));
    }

    #[test]
    fn old_room_versions_work() {
        for v in [RoomVersionId::V1, RoomVersionId::V3, RoomVersionId::V5] {
            let mut room = Room::new(v.clone(), ALICE);
            power_levels(&mut room, json!({ALICE: 100})).unwrap();
            room.send(
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            )
            .unwrap();
            join(&mut room, BOB).unwrap_or_else(|e| panic!("v{v}: {e}"));
        }
    }
}
