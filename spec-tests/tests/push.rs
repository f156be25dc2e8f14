//! Push: rule evaluation into unread counts (per room and per thread), `/notifications`,
//! pushers and delivery to a push gateway this test runs.

use plexus_spec_tests::{enc, eventually, push_gateway::Gateway, Client, Server};
use serde_json::{json, Value};

/// `(notification_count, highlight_count)` of a joined room in a full sync.
async fn counts(c: &Client, room: &str) -> (u64, u64) {
    let s = c.sync("").await;
    let u = &s["rooms"]["join"][room]["unread_notifications"];
    (
        u["notification_count"]
            .as_u64()
            .expect("notification_count"),
        u["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn receipt(c: &Client, room: &str, event: &str, body: Value) {
    c.post(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(room),
            enc(event)
        ),
        body,
    )
    .await
    .ok();
}

/// A room of three (alice, bob, carol): counts are what alice sees.
async fn room_of_three(srv: &Server) -> (Client, Client, Client, String) {
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "push"}))
        .await;
    bob.join(&room).await.ok();
    carol.join(&room).await.ok();
    (alice, bob, carol, room)
}

#[tokio::test]
async fn unread_counts_follow_messages_mentions_and_receipts() {
    let srv = Server::start().await;
    let (alice, bob, _carol, room) = room_of_three(&srv).await;
    assert_eq!(counts(&alice, &room).await, (0, 0), "joins do not notify");

    bob.send_text(&room, "one").await;
    bob.send_text(&room, "two").await;
    assert_eq!(counts(&alice, &room).await, (2, 0));
    // The sender is never notified of their own messages.
    assert_eq!(counts(&bob, &room).await, (0, 0));

    // A mention highlights.
    let mention = bob
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "alice: look",
               "m.mentions": {"user_ids": [alice.user_id]}}),
        )
        .await;
    assert_eq!(counts(&alice, &room).await, (3, 1));
    // Reading the latest event clears everything before it.
    receipt(&alice, &room, &mention, json!({})).await;
    assert_eq!(counts(&alice, &room).await, (0, 0));

    // A muted room (a room rule without actions) stops notifying; unmuted, it notifies again.
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
    alice.put(&rule, json!({"actions": []})).await.ok();
    bob.send_text(&room, "muted").await;
    assert_eq!(counts(&alice, &room).await, (0, 0));
    alice.delete(&rule, json!({})).await.ok();
    let unmuted = bob.send_text(&room, "unmuted").await;
    assert_eq!(counts(&alice, &room).await, (1, 0));
    receipt(&alice, &room, &unmuted, json!({})).await;

    // A receipt on an older event clears only up to it.
    let older = bob.send_text(&room, "three").await;
    bob.send_text(&room, "four").await;
    assert_eq!(counts(&alice, &room).await, (2, 0));
    receipt(&alice, &room, &older, json!({})).await;
    assert_eq!(counts(&alice, &room).await, (1, 0));
    // Sending is reading: alice's own message clears what came before it.
    alice.send_text(&room, "caught up").await;
    assert_eq!(counts(&alice, &room).await, (0, 0));

    // An incremental sync carries the counts of rooms that changed.
    let since = alice.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.send_text(&room, "five").await;
    let s = alice.sync(&format!("since={since}&timeout=0")).await;
    assert_eq!(
        s["rooms"]["join"][&room]["unread_notifications"],
        json!({"notification_count": 1, "highlight_count": 0})
    );

    // Counts survive a restart (they are stored with the events).
    let mut srv = srv;
    srv.crash_and_restart().await;
    assert_eq!(counts(&alice, &room).await, (1, 0));
}

#[tokio::test]
async fn thread_counts_are_apart_when_asked_for() {
    let srv = Server::start().await;
    let (alice, bob, _carol, room) = room_of_three(&srv).await;
    let root = bob.send_text(&room, "root").await;
    let in_thread = |body: &str| {
        json!({"msgtype": "m.text", "body": body,
               "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                                "is_falling_back": true, "m.in_reply_to": {"event_id": root}}})
    };
    bob.send_message(&room, in_thread("reply 1")).await;
    let last = bob.send_message(&room, in_thread("reply 2")).await;

    // Without the filter flag, every notification counts in the room's total.
    assert_eq!(counts(&alice, &room).await, (3, 0));
    let filter =
        enc(&json!({"room": {"timeline": {"unread_thread_notifications": true}}}).to_string());
    let split = alice.sync(&format!("filter={filter}")).await;
    let r = &split["rooms"]["join"][&room];
    assert_eq!(r["unread_notifications"]["notification_count"], 1);
    assert_eq!(
        r["unread_thread_notifications"][&root],
        json!({"notification_count": 2, "highlight_count": 0})
    );

    // A threaded receipt clears its thread only; a `main` one the main timeline only.
    receipt(&alice, &room, &last, json!({"thread_id": root})).await;
    let r = alice.sync(&format!("filter={filter}")).await["rooms"]["join"][&room].clone();
    assert_eq!(r["unread_notifications"]["notification_count"], 1);
    assert!(r.get("unread_thread_notifications").is_none(), "{r}");
    receipt(&alice, &room, &root, json!({"thread_id": "main"})).await;
    assert_eq!(counts(&alice, &room).await, (0, 0));
}

#[tokio::test]
async fn notifications_list_pages_and_marks_read() {
    let srv = Server::start().await;
    let (alice, bob, _carol, room) = room_of_three(&srv).await;
    let first = bob.send_text(&room, "first").await;
    let second = bob
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "hey alice",
               "m.mentions": {"user_ids": [alice.user_id]}}),
        )
        .await;
    let third = bob.send_text(&room, "third").await;
    receipt(&alice, &room, &first, json!({})).await;

    let all = alice.get("/_matrix/client/v3/notifications").await;
    let list = all.ok()["notifications"].as_array().unwrap().clone();
    let ids: Vec<&str> = list
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [third.as_str(), second.as_str(), first.as_str()],
        "newest first"
    );
    let read: Vec<bool> = list.iter().map(|n| n["read"].as_bool().unwrap()).collect();
    assert_eq!(read, [false, false, true]);
    for n in &list {
        assert_eq!(n["room_id"], room);
        assert!(n["ts"].as_u64().unwrap() > 0);
        assert!(n["actions"].as_array().unwrap().contains(&json!("notify")));
        assert!(
            n["event"].get("room_id").is_none(),
            "events come without room_id"
        );
    }
    assert!(list[1]["actions"]
        .as_array()
        .unwrap()
        .contains(&json!({"set_tweak": "highlight"})));
    assert!(all.body.get("next_token").is_none());

    // Paging one at a time walks the same list.
    let mut seen = vec![];
    let mut from = String::new();
    loop {
        let page = alice
            .get(&format!(
                "/_matrix/client/v3/notifications?limit=1&from={from}"
            ))
            .await;
        for n in page.ok()["notifications"].as_array().unwrap() {
            seen.push(n["event"]["event_id"].as_str().unwrap().to_owned());
        }
        match page.body["next_token"].as_str() {
            Some(t) => from = t.to_owned(),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end");
    }
    assert_eq!(seen, ids);

    let only = alice
        .get("/_matrix/client/v3/notifications?only=highlight")
        .await;
    let only = only.ok()["notifications"].as_array().unwrap().clone();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["event"]["event_id"], second);

    // Bad input.
    alice
        .get("/_matrix/client/v3/notifications?from=soon")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/notifications?limit=-1")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/notifications?only=everything")
        .await
        .err(400, "M_INVALID_PARAM");
}

fn pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.plexus.test",
        "pushkey": pushkey,
        "app_display_name": "Plexus tests",
        "device_display_name": "laptop",
        "lang": "en",
        "data": {"url": url, "custom": "kept"},
    })
}

#[tokio::test]
async fn pushers_are_validated_listed_and_deleted() {
    let srv = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_PUSH_ALLOW_LOOPBACK", "true"),
    ])
    .await;
    let alice = srv.user("alice").await;
    let set = "/_matrix/client/v3/pushers/set";
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";

    let mut missing = pusher(url, "k1");
    missing.as_object_mut().unwrap().remove("lang");
    alice.post(set, missing).await.err(400, "M_MISSING_PARAM");
    let mut no_url = pusher(url, "k1");
    no_url["data"] = json!({});
    alice.post(set, no_url).await.err(400, "M_MISSING_PARAM");
    alice
        .post(set, pusher("http://127.0.0.1:9/notify", "k1"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .post(set, pusher("not a url", "k1"))
        .await
        .err(400, "M_INVALID_PARAM");
    let mut email = pusher(url, "a@example.org");
    email["kind"] = json!("email");
    alice.post(set, email).await.err(400, "M_INVALID_PARAM");
    let mut odd = pusher(url, "k1");
    odd["kind"] = json!("carrier-pigeon");
    alice.post(set, odd).await.err(400, "M_INVALID_PARAM");
    alice
        .post(set, pusher(url, &"k".repeat(513)))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .raw("POST", set, Some(b"{nope".to_vec()))
        .await
        .err(400, "M_NOT_JSON");

    alice.post(set, pusher(url, "k1")).await.ok();
    alice.post(set, pusher(url, "k2")).await.ok();
    let got = alice.get("/_matrix/client/v3/pushers").await;
    let list = got.ok()["pushers"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let p = list.iter().find(|p| p["pushkey"] == "k1").unwrap();
    assert_eq!(p["kind"], "http");
    assert_eq!(p["app_id"], "org.plexus.test");
    assert_eq!(p["app_display_name"], "Plexus tests");
    assert_eq!(p["device_display_name"], "laptop");
    assert_eq!(p["lang"], "en");
    assert_eq!(p["data"], json!({"url": url, "custom": "kept"}));

    // The same app and pushkey registered by someone else moves to them (append false).
    let bob = srv.user("bob").await;
    bob.post(set, pusher(url, "k2")).await.ok();
    let mine = alice.get("/_matrix/client/v3/pushers").await;
    assert_eq!(mine.ok()["pushers"].as_array().unwrap().len(), 1);

    // kind null deletes.
    let mut delete = json!({"kind": null, "app_id": "org.plexus.test", "pushkey": "k1"});
    alice.post(set, delete.clone()).await.ok();
    let left = alice.get("/_matrix/client/v3/pushers").await;
    assert_eq!(left.ok()["pushers"], json!([]));
    delete["pushkey"] = json!("k2");
    bob.post(set, delete).await.ok();

    // Without the loopback switch, a pusher may not aim the server at internal addresses.
    let strict = Server::start().await;
    let carol = strict.user("carol").await;
    carol
        .post(set, pusher(url, "k1"))
        .await
        .err(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn notifications_reach_the_push_gateway() {
    let gw = Gateway::start().await;
    let mut srv = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_PUSH_ALLOW_LOOPBACK", "true"),
    ])
    .await;
    let (alice, bob, carol, room) = room_of_three(&srv).await;
    bob.put(
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&bob.user_id)
        ),
        json!({"displayname": "Bob B."}),
    )
    .await
    .ok();
    alice
        .post(
            "/_matrix/client/v3/pushers/set",
            pusher(&gw.url, "alice-key"),
        )
        .await
        .ok();
    let mut id_only = pusher(&gw.url, "carol-key");
    id_only["data"]["format"] = json!("event_id_only");
    carol
        .post("/_matrix/client/v3/pushers/set", id_only)
        .await
        .ok();

    let hello = bob.send_text(&room, "hello from bob").await;
    let got = eventually(10, "two notifications at the gateway", || async {
        let a = gw.accepted();
        (a.len() >= 2).then_some(a)
    })
    .await;
    let to_alice = got
        .iter()
        .find(|n| n["devices"][0]["pushkey"] == "alice-key")
        .expect("alice's notification");
    assert_eq!(to_alice["event_id"], hello);
    assert_eq!(to_alice["room_id"], room);
    assert_eq!(to_alice["type"], "m.room.message");
    assert_eq!(to_alice["sender"], bob.user_id);
    assert_eq!(to_alice["sender_display_name"], "Bob B.");
    assert_eq!(to_alice["room_name"], "push");
    assert_eq!(to_alice["content"]["body"], "hello from bob");
    assert_eq!(to_alice["counts"]["unread"], 1);
    let device = &to_alice["devices"][0];
    assert_eq!(device["app_id"], "org.plexus.test");
    assert_eq!(device["data"], json!({"custom": "kept"}), "url is not sent");
    assert!(device["pushkey_ts"].as_u64().unwrap() > 1_600_000_000);
    let to_carol = got
        .iter()
        .find(|n| n["devices"][0]["pushkey"] == "carol-key")
        .expect("carol's notification");
    assert_eq!(to_carol["event_id"], hello);
    assert!(to_carol.get("content").is_none() && to_carol.get("sender").is_none());
    assert!(gw
        .requests()
        .iter()
        .all(|r| r.path == "/_matrix/push/v1/notify"));

    // A failing gateway is retried until it answers.
    gw.answer(500);
    let retried = bob.send_text(&room, "while the gateway is down").await;
    eventually(10, "a failed attempt", || async {
        gw.requests()
            .iter()
            .any(|r| r.status == 500 && r.body["notification"]["event_id"] == retried)
            .then_some(())
    })
    .await;
    gw.answer(200);
    eventually(20, "the retry to succeed", || async {
        gw.accepted()
            .iter()
            .any(|n| n["event_id"] == retried && n["devices"][0]["pushkey"] == "alice-key")
            .then_some(())
    })
    .await;

    // Delivery resumes after a restart, without sending anything twice.
    srv.crash_and_restart().await;
    let after = bob.send_text(&room, "after restart").await;
    eventually(10, "delivery after restart", || async {
        gw.accepted()
            .iter()
            .any(|n| n["event_id"] == after && n["devices"][0]["pushkey"] == "alice-key")
            .then_some(())
    })
    .await;
    let to_alice_hello = gw
        .accepted()
        .iter()
        .filter(|n| n["event_id"] == hello && n["devices"][0]["pushkey"] == "alice-key")
        .count();
    assert_eq!(to_alice_hello, 1);

    // A rejected pushkey loses its pusher.
    gw.reject("carol-key");
    bob.send_text(&room, "rejected").await;
    eventually(10, "carol's pusher to be removed", || async {
        let p = carol.get("/_matrix/client/v3/pushers").await;
        (p.ok()["pushers"] == json!([])).then_some(())
    })
    .await;
    // Alice's stays.
    let p = alice.get("/_matrix/client/v3/pushers").await;
    assert_eq!(p.ok()["pushers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn events_from_other_servers_notify() {
    let one = Server::federated().await;
    let two = Server::federated().await;
    let alice = one.user("alice").await;
    let bob = two.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "across"}))
        .await;
    bob.join_via(&room, &one.server_name).await.ok();
    let ev = bob
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "hi alice",
               "m.mentions": {"user_ids": [alice.user_id]}}),
        )
        .await;
    eventually(20, "the remote mention to count", || async {
        (counts(&alice, &room).await == (1, 1)).then_some(())
    })
    .await;
    let n = alice.get("/_matrix/client/v3/notifications").await;
    assert_eq!(n.ok()["notifications"][0]["event"]["event_id"], ev);
}
