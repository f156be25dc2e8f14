//! Hostile federation input: forged signatures, wrong origins and destinations, tampered
//! content and events that fail auth are refused (or redacted) and never enter the room.
//! The test acts as server B with B's own signing key (given to B through
//! PLEXUS_SIGNING_KEY_PATH), so what it sends is exactly what a malicious B could send.

use plexus_core::{
    builder::{build_pdu, NewEvent, RoomContext},
    room_version,
    ruma::{RoomId, RoomVersionId, ServerName, UserId},
    signing::ServerKey,
};
use plexus_spec_tests::{
    enc, eventually,
    peer::{
        bench_state_events, context, event_id_of, key_file, measure_inbound, message_at, now_ms,
        pdu_at, peer_for, At,
    },
    Server,
};
use serde_json::{json, Value};

/// A member event in federation form for a room that lives on `origin` (no history needed:
/// the invitee's server cannot check an invite against a room it is not in).
fn member_pdu(
    version: RoomVersionId,
    room: &str,
    sender: &str,
    target: &str,
    membership: &str,
    origin: &str,
    key: &ServerKey,
) -> Value {
    let rules = room_version::rules(&version).unwrap();
    let sender = UserId::parse(sender).unwrap();
    let origin = <&ServerName>::try_from(origin).unwrap();
    let room_id = RoomId::parse(room).unwrap();
    let ctx = RoomContext {
        room_id: Some(&room_id),
        rules: &rules,
        sender: &sender,
        origin,
        prev_events: vec![],
        auth_events: vec![],
        depth: 5,
        origin_server_ts: now_ms(),
    };
    let ev = NewEvent {
        kind: "m.room.member".into(),
        content: json!({ "membership": membership }),
        state_key: Some(target.to_owned()),
        redacts: None,
    };
    let built = build_pdu(&ev, &ctx, key).unwrap();
    let mut v = serde_json::to_value(&built.stored).unwrap();
    v.as_object_mut().unwrap().remove("event_id");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_acl_shuts_out_denied_servers() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b, c) = tokio::join!(
        Server::federated(),
        Server::federated_with(&env),
        Server::federated()
    );
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let carol = c.user("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let peer = peer_for(&b, key);
    let state_ids = format!(
        "/_matrix/federation/v1/state_ids/{}?event_id={}",
        enc(&room),
        enc(context(&alice, &room, &bob.user_id).await.0.as_str())
    );
    let (status, res) = peer.get(&a.server_name, &state_ids).await;
    assert_eq!(status, 200, "before the ACL B may read the room: {res}");
    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let (id, pdu) = peer.message(&room, &bob.user_id, &prev, &auth, "before acl");
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&id], json!({}), "{res}");

    // Every test server is an IP literal, so this ACL denies them all (A included, for B).
    alice
        .put_state(
            &room,
            "m.room.server_acl",
            "",
            json!({"allow": ["*"], "deny": [], "allow_ip_literals": false}),
        )
        .await
        .ok();

    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let (id, pdu) = peer.message(&room, &bob.user_id, &prev, &auth, "after acl");
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert!(
        res["pdus"][&id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ACL")),
        "a denied server's PDU is refused: {res}"
    );
    let (status, res) = peer.get(&a.server_name, &state_ids).await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    let (status, res) = peer
        .get(
            &a.server_name,
            &format!(
                "/_matrix/federation/v1/make_join/{}/{}?ver=12",
                enc(&room),
                enc(&format!("@new:{}", peer.name))
            ),
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{res}"
    );
    let r = carol.join_via(&room, &a.server_name).await;
    r.err(403, "M_FORBIDDEN");

    // Typing from the denied server is ignored.
    let r = bob.typing(&room, true).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let s = alice.sync("").await;
    let typing = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| !u.is_empty())
        });
    assert!(!typing, "typing from a denied server got through: {s}");
    let bodies = alice.recent_bodies(&room).await;
    assert!(bodies.contains(&"before acl".to_owned()), "{bodies:?}");
    assert!(!bodies.contains(&"after acl".to_owned()), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_invites_are_refused() {
    let (_dir, key_path, key) = key_file();
    let a = Server::federated().await;
    let b = Server::federated_with(&[("PLEXUS_SIGNING_KEY_PATH", &key_path)]).await;
    let alice = a.user("alice").await;
    let peer = peer_for(&b, key);
    let bob = format!("@bob:{}", peer.name);
    let room = format!("!hostile:{}", peer.name);
    let name = json!([{"type": "m.room.name", "state_key": "", "sender": bob, "content": {"name": "from B"}},
                      {"type": "m.room.create", "state_key": "", "sender": bob, "content": {"room_version": "10"}}]);
    let invite = |target: &str, sender: &str, membership: &str, key: &ServerKey| {
        member_pdu(
            RoomVersionId::V10,
            &room,
            sender,
            target,
            membership,
            &peer.name,
            key,
        )
    };

    // The genuine invite: countersigned by A, and alice sees it with the room's name.
    let (status, res) = peer
        .invite(
            &a.server_name,
            "10",
            &invite(&alice.user_id, &bob, "invite", &peer.key),
            name.clone(),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let sigs = &res["event"]["signatures"];
    assert!(
        sigs[&a.server_name].is_object() && sigs[&peer.name].is_object(),
        "{res}"
    );
    let s = eventually(10, "alice sees the invite", || async {
        let s = alice.sync("").await;
        s["rooms"]["invite"].get(&room).cloned()
    })
    .await;
    assert!(
        s["invite_state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["name"] == "from B"),
        "{s}"
    );

    let check = |what: &'static str, status: u16, res: Value, want: (u16, &str)| {
        assert_eq!(
            (status, res["errcode"].as_str().unwrap_or("")),
            want,
            "{what}: {res}"
        );
    };
    let forger = ServerKey::generate().unwrap();
    let mut tampered = invite(&alice.user_id, &bob, "invite", &peer.key);
    tampered["content"]["displayname"] = json!("changed after signing");
    // Outside the content and dropped by redaction: the signature still holds, the hash not.
    let mut padded = invite(&alice.user_id, &bob, "invite", &peer.key);
    padded["x_added_after_signing"] = json!(true);
    let cases = [
        (
            "unknown invitee",
            invite(
                &format!("@nobody:{}", a.server_name),
                &bob,
                "invite",
                &peer.key,
            ),
            "10",
            (404, "M_NOT_FOUND"),
        ),
        (
            "invitee elsewhere",
            invite("@carol:elsewhere.example", &bob, "invite", &peer.key),
            "10",
            (400, "M_INVALID_PARAM"),
        ),
        (
            "sender not of the origin",
            invite(
                &alice.user_id,
                &format!("@mallory:{}", a.server_name),
                "invite",
                &peer.key,
            ),
            "10",
            (400, "M_INVALID_PARAM"),
        ),
        (
            "not an invite",
            invite(&alice.user_id, &bob, "join", &peer.key),
            "10",
            (400, "M_INVALID_PARAM"),
        ),
        (
            "forged signature",
            invite(&alice.user_id, &bob, "invite", &forger),
            "10",
            (400, "M_INVALID_PARAM"),
        ),
        ("tampered content", tampered, "10", (400, "M_INVALID_PARAM")),
        (
            "field added after signing",
            padded,
            "10",
            (400, "M_INVALID_PARAM"),
        ),
        (
            "unknown room version",
            invite(&alice.user_id, &bob, "invite", &peer.key),
            "999",
            (400, "M_INCOMPATIBLE_ROOM_VERSION"),
        ),
    ];
    for (what, pdu, version, want) in cases {
        let id = event_id_of("10", &pdu);
        let path = format!("/_matrix/federation/v2/invite/{}/{}", enc(&room), enc(&id));
        let body = json!({ "room_version": version, "event": pdu, "invite_room_state": name });
        let (status, res) = peer
            .put(
                &a.server_name,
                Some((&peer.key, &a.server_name)),
                &path,
                &body,
            )
            .await;
        check(what, status, res, want);
    }

    // Room version 12 wants full PDUs in invite_room_state, the create event among them.
    let room12 = format!("!hostile12:{}", peer.name);
    let pdu = member_pdu(
        RoomVersionId::V12,
        &room12,
        &bob,
        &alice.user_id,
        "invite",
        &peer.name,
        &peer.key,
    );
    let (status, res) = peer.invite(&a.server_name, "12", &pdu, name.clone()).await;
    check(
        "stripped state in v12",
        status,
        res,
        (400, "M_INVALID_PARAM"),
    );
    let (status, res) = peer.invite(&a.server_name, "12", &pdu, json!([])).await;
    check(
        "no create event in v12",
        status,
        res,
        (400, "M_INVALID_PARAM"),
    );

    // None of the refused invites shows up.
    let s = alice.sync("").await;
    let invites: Vec<&String> = s["rooms"]["invite"].as_object().unwrap().keys().collect();
    assert_eq!(invites, vec![&room], "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_federation_input_is_refused() {
    let (_dir, key_path, key) = key_file();
    let a = Server::federated().await;
    let b = Server::federated_with(&[("PLEXUS_SIGNING_KEY_PATH", &key_path)]).await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let peer = peer_for(&b, key);
    let forger = ServerKey::generate().unwrap();
    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let event_visible = |id: String| {
        let alice = &alice;
        let room = room.clone();
        async move {
            let r = alice
                .get(&format!(
                    "/_matrix/client/v3/rooms/{}/event/{}",
                    enc(&room),
                    enc(&id)
                ))
                .await;
            (r.status == 200).then_some(r.body)
        }
    };

    // A genuine message from B is accepted: the baseline the forgeries are measured against.
    let (good, pdu) = peer.message(&room, &bob.user_id, &prev, &auth, "genuine");
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&good], json!({}), "{res}");
    let seen = eventually(10, "the genuine message", || event_visible(good.clone())).await;
    assert_eq!(seen["content"]["body"], "genuine");

    // Refused and never visible: signed by a key that is not B's; a sender on another server
    // (A's name) signed only by B; a user of B who is not in the room (fails the auth rules).
    let fake_sender = format!("@mallory:{}", a.server_name);
    let outsider = format!("@outsider:{}", peer.name);
    for (what, sender, key) in [
        ("forged signature", &bob.user_id, &forger),
        ("wrong origin", &fake_sender, &peer.key),
        ("not a member", &outsider, &peer.key),
    ] {
        let (id, pdu) = message_at(&room, sender, &peer.name, key, &prev, &auth, what, now_ms());
        let res = peer.transaction(&a.server_name, vec![pdu]).await;
        assert!(
            res["pdus"][&id]["error"].is_string(),
            "{what} accepted: {res}"
        );
        assert!(event_visible(id).await.is_none(), "{what} is visible");
    }

    // Signed with B's real key, but stamped a month ahead: past the week a key is trusted
    // for (room versions 5 and later enforce `valid_until_ts`).
    let month = 30 * 24 * 3600 * 1000;
    let (id, pdu) = message_at(
        &room,
        &bob.user_id,
        &peer.name,
        &peer.key,
        &prev,
        &auth,
        "from the future",
        now_ms() + month,
    );
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert!(
        res["pdus"][&id]["error"].is_string(),
        "a signature past its key's validity was accepted: {res}"
    );
    assert!(event_visible(id).await.is_none());

    // Content changed after signing: the hash fails, the event is kept only redacted.
    let (id, mut pdu) = peer.message(&room, &bob.user_id, &prev, &auth, "original");
    pdu["content"]["body"] = json!("tampered");
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&id], json!({}), "{res}");
    let seen = eventually(10, "the redacted event", || event_visible(id.clone())).await;
    assert!(
        seen["content"].get("body").is_none(),
        "tampered content served: {seen}"
    );

    // Requests: signed with a forged key, for another destination, without auth, or whose
    // body names another origin. The same body, correctly signed, is accepted.
    let body = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [], "edus": [] });
    let (status, _) = peer
        .send(&a.server_name, Some((&peer.key, &a.server_name)), &body)
        .await;
    assert_eq!(status, 200, "the baseline request must pass");
    let (status, err) = peer
        .send(&a.server_name, Some((&forger, &a.server_name)), &body)
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{err}"
    );
    let (status, err) = peer
        .send(
            &a.server_name,
            Some((&peer.key, "elsewhere.example")),
            &body,
        )
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{err}"
    );
    let (status, err) = peer.send(&a.server_name, None, &body).await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{err}"
    );
    let lying =
        json!({ "origin": "elsewhere.example", "origin_server_ts": 1, "pdus": [], "edus": [] });
    let (status, err) = peer
        .send(&a.server_name, Some((&peer.key, &a.server_name)), &lying)
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{err}"
    );

    // After all that, alice's timeline holds the genuine and the redacted event only.
    let bodies = alice.recent_bodies(&room).await;
    assert!(bodies.contains(&"genuine".to_owned()), "{bodies:?}");
    for bad in [
        "forged signature",
        "wrong origin",
        "not a member",
        "from the future",
        "tampered",
        "original",
    ] {
        assert!(
            !bodies.contains(&bad.to_owned()),
            "{bad} got in: {bodies:?}"
        );
    }
}

/// Inbound PDUs per second through `/send` (a measurement, not a check: run with
/// `cargo test -p plexus-spec-tests --test federation_hostile -- --ignored --nocapture`).
/// `PLEXUS_BENCH_STATE` sets how many state events the room has (default 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn inbound_pdu_rate() {
    let n_state = bench_state_events();
    let (_dir, key_path, key) = key_file();
    let a = Server::federated().await;
    let b = Server::federated_with(&[("PLEXUS_SIGNING_KEY_PATH", &key_path)]).await;
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    for i in 0..n_state {
        alice
            .put_state(&room, "org.example.bulk", &format!("k{i}"), json!({"i": i}))
            .await
            .ok();
    }
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let peer = peer_for(&b, key);
    measure_inbound(
        "plexus",
        &peer,
        &alice,
        &a.server_name,
        &room,
        &bob.user_id,
        n_state,
    )
    .await;
}

/// A v12 redaction from another server that names one event in `content.redacts` (where v11+
/// rooms keep it) and another in a top-level `redacts` (which means nothing there) redacts the
/// first, as every server following the spec does, and clients are shown that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_redacts_what_its_room_version_says() {
    let (_dir, key_path, key) = key_file();
    let env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(Server::federated(), Server::federated_with(&env));
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let peer = peer_for(&b, key);
    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let (own, pdu) = peer.message(&room, &bob.user_id, &prev, &auth, "bob regrets this");
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&own], json!({}), "{res}");
    let victim = alice.send_text(&room, "alice's words").await;

    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let redaction = NewEvent {
        kind: "m.room.redaction".into(),
        content: json!({ "redacts": own }),
        state_key: None,
        redacts: Some(victim.as_str().try_into().unwrap()),
    };
    let at = At {
        prev: std::slice::from_ref(&prev),
        auth: &auth,
        origin_server_ts: now_ms(),
        depth: 100,
    };
    let (rid, pdu) = pdu_at(&room, &bob.user_id, &peer.name, &peer.key, &redaction, &at);
    let res = peer.transaction(&a.server_name, vec![pdu]).await;
    assert_eq!(res["pdus"][&rid], json!({}), "{res}");

    let event = |id: &str| {
        let (alice, room, id) = (alice.clone(), room.clone(), id.to_owned());
        async move { alice.event(&room, &id).await.ok().clone() }
    };
    let mine = event(&own).await;
    assert_eq!(
        mine["content"],
        json!({}),
        "bob's own message is redacted: {mine}"
    );
    let theirs = event(&victim).await;
    assert_eq!(theirs["content"]["body"], "alice's words", "{theirs}");
    let shown = event(&rid).await;
    assert_eq!(shown["redacts"], own.as_str(), "{shown}");
}
