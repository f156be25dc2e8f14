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
    //! The spec's auth rules, exercised through real signed PDUs in an in-memory room.
    use ruma::{OwnedEventId, RoomVersionId};
    use serde_json::{json, Value};

    use crate::{testing::TestRoom, CoreError};

    const ALICE: &str = "@alice:example.org";
    const BOB: &str = "@bob:example.org";

    fn join(room: &mut TestRoom, user: &str) -> Result<OwnedEventId, CoreError> {
        room.send(
            user,
            "m.room.member",
            Some(user),
            json!({"membership": "join"}),
        )
    }

    fn power_levels(room: &mut TestRoom, users: Value) -> Result<OwnedEventId, CoreError> {
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
            let mut room = TestRoom::new(v.clone(), ALICE);
            assert!(room
                .send(ALICE, "m.room.message", None, json!({"body": "hi"}))
                .is_ok());
            let err = room.send(BOB, "m.room.message", None, json!({"body": "hi"}));
            assert!(matches!(err, Err(CoreError::Auth(_))), "v{v}: {err:?}");
        }
    }

    #[test]
    fn invite_only_needs_invite() {
        let mut room = TestRoom::new(RoomVersionId::V11, ALICE);
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
        let mut room = TestRoom::new(RoomVersionId::V11, ALICE);
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
        let mut room = TestRoom::new(RoomVersionId::V12, ALICE);
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
            let mut room = TestRoom::new(v.clone(), ALICE);
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
