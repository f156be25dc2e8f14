//! Invites and knocks across servers: `/invite` v2 countersigning, invites shown with the
//! room's stripped state, joining and rejecting invites to rooms elsewhere, and knocking
//! through `make_knock`/`send_knock`; other servers' room directories and profiles.

use plexus_spec_tests::{enc, eventually, Client, Server};
use serde_json::{json, Value};

/// `rooms.<section>.<room>` of a full sync, once it shows up.
async fn sync_section(who: &Client, section: &str, room: &str) -> Value {
    eventually(
        20,
        &format!("{} sees {room} in {section}", who.user_id),
        || async {
            let s = who.sync("").await;
            s["rooms"][section].get(room).cloned()
        },
    )
    .await
}

fn stripped<'a>(section: &'a Value, key: &str, kind: &str) -> Option<&'a Value> {
    section[key]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_cross_servers_and_can_be_accepted_or_rejected() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let dave = b.user("dave").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "secret plans"}))
        .await;

    // Bob is invited from another server: he sees the room's name and who invited him.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "invite over federation: {}", r.body);
    let inv = sync_section(&bob, "invite", &room).await;
    assert_eq!(
        stripped(&inv, "invite_state", "m.room.name").map(|e| &e["content"]["name"]),
        Some(&json!("secret plans")),
        "{inv}"
    );
    assert!(
        stripped(&inv, "invite_state", "m.room.create").is_some(),
        "{inv}"
    );
    let member = inv["invite_state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("the invite itself is in invite_state: {inv}"));
    assert_eq!(member["sender"], alice.user_id.as_str());
    assert_eq!(member["content"]["membership"], "invite");
    // The inviting side keeps the invite, with both servers' signatures.
    assert_eq!(
        alice.membership(&room, &bob.user_id).await.as_deref(),
        Some("invite")
    );

    // Bob accepts without naming a server: the inviter's server is used.
    let r = bob
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "accepting the invite: {}", r.body);
    sync_section(&bob, "join", &room).await;
    bob.send_text(&room, "thanks for the invite").await;
    eventually(20, "alice sees bob's message", || async {
        alice
            .recent_bodies(&room)
            .await
            .contains(&"thanks for the invite".to_owned())
            .then_some(())
    })
    .await;

    // Dave turns his invite down: the room's server learns it and dave's client sees it go.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": dave.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "dave's invite arrives", || async {
        dave.sync("").await["rooms"]["invite"]
            .get(&room)
            .map(|_| ())
    })
    .await;
    let r = dave
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({"reason": "not now"}),
        )
        .await;
    assert_eq!(r.status, 200, "rejecting the invite: {}", r.body);
    eventually(20, "alice sees dave's rejection", || async {
        (alice.membership(&room, &dave.user_id).await.as_deref() == Some("leave")).then_some(())
    })
    .await;
    let s = dave.sync("").await;
    assert!(s["rooms"]["invite"].get(&room).is_none(), "{s}");

    // Inviting someone who does not exist there is refused by their server.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": format!("@nobody:{}", b.server_name)}),
        )
        .await;
    r.err(404, "M_NOT_FOUND");
    assert_eq!(
        alice
            .membership(&room, &format!("@nobody:{}", b.server_name))
            .await,
        None,
        "a refused invite is not in the room"
    );

    // A direct chat created with an invite of a user elsewhere.
    let dm = alice
        .create_room(
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id]}),
        )
        .await;
    let inv = sync_section(&bob, "invite", &dm).await;
    let member = inv["invite_state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{inv}"));
    assert_eq!(member["content"]["is_direct"], true, "{member}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_from_a_server_that_went_away_can_still_be_rejected() {
    let (mut a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let frank = b.user("frank").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": frank.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sync_section(&frank, "invite", &room).await;
    a.kill9();
    let r = frank
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "rejecting with the inviter gone: {}", r.body);
    let s = frank.sync("").await;
    assert!(s["rooms"]["invite"].get(&room).is_none(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_on_a_room_elsewhere() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let erin = b.user("erin").await;
    let room = alice
        .create_room(json!({
            "room_version": "10",
            "name": "knock first",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        }))
        .await;

    // A plain join is refused by the auth rules, a knock goes through.
    let r = erin.join_via(&room, &a.server_name).await;
    r.err(403, "M_FORBIDDEN");
    let r = erin
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&room),
                enc(&a.server_name)
            ),
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(r.status, 200, "knocking over federation: {}", r.body);
    assert_eq!(r.body["room_id"], room.as_str());
    let k = sync_section(&erin, "knock", &room).await;
    assert_eq!(
        stripped(&k, "knock_state", "m.room.name").map(|e| &e["content"]["name"]),
        Some(&json!("knock first")),
        "{k}"
    );
    eventually(20, "alice sees the knock", || async {
        (alice.membership(&room, &erin.user_id).await.as_deref() == Some("knock")).then_some(())
    })
    .await;
    let reason = alice
        .state(&room, "m.room.member", &erin.user_id)
        .await
        .unwrap();
    assert_eq!(reason["reason"], "let me in");

    // Alice lets her in by inviting her; erin accepts.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": erin.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sync_section(&erin, "invite", &room).await;
    let r = erin
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "joining after the knock: {}", r.body);
    eventually(20, "alice sees erin joined", || async {
        (alice.membership(&room, &erin.user_id).await.as_deref() == Some("join")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_profiles_of_other_servers() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let r = alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({"displayname": "Alice of A"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let room = alice
        .create_room(json!({"preset": "public_chat", "visibility": "public", "name": "the lobby", "topic": "say hi"}))
        .await;
    alice
        .create_room(json!({"preset": "public_chat", "visibility": "public", "name": "elsewhere"}))
        .await;

    // Bob browses A's directory: all of it, a page of it, and a search.
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={}",
            enc(&a.server_name)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<&str> = r.body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"the lobby") && names.contains(&"elsewhere"),
        "{}",
        r.body
    );
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={}&limit=1",
            enc(&a.server_name)
        ))
        .await;
    assert_eq!(r.body["chunk"].as_array().unwrap().len(), 1, "{}", r.body);
    assert!(r.body["next_batch"].is_string(), "{}", r.body);
    let r = bob
        .post(
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                enc(&a.server_name)
            ),
            json!({"filter": {"generic_search_term": "LOBBY"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let chunk = r.body["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "{}", r.body);
    assert_eq!(chunk[0]["room_id"], room.as_str());
    assert_eq!(chunk[0]["topic"], "say hi");
    let r = bob
        .post(
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                enc(&a.server_name)
            ),
            json!({"filter": {"generic_search_term": "nothing like it"}}),
        )
        .await;
    assert_eq!(r.body["chunk"], json!([]), "{}", r.body);
    let r = bob
        .get("/_matrix/client/v3/publicRooms?server=bad%20name")
        .await;
    r.err(400, "M_INVALID_PARAM");

    // Bob looks up alice's profile on her server; a user who does not exist there is 404.
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["displayname"], "Alice of A");
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(r.body, json!({"displayname": "Alice of A"}));
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&format!("@ghost:{}", a.server_name))
        ))
        .await;
    r.err(404, "M_NOT_FOUND");
}
