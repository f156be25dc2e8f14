//! Issue 19's federation fixes with Synapse as the other server: Plexus keeps the right state
//! when events race in a room Synapse hosts, a Plexus user who joins a Synapse room late pages
//! back through all of its history from the first sync's `prev_batch`, and a Synapse user's
//! presence can be asked for on Plexus.
//!
//! The race needs a third server whose events the test places by hand: a Plexus server B whose
//! signing key the test holds, so what it sends is what a slow B would have sent.

use plexus_spec_tests::{
    enc, eventually,
    peer::{context, key_file, peer_for, topic_and_demotion},
    synapse::Synapse,
    Client, Server,
};
use serde_json::json;

/// Synapse hosts the room; its moderator (PL 50) and an admin on B (PL 100) set the topic at
/// the same time, and the admin's next event, on the same parents, demotes the moderator.
/// Plexus A, which only watches, ends with the admin's topic at once, as Synapse does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_topics_in_a_synapse_room_resolve_the_same_on_plexus() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let syn = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let logs = || format!("--- plexus A\n{}\n--- synapse\n{}", a.log_text(), syn.log());
    let alice = syn.user("alice").await;
    let charlie = syn.user("charlie").await;
    let bob = b.user("bob").await;
    let dave = a.user("dave").await;
    let peer = peer_for(&b, key);
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_version": "12"}))
        .await;
    charlie.join(&room).await.ok();
    for (c, who) in [(&bob, "bob"), (&dave, "dave")] {
        let r = c.join_via(&room, &syn.server_name).await;
        assert_eq!(r.status, 200, "{who} joins: {}\n{}", r.body, logs());
    }
    let mut pl = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    pl["users"][&bob.user_id] = json!(100);
    pl["users"][&charlie.user_id] = json!(50);
    alice
        .put_state(&room, "m.room.power_levels", "", pl.clone())
        .await
        .ok();
    eventually(30, "A has the power levels", || async {
        let p = dave.state(&room, "m.room.power_levels", "").await?;
        (p["users"][&charlie.user_id] == 50).then_some(())
    })
    .await;

    let (pa, auth) = context(&alice, &room, &bob.user_id).await;
    let [(tb, tb_pdu), (pb, pb_pdu)] = topic_and_demotion(
        &peer,
        &room,
        &bob.user_id,
        &pl,
        &charlie.user_id,
        &pa,
        &auth,
    );

    // The moderator's topic is the later one, and reaches A first.
    charlie
        .put_state(&room, "m.room.topic", "", json!({"topic": "moderator"}))
        .await
        .ok();
    eventually(30, "A has the moderator's topic", || async {
        let t = dave.state(&room, "m.room.topic", "").await?;
        (t["topic"] == "moderator").then_some(())
    })
    .await;
    for (id, pdu) in [(&tb, tb_pdu), (&pb, pb_pdu)] {
        for to in [&a.server_name, &syn.server_name] {
            let res = peer.transaction(to, vec![pdu.clone()]).await;
            assert_eq!(res["pdus"][id], json!({}), "{to}: {res}\n{}", logs());
        }
    }

    let topic = dave.state(&room, "m.room.topic", "").await;
    assert_eq!(topic, Some(json!({"topic": "admin"})), "{}", logs());
    // Synapse, the control, agrees.
    eventually(30, "Synapse has the admin's topic", || async {
        let t = alice.state(&room, "m.room.topic", "").await?;
        (t["topic"] == "admin").then_some(())
    })
    .await;
}

/// A Plexus user joins a Synapse room with 30 messages: the first sync says `limited`, and
/// paging back from its `prev_batch` in pages of 10 reaches the room's creation. A Synapse
/// user's presence, once it arrived, is answered by `GET /presence/{userId}/status` on Plexus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_on_plexus_pages_back_through_a_synapse_room() {
    let syn = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let a = Server::federated().await;
    let logs = || format!("--- plexus\n{}\n--- synapse\n{}", a.log_text(), syn.log());
    let alice = syn.user("alice").await;
    let dave = a.user("dave").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_version": "12"}))
        .await;
    for i in 0..30 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let r = dave.join_via(&room, &syn.server_name).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, logs());

    let filter = enc(r#"{"room":{"timeline":{"limit":10}}}"#);
    let s = dave.sync(&format!("timeout=0&filter={filter}")).await;
    let tl = &s["rooms"]["join"][&room]["timeline"];
    assert_eq!(tl["limited"], true, "history precedes the join: {tl}");
    let prev = tl["prev_batch"].as_str().map(str::to_owned);
    let (events, _) = dave.page_back(&room, 10, prev).await;
    let bodies: Vec<&str> = events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let want: Vec<String> = (0..30).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, want, "{}", logs());
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "paging ends at the room's creation"
    );

    presence_of_a_synapse_user(&alice, &dave, &logs).await;
}

async fn presence_of_a_synapse_user(alice: &Client, dave: &Client, logs: &dyn Fn() -> String) {
    let r = alice
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            json!({"presence": "online", "status_msg": "on synapse"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let got = eventually(30, "Plexus answers the Synapse user's presence", || async {
        let r = dave.get(&path).await;
        (r.status == 200 && r.body["status_msg"] == "on synapse").then_some(r.body)
    })
    .await;
    assert_eq!(got["presence"], "online", "{got}\n{}", logs());
}
