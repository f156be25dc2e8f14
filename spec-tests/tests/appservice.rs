//! The Application Service API against a real plexus and a loopback appservice: registration
//! files, namespaces, masquerading, transactions (ordered, retried, once, across a crash),
//! ephemeral data and to-device messages (MSC2409), device lists and key counts (MSC3202),
//! ping, user and alias queries, third-party lookups and network directories.

use plexus_spec_tests::{
    enc, eventually, fake_appservice::FakeAppservice, plexus_bin, Client, Server,
};
use serde_json::{json, Value};

/// A server with one appservice whose users and aliases start with `as_`.
async fn setup(extra: &str) -> (Server, FakeAppservice, tempfile::TempDir) {
    let fake = FakeAppservice::start("bridge").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, fake.registration("as_", "localhost", extra)).unwrap();
    let server = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_APPSERVICE_REGISTRATIONS", path.to_str().unwrap()),
    ])
    .await;
    fake.set_homeserver(&server.base);
    (server, fake, dir)
}

/// A client using the appservice's token, acting as its sender or as `user_id`.
fn as_client(server: &Server, fake: &FakeAppservice) -> Client {
    Client {
        token: Some(fake.as_token.clone()),
        ..server.client()
    }
}

/// `path` with `user_id` (and `device_id`) masquerading appended.
fn acting(path: &str, user: &str, device: Option<&str>) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut p = format!("{path}{sep}user_id={}", enc(user));
    if let Some(d) = device {
        p.push_str(&format!("&device_id={}", enc(d)));
    }
    p
}

/// `m.login.application_service` as `local`, with this client's token.
async fn login_as_appservice(c: &Client, local: &str) -> plexus_spec_tests::Resp {
    c.post(
        "/_matrix/client/v3/login",
        json!({ "type": "m.login.application_service",
                "identifier": { "type": "m.id.user", "user": local } }),
    )
    .await
}

/// The appservice's `@as_ghost` joins `room`.
async fn ghost_joins(asc: &Client, room: &str) {
    asc.post(
        &acting(
            &format!("/_matrix/client/v3/join/{}", enc(room)),
            "@as_ghost:localhost",
            None,
        ),
        json!({}),
    )
    .await
    .ok();
}

async fn register_ghost(asc: &Client, local: &str) -> Value {
    asc.post(
        "/_matrix/client/v3/register",
        json!({ "type": "m.login.application_service", "username": local }),
    )
    .await
    .ok()
    .clone()
}

#[tokio::test]
async fn namespaces_registration_and_masquerading() {
    let (server, fake, _dir) = setup("").await;
    let asc = as_client(&server, &fake);

    // Normal users cannot take names or aliases in the exclusive namespaces.
    server
        .client()
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "as_bob", "password": "password-1234", "auth": {"type": "m.login.dummy"} }),
        )
        .await
        .err(400, "M_EXCLUSIVE");
    server
        .client()
        .get("/_matrix/client/v3/register/available?username=as_bob")
        .await
        .err(400, "M_EXCLUSIVE");
    let alice = server.user("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#as_x:localhost")
            ),
            json!({ "room_id": room }),
        )
        .await
        .err(400, "M_EXCLUSIVE");
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "as_y" }),
        )
        .await
        .err(400, "M_EXCLUSIVE");

    // The appservice registers its users, only inside its namespace, without a password.
    let ghost = register_ghost(&asc, "as_ghost").await;
    assert_eq!(ghost["user_id"], "@as_ghost:localhost");
    asc.post(
        "/_matrix/client/v3/register",
        json!({ "type": "m.login.application_service", "username": "outsider" }),
    )
    .await
    .err(400, "M_EXCLUSIVE");
    alice
        .post(
            "/_matrix/client/v3/register",
            json!({ "type": "m.login.application_service", "username": "as_sneaky" }),
        )
        .await
        .err(403, "M_FORBIDDEN");
    asc.post(
        "/_matrix/client/v3/register",
        json!({ "type": "m.login.application_service", "username": "as_ghost" }),
    )
    .await
    .err(400, "M_USER_IN_USE");

    // Masquerading: its sender by default, its registered users, nobody else.
    let me = asc.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(me.ok()["user_id"], "@bridge_bot:localhost");
    assert!(me.body.get("device_id").is_none(), "{}", me.body);
    let who = asc
        .get(&acting(
            "/_matrix/client/v3/account/whoami",
            "@as_ghost:localhost",
            None,
        ))
        .await;
    assert_eq!(who.ok()["user_id"], "@as_ghost:localhost");
    asc.get(&acting(
        "/_matrix/client/v3/account/whoami",
        &alice.user_id,
        None,
    ))
    .await
    .err(403, "M_FORBIDDEN");
    asc.get(&acting(
        "/_matrix/client/v3/account/whoami",
        "@as_nobody:localhost",
        None,
    ))
    .await
    .err(403, "M_FORBIDDEN");
    asc.get(&acting(
        "/_matrix/client/v3/account/whoami",
        "@as_ghost:localhost",
        Some("NOSUCH"),
    ))
    .await
    .err(400, "M_UNKNOWN_DEVICE");

    // m.login.application_service gives a device; masquerading can then name it (MSC3202).
    let login = login_as_appservice(&asc, "as_ghost").await;
    let device = login.ok()["device_id"].as_str().unwrap().to_owned();
    let who = asc
        .get(&acting(
            "/_matrix/client/v3/account/whoami",
            "@as_ghost:localhost",
            Some(&device),
        ))
        .await;
    assert_eq!(who.ok()["device_id"], device.as_str());
    login_as_appservice(&alice, "as_ghost")
        .await
        .err(403, "M_FORBIDDEN");
    // Device endpoints need a device.
    asc.post(
        &acting(
            "/_matrix/client/v3/keys/upload",
            "@as_ghost:localhost",
            None,
        ),
        json!({}),
    )
    .await
    .err(400, "M_MISSING_PARAM");

    // Acting as a ghost: join, send, name an alias in its namespace.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": "@as_ghost:localhost" }),
        )
        .await
        .ok();
    ghost_joins(&asc, &room).await;
    asc.put(
        &acting(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            "@as_ghost:localhost",
            None,
        ),
        json!({ "msgtype": "m.text", "body": "from the bridge" }),
    )
    .await
    .ok();
    assert!(alice
        .recent_bodies(&room)
        .await
        .contains(&"from the bridge".to_owned()));
    asc.put(
        &acting(
            &format!(
                "/_matrix/client/v3/directory/room/{}",
                enc("#as_x:localhost")
            ),
            "@as_ghost:localhost",
            None,
        ),
        json!({ "room_id": room }),
    )
    .await
    .ok();
    let events = eventually(10, "the bridge to see its ghost's message", || async {
        let events = fake.events();
        events
            .iter()
            .any(|e| e["content"]["body"] == "from the bridge")
            .then_some(events)
    })
    .await;
    assert!(events
        .iter()
        .all(|e| e["room_id"] == room.as_str() && e.get("event_id").is_some()));
}

#[tokio::test]
async fn bad_registration_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: x\nas_token: same\nhs_token: same\nsender_localpart: x\nurl: null\n",
    )
    .unwrap();
    let out = std::process::Command::new(plexus_bin())
        .env("PLEXUS_DATA_DIR", dir.path())
        .env("PLEXUS_APPSERVICE_REGISTRATIONS", &bad)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.yaml") && err.contains("must differ"),
        "{err}"
    );
    std::fs::write(&bad, "id: x\nas_token: a\nhs_token: h\nsender_localpart: x\nnamespaces:\n  users:\n    - regex: \"@x_(\"\n").unwrap();
    let out = std::process::Command::new(plexus_bin())
        .env("PLEXUS_DATA_DIR", dir.path())
        .env("PLEXUS_APPSERVICE_REGISTRATIONS", &bad)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("namespaces.users[0].regex"), "{err}");
}

#[tokio::test]
async fn transactions_are_ordered_retried_and_delivered_once_across_a_crash() {
    let (mut server, fake, _dir) = setup("").await;
    let asc = as_client(&server, &fake);
    register_ghost(&asc, "as_ghost").await;
    let alice = server.user("alice").await;
    let room = alice
        .create_room(json!({ "invite": ["@as_ghost:localhost"] }))
        .await;
    ghost_joins(&asc, &room).await;
    eventually(10, "the invite in a transaction", || async {
        fake.events()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@as_ghost:localhost")
            .then_some(())
    })
    .await;

    // The appservice is down: the same transaction is retried until it is back.
    fake.answer(500);
    for i in 0..3 {
        alice.send_text(&room, &format!("down {i}")).await;
    }
    let failed = eventually(20, "two failed attempts", || async {
        let a = fake.attempts();
        let failed: Vec<_> = a.iter().filter(|(_, _, s)| *s == 500).cloned().collect();
        (failed.len() >= 2).then_some(failed)
    })
    .await;
    assert_eq!(failed[0].0, failed[1].0, "a retry keeps its transaction id");
    assert_eq!(failed[0].1, failed[1].1, "and its content");
    fake.answer(200);
    eventually(30, "the messages after the appservice is back", || async {
        let bodies: Vec<String> = fake
            .events()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        (bodies == ["down 0", "down 1", "down 2"]).then_some(())
    })
    .await;

    // Down again, and the homeserver is killed: after a restart the stored transaction is
    // sent again with the same id, and its events arrive once.
    fake.answer(500);
    alice.send_text(&room, "before the crash").await;
    let attempted = eventually(20, "an attempt before the crash", || async {
        fake.attempts()
            .into_iter()
            .find(|(_, b, s)| *s == 500 && b.to_string().contains("before the crash"))
    })
    .await;
    server.crash_and_restart().await;
    fake.answer(200);
    eventually(30, "the stored transaction after the restart", || async {
        fake.accepted()
            .iter()
            .any(|(t, b)| *t == attempted.0 && *b == attempted.1)
            .then_some(())
    })
    .await;
    let asc = as_client(&server, &fake);
    asc.put(
        &acting(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/after",
                enc(&room)
            ),
            "@as_ghost:localhost",
            None,
        ),
        json!({ "msgtype": "m.text", "body": "after the crash" }),
    )
    .await
    .ok();
    eventually(20, "later events after the restart", || async {
        fake.events()
            .iter()
            .any(|e| e["content"]["body"] == "after the crash")
            .then_some(())
    })
    .await;
    let ids: Vec<String> = fake
        .events()
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "every event once: {ids:?}");
    let accepted: Vec<u64> = fake
        .accepted()
        .iter()
        .map(|(t, _)| t.parse().unwrap())
        .collect();
    assert!(
        accepted.windows(2).all(|w| w[0] < w[1]),
        "transaction ids only grow: {accepted:?}"
    );
    // Events from rooms without its users are not its business.
    let other = alice.create_room(json!({})).await;
    alice.send_text(&other, "private").await;
    alice.send_text(&room, "marker").await;
    eventually(20, "the marker", || async {
        fake.events()
            .iter()
            .any(|e| e["content"]["body"] == "marker")
            .then_some(())
    })
    .await;
    assert!(!fake.events().iter().any(|e| e["room_id"] == other.as_str()));
}

/// Spec v1.13 (MSC2409): ephemeral data of rooms in the appservice's room namespace, with no
/// user of its in them, and the private receipts of the users it acts for (not of others).
#[tokio::test]
async fn ephemeral_data_of_namespaced_rooms_and_private_receipts_of_its_users() {
    let (server, fake, _dir) =
        setup("  rooms:\n    - exclusive: false\n      regex: \"!.*\"\nreceive_ephemeral: true")
            .await;
    let asc = as_client(&server, &fake);
    register_ghost(&asc, "as_ghost").await;
    let alice = server.user("alice").await;
    let lonely = alice.create_room(json!({})).await;
    alice.typing(&lonely, true).await.ok();
    eventually(20, "typing in a room only its namespace names", || async {
        fake.field("ephemeral")
            .iter()
            .any(|e| e["type"] == "m.typing" && e["room_id"] == lonely.as_str())
            .then_some(())
    })
    .await;

    let shared = alice
        .create_room(json!({ "invite": ["@as_ghost:localhost"] }))
        .await;
    ghost_joins(&asc, &shared).await;
    let msg = alice.send_text(&shared, "private reading").await;
    let private_receipt = |c: Client, path: String| async move {
        c.post(&path, json!({})).await.ok();
    };
    let receipt_path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read.private/{}",
        enc(&shared),
        enc(&msg)
    );
    private_receipt(
        asc.clone(),
        acting(&receipt_path, "@as_ghost:localhost", None),
    )
    .await;
    private_receipt(alice.clone(), receipt_path.clone()).await;
    let receipt = eventually(20, "the ghost's private receipt", || async {
        fake.field("ephemeral").into_iter().find(|e| {
            e["type"] == "m.receipt"
                && e["content"][&msg]["m.read.private"]["@as_ghost:localhost"].is_object()
        })
    })
    .await;
    assert!(
        receipt["content"][&msg]["m.read.private"][&alice.user_id].is_null(),
        "{receipt}"
    );
    assert!(fake
        .field("ephemeral")
        .iter()
        .all(|e| e["content"][&msg]["m.read.private"][&alice.user_id].is_null()));
}

#[tokio::test]
async fn ephemeral_data_and_to_device_messages_reach_the_appservice() {
    let (server, fake, _dir) = setup(
        "receive_ephemeral: false\nde.sorunome.msc2409.push_ephemeral: true\norg.matrix.msc3202: true",
    )
    .await;
    let asc = as_client(&server, &fake);
    register_ghost(&asc, "as_ghost").await;
    let device = login_as_appservice(&asc, "as_ghost").await.ok()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = server.user("alice").await;
    let room = alice
        .create_room(json!({ "invite": ["@as_ghost:localhost"] }))
        .await;
    ghost_joins(&asc, &room).await;
    let msg = alice.send_text(&room, "read me").await;
    alice.typing(&room, true).await.ok();
    alice
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&msg)
            ),
            json!({}),
        )
        .await
        .ok();
    eventually(20, "typing and a receipt as ephemeral data", || async {
        let eph = fake.field("ephemeral");
        let typing = eph.iter().any(|e| {
            e["type"] == "m.typing"
                && e["room_id"] == room.as_str()
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.contains(&json!(alice.user_id)))
        });
        let receipt = eph.iter().any(|e| {
            e["type"] == "m.receipt"
                && e["room_id"] == room.as_str()
                && e["content"][&msg]["m.read"][&alice.user_id].is_object()
        });
        (typing && receipt).then_some(())
    })
    .await;
    assert_eq!(
        fake.field("ephemeral"),
        fake.field("de.sorunome.msc2409.ephemeral"),
        "both names carry the same data"
    );

    // A to-device message for the ghost's device arrives in a transaction, not in its sync.
    alice
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/td1",
            json!({ "messages": { "@as_ghost:localhost": { &device: { "hello": "ghost" } } } }),
        )
        .await
        .ok();
    let td = eventually(20, "the to-device message", || async {
        fake.field("de.sorunome.msc2409.to_device")
            .into_iter()
            .find(|m| m["content"]["hello"] == "ghost")
    })
    .await;
    assert_eq!(td["type"], "m.test");
    assert_eq!(td["sender"], alice.user_id.as_str());
    assert_eq!(td["to_user_id"], "@as_ghost:localhost");
    assert_eq!(td["to_device_id"], device.as_str());

    // MSC3202: one-time key counts of the ghost's device, and room-mates' device list changes.
    asc.post(
        &acting(
            "/_matrix/client/v3/keys/upload",
            "@as_ghost:localhost",
            Some(&device),
        ),
        json!({ "one_time_keys": {
            "curve25519:AAAA": "key-a", "curve25519:AAAB": "key-b" } }),
    )
    .await
    .ok();
    eventually(20, "the ghost's key count", || async {
        fake.field("org.matrix.msc3202.device_one_time_keys_count")
            .iter()
            .any(|c| c["@as_ghost:localhost"][&device]["curve25519"] == 2)
            .then_some(())
    })
    .await;
    alice
        .post(
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { "@as_ghost:localhost": { &device: "curve25519" } } }),
        )
        .await
        .ok();
    eventually(20, "the count after a claim", || async {
        fake.field("org.matrix.msc3202.device_one_time_keys_count")
            .iter()
            .any(|c| c["@as_ghost:localhost"][&device]["curve25519"] == 1)
            .then_some(())
    })
    .await;
    alice
        .put(
            &format!("/_matrix/client/v3/devices/{}", enc(&alice.device_id)),
            json!({ "display_name": "renamed" }),
        )
        .await
        .ok();
    eventually(20, "alice's device list change", || async {
        fake.field("org.matrix.msc3202.device_lists")
            .iter()
            .any(|d| {
                d["changed"]
                    .as_array()
                    .is_some_and(|c| c.contains(&json!(alice.user_id)))
            })
            .then_some(())
    })
    .await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await
        .ok();
    eventually(20, "alice in `left`", || async {
        fake.field("org.matrix.msc3202.device_lists")
            .iter()
            .any(|d| {
                d["left"]
                    .as_array()
                    .is_some_and(|c| c.contains(&json!(alice.user_id)))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn ping_queries_third_party_and_network_directories() {
    let (server, fake, _dir) = setup("protocols: [\"fake\"]").await;
    let asc = as_client(&server, &fake);
    let alice = server.user("alice").await;

    let pong = asc
        .post(
            "/_matrix/client/v1/appservice/bridge/ping",
            json!({ "transaction_id": "ping-1" }),
        )
        .await;
    assert!(pong.ok()["duration_ms"].is_u64(), "{}", pong.body);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.path() == "/_matrix/app/v1/ping" && r.body["transaction_id"] == "ping-1"));
    asc.post("/_matrix/client/v1/appservice/other/ping", json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post("/_matrix/client/v1/appservice/bridge/ping", json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    fake.answer(502);
    let bad = asc
        .post("/_matrix/client/v1/appservice/bridge/ping", json!({}))
        .await;
    bad.err(502, "M_BAD_STATUS");
    assert_eq!(bad.body["status"], 502);
    fake.answer(200);

    // Users and aliases the appservice makes on demand.
    fake.makes("as_summoned");
    let p = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc("@as_summoned:localhost")
        ))
        .await;
    p.ok();
    alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc("@as_unknown:localhost")
        ))
        .await
        .err(404, "M_NOT_FOUND");
    fake.makes("as_portal");
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc("#as_portal:localhost")
        ))
        .await;
    let portal = r.ok()["room_id"].as_str().unwrap().to_owned();
    alice
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc("#as_missing:localhost")
        ))
        .await
        .err(404, "M_NOT_FOUND");

    // Third-party protocols and a network's own directory.
    fake.set_protocol(json!({
        "user_fields": ["nick"], "location_fields": ["channel"], "icon": "mxc://x/y",
        "field_types": {}, "instances": [{ "desc": "Net one", "network_id": "net1", "fields": {} }],
    }));
    let protocols = alice.get("/_matrix/client/v3/thirdparty/protocols").await;
    assert_eq!(
        protocols.ok()["fake"]["instances"][0]["instance_id"],
        "bridge|net1",
        "{}",
        protocols.body
    );
    alice
        .get("/_matrix/client/v3/thirdparty/protocol/nope")
        .await
        .err(404, "M_NOT_FOUND");
    let users = alice
        .get("/_matrix/client/v3/thirdparty/user/fake?nick=alice")
        .await;
    assert_eq!(users.ok()[0]["userid"], "@x_alice:remote");
    assert_eq!(
        users.body[0]["fields"]["query"], "nick=alice",
        "the client's token stays here"
    );
    asc.put(
        &format!(
            "/_matrix/client/v3/directory/list/appservice/net1/{}",
            enc(&portal)
        ),
        json!({ "visibility": "public" }),
    )
    .await
    .ok();
    alice
        .put(
            &format!(
                "/_matrix/client/v3/directory/list/appservice/net1/{}",
                enc(&portal)
            ),
            json!({ "visibility": "public" }),
        )
        .await
        .err(403, "M_FORBIDDEN");
    let net = alice
        .post(
            "/_matrix/client/v3/publicRooms",
            json!({ "third_party_instance_id": "bridge|net1" }),
        )
        .await;
    assert_eq!(
        net.ok()["chunk"][0]["room_id"],
        portal.as_str(),
        "{}",
        net.body
    );
    let main = alice.get("/_matrix/client/v3/publicRooms").await;
    assert!(
        main.ok()["chunk"].as_array().unwrap().is_empty(),
        "{}",
        main.body
    );
    let all = alice
        .post(
            "/_matrix/client/v3/publicRooms",
            json!({ "include_all_networks": true }),
        )
        .await;
    assert_eq!(all.ok()["chunk"].as_array().unwrap().len(), 1);
}
