//! `POST /search` (room_events) against real `plexus` processes: filters, orderings, paging,
//! context, groupings, permissions, edits and redactions, code-ish text, restart and rebuild,
//! federated and backfilled events, and bad input.

use std::collections::BTreeSet;

use plexus_spec_tests::{enc, eventually, Client, Resp, Server};
use serde_json::{json, Value};

async fn search(c: &Client, criteria: Value) -> Resp {
    c.post(
        "/_matrix/client/v3/search",
        json!({ "search_categories": { "room_events": criteria } }),
    )
    .await
}

/// The answer's `room_events`, which must be a 200.
async fn room_events(c: &Client, criteria: Value) -> Value {
    let r = search(c, criteria).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["search_categories"]["room_events"].clone()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn texts(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let c = &r["result"]["content"];
            c["body"]
                .as_str()
                .or(c["name"].as_str())
                .or(c["topic"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Search until the indexer has caught up with what `term` should find (it runs behind the
/// write path), then answer.
async fn settled(c: &Client, criteria: Value, expect: usize) -> Value {
    eventually(10, "the index to catch up", || {
        let criteria = criteria.clone();
        async move {
            let a = room_events(c, criteria).await;
            (a["results"].as_array().map_or(0, Vec::len) == expect).then_some(a)
        }
    })
    .await
}

async fn redact(c: &Client, room: &str, event: &str) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
            enc(room),
            enc(event),
            plexus_spec_tests::rand_suffix()
        ),
        json!({}),
    )
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_orderings_paging_context_and_groups() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({"displayname": "Alice A."}),
        )
        .await
        .ok();
    let design = alice
        .create_room(json!({
            "preset": "public_chat", "name": "Design reviews",
            "topic": "where the schema gets decided",
        }))
        .await;
    let ops = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&design).await.ok();
    bob.join(&ops).await.ok();
    let first = alice
        .send_text(&design, "we decided the schema on monday")
        .await;
    bob.send_text(&design, "the schema schema schema, again")
        .await;
    alice
        .send_text(&design, "call parseJsonBody() in src/http/body_parser.rs")
        .await;
    let last = alice.send_text(&ops, "deploy the schema migration").await;
    alice.send_text(&ops, "unrelated chatter").await;

    // All keys by default: the topic is found too.
    let all = settled(&bob, json!({"search_term": "schema"}), 4).await;
    assert_eq!(all["count"], 4, "{all}");
    assert!(texts(&all).contains(&"where the schema gets decided".to_owned()));
    // Rank: the message that says it three times comes first.
    assert_eq!(texts(&all)[0], "the schema schema schema, again");
    assert!(all["results"][0]["rank"].as_f64().unwrap() > 0.0);
    assert!(all.get("next_batch").is_none(), "{all}");

    // Keys, rooms, senders and types.
    let bodies = room_events(
        &bob,
        json!({"search_term": "schema", "keys": ["content.body"]}),
    )
    .await;
    assert_eq!(ids(&bodies).len(), 3);
    let topics = room_events(
        &bob,
        json!({"search_term": "schema", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(texts(&topics), ["where the schema gets decided"]);
    let in_ops = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"rooms": [ops]}}),
    )
    .await;
    assert_eq!(ids(&in_ops), std::slice::from_ref(&last));
    let not_design = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"not_rooms": [design]}}),
    )
    .await;
    assert_eq!(ids(&not_design), std::slice::from_ref(&last));
    let by_bob = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"senders": [bob.user_id]}}),
    )
    .await;
    assert_eq!(texts(&by_bob), ["the schema schema schema, again"]);
    let not_bob = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"not_senders": [bob.user_id]}}),
    )
    .await;
    assert_eq!(ids(&not_bob).len(), 3);
    let only_topics = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"types": ["m.room.topic"]}}),
    )
    .await;
    assert_eq!(texts(&only_topics), ["where the schema gets decided"]);
    let no_messages = room_events(
        &bob,
        json!({"search_term": "schema", "filter": {"not_types": ["m.room.message"]}}),
    )
    .await;
    assert_eq!(ids(&no_messages).len(), 1);

    // Recent: newest first.
    let recent = room_events(&bob, json!({"search_term": "schema", "order_by": "recent"})).await;
    assert_eq!(ids(&recent)[0], last);
    assert_eq!(texts(&recent)[3], "where the schema gets decided");

    // Paging one at a time, in both orders: every result once, in the same order as one page.
    for order in ["rank", "recent"] {
        let whole =
            ids(&room_events(&bob, json!({"search_term": "schema", "order_by": order})).await);
        let mut paged = vec![];
        let mut next: Option<String> = None;
        for _ in 0..10 {
            let path = match &next {
                Some(n) => format!("/_matrix/client/v3/search?next_batch={}", enc(n)),
                None => "/_matrix/client/v3/search".to_owned(),
            };
            let r = bob
                .post(
                    &path,
                    json!({"search_categories": {"room_events": {
                        "search_term": "schema", "order_by": order, "filter": {"limit": 1},
                    }}}),
                )
                .await;
            let a = &r.ok()["search_categories"]["room_events"];
            paged.extend(ids(a));
            match a["next_batch"].as_str() {
                Some(n) => next = Some(n.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, whole, "{order}");
    }

    // Identifiers and paths, in any spelling; stemming; highlights as written.
    let code = room_events(&bob, json!({"search_term": "parse_json_body"})).await;
    assert_eq!(ids(&code).len(), 1, "{code}");
    let path = room_events(&bob, json!({"search_term": "body_parser.rs"})).await;
    assert_eq!(ids(&path), ids(&code));
    let camel = room_events(&bob, json!({"search_term": "BodyParser"})).await;
    assert_eq!(ids(&camel), ids(&code));
    let stem = room_events(&bob, json!({"search_term": "decide"})).await;
    assert_eq!(stem["results"].as_array().unwrap().len(), 2, "{stem}");
    let hl: Vec<&str> = stem["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(hl.contains(&"decided"), "{hl:?}");
    // A word is a prefix too, as on Synapse.
    let prefix = room_events(&bob, json!({"search_term": "sche"})).await;
    assert_eq!(ids(&prefix).len(), 4, "{prefix}");
    assert!(prefix["highlights"]
        .as_array()
        .unwrap()
        .contains(&json!("schema")));
    let phrase = room_events(&bob, json!({"search_term": "\"decided the schema\""})).await;
    assert_eq!(ids(&phrase), std::slice::from_ref(&first));
    let none = room_events(&bob, json!({"search_term": "\"schema the decided\""})).await;
    assert!(ids(&none).is_empty());

    // Context, with the senders' profiles at the time; current state; groups.
    let ctx = room_events(
        &bob,
        json!({
            "search_term": "decided monday",
            "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true},
            "include_state": true,
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }),
    )
    .await;
    assert_eq!(ids(&ctx), std::slice::from_ref(&first));
    let c = &ctx["results"][0]["context"];
    assert_eq!(c["events_before"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(
        c["events_after"][0]["content"]["body"],
        "the schema schema schema, again"
    );
    assert!(c["start"].is_string() && c["end"].is_string());
    assert_eq!(c["profile_info"][&alice.user_id]["displayname"], "Alice A.");
    let state = ctx["state"][&design].as_array().expect("state of the room");
    assert!(state
        .iter()
        .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Design reviews"));
    assert_eq!(ctx["groups"]["room_id"][&design]["results"], json!([first]));
    assert_eq!(ctx["groups"]["room_id"][&design]["order"], 1);
    assert_eq!(
        ctx["groups"]["sender"][&alice.user_id]["results"],
        json!([first])
    );

    // A group's next_batch continues within that group.
    let grouped = room_events(
        &bob,
        json!({
            "search_term": "schema", "filter": {"limit": 1},
            "groupings": {"group_by": [{"key": "room_id"}]},
        }),
    )
    .await;
    let (room, group) = grouped["groups"]["room_id"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let token = group["next_batch"].as_str().expect("the group has more");
    let rest = bob
        .post(
            &format!("/_matrix/client/v3/search?next_batch={}", enc(token)),
            json!({"search_categories": {"room_events": {"search_term": "schema"}}}),
        )
        .await;
    let rest = rest.ok()["search_categories"]["room_events"]["results"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        !rest.is_empty(),
        "the group's token finds the rest of its room"
    );
    for r in &rest {
        assert_eq!(&r["result"]["room_id"], room);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_user_may_see() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "joined"}}],
        }))
        .await;
    alice.send_text(&room, "lighthouse before bob").await;
    bob.join(&room).await.ok();
    let during = alice.send_text(&room, "lighthouse while bob is here").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    alice.send_text(&room, "lighthouse after bob left").await;
    settled(&alice, json!({"search_term": "lighthouse"}), 3).await;

    let seen = room_events(&bob, json!({"search_term": "lighthouse"})).await;
    assert_eq!(ids(&seen), [during], "{seen}");
    let nothing = room_events(&carol, json!({"search_term": "lighthouse"})).await;
    assert!(ids(&nothing).is_empty(), "{nothing}");
    // Naming the room in the filter does not open it up.
    let forced = room_events(
        &carol,
        json!({"search_term": "lighthouse", "filter": {"rooms": [room]}}),
    )
    .await;
    assert!(ids(&forced).is_empty());

    // A private room bob was never in, and an encrypted message, are never found.
    let private = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.send_text(&private, "lighthouse in private").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/enc1",
                enc(&private)
            ),
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "lighthouse",
                   "body": "lighthouse", "sender_key": "k", "session_id": "s", "device_id": "D"}),
        )
        .await
        .ok();
    // Indexing follows the stream in order: once this one is found, the encrypted one was
    // looked at too.
    alice.send_text(&private, "lighthouse last").await;
    let mine = settled(&alice, json!({"search_term": "lighthouse"}), 5).await;
    assert!(mine["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["result"]["type"] == "m.room.message"));
    let seen = room_events(&bob, json!({"search_term": "lighthouse"})).await;
    assert_eq!(ids(&seen).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_replace_and_redactions_remove() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let original = alice.send_text(&room, "the answer is albatross").await;
    let edit = alice
        .send_message(
            &room,
            json!({
                "msgtype": "m.text", "body": "* the answer is pelican",
                "m.new_content": {"msgtype": "m.text", "body": "the answer is pelican"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            }),
        )
        .await;
    let found = settled(&alice, json!({"search_term": "pelican"}), 1).await;
    // The original is what is found (clients show it with its latest edit).
    assert_eq!(ids(&found), std::slice::from_ref(&original));
    assert_eq!(
        found["results"][0]["result"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit
    );
    assert!(ids(&room_events(&alice, json!({"search_term": "albatross"})).await).is_empty());

    // Redacting the edit brings the original text back.
    redact(&alice, &room, &edit).await;
    settled(&alice, json!({"search_term": "albatross"}), 1).await;
    assert!(ids(&room_events(&alice, json!({"search_term": "pelican"})).await).is_empty());

    // Redacting the message removes it.
    redact(&alice, &room, &original).await;
    settled(&alice, json!({"search_term": "albatross"}), 0).await;
    let name = alice
        .put_state(
            &room,
            "m.room.name",
            "",
            json!({"name": "Cormorant corner"}),
        )
        .await;
    let name_id = name.ok()["event_id"].as_str().unwrap().to_owned();
    let named = settled(&alice, json!({"search_term": "cormorant"}), 1).await;
    assert_eq!(ids(&named), [name_id]);
    // The name came after the redaction: the redaction has been applied by now.
    assert!(ids(&room_events(&alice, json!({"search_term": "albatross"})).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_survives_crashes_and_is_rebuilt() {
    let mut server = Server::start().await;
    let alice = server.user("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..20 {
        alice
            .send_text(&room, &format!("kestrel sighting {i}"))
            .await;
    }
    settled(
        &alice,
        json!({"search_term": "kestrel", "filter": {"limit": 50}}),
        20,
    )
    .await;

    // Sent, then killed at once: the indexer catches up after the restart.
    let late = alice
        .send_text(&room, "kestrel just before the crash")
        .await;
    server.crash_and_restart().await;
    let after = settled(&alice, json!({"search_term": "crash"}), 1).await;
    assert_eq!(ids(&after), [late]);

    // A deleted index is built again from the store at start-up.
    server.kill9();
    let index = server.data_dir().join("search");
    std::fs::remove_dir_all(&index).unwrap();
    server.restart().await;
    settled(
        &alice,
        json!({"search_term": "kestrel", "filter": {"limit": 50}}),
        21,
    )
    .await;
    assert!(
        server.log_text().contains("building it from the store"),
        "{}",
        server.log_text()
    );

    // So is a corrupt one.
    server.kill9();
    std::fs::write(index.join("meta.json"), b"{ this is not an index").unwrap();
    server.restart().await;
    settled(
        &alice,
        json!({"search_term": "kestrel", "filter": {"limit": 50}}),
        21,
    )
    .await;

    // And on demand.
    server.kill9();
    let out = server.command(&["rebuild-search-index"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("indexed") && stdout.contains("21 searchable documents"),
        "{stdout}"
    );
    server.restart().await;
    let r = room_events(
        &alice,
        json!({"search_term": "kestrel", "filter": {"limit": 50}}),
    )
    .await;
    assert_eq!(ids(&r).len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_and_backfilled_events_are_found() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "ospreys"}))
        .await;
    for i in 0..5 {
        alice
            .send_text(&room, &format!("osprey nest {i} before bob"))
            .await;
    }
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let live = alice.send_text(&room, "osprey seen after bob joined").await;
    // Federated: arrives over /send.
    let found = settled(&bob, json!({"search_term": "joined"}), 1).await;
    assert_eq!(ids(&found), [live]);
    // Backfilled: fetched when bob pages back past his join.
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(&room)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let r = bob.get(&path).await;
        match r.ok()["end"].as_str() {
            Some(e) => from = Some(e.to_owned()),
            None => break,
        }
    }
    let old = settled(
        &bob,
        json!({"search_term": "nest", "order_by": "recent"}),
        5,
    )
    .await;
    let bodies: BTreeSet<String> = texts(&old).into_iter().collect();
    assert_eq!(bodies.len(), 5, "{old}");
    // Newest first among them too.
    assert_eq!(texts(&old)[0], "osprey nest 4 before bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_spec_errors() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let post = |body: Value| alice.post("/_matrix/client/v3/search", body);
    post(json!({"search_categories": {"users": {"search_term": "x"}}}))
        .await
        .err(400, "M_INVALID_PARAM");
    post(json!({"search_categories": {"room_events": {}}}))
        .await
        .err(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": 5}}}))
        .await
        .err(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "filter": "nope"}}}))
        .await
        .err(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "filter": {"rooms": "!a:b"}}}}))
        .await
        .err(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}}))
        .await
        .err(400, "M_INVALID_PARAM");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "order_by": "oldest"}}}))
        .await
        .err(400, "M_INVALID_PARAM");
    post(
        json!({"search_categories": {"room_events": {"search_term": "x",
        "groupings": {"group_by": [{"key": "type"}]}}}}),
    )
    .await
    .err(400, "M_INVALID_PARAM");
    post(json!({"nothing": 1})).await.err(400, "M_BAD_JSON");
    let body = json!({"search_categories": {"room_events": {"search_term": "x"}}});
    alice
        .post(
            "/_matrix/client/v3/search?next_batch=garbage!",
            body.clone(),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    // A token for one ordering is not accepted for the other.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..3 {
        alice.send_text(&room, &format!("x marks {i}")).await;
    }
    settled(&alice, json!({"search_term": "marks"}), 3).await;
    let first = room_events(
        &alice,
        json!({"search_term": "marks", "filter": {"limit": 1}, "order_by": "recent"}),
    )
    .await;
    let token = first["next_batch"].as_str().expect("more results");
    alice
        .post(
            &format!("/_matrix/client/v3/search?next_batch={}", enc(token)),
            json!({"search_categories": {"room_events": {"search_term": "marks", "order_by": "rank"}}}),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    let raw = alice
        .raw(
            "POST",
            "/_matrix/client/v3/search",
            Some(b"{not json".to_vec()),
        )
        .await;
    raw.err(400, "M_NOT_JSON");
    server
        .client()
        .post("/_matrix/client/v3/search", body)
        .await
        .err(401, "M_MISSING_TOKEN");
    // Nothing to search for is an empty answer, not an error.
    let empty = room_events(&alice, json!({"search_term": "  !! "})).await;
    assert_eq!(empty["count"], 0);
    assert!(ids(&empty).is_empty());
}
