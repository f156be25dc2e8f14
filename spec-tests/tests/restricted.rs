//! Restricted joins (room versions 8+): members of an allowed room (a space) may join without an
//! invite, with a local member of the room vouching through `join_authorised_via_users_server`;
//! on one server and across two, where the resident server countersigns the join.

use plexus_spec_tests::{eventually, Client, Server};
use serde_json::{json, Value};

/// A public space and a room restricted to its members, in `version`.
async fn space_and_restricted_room(alice: &Client, version: &str) -> (String, String) {
    let space = alice
        .create_room(json!({"preset": "public_chat", "name": "Space",
                            "creation_content": {"type": "m.space"}}))
        .await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "name": "Members only",
            "room_version": version,
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted",
                            "allow": [{"type": "m.room_membership", "room_id": space}]}
            }]
        }))
        .await;
    (space, room)
}

async fn member_content(c: &Client, room: &str, user: &str) -> Value {
    c.state(room, "m.room.member", user)
        .await
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn members_of_the_allowed_room_may_join() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    for version in ["8", "10", "12"] {
        let (space, room) = space_and_restricted_room(&alice, version).await;
        // Not in the space: refused.
        bob.join(&room).await.err(403, "M_FORBIDDEN");
        assert_eq!(bob.membership(&room, &bob.user_id).await, None);

        bob.join(&space).await.ok();
        bob.join(&room).await.ok();
        let content = member_content(&alice, &room, &bob.user_id).await;
        assert_eq!(content["membership"], "join", "v{version}");
        assert_eq!(
            content["join_authorised_via_users_server"], alice.user_id,
            "v{version}: the authoriser is named"
        );

        // An invited user needs no allowed room and no authoriser.
        alice
            .post(
                &format!(
                    "/_matrix/client/v3/rooms/{}/invite",
                    plexus_spec_tests::enc(&room)
                ),
                json!({"user_id": carol.user_id}),
            )
            .await
            .ok();
        carol.join(&room).await.ok();
        let content = member_content(&alice, &room, &carol.user_id).await;
        assert_eq!(content["membership"], "join");
        assert!(content.get("join_authorised_via_users_server").is_none());
    }
}

#[tokio::test]
async fn joins_this_server_cannot_decide_or_vouch_for_are_refused() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    // The allowed room is one this server has never been in.
    let unknown = alice
        .create_room(json!({
            "preset": "private_chat", "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted",
                            "allow": [{"type": "m.room_membership",
                                       "room_id": "!elsewhere:example.org"}]}
            }]
        }))
        .await;
    bob.join(&unknown).await.err(400, "M_UNABLE_TO_GRANT_JOIN");

    // No local member may invite: alice gave away her power.
    let (space, room) = space_and_restricted_room(&alice, "10").await;
    let mut pl = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    pl["invite"] = json!(50);
    pl["users"][&alice.user_id] = json!(0);
    alice
        .put_state(&room, "m.room.power_levels", "", pl)
        .await
        .ok();
    bob.join(&space).await.ok();
    bob.join(&room).await.err(400, "M_UNABLE_TO_AUTHORISE_JOIN");

    // Rooms before version 8 know no restricted rule: it keeps everyone out.
    let (_, old) = space_and_restricted_room(&alice, "7").await;
    bob.join(&old).await.err(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_join_across_servers_is_countersigned() {
    let one = Server::federated().await;
    let two = Server::federated().await;
    let alice = one.user("alice").await;
    let bob = two.user("bob").await;
    let carol = two.user("carol").await;
    let (space, room) = space_and_restricted_room(&alice, "10").await;

    // carol is in no allowed room: the resident server refuses her.
    let refused = carol.join_via(&room, &one.server_name).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["errcode"], "M_FORBIDDEN");

    bob.join_via(&space, &one.server_name).await.ok();
    bob.join_via(&room, &one.server_name).await.ok();
    let content = eventually(20, "alice's server sees bob joined", || async {
        let c = member_content(&alice, &room, &bob.user_id).await;
        (c["membership"] == "join").then_some(c)
    })
    .await;
    assert_eq!(content["join_authorised_via_users_server"], alice.user_id);
    // bob's server holds the room too, and both can talk.
    assert_eq!(
        member_content(&bob, &room, &bob.user_id).await["membership"],
        "join"
    );
    bob.send_text(&room, "in through the space").await;
    eventually(20, "alice sees bob's message", || async {
        alice
            .recent_bodies(&room)
            .await
            .contains(&"in through the space".to_owned())
            .then_some(())
    })
    .await;
}
