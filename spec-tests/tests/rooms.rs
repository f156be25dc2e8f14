//! createRoom, membership, state, send, redact, events, members, and the auth rules behind them.

use plexus_spec_tests::{bodies, enc, timeline, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn create_room_with_everything() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    srv.user("bob").await;
    let room = alice
        .create_room(json!({
            "name": "Engineering", "topic": "schemas", "room_alias_name": "eng",
            "invite": ["@bob:localhost"], "is_direct": true, "preset": "trusted_private_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                              {"type": "org.example.custom", "state_key": "k", "content": {"v": 1}}],
            "power_level_content_override": {"events_default": 10},
            "creation_content": {"m.federate": false},
        }))
        .await;
    let st = |t: &str| format!("/_matrix/client/v3/rooms/{}/state/{t}", enc(&room));
    assert_eq!(
        alice.get(&st("m.room.name")).await.ok()["name"],
        "Engineering"
    );
    assert_eq!(
        alice.get(&st("m.room.topic")).await.ok()["topic"],
        "schemas"
    );
    assert_eq!(
        alice.get(&st("m.room.canonical_alias")).await.ok()["alias"],
        "#eng:localhost"
    );
    assert_eq!(
        alice.get(&st("m.room.join_rules")).await.ok()["join_rule"],
        "invite"
    );
    assert_eq!(
        alice.get(&st("m.room.history_visibility")).await.ok()["history_visibility"],
        "joined"
    );
    assert_eq!(alice.get(&st("org.example.custom/k")).await.ok()["v"], 1);
    let create = alice.get(&st("m.room.create")).await;
    assert_eq!(create.ok()["room_version"], "12");
    assert_eq!(create.body["m.federate"], false);
    let pl = alice.get(&st("m.room.power_levels")).await;
    assert_eq!(pl.ok()["events_default"], 10);
    // v12: the creator is privileged by the create event, not listed in users.
    assert!(pl.body["users"].get("@alice:localhost").is_none());
    assert_eq!(pl.body["users"]["@bob:localhost"], 100);
    let invite = alice.get(&st("m.room.member/@bob:localhost")).await;
    assert_eq!(invite.ok()["membership"], "invite");
    assert_eq!(invite.body["is_direct"], true);
    // v12 room ids are the create event's reference hash.
    let ev = alice
        .get(&format!("{}?format=event", st("m.room.create")))
        .await;
    assert_eq!(&ev.ok()["event_id"].as_str().unwrap()[1..], &room[1..]);

    // The alias is taken now.
    let r = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"room_alias_name": "eng"}),
        )
        .await;
    r.err(400, "M_ROOM_IN_USE");
}

#[tokio::test]
async fn create_room_bad_input_changes_nothing() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"room_version": "99"}),
        )
        .await
        .err(400, "M_UNSUPPORTED_ROOM_VERSION");
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"invite": ["not-a-user"]}),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .post("/_matrix/client/v3/createRoom", json!({"preset": "party"}))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .post("/_matrix/client/v3/createRoom", json!({"name": 5}))
        .await
        .err(400, "M_BAD_JSON");
    // An initial_state event that fails auth (needs power 100 on a custom type) aborts the whole room.
    let r = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({
            "power_level_content_override": {"events": {"m.room.name": 200}},
            "name": "too high", "room_alias_name": "half", "room_version": "11"}),
        )
        .await;
    r.err(403, "M_FORBIDDEN");
    let rooms = alice.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(
        rooms.ok()["joined_rooms"].as_array().unwrap().len(),
        0,
        "no half-made room: {}",
        rooms.body
    );
    // The alias of the refused room was not taken.
    alice.create_room(json!({"room_alias_name": "half"})).await;
}

#[tokio::test]
async fn every_room_version_can_be_created_and_used() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    for v in 1..=12 {
        let room = alice
            .create_room(json!({"room_version": v.to_string(), "preset": "public_chat"}))
            .await;
        bob.join(&room).await.ok();
        let hello = bob.send_text(&room, &format!("hello v{v}")).await;
        let msgs = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
                enc(&room)
            ))
            .await;
        assert_eq!(
            msgs.ok()["chunk"][0]["content"]["body"],
            format!("hello v{v}"),
            "v{v}"
        );
        // A redaction names its target where the version puts it (top level before v11, in
        // content from v11); either way it is applied, and clients read it at the top level.
        let r = bob
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/r{v}",
                    enc(&room),
                    enc(&hello)
                ),
                json!({}),
            )
            .await;
        let redaction = r.ok()["event_id"].as_str().unwrap().to_owned();
        let redacted = alice.event(&room, &hello).await;
        assert_eq!(redacted.ok()["content"], json!({}), "v{v}");
        let shown = alice.event(&room, &redaction).await;
        assert_eq!(
            shown.ok()["redacts"],
            hello.as_str(),
            "v{v}: {}",
            shown.body
        );
    }
}

#[tokio::test]
async fn join_rules_and_membership_transitions() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let private = alice.create_room(json!({})).await;
    bob.join(&private).await.err(403, "M_FORBIDDEN");
    bob.send_text_status(&private).await;
    let p = |r: &str, a: &str| format!("/_matrix/client/v3/rooms/{}/{a}", enc(r));
    alice
        .post(&p(&private, "invite"), json!({"user_id": "@bob:localhost"}))
        .await
        .ok();
    bob.join(&private).await.ok();
    // Invite of a joined user fails; invites of unknown users are 404.
    alice
        .post(&p(&private, "invite"), json!({"user_id": "@bob:localhost"}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(
            &p(&private, "invite"),
            json!({"user_id": "@nobody:localhost"}),
        )
        .await
        .err(404, "M_NOT_FOUND");
    // Bob (power 0) may not invite in a room where invite needs 50, nor kick.
    let public = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "pub"}))
        .await;
    bob.join("#pub:localhost").await.ok();
    bob.post(
        &p(&public, "invite"),
        json!({"user_id": "@carol:localhost"}),
    )
    .await
    .err(403, "M_FORBIDDEN");
    bob.post(&p(&public, "kick"), json!({"user_id": "@alice:localhost"}))
        .await
        .err(403, "M_FORBIDDEN");
    // Alice kicks, bans and unbans Bob.
    alice
        .post(
            &p(&public, "kick"),
            json!({"user_id": "@bob:localhost", "reason": "spam"}),
        )
        .await
        .ok();
    let m = alice
        .get(&p(&public, "state/m.room.member/@bob:localhost"))
        .await;
    assert_eq!(m.ok()["membership"], "leave");
    assert_eq!(m.body["reason"], "spam");
    alice
        .post(&p(&public, "kick"), json!({"user_id": "@bob:localhost"}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(&p(&public, "ban"), json!({"user_id": "@bob:localhost"}))
        .await
        .ok();
    bob.join(&public).await.err(403, "M_FORBIDDEN");
    alice
        .post(&p(&public, "unban"), json!({"user_id": "@bob:localhost"}))
        .await
        .ok();
    bob.join(&public).await.ok();
    // Leave, then forget; forget while joined is refused.
    carol.join(&public).await.ok();
    carol
        .post(&p(&public, "forget"), json!({}))
        .await
        .err(400, "M_UNKNOWN");
    carol.post(&p(&public, "leave"), json!({})).await.ok();
    carol.post(&p(&public, "forget"), json!({})).await.ok();
    let rooms = carol.get("/_matrix/client/v3/joined_rooms").await;
    assert!(rooms.ok()["joined_rooms"].as_array().unwrap().is_empty());
    // Unknown rooms.
    bob.join("!nope:localhost").await.err(404, "M_NOT_FOUND");
    bob.join("#nope:localhost").await.err(404, "M_NOT_FOUND");
    bob.join("not-an-id").await.err(400, "M_INVALID_PARAM");
}

trait SendCheck {
    async fn send_text_status(&self, room: &str);
}
impl SendCheck for plexus_spec_tests::Client {
    /// A non-member's send is refused with M_FORBIDDEN.
    async fn send_text_status(&self, room: &str) {
        let r = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/x1",
                    enc(room)
                ),
                json!({"body": "x"}),
            )
            .await;
        r.err(403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn send_is_idempotent_per_transaction() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/txn-1",
        enc(&room)
    );
    let a = alice
        .put(&path, json!({"msgtype": "m.text", "body": "once"}))
        .await;
    let b = alice
        .put(&path, json!({"msgtype": "m.text", "body": "once"}))
        .await;
    assert_eq!(a.ok()["event_id"], b.ok()["event_id"]);
    let msgs = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        ))
        .await;
    let n = msgs.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["content"]["body"] == "once")
        .count();
    assert_eq!(n, 1);
    // The sender's own device sees its transaction id.
    let sync = alice.sync("").await;
    let ev = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["content"]["body"] == "once")
        .unwrap();
    assert_eq!(ev["unsigned"]["transaction_id"], "txn-1");
}

#[tokio::test]
async fn state_events_and_power_levels() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let p = |a: &str| format!("/_matrix/client/v3/rooms/{}/{a}", enc(&room));
    let r = alice
        .put(&p("state/m.room.topic"), json!({"topic": "new"}))
        .await;
    assert!(r.ok()["event_id"].as_str().unwrap().starts_with('$'));
    bob.put(&p("state/m.room.topic"), json!({"topic": "mine"}))
        .await
        .err(403, "M_FORBIDDEN");
    bob.put(
        &p("state/m.room.power_levels"),
        json!({"users": {"@bob:localhost": 100}}),
    )
    .await
    .err(403, "M_FORBIDDEN");
    assert_eq!(bob.get(&p("state/m.room.topic")).await.ok()["topic"], "new");
    let ev = bob.get(&p("state/m.room.topic/?format=event")).await;
    assert_eq!(ev.ok()["sender"], "@alice:localhost");
    // The first topic replaced nothing.
    assert!(
        ev.body["unsigned"].get("prev_content").is_none(),
        "{}",
        ev.body
    );
    // A second change carries the replaced content for clients.
    alice
        .put(&p("state/m.room.topic"), json!({"topic": "newer"}))
        .await
        .ok();
    let ev = bob.get(&p("state/m.room.topic/?format=event")).await;
    assert_eq!(ev.ok()["content"]["topic"], "newer");
    assert_eq!(ev.body["unsigned"]["prev_content"]["topic"], "new");
    assert_eq!(ev.body["unsigned"]["prev_sender"], "@alice:localhost");
    bob.get(&p("state/m.room.name"))
        .await
        .err(404, "M_NOT_FOUND");
    let all = bob.get(&p("state")).await;
    let types: Vec<&str> = all
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.topic",
        "m.room.member",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // Outsiders see nothing.
    let eve = srv.user("eve").await;
    eve.get(&p("state")).await.err(403, "M_FORBIDDEN");
    eve.get(&p("state/m.room.topic"))
        .await
        .err(403, "M_FORBIDDEN");
    eve.get(&p("members")).await.err(403, "M_FORBIDDEN");
    eve.get(&p("messages?dir=b")).await.err(403, "M_FORBIDDEN");
    // Members lists.
    let members = alice.get(&p("members")).await;
    assert_eq!(members.ok()["chunk"].as_array().unwrap().len(), 2);
    let joined = alice.get(&p("joined_members")).await;
    assert!(joined.ok()["joined"]["@bob:localhost"].is_object());
    let only_join = alice.get(&p("members?membership=join")).await;
    assert_eq!(only_join.ok()["chunk"].as_array().unwrap().len(), 2);
    let not_join = alice.get(&p("members?not_membership=join")).await;
    assert_eq!(not_join.ok()["chunk"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn redaction_and_event_lookup() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let p = |a: &str| format!("/_matrix/client/v3/rooms/{}/{a}", enc(&room));
    let a_msg = alice.send_text(&room, "alice secret").await;
    let b_msg = bob.send_text(&room, "bob secret").await;
    let ev = bob.get(&p(&format!("event/{}", enc(&a_msg)))).await;
    assert_eq!(ev.ok()["content"]["body"], "alice secret");
    bob.get(&p("event/$doesnotexist"))
        .await
        .err(404, "M_NOT_FOUND");
    // Bob cannot redact Alice's message (redaction needs 50); the event exists but changes nothing.
    bob.put(
        &p(&format!("redact/{}/r1", enc(&a_msg))),
        json!({"reason": "no"}),
    )
    .await
    .ok();
    assert_eq!(
        bob.get(&p(&format!("event/{}", enc(&a_msg)))).await.ok()["content"]["body"],
        "alice secret"
    );
    // Bob redacts his own; Alice (creator) redacts Bob's too.
    let redaction = bob
        .put(
            &p(&format!("redact/{}/r2", enc(&b_msg))),
            json!({"reason": "oops"}),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let red = alice.get(&p(&format!("event/{}", enc(&b_msg)))).await;
    assert_eq!(red.ok()["content"], json!({}));
    let because = &red.body["unsigned"]["redacted_because"];
    assert_eq!(because["content"]["reason"], "oops");
    // The room is v12: `redacts` lives in content, and clients written before v11 read the
    // top-level key. Every client-facing form carries both.
    assert_eq!(because["redacts"], b_msg.as_str(), "{because}");
    let direct = alice.get(&p(&format!("event/{}", enc(&redaction)))).await;
    assert_eq!(direct.ok()["redacts"], b_msg.as_str(), "{}", direct.body);
    assert_eq!(direct.body["content"]["redacts"], b_msg.as_str());
    let page = alice.get(&p("messages?dir=b&limit=5")).await;
    let in_page = page.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == redaction.as_str())
        .cloned()
        .expect("redaction in /messages");
    assert_eq!(in_page["redacts"], b_msg.as_str(), "{in_page}");
    let ctx = alice
        .get(&p(&format!("context/{}?limit=2", enc(&redaction))))
        .await;
    assert_eq!(ctx.ok()["event"]["redacts"], b_msg.as_str(), "{}", ctx.body);
    let sync = alice.sync("").await;
    let in_sync = timeline(&sync, &room)
        .into_iter()
        .find(|e| e["event_id"] == redaction.as_str())
        .cloned()
        .expect("redaction in sync");
    assert_eq!(in_sync["redacts"], b_msg.as_str(), "{in_sync}");
    alice
        .put(&p(&format!("redact/{}/r3", enc(&a_msg))), json!({}))
        .await
        .ok();
    assert_eq!(
        bob.get(&p(&format!("event/{}", enc(&a_msg)))).await.ok()["content"],
        json!({})
    );
    let sync = bob.sync("").await;
    assert!(!bodies(&timeline(&sync, &room))
        .iter()
        .any(|b| b.contains("secret")));
}

#[tokio::test]
async fn history_visibility_is_enforced() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}))
        .await;
    let before = alice.send_text(&room, "before bob").await;
    bob.join(&room).await.ok();
    alice.send_text(&room, "after bob").await;
    let msgs = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        ))
        .await;
    let got: Vec<&str> = msgs.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(got, vec!["after bob"]);
    bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&before)
    ))
    .await
    .err(404, "M_NOT_FOUND");
    // After leaving, later messages are hidden from Bob.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    alice.send_text(&room, "after leave").await;
    let msgs = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        ))
        .await;
    let got: Vec<&str> = msgs.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(got, vec!["after bob"]);
}

#[tokio::test]
async fn messages_paging_and_context() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut ids = vec![];
    for i in 0..25 {
        ids.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    // Page backwards 10 at a time and collect all 25 in reverse order.
    let mut from = String::new();
    let mut seen = vec![];
    loop {
        let q = if from.is_empty() {
            String::new()
        } else {
            format!("&from={from}")
        };
        let r = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10{q}",
                enc(&room)
            ))
            .await;
        let body = r.ok().clone();
        for e in body["chunk"].as_array().unwrap() {
            if let Some(b) = e["content"]["body"].as_str() {
                seen.push(b.to_owned());
            }
        }
        match body["end"].as_str() {
            Some(e) => from = e.to_owned(),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want);
    // Forwards with a filter.
    let f = enc(r#"{"types":["m.room.message"]}"#);
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=5&filter={f}",
            enc(&room)
        ))
        .await;
    let got: Vec<&str> = r.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4"]);
    // Context around m12.
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=4&filter={f}",
            enc(&room),
            enc(&ids[12])
        ))
        .await;
    let body = r.ok();
    assert_eq!(body["event"]["content"]["body"], "m12");
    let before: Vec<&str> = body["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    let after: Vec<&str> = body["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(before, vec!["m11", "m10"]);
    assert_eq!(after, vec!["m13", "m14"]);
    assert!(body["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create"));
    // Bad parameters.
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=x",
            enc(&room)
        ))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&from=garbage",
            enc(&room)
        ))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=-1",
            enc(&room)
        ))
        .await
        .err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn room_aliases() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "first"}))
        .await;
    bob.join(&room).await.ok();
    let dir = |a: &str| format!("/_matrix/client/v3/directory/room/{}", enc(a));
    // Resolve the alias made by createRoom, add another, list both.
    let r = bob.get(&dir("#first:localhost")).await;
    assert_eq!(r.ok()["room_id"], room.as_str());
    assert_eq!(r.body["servers"], json!(["localhost"]));
    bob.put(&dir("#second:localhost"), json!({"room_id": room}))
        .await
        .ok();
    bob.put(&dir("#second:localhost"), json!({"room_id": room}))
        .await
        .err(409, "M_UNKNOWN");
    let list = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room)))
        .await;
    let mut aliases: Vec<&str> = list.ok()["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    aliases.sort();
    assert_eq!(aliases, vec!["#first:localhost", "#second:localhost"]);
    bob.join("#second:localhost").await.ok();
    // Bob (power 0) may delete the alias he made, not Alice's; Alice may delete any.
    bob.delete(&dir("#first:localhost"), json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    bob.delete(&dir("#second:localhost"), json!({})).await.ok();
    bob.get(&dir("#second:localhost"))
        .await
        .err(404, "M_NOT_FOUND");
    alice.delete(&dir("#first:localhost"), json!({})).await.ok();
    alice
        .get(&dir("#first:localhost"))
        .await
        .err(404, "M_NOT_FOUND");
    // Bad input.
    alice
        .put(&dir("no-hash"), json!({"room_id": room}))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .put(&dir("#x:elsewhere.org"), json!({"room_id": room}))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .put(&dir("#x:localhost"), json!({"room_id": "!nope:localhost"}))
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .put(&dir("#x:localhost"), json!({}))
        .await
        .err(400, "M_BAD_JSON");
    let eve = srv.user("eve").await;
    eve.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room)))
        .await
        .err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn public_room_directory() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let big = alice.create_room(json!({"visibility": "public", "name": "Rust lovers", "topic": "borrowck", "room_alias_name": "rust"})).await;
    bob.join(&big).await.ok();
    let small = alice
        .create_room(json!({"visibility": "public", "name": "Go fans"}))
        .await;
    let hidden = alice.create_room(json!({"name": "Secret"})).await;

    // Anyone may list; biggest first; private rooms are absent.
    let list = srv.client().get("/_matrix/client/v3/publicRooms").await;
    let chunk = list.ok()["chunk"].as_array().unwrap().clone();
    let ids: Vec<&str> = chunk
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![big.as_str(), small.as_str()]);
    assert_eq!(chunk[0]["name"], "Rust lovers");
    assert_eq!(chunk[0]["canonical_alias"], "#rust:localhost");
    assert_eq!(chunk[0]["num_joined_members"], 2);
    assert_eq!(chunk[0]["join_rule"], "public");
    assert_eq!(list.body["total_room_count_estimate"], 2);

    // Paging with limit and since.
    let p1 = srv
        .client()
        .get("/_matrix/client/v3/publicRooms?limit=1")
        .await;
    let next = p1.ok()["next_batch"].as_str().unwrap().to_owned();
    let p2 = srv
        .client()
        .get(&format!(
            "/_matrix/client/v3/publicRooms?limit=1&since={next}"
        ))
        .await;
    assert_eq!(p2.ok()["chunk"][0]["room_id"], small.as_str());
    assert!(p2.body.get("next_batch").is_none());

    // Search (authenticated POST).
    let found = alice
        .post(
            "/_matrix/client/v3/publicRooms",
            json!({"filter": {"generic_search_term": "BORROW"}}),
        )
        .await;
    let ids: Vec<&str> = found.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![big.as_str()]);

    // Visibility: read by anyone, changed by those with power.
    let vis = |r: &str| format!("/_matrix/client/v3/directory/list/room/{}", enc(r));
    assert_eq!(bob.get(&vis(&hidden)).await.ok()["visibility"], "private");
    bob.put(&vis(&big), json!({"visibility": "private"}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .put(&vis(&hidden), json!({"visibility": "public"}))
        .await
        .ok();
    assert_eq!(bob.get(&vis(&hidden)).await.ok()["visibility"], "public");
    alice
        .put(&vis(&big), json!({"visibility": "private"}))
        .await
        .ok();
    let list = srv.client().get("/_matrix/client/v3/publicRooms").await;
    let ids: Vec<&str> = list.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&hidden.as_str()) && !ids.contains(&big.as_str()));

    // Bad input.
    alice
        .put(&vis(&big), json!({"visibility": "friends"}))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .get(&vis("!nope:localhost"))
        .await
        .err(404, "M_NOT_FOUND");
    srv.client()
        .get("/_matrix/client/v3/publicRooms?since=zzz")
        .await
        .err(400, "M_INVALID_PARAM");
    srv.client()
        .post("/_matrix/client/v3/publicRooms", json!({}))
        .await
        .err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn user_directory_search() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    // Dave exists but shares no room with Alice.
    let _dave = srv.user("dave").await;
    bob.put(
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        json!({"displayname": "Bobby Tables"}),
    )
    .await
    .ok();
    // Alice shares a private room with Bob; Carol is in a public room; Dave shares nothing.
    let private = alice
        .create_room(json!({"invite": ["@bob:localhost"]}))
        .await;
    bob.join(&private).await.ok();
    carol
        .create_room(json!({"visibility": "public", "preset": "public_chat"}))
        .await;
    let search = |term: &str| json!({"search_term": term, "limit": 10});
    let r = alice
        .post("/_matrix/client/v3/user_directory/search", search("tables"))
        .await;
    assert_eq!(
        r.ok()["results"],
        json!([{"user_id": "@bob:localhost", "display_name": "Bobby Tables"}])
    );
    assert_eq!(r.body["limited"], false);
    let r = alice
        .post("/_matrix/client/v3/user_directory/search", search("carol"))
        .await;
    assert_eq!(r.ok()["results"][0]["user_id"], "@carol:localhost");
    let r = alice
        .post("/_matrix/client/v3/user_directory/search", search("dave"))
        .await;
    assert_eq!(
        r.ok()["results"],
        json!([]),
        "users sharing nothing are not found"
    );
    // Spec v1.15: members of rooms anyone may join or read count as public, published in the
    // directory or not.
    let erin = srv.user("erin").await;
    erin.create_room(json!({"preset": "public_chat"})).await;
    let frank = srv.user("frank").await;
    frank
        .create_room(json!({"preset": "private_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "",
             "content": {"history_visibility": "world_readable"}}]}))
        .await;
    let gina = srv.user("gina").await;
    gina.create_room(json!({"preset": "private_chat"})).await;
    for (who, found) in [("erin", true), ("frank", true), ("gina", false)] {
        let r = alice
            .post("/_matrix/client/v3/user_directory/search", search(who))
            .await;
        let ids: Vec<&str> = r.ok()["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["user_id"].as_str())
            .collect();
        assert_eq!(!ids.is_empty(), found, "{who}: {ids:?}");
    }
    let r = alice
        .post(
            "/_matrix/client/v3/user_directory/search",
            json!({"search_term": "localhost", "limit": 1}),
        )
        .await;
    assert_eq!(r.ok()["results"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["limited"], true);
    alice
        .post(
            "/_matrix/client/v3/user_directory/search",
            json!({"limit": 1}),
        )
        .await
        .err(400, "M_BAD_JSON");
    alice
        .post("/_matrix/client/v3/user_directory/search", search("  "))
        .await
        .err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn reports_and_timestamp_to_event() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let before = alice.send_text(&room, "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let mid = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let after = alice.send_text(&room, "second").await;

    // timestamp_to_event in both directions.
    let t = |dir: &str, ts: u64| {
        format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        )
    };
    assert_eq!(bob.get(&t("f", mid)).await.ok()["event_id"], after.as_str());
    assert_eq!(
        bob.get(&t("b", mid)).await.ok()["event_id"],
        before.as_str()
    );
    bob.get(&t("f", mid + 3_600_000))
        .await
        .err(404, "M_NOT_FOUND");
    bob.get(&format!(
        "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1&dir=x",
        enc(&room)
    ))
    .await
    .err(400, "M_INVALID_PARAM");
    bob.get(&format!(
        "/_matrix/client/v1/rooms/{}/timestamp_to_event?dir=f",
        enc(&room)
    ))
    .await
    .err(400, "M_MISSING_PARAM");
    let eve = srv.user("eve").await;
    eve.get(&t("f", mid)).await.err(403, "M_FORBIDDEN");

    // Reports.
    let rep = |e: &str| format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(e));
    bob.post(&rep(&after), json!({"reason": "spam", "score": -100}))
        .await
        .ok();
    bob.post(&rep("$nope"), json!({"reason": "x"}))
        .await
        .err(404, "M_NOT_FOUND");
    eve.post(&rep(&after), json!({"reason": "x"}))
        .await
        .err(404, "M_NOT_FOUND");
    bob.post(&rep(&after), json!({"reason": 5}))
        .await
        .err(400, "M_BAD_JSON");
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/report", enc(&room)),
        json!({"reason": "bad room"}),
    )
    .await
    .ok();
    bob.post(
        "/_matrix/client/v3/rooms/!nope:localhost/report",
        json!({"reason": "x"}),
    )
    .await
    .err(404, "M_NOT_FOUND");
    bob.post(
        "/_matrix/client/v3/users/@alice:localhost/report",
        json!({"reason": "rude"}),
    )
    .await
    .ok();
    bob.post(
        "/_matrix/client/v3/users/@ghost:localhost/report",
        json!({"reason": "x"}),
    )
    .await
    .err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn relations_endpoints() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let root = alice.send_text(&room, "root").await;
    let send = |c: &plexus_spec_tests::Client, kind: &str, content: serde_json::Value| {
        let c = c.clone();
        let room = room.clone();
        let kind = kind.to_owned();
        async move {
            let txn = plexus_spec_tests::rand_suffix();
            c.put(
                &format!("/_matrix/client/v3/rooms/{}/send/{kind}/{txn}", enc(&room)),
                content,
            )
            .await
            .ok()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let thumbs = send(
        &bob,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
    )
    .await;
    let t1 = send(
        &bob,
        "m.room.message",
        json!({"body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    let t2 = send(
        &alice,
        "m.room.message",
        json!({"body": "thread 2", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    // A reply is not a relation; an edit of a thread reply relates to that reply.
    send(
        &alice,
        "m.room.message",
        json!({"body": "reply", "m.relates_to": {"m.in_reply_to": {"event_id": root}}}),
    )
    .await;
    let edit = send(&bob, "m.room.message", json!({"body": "* edited", "m.new_content": {"body": "edited"}, "m.relates_to": {"rel_type": "m.replace", "event_id": t1}})).await;

    let rel = |suffix: &str| {
        format!(
            "/_matrix/client/v1/rooms/{}/relations/{}{suffix}",
            enc(&room),
            enc(&root)
        )
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = alice.get(&rel("")).await;
    assert_eq!(
        ids(all.ok()),
        vec![t2.clone(), t1.clone(), thumbs.clone()],
        "newest first, replies excluded"
    );
    let threads = alice.get(&rel("/m.thread")).await;
    assert_eq!(ids(threads.ok()), vec![t2.clone(), t1.clone()]);
    let reactions = alice.get(&rel("/m.annotation/m.reaction")).await;
    assert_eq!(ids(reactions.ok()), vec![thumbs.clone()]);
    // Paging forwards one at a time.
    let p1 = alice.get(&rel("?dir=f&limit=1")).await;
    assert_eq!(ids(p1.ok()), vec![thumbs.clone()]);
    let next = p1.body["next_batch"].as_str().unwrap().to_owned();
    let p2 = alice
        .get(&rel(&format!("?dir=f&limit=1&from={next}")))
        .await;
    assert_eq!(ids(p2.ok()), vec![t1.clone()]);
    // Recursion reaches the edit of a thread reply.
    let deep = alice.get(&rel("?recurse=true&limit=10")).await;
    assert!(ids(deep.ok()).contains(&edit));
    // A redacted relation disappears.
    bob.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r1",
            enc(&room),
            enc(&thumbs)
        ),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        ids(alice.get(&rel("/m.annotation")).await.ok()),
        Vec::<String>::new()
    );
    // Bad input and invisible parents.
    alice
        .get(&rel("?dir=sideways"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/$nope",
            enc(&room)
        ))
        .await
        .err(404, "M_NOT_FOUND");
    let eve = srv.user("eve").await;
    let private = alice.create_room(json!({})).await;
    let secret = alice.send_text(&private, "secret").await;
    eve.get(&format!(
        "/_matrix/client/v1/rooms/{}/relations/{}",
        enc(&private),
        enc(&secret)
    ))
    .await
    .err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn knocking() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice
        .create_room(json!({"name": "Knock knock", "room_alias_name": "door",
            "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}))
        .await;
    bob.join(&room).await.err(403, "M_FORBIDDEN");
    let r = bob
        .post(
            "/_matrix/client/v3/knock/%23door:localhost",
            json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(r.ok()["room_id"], room.as_str());
    // Bob sees his knock with the room's stripped state; Alice sees the knock in the timeline.
    let s = bob.sync("").await;
    let ks = s["rooms"]["knock"][&room]["knock_state"]["events"]
        .as_array()
        .unwrap();
    assert!(ks
        .iter()
        .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"));
    assert!(ks
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock"));
    let member = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/@bob:localhost",
            enc(&room)
        ))
        .await;
    assert_eq!(member.ok()["membership"], "knock");
    assert_eq!(member.body["reason"], "let me in");
    // Alice lets Bob in by inviting him.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": "@bob:localhost"}),
        )
        .await
        .ok();
    bob.join(&room).await.ok();
    // Knocking on a room that does not allow it, or in an old room version, is refused.
    let closed = alice.create_room(json!({})).await;
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&closed)),
        json!({}),
    )
    .await
    .err(403, "M_FORBIDDEN");
    let old = alice
        .create_room(json!({"room_version": "6", "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}))
        .await;
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&old)),
        json!({}),
    )
    .await
    .err(403, "M_FORBIDDEN");
    bob.post("/_matrix/client/v3/knock/!nope:localhost", json!({}))
        .await
        .err(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn room_upgrade() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let old = alice
        .create_room(
            json!({"room_version": "10", "preset": "public_chat", "visibility": "public",
            "name": "Old name", "topic": "kept", "room_alias_name": "moving"}),
        )
        .await;
    bob.join(&old).await.ok();
    let p = |r: &str, a: &str| format!("/_matrix/client/v3/rooms/{}/{a}", enc(r));
    // Bob's personal settings for the old room: a tag and a muting room rule.
    let tag_path = |r: &str| {
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite",
            enc(&bob.user_id),
            enc(r)
        )
    };
    let rule_path = |r: &str| format!("/_matrix/client/v3/pushrules/global/room/{}", enc(r));
    bob.put(&tag_path(&old), json!({"order": 0.25})).await.ok();
    bob.put(&rule_path(&old), json!({"actions": []})).await.ok();
    bob.post(&p(&old, "upgrade"), json!({"new_version": "12"}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(&p(&old, "upgrade"), json!({"new_version": "99"}))
        .await
        .err(400, "M_UNSUPPORTED_ROOM_VERSION");
    let r = alice
        .post(&p(&old, "upgrade"), json!({"new_version": "12"}))
        .await;
    let new = r.ok()["replacement_room"].as_str().unwrap().to_owned();

    // The old room points to the new one and is restricted.
    let tomb = bob.get(&p(&old, "state/m.room.tombstone")).await;
    assert_eq!(tomb.ok()["replacement_room"], new.as_str());
    bob.put(
        &p(&old, "send/m.room.message/late"),
        json!({"body": "too late"}),
    )
    .await
    .err(403, "M_FORBIDDEN");
    // The new room carries the state over and knows its predecessor.
    let create = alice.get(&p(&new, "state/m.room.create")).await;
    assert_eq!(create.ok()["room_version"], "12");
    assert_eq!(create.body["predecessor"]["room_id"], old.as_str());
    assert_eq!(
        alice.get(&p(&new, "state/m.room.name")).await.ok()["name"],
        "Old name"
    );
    assert_eq!(
        alice.get(&p(&new, "state/m.room.topic")).await.ok()["topic"],
        "kept"
    );
    // Aliases and the directory entry moved; Bob can follow.
    let dir = alice
        .get("/_matrix/client/v3/directory/room/%23moving:localhost")
        .await;
    assert_eq!(dir.ok()["room_id"], new.as_str());
    let list = srv.client().get("/_matrix/client/v3/publicRooms").await;
    let ids: Vec<&str> = list.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![new.as_str()]);
    bob.join("#moving:localhost").await.ok();
    bob.send_text(&new, "hello new room").await;
    // Joining the replacement carried bob's tag and room rule over.
    let tags = bob
        .get(&format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags",
            enc(&bob.user_id),
            enc(&new)
        ))
        .await;
    assert_eq!(tags.ok()["tags"]["m.favourite"]["order"], 0.25);
    let rule = bob.get(&rule_path(&new)).await;
    assert_eq!(rule.ok()["actions"], json!([]));
}

/// `unsigned.membership` (MSC4115, spec v1.11): the reader's membership at each event,
/// counting the event's own change, `leave` before they had any; in `/messages`, `/event`,
/// `/context` and the sync timeline. Not in state listings.
#[tokio::test]
async fn events_say_the_readers_membership_at_the_time() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let p = |a: &str| format!("/_matrix/client/v3/rooms/{}/{a}", enc(&room));
    let before = alice.send_text(&room, "before the invite").await;
    alice
        .post(&p("invite"), json!({"user_id": bob.user_id}))
        .await
        .ok();
    let invited = alice.send_text(&room, "while invited").await;
    bob.join(&room).await.ok();
    let joined = alice.send_text(&room, "after the join").await;

    let page = bob.get(&p("messages?dir=b&limit=50")).await;
    let membership_of = |id: &str| -> Value {
        page.body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == id)
            .map(|e| e["unsigned"]["membership"].clone())
            .unwrap_or_else(|| panic!("{id} not in {}", page.body))
    };
    assert_eq!(page.status, 200);
    assert_eq!(membership_of(&before), "leave");
    assert_eq!(membership_of(&invited), "invite");
    assert_eq!(membership_of(&joined), "join");
    let own_join = page.body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(own_join["unsigned"]["membership"], "join", "{own_join}");
    // Alice was in the room for all of it.
    let alice_view = alice.get(&p("messages?dir=b&limit=50")).await;
    assert!(alice_view.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .all(|e| e["unsigned"]["membership"] == "join"));

    let one = bob.get(&p(&format!("event/{}", enc(&invited)))).await;
    assert_eq!(one.ok()["unsigned"]["membership"], "invite");
    let ctx = bob
        .get(&p(&format!("context/{}?limit=4", enc(&joined))))
        .await;
    assert_eq!(ctx.ok()["event"]["unsigned"]["membership"], "join");
    assert!(
        ctx.body["state"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["unsigned"].get("membership").is_none()),
        "{}",
        ctx.body["state"]
    );
    let sync = bob.sync("").await;
    let tl = timeline(&sync, &room);
    let last = tl.last().expect("timeline");
    assert_eq!(last["event_id"], joined.as_str());
    assert_eq!(last["unsigned"]["membership"], "join");
    let state = &sync["rooms"]["join"][&room]["state"]["events"];
    assert!(
        state
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["unsigned"].get("membership").is_none()),
        "{state}"
    );
}

/// An invite carries the invitee's display name and avatar (as Synapse's do), so clients show
/// who was invited before they join; in `/invite` and in createRoom's `invite` alike.
#[tokio::test]
async fn invites_carry_the_invitees_profile() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    for (field, value) in [
        ("displayname", "Bob B."),
        ("avatar_url", "mxc://localhost/bob"),
    ] {
        bob.put(
            &format!("/_matrix/client/v3/profile/{}/{field}", enc(&bob.user_id)),
            json!({ field: value }),
        )
        .await
        .ok();
    }
    let later = alice.create_room(json!({})).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&later)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    let at_once = alice.create_room(json!({"invite": [bob.user_id]})).await;
    for room in [&later, &at_once] {
        let invite = alice
            .state(room, "m.room.member", &bob.user_id)
            .await
            .expect("invite");
        assert_eq!(invite["membership"], "invite");
        assert_eq!(invite["displayname"], "Bob B.", "{invite}");
        assert_eq!(invite["avatar_url"], "mxc://localhost/bob", "{invite}");
    }
}
