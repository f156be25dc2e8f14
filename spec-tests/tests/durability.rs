//! Nothing a client was told succeeded is lost on `kill -9`.

use plexus_spec_tests::{enc, Server};
use serde_json::json;

#[tokio::test]
async fn acknowledged_writes_survive_kill9() {
    let mut srv = Server::start().await;
    let mut alice = srv.user("alice").await;
    let room = alice
        .create_room(json!({"name": "durable", "room_alias_name": "durable"}))
        .await;
    let mut sent = vec![];
    for i in 0..50 {
        alice.send_text(&room, &format!("msg {i}")).await;
        sent.push(format!("msg {i}"));
    }
    alice
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            json!({"displayname": "Alice D"}),
        )
        .await
        .ok();
    alice
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.k",
            json!({"v": 7}),
        )
        .await
        .ok();
    srv.crash_and_restart().await;

    // The same token still works, every message is there, in order.
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(&room)
        ))
        .await;
    let mut got: Vec<String> = r.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    got.reverse();
    assert_eq!(got, sent);
    assert_eq!(
        alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.name",
                enc(&room)
            ))
            .await
            .ok()["name"],
        "durable"
    );
    assert_eq!(alice.join("#durable:localhost").await.ok()["room_id"], room);
    assert_eq!(
        alice
            .get("/_matrix/client/v3/profile/@alice:localhost/displayname")
            .await
            .ok()["displayname"],
        "Alice D"
    );
    assert_eq!(
        alice
            .get("/_matrix/client/v3/user/@alice:localhost/account_data/org.example.k")
            .await
            .ok()["v"],
        7
    );
    // Login with the password still works, and new writes continue the same stream.
    alice.login("alice", "password-1234").await.ok();
    let s = alice.sync("").await;
    let next: u64 = s["next_batch"].as_str().unwrap().parse().unwrap();
    alice.send_text(&room, "after restart").await;
    let s2 = alice.sync(&format!("since={next}")).await;
    let tl = &s2["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(tl[0]["content"]["body"], "after restart");
}

#[tokio::test]
async fn concurrent_sends_all_land_in_order() {
    let mut srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut tasks = vec![];
    for w in 0..8 {
        let a = alice.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                a.send_text(&room, &format!("w{w}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    srv.crash_and_restart().await;
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=200",
            enc(&room)
        ))
        .await;
    let got: Vec<String> = r.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(got.len(), 80);
    // Each writer's messages keep their order.
    for w in 0..8 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|b| b.starts_with(&format!("w{w}-")))
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("w{w}-{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
}

/// Many writers at once must neither deadlock nor lose writes (sled deadlocked under
/// concurrent flushes before group commit).
#[tokio::test]
async fn heavy_concurrency_finishes() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let mut rooms = vec![];
    for _ in 0..2 {
        rooms.push(alice.create_room(json!({})).await);
    }
    let work = async {
        let mut tasks = vec![];
        for w in 0..32 {
            let a = alice.clone();
            let room = rooms[w % 2].clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..40 {
                    a.send_text(&room, &format!("c{w}-{i}")).await;
                }
            }));
        }
        for _ in 0..4 {
            let a = alice.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    a.sync("timeout=0").await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(90), work)
        .await
        .expect("writers stalled: deadlock?");
    let mut total = 0;
    for room in &rooms {
        let r = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                enc(room)
            ))
            .await;
        total += r.ok()["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .count();
    }
    assert_eq!(total, 32 * 40);
}
