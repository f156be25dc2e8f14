//! `/sync`: initial and incremental, long-poll wake-up, limited timelines, filters, lazy-loading,
//! invite and leave sections, account data, full_state.

use std::time::{Duration, Instant};

use plexus_spec_tests::{bodies, enc, next_batch, timeline, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn initial_and_incremental_sync() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice
        .create_room(json!({"name": "Chat", "invite": ["@bob:localhost"]}))
        .await;

    let s0 = bob.sync("").await;
    let inv = &s0["rooms"]["invite"][&room]["invite_state"]["events"];
    let types: Vec<&str> = inv
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"m.room.name") && types.contains(&"m.room.create"),
        "{types:?}"
    );
    assert!(inv
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost"));
    let since = s0["next_batch"].as_str().unwrap().to_owned();

    bob.join(&room).await.ok();
    alice.send_text(&room, "hi bob").await;
    let s1 = bob.sync(&format!("since={since}")).await;
    let joined = &s1["rooms"]["join"][&room];
    // Newly joined: full state is sent, the timeline has the message.
    let state_types: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let tl = timeline(&s1, &room);
    let all_types: Vec<&str> = state_types
        .iter()
        .copied()
        .chain(tl.iter().map(|e| e["type"].as_str().unwrap()))
        .collect();
    for t in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(all_types.contains(&t), "{t} missing");
    }
    assert_eq!(bodies(&tl), vec!["hi bob"]);
    assert!(
        tl.iter().all(|e| e.get("room_id").is_none()),
        "sync events omit room_id"
    );
    assert!(s1["rooms"]["invite"].get(&room).is_none());

    // Nothing new: an incremental sync with timeout 0 is empty.
    let since = s1["next_batch"].as_str().unwrap().to_owned();
    let s2 = bob.sync(&format!("since={since}&timeout=0")).await;
    assert!(s2["rooms"]["join"].get(&room).is_none(), "{s2}");
    assert_eq!(s2["next_batch"], since);

    // One new message: incremental, not limited, no state.
    alice.send_text(&room, "second").await;
    let s3 = bob.sync(&format!("since={since}")).await;
    assert_eq!(bodies(&timeline(&s3, &room)), vec!["second"]);
    assert_eq!(s3["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(s3["rooms"]["join"][&room]["state"]["events"], json!([]));
}

#[tokio::test]
async fn long_poll_wakes_on_send() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let since = bob.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let s = bob.sync(&format!("since={since}&timeout=20000")).await;
            (s, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send_text(&room, "wake up").await;
    let (s, elapsed) = waiter.await.unwrap();
    assert_eq!(bodies(&timeline(&s, &room)), vec!["wake up"]);
    assert!(
        elapsed < Duration::from_secs(10),
        "long-poll returned only after {elapsed:?}"
    );

    // With nothing to say, the wait lasts the timeout.
    let since = s["next_batch"].as_str().unwrap().to_owned();
    let t = Instant::now();
    let s = bob.sync(&format!("since={since}&timeout=700")).await;
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "returned early: {s}"
    );
}

#[tokio::test]
async fn limited_timeline_and_prev_batch_paging() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let since = alice.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room)),
            json!({"topic": "changed"}),
        )
        .await
        .ok();
    for i in 0..15 {
        alice.send_text(&room, &format!("n{i}")).await;
    }
    let f = enc(r#"{"room":{"timeline":{"limit":5}}}"#);
    let s = alice.sync(&format!("since={since}&filter={f}")).await;
    let r = &s["rooms"]["join"][&room];
    assert_eq!(r["timeline"]["limited"], true);
    assert_eq!(
        bodies(&timeline(&s, &room)),
        vec!["n10", "n11", "n12", "n13", "n14"]
    );
    // The topic change fell in the gap, so it is in the state section.
    let state = r["state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "changed"),
        "{state:?}"
    );
    // prev_batch continues exactly where the timeline starts.
    let prev = r["timeline"]["prev_batch"].as_str().unwrap();
    let m = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=3&from={prev}",
            enc(&room)
        ))
        .await;
    let got: Vec<&str> = m.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(got, vec!["n9", "n8", "n7"]);
}

#[tokio::test]
async fn stored_filters_and_lazy_loading() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let mut others = vec![];
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..4 {
        let c = srv.user(&format!("m{i}")).await;
        c.join(&room).await.ok();
        others.push(c);
    }
    others[0].send_text(&room, "from m0").await;
    let filter = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 1}}});
    let r = alice
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            filter.clone(),
        )
        .await;
    let id = r.ok()["filter_id"].as_str().unwrap().to_owned();
    assert_eq!(
        alice
            .get(&format!(
                "/_matrix/client/v3/user/@alice:localhost/filter/{id}"
            ))
            .await
            .ok(),
        &filter
    );
    alice
        .get("/_matrix/client/v3/user/@alice:localhost/filter/nope")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .post("/_matrix/client/v3/user/@bob:localhost/filter", json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            json!({"room": {"timeline": {"limit": "x"}}}),
        )
        .await
        .err(400, "M_BAD_JSON");

    let s = alice.sync(&format!("filter={id}")).await;
    let r = &s["rooms"]["join"][&room];
    let members: Vec<&str> = r["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    // Only the timeline's sender and the user themself, not all five members.
    assert!(
        members.contains(&"@m0:localhost") && members.contains(&"@alice:localhost"),
        "{members:?}"
    );
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(r["summary"]["m.joined_member_count"], 5);
    // Inline filter JSON works too; a bad one is rejected.
    let inline = enc(r#"{"room":{"timeline":{"types":["m.room.member"]}}}"#);
    let s = alice.sync(&format!("filter={inline}")).await;
    assert!(timeline(&s, &room)
        .iter()
        .all(|e| e["type"] == "m.room.member"));
    let r = alice
        .get(&format!("/_matrix/client/v3/sync?filter={}", enc("{bad")))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn leave_section_account_data_and_full_state() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let since = bob.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.send_text(&room, "last words").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    alice.send_text(&room, "after bob left").await;
    let s = bob.sync(&format!("since={since}")).await;
    let left = &s["rooms"]["leave"][&room];
    let tl: Vec<&Value> = left["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(bodies(&tl).contains(&"last words".to_owned()));
    assert!(!bodies(&tl).contains(&"after bob left".to_owned()));
    assert!(tl
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"));
    assert!(s["rooms"]["join"].get(&room).is_none());

    // Account data, global and per room.
    let since = s["next_batch"].as_str().unwrap().to_owned();
    alice
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.pref",
            json!({"theme": "dark"}),
        )
        .await
        .ok();
    alice
        .put(
            &format!(
                "/_matrix/client/v3/user/@alice:localhost/rooms/{}/account_data/org.example.room",
                enc(&room)
            ),
            json!({"pinned": true}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get("/_matrix/client/v3/user/@alice:localhost/account_data/org.example.pref")
            .await
            .ok()["theme"],
        "dark"
    );
    alice
        .get("/_matrix/client/v3/user/@alice:localhost/account_data/org.example.none")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .put(
            "/_matrix/client/v3/user/@bob:localhost/account_data/x",
            json!({}),
        )
        .await
        .err(403, "M_FORBIDDEN");
    let s = alice.sync("").await;
    assert!(s["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "org.example.pref"));
    let rad = &s["rooms"]["join"][&room]["account_data"]["events"];
    assert!(rad
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "org.example.room" && e["content"]["pinned"] == true));
    // Bob's incremental sync does not see Alice's account data.
    let sb = bob.sync(&format!("since={since}")).await;
    assert_eq!(sb["account_data"]["events"], json!([]));

    // full_state resends all state even with nothing new.
    let next = s["next_batch"].as_str().unwrap();
    let fs = alice.sync(&format!("since={next}&full_state=true")).await;
    let st = fs["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .len()
        + timeline(&fs, &room)
            .iter()
            .filter(|e| e.get("state_key").is_some())
            .count();
    assert!(st >= 4, "{fs}");
    // Bad parameters.
    alice
        .get("/_matrix/client/v3/sync?since=abc")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/sync?set_presence=busy")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/sync?timeout=soon")
        .await
        .err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn ignored_users_events_are_hidden_except_state() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let ignore = format!(
        "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
        enc(&alice.user_id)
    );
    alice
        .put(
            &ignore,
            json!({"ignored_users": {(bob.user_id.clone()): {}}}),
        )
        .await
        .ok();
    bob.send_text(&room, "you cannot hear me").await;
    alice.send_text(&room, "alone").await;

    let s = alice.sync("").await;
    let bodies: Vec<String> = bodies(&timeline(&s, &room));
    assert_eq!(bodies, ["alone"], "bob's message is hidden in sync");
    assert!(
        timeline(&s, &room)
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "state events of ignored users still show"
    );
    assert_eq!(
        alice.recent_bodies(&room).await,
        ["alone"],
        "and in /messages"
    );
    assert_eq!(
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0,
        "and it does not notify"
    );

    // Invites from an ignored user are not shown.
    let other = bob.create_room(json!({"preset": "private_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&other)),
        json!({"user_id": alice.user_id}),
    )
    .await
    .ok();
    let s = alice.sync("").await;
    assert!(
        s["rooms"]["invite"].get(&other).is_none(),
        "{}",
        s["rooms"]["invite"]
    );

    // Un-ignored, everything shows again.
    alice.put(&ignore, json!({"ignored_users": {}})).await.ok();
    let s = alice.sync("").await;
    assert!(s["rooms"]["invite"].get(&other).is_some());
    assert!(alice
        .recent_bodies(&room)
        .await
        .contains(&"you cannot hear me".to_owned()));
}

/// An incremental sync from `since` and the room's joined section in it.
async fn joined_section(
    c: &plexus_spec_tests::Client,
    since: &str,
    room: &str,
    extra: &str,
) -> Value {
    let s = c
        .sync(&format!("timeout=0&since={}{extra}", enc(since)))
        .await;
    let section = s["rooms"]["join"][room].clone();
    assert!(section.is_object(), "room {room} not in join: {s}");
    section
}

/// Message bodies and types of a sync section's timeline, oldest first.
fn section_timeline(section: &Value) -> (Vec<String>, Vec<String>) {
    let events = section["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let refs: Vec<&Value> = events.iter().collect();
    let types = events
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    (bodies(&refs), types)
}

/// A room that first reaches a client in an incremental sync (joined, invite accepted, knock
/// accepted, rejoined, or the successor of an upgraded room) comes with its recent history in
/// `timeline`, as an initial sync would give it, and not only the join: the message a user was
/// invited to read is there, and so are the create and encryption events clients show.
#[tokio::test]
async fn a_room_joined_between_syncs_comes_with_its_history() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let invite = |room: String| {
        let alice = &alice;
        let bob = bob.user_id.clone();
        async move {
            alice
                .post(
                    &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                    json!({"user_id": bob}),
                )
                .await
                .ok();
        }
    };
    // A public room, an encrypted room bob is invited to, and a room he knocked on and was
    // let into: all with a message from before bob's sync token.
    let public = alice.create_room(json!({"preset": "public_chat"})).await;
    let before_bob = alice.send_text(&public, "before bob").await;
    alice
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&public),
                enc(&before_bob)
            ),
            json!({}),
        )
        .await
        .ok();
    let private = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }))
        .await;
    alice.send_text(&private, "read this").await;
    invite(private.clone()).await;
    let knockable = alice
        .create_room(json!({"preset": "private_chat", "room_version": "11",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                               "content": {"join_rule": "knock"}}]}))
        .await;
    alice.send_text(&knockable, "behind the door").await;
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&knockable)),
        json!({}),
    )
    .await
    .ok();
    invite(knockable.clone()).await;
    let since = next_batch(&bob.sync("timeout=0").await);
    for room in [&public, &private, &knockable] {
        bob.join(room).await.ok();
    }

    for extra in ["", "&full_state=true"] {
        let section = joined_section(&bob, &since, &public, extra).await;
        let (bodies, types) = section_timeline(&section);
        assert_eq!(bodies, vec!["before bob"], "{extra}: {section}");
        assert_eq!(
            types.first().map(String::as_str),
            Some("m.room.create"),
            "{section}"
        );
        assert_eq!(
            types.last().map(String::as_str),
            Some("m.room.member"),
            "{section}"
        );
        // New to this incremental sync: the timeline does not follow on from anything the
        // client had, so it is `limited` (as Synapse says) although the whole room fits.
        assert_eq!(section["timeline"]["limited"], true, "{section}");
        // Receipts from before the token come with the history they are about.
        let receipt = section["ephemeral"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.receipt")
            .cloned()
            .unwrap_or_default();
        assert!(
            receipt["content"][&before_bob]["m.read"][&alice.user_id].is_object(),
            "{section}"
        );
        // Timeline events are not repeated in state.
        let tl_ids: Vec<&Value> = section["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["event_id"])
            .collect();
        assert!(
            section["state"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| !tl_ids.contains(&&e["event_id"])),
            "{section}"
        );
    }
    let section = joined_section(&bob, &since, &private, "").await;
    let (bodies, types) = section_timeline(&section);
    assert_eq!(bodies, vec!["read this"], "{section}");
    assert!(types.iter().any(|t| t == "m.room.encryption"), "{types:?}");
    let section = joined_section(&bob, &since, &knockable, "").await;
    assert_eq!(
        section_timeline(&section).0,
        vec!["behind the door"],
        "{section}"
    );

    // Rejoined after a leave: what was said meanwhile is news to the client.
    let before_leave = next_batch(&bob.sync("timeout=0").await);
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&public)),
        json!({}),
    )
    .await
    .ok();
    let left = next_batch(
        &bob.sync(&format!("timeout=0&since={}", enc(&before_leave)))
            .await,
    );
    alice.send_text(&public, "while bob was away").await;
    bob.join(&public).await.ok();
    let section = joined_section(&bob, &left, &public, "").await;
    let (bodies, _) = section_timeline(&section);
    assert!(
        bodies.contains(&"while bob was away".to_owned()),
        "{section}"
    );
    // The client's old timeline of the room ends at the leave: this one does not follow on.
    assert_eq!(section["timeline"]["limited"], true, "{section}");

    // The successor of an upgraded room.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&public)),
            json!({"new_version": "11"}),
        )
        .await;
    let successor = r.ok()["replacement_room"].as_str().unwrap().to_owned();
    alice.send_text(&successor, "on the other side").await;
    let before_follow = next_batch(&bob.sync("timeout=0").await);
    bob.join(&successor).await.ok();
    let section = joined_section(&bob, &before_follow, &successor, "").await;
    let (bodies, types) = section_timeline(&section);
    assert_eq!(bodies, vec!["on the other side"], "{section}");
    assert_eq!(
        types.first().map(String::as_str),
        Some("m.room.create"),
        "{section}"
    );
}

/// A room joined between syncs whose history is longer than the timeline limit says
/// `limited`, and its `prev_batch` pages back through the rest; with `joined` history
/// visibility, nothing from before the join is shown.
#[tokio::test]
async fn a_long_room_joined_between_syncs_is_limited_and_pages_back() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..15 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let since = next_batch(&bob.sync("timeout=0").await);
    bob.join(&room).await.ok();
    let filter = format!("&filter={}", enc(r#"{"room":{"timeline":{"limit":5}}}"#));
    let section = joined_section(&bob, &since, &room, &filter).await;
    assert_eq!(section["timeline"]["limited"], true, "{section}");
    let (shown, _) = section_timeline(&section);
    assert_eq!(shown, vec!["m11", "m12", "m13", "m14"], "{section}");
    let prev = section["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (older, _) = bob.page_back(&room, 4, Some(prev)).await;
    let older: Vec<&str> = older
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let expected: Vec<String> = (0..11).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(older, expected, "paged back");

    // History visible to joined members only: the earlier message stays hidden.
    let hidden = alice
        .create_room(json!({"preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "joined"}}]}))
        .await;
    alice.send_text(&hidden, "not for bob").await;
    let since = next_batch(&bob.sync("timeout=0").await);
    bob.join(&hidden).await.ok();
    let section = joined_section(&bob, &since, &hidden, "").await;
    let (shown, types) = section_timeline(&section);
    // The room's first events come before its visibility was set (so they are `shared`);
    // the message after it is hidden.
    assert!(shown.is_empty(), "{section}");
    assert!(types.iter().all(|t| t != "m.room.message"), "{types:?}");
    assert_eq!(
        types.last().map(String::as_str),
        Some("m.room.member"),
        "{section}"
    );
    let prev = section["timeline"]["prev_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (older, _) = bob.page_back(&hidden, 10, Some(prev)).await;
    assert!(
        older.iter().all(|e| e["content"]["body"] != "not for bob"),
        "{older:?}"
    );
}
