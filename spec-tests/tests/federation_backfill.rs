//! Backfill: a user on a server that joined a room late pages back through `/messages` past
//! the join, and the history is fetched from the room's other server, with history
//! visibility applied to it.

use plexus_spec_tests::{enc, Server};
use serde_json::{json, Value};

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_past_the_join_fetches_history_from_the_room() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "history"}))
        .await;
    let hidden = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}],
        }))
        .await;
    for i in 0..45 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    for i in 0..5 {
        alice.send_text(&hidden, &format!("secret {i}")).await;
    }
    for r in [&room, &hidden] {
        let resp = bob.join_via(r, &a.server_name).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    bob.send_text(&room, "bob is here").await;

    // All of it, newest first, in pages of 10: bob's message, then alice's 45 in order, then
    // the room's creation.
    let (events, tokens) = bob.page_back(&room, 10, None).await;
    let got = bodies(&events);
    let mut want = vec!["bob is here".to_owned()];
    want.extend((0..45).rev().map(|i| format!("m{i}")));
    assert_eq!(got, want);
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "paging ends at the room's creation\n{}",
        b.log_text()
    );
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), events.len(), "no event twice");

    // Paging again reads the stored history (same answer), and forwards from a token in the
    // middle of history comes back up in order.
    let (again, _) = bob.page_back(&room, 25, None).await;
    assert_eq!(bodies(&again), want);
    let mid = tokens
        .iter()
        .find(|t| t.starts_with('h'))
        .unwrap_or_else(|| panic!("history tokens: {tokens:?}"));
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=50&from={}",
            enc(&room),
            enc(mid)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fwd = bodies(r.body["chunk"].as_array().unwrap());
    assert_eq!(
        fwd.last().map(String::as_str),
        Some("bob is here"),
        "{fwd:?}"
    );
    let mut sorted = fwd.clone();
    sorted.sort_by_key(|b| {
        b.strip_prefix('m')
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    assert_eq!(fwd, sorted, "forward order");

    // History visibility holds for backfilled events: "joined" hides what came before.
    let (events, _) = bob.page_back(&hidden, 10, None).await;
    let got = bodies(&events);
    assert!(got.iter().all(|b| !b.starts_with("secret")), "{got:?}");
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "the hidden room was backfilled too"
    );

    // A bad token is a clear error.
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&from=hx",
            enc(&room)
        ))
        .await;
    r.err(400, "M_INVALID_PARAM");
}

/// What matrix-nio and Element do after joining: sync, then page back from the timeline's
/// `prev_batch`. A room joined over federation has history before the join, so the sync says
/// `limited`, and paging from that token goes on (fetching from the room's server) until the
/// room's creation, whatever the page size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_pages_back_from_its_first_sync() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "late"}))
        .await;
    for i in 0..30 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let resp = bob.join_via(&room, &a.server_name).await;
    assert_eq!(resp.status, 200, "{}", resp.body);

    let filter = enc(r#"{"room":{"timeline":{"limit":10}}}"#);
    let s = bob.sync(&format!("timeout=0&filter={filter}")).await;
    let tl = &s["rooms"]["join"][&room]["timeline"];
    assert_eq!(tl["limited"], true, "history precedes the join: {tl}");
    let prev = tl["prev_batch"].as_str().expect("prev_batch").to_owned();

    for limit in [10, 7] {
        let (events, _) = bob.page_back(&room, limit, Some(prev.clone())).await;
        let got = bodies(&events);
        let want: Vec<String> = (0..30).rev().map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "pages of {limit}\n{}", b.log_text());
        assert_eq!(
            events.last().map(|e| e["type"].clone()),
            Some(json!("m.room.create")),
            "paging in pages of {limit} ends at the room's creation"
        );
    }
}
