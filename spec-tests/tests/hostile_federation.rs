//! A hostile or curious federation peer: what it may read of a room, what one event it sends
//! can do to the room, and how much memory its unauthenticated requests can make us hold.
//! The test speaks as server B with B's own signing key (PLEXUS_SIGNING_KEY_PATH), so what it
//! sends is exactly what a malicious B could send.

use plexus_core::builder::MAX_DEPTH;
use plexus_spec_tests::{
    enc,
    peer::{context, event_id_of, key_file, message_at_depth, now_ms, peer_for},
    Server,
};
use serde_json::{json, Value};

/// The ids of the events in a federation answer, with whether each still has its body.
fn bodies_of(pdus: &[Value]) -> Vec<(String, Option<String>)> {
    pdus.iter()
        .map(|p| {
            (
                event_id_of("12", p),
                p["content"]["body"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reads_only_the_history_its_users_may_see() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let peer = peer_for(&b, key);
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "joined"}}],
        }))
        .await;
    let secret = alice
        .send_text(&room, "before anyone from B was here")
        .await;

    // Invited only: B may read nothing of the room yet.
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await;
    r.ok();
    let event_path = format!("/_matrix/federation/v1/event/{}", enc(&secret));
    let backfill_path = |from: &str| {
        format!(
            "/_matrix/federation/v1/backfill/{}?v={}&limit=50",
            enc(&room),
            enc(from)
        )
    };
    let (status, res) = peer.get(&a.server_name, &event_path).await;
    assert_eq!(status, 403, "an invited server read an event: {res}");
    let (status, res) = peer.get(&a.server_name, &backfill_path(&secret)).await;
    assert_eq!(status, 403, "an invited server backfilled: {res}");
    let state_ids = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        enc(&room),
        enc(&secret)
    );
    let (status, res) = peer.get(&a.server_name, &state_ids).await;
    assert_eq!(status, 403, "an invited server read state: {res}");

    // Joined: what was sent while B had nobody in the room comes back redacted, still
    // verifiable (same event id), and what came after comes whole.
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let after = alice.send_text(&room, "after bob joined").await;

    let (status, res) = peer.get(&a.server_name, &event_path).await;
    assert_eq!(status, 200, "{res}");
    let got = bodies_of(res["pdus"].as_array().unwrap());
    assert_eq!(got, vec![(secret.clone(), None)], "{res}");

    let (status, res) = peer.get(&a.server_name, &backfill_path(&after)).await;
    assert_eq!(status, 200, "{res}");
    let got = bodies_of(res["pdus"].as_array().unwrap());
    assert!(
        got.contains(&(secret.clone(), None)),
        "the earlier message must come redacted: {got:?}"
    );
    assert!(
        got.contains(&(after.clone(), Some("after bob joined".into()))),
        "{got:?}"
    );
    assert!(
        !res.to_string().contains("before anyone from B"),
        "backfill leaked the text: {res}"
    );

    let latest = context(&alice, &room, &alice.user_id).await.0;
    let (status, res) = peer
        .post(
            &a.server_name,
            &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room)),
            &json!({"earliest_events": [], "latest_events": [latest], "limit": 50}),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let got = bodies_of(res["events"].as_array().unwrap());
    assert!(got.contains(&(secret.clone(), None)), "{got:?}");
    assert!(
        !res.to_string().contains("before anyone from B"),
        "get_missing_events leaked the text: {res}"
    );
    let (status, res) = peer.get(&a.server_name, &state_ids).await;
    assert_eq!(status, 200, "a joined server reads state: {res}");

    // Bob's own client, paging back through B, sees the same: the join-era message only.
    let seen = bob.recent_bodies(&room).await;
    assert!(seen.contains(&"after bob joined".to_owned()), "{seen:?}");
    assert!(
        !seen.iter().any(|b| b.contains("before anyone")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_the_largest_depth_does_not_brick_the_room() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (mut a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let peer = peer_for(&b, key);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Bob, at power level 0, sends a valid message as deep as canonical JSON allows.
    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let (deep, pdu) = message_at_depth(
        &room,
        &bob.user_id,
        &b.server_name,
        &peer.key,
        &prev,
        &auth,
        "as deep as it gets",
        now_ms(),
        MAX_DEPTH,
    );
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&deep], json!({}), "{res}");

    // Everything local still works, and after a restart too.
    still_usable(&alice, &room).await;
    a.crash_and_restart().await;
    still_usable(&alice, &room).await;
    let last = context(&alice, &room, &alice.user_id).await.0;
    let (status, res) = peer
        .get(
            &a.server_name,
            &format!("/_matrix/federation/v1/event/{}", enc(last.as_str())),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["pdus"][0]["depth"], json!(MAX_DEPTH), "{res}");
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await;
    r.ok();
}

async fn still_usable(alice: &plexus_spec_tests::Client, room: &str) {
    alice.send_text(room, "still here").await;
    let r = alice
        .put_state(room, "m.room.topic", "", json!({"topic": "still works"}))
        .await;
    r.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_bodies_cannot_take_the_memory() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let peer = peer_for(&b, key);
    let (rss0, _) = a.memory_kib();
    let url = format!("https://{}/_matrix/federation/v1/send/1", a.server_name);
    // Bodies from B's name with a signature that B did not make, so A knows B's key, reads the
    // body and only then can tell it is forged: the costly case. Dense bodies, the worst for
    // a parser's memory, at three sizes; and text bodies near the transaction cap.
    let dense = |n: usize| format!("{{\"pdus\":[{}0],\"edus\":[]}}", "0,".repeat(n));
    let text = format!(
        "{{\"pdus\":[],\"edus\":[{{\"edu_type\":\"m.x\",\"content\":{{\"t\":\"{}\"}}}}]}}",
        "x".repeat(7 * 1024 * 1024)
    );
    let auth = format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"AAAA\"",
        b.server_name,
        a.server_name,
        peer.key.key_id()
    );
    let mut bodies = vec![];
    for _ in 0..4 {
        bodies.push(dense(3_500_000));
        bodies.push(dense(400_000));
        bodies.push(text.clone());
    }
    let mut tasks = vec![];
    for body in bodies {
        let http = peer.http.clone();
        let url = url.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    // Each is refused: too dense to parse (413), forged (401), or told to come back (429).
    let (rss1, peak) = a.memory_kib();
    println!("RSS before {rss0} KiB, after {rss1} KiB, peak {peak} KiB");
    assert!(
        peak < rss0 + 320 * 1024,
        "12 forged bodies took the peak from {rss0} KiB to {peak} KiB"
    );
    // Each is refused: too dense to parse (413), forged (401), or told to come back (429).
    assert!(
        statuses.iter().all(|s| [401, 413, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401), "{statuses:?}");
    // A body over the transaction cap is refused from its Content-Length alone.
    // (The server answers before the body is sent and closes: a send error means the same.)
    let status = peer
        .http
        .put(&url)
        .header("authorization", auth.clone())
        .body(vec![b' '; 16 * 1024 * 1024])
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(413);
    assert_eq!(status, 413);
    // The server still serves its peers and clients.
    let (status, res) = peer
        .get(&a.server_name, "/_matrix/federation/v1/version")
        .await;
    assert_eq!(status, 200, "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_that_never_answer_do_not_hold_up_other_peers() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let peer = peer_for(&b, key);
    // Four "servers" that accept connections and never say a word (TLS never completes).
    let mut silent = vec![];
    for _ in 0..4 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        silent.push(format!("127.0.0.1:{}", l.local_addr().unwrap().port()));
        tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((sock, _)) = l.accept().await {
                held.push(sock);
            }
        });
    }
    let path = "/_matrix/federation/v1/event/%24nothing";
    let url = format!("https://{}{path}", a.server_name);
    let ask_as = |origin: String| {
        let http = peer.http.clone();
        let url = url.clone();
        let dest = a.server_name.clone();
        async move {
            let started = std::time::Instant::now();
            let status = http
                .get(url)
                .header(
                    "authorization",
                    format!("X-Matrix origin=\"{origin}\",destination=\"{dest}\",key=\"ed25519:x\",sig=\"AAAA\""),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, started.elapsed())
        }
    };
    let stuck: Vec<_> = silent
        .iter()
        .map(|o| tokio::spawn(ask_as(o.clone())))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A healthy peer A has never seen gets its key fetched and its request answered at once.
    let started = std::time::Instant::now();
    let (status, res) = peer.get(&a.server_name, path).await;
    let took = started.elapsed();
    assert_eq!(status, 404, "{res}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "a healthy peer waited {took:?} behind origins that never answer"
    );
    for t in stuck {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 401);
        assert!(took < std::time::Duration::from_secs(12), "{took:?}");
    }
    // Asked again at once, a dead origin is refused without another wait.
    let (status, took) = ask_as(silent[0].clone()).await;
    assert_eq!(status, 401);
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
}
