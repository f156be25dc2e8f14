//! Threads and bundled aggregations: `/threads`, the `m.thread` summary and the latest
//! `m.replace` edit in `unsigned.m.relations`, wherever a client reads events.

use plexus_spec_tests::{enc, rand_suffix, timeline, Client, Server};
use serde_json::{json, Value};

async fn event(c: &Client, room: &str, id: &str) -> Value {
    c.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(room),
        enc(id)
    ))
    .await
    .ok()
    .clone()
}

fn reply(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body,
           "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                            "is_falling_back": true, "m.in_reply_to": {"event_id": root}}})
}

fn edit(of: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("* {body}"),
           "m.new_content": {"msgtype": "m.text", "body": body},
           "m.relates_to": {"rel_type": "m.replace", "event_id": of}})
}

async fn redact(c: &Client, room: &str, id: &str) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
            enc(room),
            enc(id),
            rand_suffix()
        ),
        json!({}),
    )
    .await
    .ok();
}

async fn threads(c: &Client, room: &str, query: &str) -> Value {
    c.get(&format!(
        "/_matrix/client/v1/rooms/{}/threads?{query}",
        enc(room)
    ))
    .await
    .ok()
    .clone()
}

fn roots(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_latest_edit_is_bundled_everywhere() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let original = alice.send_text(&room, "helo").await;
    let first = alice.send_message(&room, edit(&original, "hello")).await;
    let second = alice.send_message(&room, edit(&original, "hello!")).await;
    // Someone else's "edit" is not an edit.
    bob.send_message(&room, edit(&original, "hijacked")).await;

    let ev = event(&bob, &room, &original).await;
    let bundled = &ev["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(bundled["event_id"], second, "{ev}");
    assert_eq!(bundled["content"]["m.new_content"]["body"], "hello!");
    assert_eq!(bundled["sender"], alice.user_id);
    assert_eq!(
        ev["content"]["body"], "helo",
        "the original content is left alone"
    );

    // The same bundle in /messages and in sync.
    let msgs = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            enc(&room)
        ))
        .await;
    let in_msgs = msgs.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == original)
        .unwrap()
        .clone();
    assert_eq!(
        in_msgs["unsigned"]["m.relations"]["m.replace"]["event_id"],
        second
    );
    let filter = enc(&json!({"room": {"timeline": {"limit": 20}}}).to_string());
    let s = bob.sync(&format!("filter={filter}")).await;
    let in_sync = timeline(&s, &room)
        .into_iter()
        .find(|e| e["event_id"] == original)
        .unwrap()
        .clone();
    assert_eq!(
        in_sync["unsigned"]["m.relations"]["m.replace"]["event_id"],
        second
    );

    // References are bundled as a list of event ids.
    let reference = bob
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "see above",
               "m.relates_to": {"rel_type": "m.reference", "event_id": original}}),
        )
        .await;
    let ev = event(&alice, &room, &original).await;
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.reference"],
        json!({"chunk": [{"event_id": reference}]})
    );

    // Redacting the latest edit falls back to the one before it; redacting the original
    // drops the bundle.
    redact(&alice, &room, &second).await;
    let ev = event(&bob, &room, &original).await;
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.replace"]["event_id"],
        first
    );
    redact(&alice, &room, &original).await;
    let ev = event(&bob, &room, &original).await;
    assert!(ev["unsigned"].get("m.relations").is_none(), "{ev}");
}

#[tokio::test]
async fn threads_are_listed_with_their_summaries() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    carol.join(&room).await.ok();

    let root1 = alice.send_text(&room, "first thread").await;
    bob.send_message(&room, reply(&root1, "one")).await;
    let latest1 = bob.send_message(&room, reply(&root1, "two")).await;
    let root2 = alice.send_text(&room, "second thread").await;
    alice.send_message(&room, reply(&root2, "three")).await;
    alice.send_text(&room, "not a thread").await;

    // Most recent activity first.
    let page = threads(&alice, &room, "").await;
    assert_eq!(roots(&page), [root2.clone(), root1.clone()]);
    let summary = &page["chunk"][1]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2);
    assert_eq!(summary["latest_event"]["event_id"], latest1);
    assert_eq!(summary["latest_event"]["content"]["body"], "two");
    assert_eq!(
        summary["current_user_participated"], true,
        "alice wrote the root"
    );

    // A new reply moves its thread to the front.
    carol.send_message(&room, reply(&root1, "four")).await;
    assert_eq!(
        roots(&threads(&alice, &room, "").await),
        [root1.clone(), root2.clone()]
    );

    // The summary on the root wherever it is read, as each viewer sees it.
    let for_bob = event(&bob, &room, &root2).await;
    let t = &for_bob["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(t["count"], 1);
    assert_eq!(t["current_user_participated"], false);
    assert_eq!(
        event(&bob, &room, &root1).await["unsigned"]["m.relations"]["m.thread"]
            ["current_user_participated"],
        true
    );

    // include=participated: only threads the user wrote or replied in.
    assert_eq!(
        roots(&threads(&bob, &room, "include=participated").await),
        [root1.as_str()]
    );
    assert_eq!(
        roots(&threads(&alice, &room, "include=participated").await),
        [root1.clone(), root2.clone()]
    );

    // Paging.
    let p1 = threads(&alice, &room, "limit=1").await;
    assert_eq!(roots(&p1), [root1.as_str()]);
    let next = p1["next_batch"].as_str().expect("next_batch").to_owned();
    let p2 = threads(&alice, &room, &format!("limit=1&from={next}")).await;
    assert_eq!(roots(&p2), [root2.as_str()]);
    assert!(p2.get("next_batch").is_none());

    // Bad input and outsiders.
    let base = format!("/_matrix/client/v1/rooms/{}/threads", enc(&room));
    alice
        .get(&format!("{base}?include=mine"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!("{base}?limit=lots"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!("{base}?from=nowhere"))
        .await
        .err(400, "M_INVALID_PARAM");
    let dave = srv.user("dave").await;
    let private = alice.create_room(json!({"preset": "private_chat"})).await;
    dave.get(&format!(
        "/_matrix/client/v1/rooms/{}/threads",
        enc(&private)
    ))
    .await
    .err(403, "M_FORBIDDEN");
}
