//! Federation between real `plexus` processes on loopback: joins through make_join/send_join,
//! messages and state flowing all ways, typing and receipts as EDUs.

use plexus_spec_tests::{enc, eventually, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_a_room() {
    let (a, b, c) = tokio::join!(
        Server::federated(),
        Server::federated(),
        Server::federated()
    );
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let carol = c.user("carol").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "federated"}))
        .await;

    // B joins through A (named in server_name), C through A too.
    let r = bob
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room),
                enc(&a.server_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "bob joins over federation: {}", r.body);
    let r = carol.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "carol joins over federation: {}", r.body);

    // Everyone sees everyone joined.
    let want = {
        let mut v = vec![
            alice.user_id.clone(),
            bob.user_id.clone(),
            carol.user_id.clone(),
        ];
        v.sort();
        v
    };
    for (who, cl) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        eventually(20, &format!("{who} sees three members"), || async {
            (cl.joined_members(&room).await == want).then_some(())
        })
        .await;
    }
    // The room name came with the joined state.
    assert_eq!(
        bob.state(&room, "m.room.name", "").await.unwrap()["name"],
        "federated"
    );

    // Messages from each server reach the other two.
    alice.send_text(&room, "from A").await;
    let from_b = bob.send_text(&room, "from B").await;
    carol.send_text(&room, "from C").await;
    for (who, cl) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        eventually(20, &format!("{who} sees all three messages"), || async {
            let b = cl.recent_bodies(&room).await;
            ["from A", "from B", "from C"]
                .iter()
                .all(|m| b.iter().any(|x| x == m))
                .then_some(())
        })
        .await;
    }

    // B redacts its message: A and C apply the redaction.
    let r = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&room),
                enc(&from_b)
            ),
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (who, cl) in [("alice", &alice), ("carol", &carol)] {
        eventually(20, &format!("{who} sees B's message redacted"), || async {
            let e = cl
                .get(&format!(
                    "/_matrix/client/v3/rooms/{}/event/{}",
                    enc(&room),
                    enc(&from_b)
                ))
                .await;
            (e.status == 200 && e.body["content"].get("body").is_none()).then_some(())
        })
        .await;
    }

    // Power granted on A reaches C; then a state change on C is visible on A and B.
    let mut pl = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    pl["users"][&carol.user_id] = json!(50);
    alice
        .put_state(&room, "m.room.power_levels", "", pl)
        .await
        .ok();
    eventually(20, "carol sees her power", || async {
        let pl = carol.state(&room, "m.room.power_levels", "").await?;
        (pl["users"][&carol.user_id] == 50).then_some(())
    })
    .await;
    carol
        .put_state(&room, "m.room.topic", "", json!({"topic": "set on C"}))
        .await
        .ok();
    for (who, cl) in [("alice", &alice), ("bob", &bob)] {
        eventually(20, &format!("{who} sees C's topic"), || async {
            let t = cl.state(&room, "m.room.topic", "").await?;
            (t["topic"] == "set on C").then_some(())
        })
        .await;
    }

    // Typing on B shows in A's sync.
    let r = bob.typing(&room, true).await;
    assert_eq!(r.status, 200);
    eventually(20, "alice sees bob typing", || async {
        let s = alice.sync("timeout=0").await;
        let typing = s["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "m.typing")
            .map(|e| e["content"]["user_ids"].clone());
        typing
            .filter(|u| {
                u.as_array()
                    .is_some_and(|a| a.iter().any(|x| x == bob.user_id.as_str()))
            })
            .map(|_| ())
    })
    .await;

    // Presence set on A reaches B.
    let r = alice
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            json!({"presence": "online", "status_msg": "federating"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(20, "bob sees alice's presence", || async {
        let s = bob.sync("timeout=0").await;
        s["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["sender"] == alice.user_id.as_str() && e["content"]["status_msg"] == "federating"
            })
            .then_some(())
    })
    .await;
    // And asking for it directly answers the same, as for a local user.
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/presence/{}/status",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["presence"], "online", "{}", r.body);
    assert_eq!(r.body["status_msg"], "federating", "{}", r.body);
    // A remote user nobody here shares a room with is not told about.
    let r = bob
        .get(&format!(
            "/_matrix/client/v3/presence/{}/status",
            enc("@stranger:elsewhere.example")
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // B leaves; A and C see it.
    let r = bob
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let two = {
        let mut v = vec![alice.user_id.clone(), carol.user_id.clone()];
        v.sort();
        v
    };
    for (who, cl) in [("alice", &alice), ("carol", &carol)] {
        eventually(20, &format!("{who} sees bob leave"), || async {
            (cl.joined_members(&room).await == two).then_some(())
        })
        .await;
    }
}

/// While C is down, A and B change the same state concurrently; when C returns, all three
/// agree on the resolved state and C has the messages it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_state_converges_and_a_restarted_server_catches_up() {
    let (a, b, mut c) = tokio::join!(
        Server::federated(),
        Server::federated(),
        Server::federated()
    );
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let carol = c.user("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    // Bob may change the topic and power levels too.
    let mut pl = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    pl["users"][&bob.user_id] = json!(100);
    alice
        .put_state(&room, "m.room.power_levels", "", pl)
        .await
        .ok();
    for (cl, via) in [(&bob, &a.server_name), (&carol, &a.server_name)] {
        let r = cl.join_via(&room, via).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for cl in [&alice, &bob, &carol] {
        eventually(20, "three members everywhere", || async {
            (cl.joined_members(&room).await.len() == 3).then_some(())
        })
        .await;
    }

    c.kill9();
    // Concurrent, conflicting changes from A and B.
    let topic = |t: &str| json!({ "topic": t });
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    );
    let (ra, rb) = tokio::join!(
        alice.put(&path, topic("topic from A")),
        bob.put(&path, topic("topic from B"))
    );
    assert_eq!((ra.status, rb.status), (200, 200));
    let name_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room));
    let (ra, rb) = tokio::join!(
        alice.put(&name_path, json!({"name": "A's name"})),
        bob.put(&name_path, json!({"name": "B's name"}))
    );
    assert_eq!((ra.status, rb.status), (200, 200));
    alice.send_text(&room, "while C was down (A)").await;
    bob.send_text(&room, "while C was down (B)").await;

    // A and B converge on one resolved state.
    let settled = eventually(30, "A and B agree on topic and name", || async {
        let (ta, tb) = (
            alice.state(&room, "m.room.topic", "").await?,
            bob.state(&room, "m.room.topic", "").await?,
        );
        let (na, nb) = (
            alice.state(&room, "m.room.name", "").await?,
            bob.state(&room, "m.room.name", "").await?,
        );
        (ta == tb && na == nb).then_some((ta, na))
    })
    .await;

    c.crash_and_restart().await;
    // New activity after C is back; C catches up on what it missed.
    alice.send_text(&room, "after C returned").await;
    let want = [
        "while C was down (A)",
        "while C was down (B)",
        "after C returned",
    ];
    let mut got = vec![];
    for _ in 0..600 {
        got = carol.recent_bodies(&room).await;
        if want.iter().all(|m| got.iter().any(|x| x == m)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        want.iter().all(|m| got.iter().any(|x| x == m)),
        "carol did not catch up: {got:?}\n--- C\n{}\n--- A\n{}",
        c.log_text(),
        a.log_text()
    );
    eventually(30, "carol agrees on the resolved state", || async {
        let t = carol.state(&room, "m.room.topic", "").await?;
        let n = carol.state(&room, "m.room.name", "").await?;
        (t == settled.0 && n == settled.1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_directory_finds_remote_room_mates_by_name() {
    let one = Server::federated().await;
    let two = Server::federated().await;
    let alice = one.user("alice").await;
    let bob = two.user("bob").await;
    bob.put(
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&bob.user_id)
        ),
        json!({"displayname": "Bobby Faraway"}),
    )
    .await
    .ok();
    let search = |term: &'static str| {
        let alice = alice.clone();
        async move {
            alice
                .post(
                    "/_matrix/client/v3/user_directory/search",
                    json!({"search_term": term}),
                )
                .await
                .ok()["results"]
                .clone()
        }
    };
    // Not a room-mate yet: not found.
    assert_eq!(search("faraway").await, json!([]));
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .ok();
    eventually(20, "bob's invite arrives", || async {
        bob.sync("").await["rooms"]["invite"].get(&room).map(|_| ())
    })
    .await;
    bob.join_via(&room, &one.server_name).await.ok();
    let found = eventually(20, "alice finds bob by his display name", || async {
        let r = search("faraway").await;
        (r.as_array().is_some_and(|a| !a.is_empty())).then_some(r)
    })
    .await;
    assert_eq!(
        found,
        json!([{"user_id": bob.user_id, "display_name": "Bobby Faraway"}])
    );
    // A user found there can be reported (MSC4260, spec v1.14); one never seen cannot.
    let report = |user: String| {
        let alice = alice.clone();
        async move {
            alice
                .post(
                    &format!("/_matrix/client/v3/users/{}/report", enc(&user)),
                    json!({"reason": "spam"}),
                )
                .await
        }
    };
    report(bob.user_id.clone()).await.ok();
    report(format!("@nobody:{}", two.server_name))
        .await
        .err(404, "M_NOT_FOUND");
}
