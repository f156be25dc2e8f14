//! Concurrent state over federation: events that do not build on every forward extremity
//! leave the room with the resolution of the states at all extremities. The test speaks as
//! server B with B's own signing key, so it can place B's events exactly where a slow or
//! partitioned B would have put them.

use plexus_spec_tests::{
    enc,
    peer::{context, event_id_of, key_file, peer_for, topic_and_demotion},
    Server,
};
use serde_json::json;

/// A moderator on A (PL 50) and an admin on B (PL 100) set the topic at the same time; the
/// admin's next event, on the same parents as its topic, demotes the moderator. Resolving the
/// three branches keeps the admin's topic, whichever order they arrive in, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_beside_two_topics_keeps_the_admins_topic() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let alice = a.user("alice").await;
    let charlie = a.user("charlie").await;
    let bob = b.user("bob").await;
    let peer = peer_for(&b, key);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    charlie.join(&room).await.ok();
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut pl = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    pl["users"][&bob.user_id] = json!(100);
    pl["users"][&charlie.user_id] = json!(50);
    alice
        .put_state(&room, "m.room.power_levels", "", pl.clone())
        .await
        .ok();

    // B's two events, built on the power levels above, before B hears of charlie's topic.
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

    // Charlie's topic is the later one: against B's topic alone, it would win.
    charlie
        .put_state(&room, "m.room.topic", "", json!({"topic": "moderator"}))
        .await
        .ok();
    let res = peer.transaction(&a.server_name, vec![tb_pdu]).await;
    assert_eq!(res["pdus"][&tb], json!({}), "{res}");
    let res = peer.transaction(&a.server_name, vec![pb_pdu]).await;
    assert_eq!(res["pdus"][&pb], json!({}), "{res}");

    let topic = alice.state(&room, "m.room.topic", "").await;
    assert_eq!(
        topic,
        Some(json!({"topic": "admin"})),
        "current state is the resolution of all three branches\n{}",
        a.log_text()
    );
    let pl_now = alice.state(&room, "m.room.power_levels", "").await.unwrap();
    assert!(pl_now["users"].get(&charlie.user_id).is_none(), "{pl_now}");
    // And clients are told: the topic in a fresh sync is the admin's.
    let s = alice.sync("timeout=0").await;
    let topic_in_sync = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            s["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .rfind(|e| e["type"] == "m.room.topic")
        .map(|e| e["content"]["topic"].clone());
    assert_eq!(topic_in_sync, Some(json!("admin")), "{s}");
    // At the default log level, the resolutions above leave no narration from ruma, while
    // Plexus's own lines say what happened.
    let log = a.log_text();
    assert!(
        !log.contains("state resolution starting") && !log.contains("conflicted events"),
        "ruma's state resolution chatter at info:\n{log}"
    );
    assert!(
        b.log_text().contains("joined a room over federation"),
        "{}",
        b.log_text()
    );
    // The room goes on: a message from A reaches B.
    let id = alice.send_text(&room, "after the race").await;
    plexus_spec_tests::eventually(20, "bob gets alice's message", || async {
        let r = bob
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(&id)
            ))
            .await;
        (r.status == 200).then_some(())
    })
    .await;
}

/// A PDU over the size limit is refused with an error that says the size and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_pdu_is_refused_with_its_size() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let peer = peer_for(&b, key);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (last, auth) = context(&alice, &room, &bob.user_id).await;
    // Our own builder refuses to make one: grow a signed message instead (the size is
    // checked before signatures).
    let (_, mut pdu) = peer.message(&room, &bob.user_id, &last, &auth, "small");
    pdu["content"]["body"] = json!("x".repeat(70_000));
    let id = event_id_of("12", &pdu);
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    let err = res["pdus"][&id]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("65536") && !err.contains('{'),
        "the error names the limit: {res}"
    );
}
