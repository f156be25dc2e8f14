//! Typing, read receipts, read markers and tags, as another member sees them through sync.

use std::time::Duration;

use plexus_spec_tests::{enc, Server};
use serde_json::{json, Value};

fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
}

#[tokio::test]
async fn typing_is_seen_and_expires() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let since = bob.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/typing/@alice:localhost",
        enc(&room)
    );

    // Bob's long-poll wakes when Alice starts typing.
    let waiter = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move { bob.sync(&format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice
        .put(&path, json!({"typing": true, "timeout": 1500}))
        .await
        .ok();
    let s = waiter.await.unwrap();
    let typing = ephemeral(&s, &room, "m.typing").expect("typing event");
    assert_eq!(typing["content"]["user_ids"], json!(["@alice:localhost"]));

    // It expires by itself and Bob is told.
    let since = s["next_batch"].as_str().unwrap();
    let s = bob.sync(&format!("since={since}&timeout=5000")).await;
    let typing = ephemeral(&s, &room, "m.typing").expect("typing stop");
    assert_eq!(typing["content"]["user_ids"], json!([]));

    // Stop explicitly; errors for others' typing, non-members and bad bodies.
    alice.put(&path, json!({"typing": false})).await.ok();
    bob.put(&path, json!({"typing": true}))
        .await
        .err(403, "M_FORBIDDEN");
    let carol = srv.user("carol").await;
    carol
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/@carol:localhost",
                enc(&room)
            ),
            json!({"typing": true}),
        )
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .put(&path, json!({"typing": "yes"}))
        .await
        .err(400, "M_BAD_JSON");
}

#[tokio::test]
async fn receipts_and_read_markers() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let ev = alice.send_text(&room, "read me").await;
    let since = alice.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let rpath = |kind: &str, e: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/receipt/{kind}/{}",
            enc(&room),
            enc(e)
        )
    };

    bob.post(&rpath("m.read", &ev), json!({})).await.ok();
    let s = alice.sync(&format!("since={since}")).await;
    let receipt = ephemeral(&s, &room, "m.receipt").expect("receipt");
    assert!(
        receipt["content"][&ev]["m.read"]["@bob:localhost"]["ts"].is_u64(),
        "{receipt}"
    );

    // Private receipts are seen only by their owner; threaded receipts carry the thread id.
    let since = s["next_batch"].as_str().unwrap().to_owned();
    bob.post(&rpath("m.read.private", &ev), json!({}))
        .await
        .ok();
    bob.post(&rpath("m.read", &ev), json!({"thread_id": "main"}))
        .await
        .ok();
    let s = alice.sync(&format!("since={since}")).await;
    let receipt = ephemeral(&s, &room, "m.receipt").expect("threaded receipt");
    assert!(
        receipt["content"][&ev].get("m.read.private").is_none(),
        "{receipt}"
    );
    assert_eq!(
        receipt["content"][&ev]["m.read"]["@bob:localhost"]["thread_id"],
        "main"
    );
    let own = bob.sync("").await;
    let receipt = ephemeral(&own, &room, "m.receipt").expect("own receipts");
    assert!(receipt["content"][&ev]["m.read.private"]["@bob:localhost"].is_object());

    // Read markers: m.fully_read lands in room account data.
    let mpath = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    bob.post(&mpath, json!({"m.fully_read": ev, "m.read": ev}))
        .await
        .ok();
    let s = bob.sync("").await;
    let ad = s["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(
        ad.iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == ev.as_str()),
        "{ad:?}"
    );

    // Bad input.
    bob.post(&rpath("m.bogus", &ev), json!({}))
        .await
        .err(400, "M_INVALID_PARAM");
    bob.post(&rpath("m.read", "$nope"), json!({}))
        .await
        .err(404, "M_NOT_FOUND");
    bob.post(&rpath("m.read", &ev), json!({"thread_id": "not an id"}))
        .await
        .err(400, "M_INVALID_PARAM");
    bob.post(&mpath, json!({"m.fully_read": "$nope"}))
        .await
        .err(404, "M_NOT_FOUND");
    let carol = srv.user("carol").await;
    carol
        .post(&rpath("m.read", &ev), json!({}))
        .await
        .err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn room_tags() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let base = format!(
        "/_matrix/client/v3/user/@alice:localhost/rooms/{}/tags",
        enc(&room)
    );
    assert_eq!(alice.get(&base).await.ok()["tags"], json!({}));
    alice
        .put(&format!("{base}/m.favourite"), json!({"order": 0.25}))
        .await
        .ok();
    alice.put(&format!("{base}/u.work"), json!({})).await.ok();
    let tags = alice.get(&base).await;
    assert_eq!(tags.ok()["tags"]["m.favourite"]["order"], 0.25);
    assert!(tags.body["tags"]["u.work"].is_object());
    let s = alice.sync("").await;
    let ad = s["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap();
    assert!(ad
        .iter()
        .any(|e| e["type"] == "m.tag" && e["content"]["tags"]["m.favourite"]["order"] == 0.25));
    alice
        .delete(&format!("{base}/u.work"), json!({}))
        .await
        .ok();
    assert!(alice.get(&base).await.ok()["tags"].get("u.work").is_none());
    alice
        .put(&format!("{base}/m.lowpriority"), json!({"order": "high"}))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .get(&format!(
            "/_matrix/client/v3/user/@bob:localhost/rooms/{}/tags",
            enc(&room)
        ))
        .await
        .err(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn presence_set_get_and_sync() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let carol = srv.user("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join(&room).await.ok();
    let since = bob.sync("set_presence=offline").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = "/_matrix/client/v3/presence/@alice:localhost/status";
    alice
        .put(
            path,
            json!({"presence": "unavailable", "status_msg": "in a meeting"}),
        )
        .await
        .ok();
    let mine = alice.get(path).await;
    assert_eq!(mine.ok()["presence"], "unavailable");
    assert_eq!(mine.body["status_msg"], "in a meeting");
    assert!(mine.body["last_active_ago"].is_u64());
    // Bob shares a room and sees it, through GET and through sync.
    assert_eq!(bob.get(path).await.ok()["status_msg"], "in a meeting");
    let s = bob
        .sync(&format!("since={since}&set_presence=offline"))
        .await;
    let ev = s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["sender"] == "@alice:localhost")
        .cloned();
    assert_eq!(
        ev.expect("alice's presence")["content"]["presence"],
        "unavailable"
    );
    // Syncing marks a user online unless the client says otherwise.
    alice.sync("").await;
    assert_eq!(bob.get(path).await.ok()["presence"], "online");
    // Carol shares no room with Alice; nobody may set another user's presence; bad values.
    carol.get(path).await.err(403, "M_FORBIDDEN");
    bob.put(path, json!({"presence": "online"}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .put(path, json!({"presence": "busy"}))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .get("/_matrix/client/v3/presence/@nobody:localhost/status")
        .await
        .err(404, "M_NOT_FOUND");
}
