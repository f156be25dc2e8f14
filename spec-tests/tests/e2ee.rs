//! E2EE plumbing on one server: device, one-time and fallback keys, to-device messages, device
//! list changes in sync, cross-signing and key backup, with the errors bad input gets.

use plexus_spec_tests::{
    enc,
    keys::{CrossSigning, Device},
    next_batch, rand_suffix, Client, Server,
};
use serde_json::{json, Value};

async fn upload(c: &Client, body: Value) -> plexus_spec_tests::Resp {
    c.post("/_matrix/client/v3/keys/upload", body).await
}

async fn query(c: &Client, user: &str) -> Value {
    c.post(
        "/_matrix/client/v3/keys/query",
        json!({ "device_keys": { user: [] } }),
    )
    .await
    .ok()
    .clone()
}

async fn claim(c: &Client, user: &str, device: &str) -> Value {
    c.post(
        "/_matrix/client/v3/keys/claim",
        json!({ "one_time_keys": { user: { device: "signed_curve25519" } } }),
    )
    .await
    .ok()["one_time_keys"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_uploaded_queried_and_claimed_once() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dev = Device::new(&alice.user_id, &alice.device_id);

    let r = upload(
        &alice,
        json!({
            "device_keys": dev.device_keys(),
            "one_time_keys": dev.one_time_keys("A", 2),
            "fallback_keys": { "signed_curve25519:F1": dev.signed_key(true) },
        }),
    )
    .await;
    assert_eq!(r.ok()["one_time_key_counts"]["signed_curve25519"], 2);
    let sync = alice.sync("").await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Bob sees Alice's device with its keys, signature and name.
    alice
        .put(
            &format!("/_matrix/client/v3/devices/{}", alice.device_id),
            json!({ "display_name": "Alice's laptop" }),
        )
        .await
        .ok();
    let q = query(&bob, &alice.user_id).await;
    let keys = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(
        keys["keys"][format!("ed25519:{}", alice.device_id)],
        dev.signer.public
    );
    assert!(keys["signatures"][&alice.user_id].is_object(), "{q}");
    assert_eq!(keys["unsigned"]["device_display_name"], "Alice's laptop");

    // Two one-time keys, each given out once, then the fallback key (again and again).
    let mut got = vec![];
    for _ in 0..2 {
        let c = claim(&bob, &alice.user_id, &alice.device_id).await;
        let m = c[&alice.user_id][&alice.device_id]
            .as_object()
            .expect("a key")
            .clone();
        got.push(m.keys().next().unwrap().clone());
    }
    got.sort();
    assert_eq!(
        got,
        ["signed_curve25519:A0", "signed_curve25519:A1"],
        "each one-time key once"
    );
    for _ in 0..2 {
        let c = claim(&bob, &alice.user_id, &alice.device_id).await;
        assert!(
            c[&alice.user_id][&alice.device_id]["signed_curve25519:F1"]["fallback"] == true,
            "fallback once one-time keys run out: {c}"
        );
    }
    let sync = alice.sync("").await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));

    // Claims for devices and users that do not exist give nothing, not an error.
    let c = claim(&bob, &alice.user_id, "NOSUCHDEVICE").await;
    assert_eq!(c, json!({}));
    let c = claim(&bob, &format!("@nobody:{}", server.server_name), "X").await;
    assert_eq!(c, json!({}));
}

/// One-time keys are handed out in the order they were uploaded (spec v1.13), whatever their
/// ids: a client that uploads new keys while old ones wait gets its old ones used first (the
/// ones it may forget first), and the order survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_keys_are_claimed_in_upload_order() {
    let mut server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dev = Device::new(&alice.user_id, &alice.device_id);
    upload(&alice, json!({ "device_keys": dev.device_keys() }))
        .await
        .ok();
    // Ids that sort the other way round from their uploads.
    for prefix in ["Z", "M", "A"] {
        upload(
            &alice,
            json!({ "one_time_keys": dev.one_time_keys(prefix, 2) }),
        )
        .await
        .ok();
    }
    let mut order = vec![];
    for i in 0..6 {
        if i == 3 {
            assert!(server.terminate(10).is_some_and(|s| s.success()));
            server.restart().await;
        }
        let c = claim(&bob, &alice.user_id, &alice.device_id).await;
        let ids: Vec<String> = c[&alice.user_id][&alice.device_id]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(ids.len(), 1, "{c}");
        order.push(
            ids[0]
                .trim_start_matches("signed_curve25519:")
                .chars()
                .next()
                .unwrap(),
        );
    }
    assert_eq!(order, vec!['Z', 'Z', 'M', 'M', 'A', 'A']);
    assert_eq!(
        claim(&bob, &alice.user_id, &alice.device_id).await,
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_and_change_nothing() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let dev = Device::new(&alice.user_id, &alice.device_id);
    upload(
        &alice,
        json!({ "device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys("A", 1) }),
    )
    .await
    .ok();

    // Keys for someone else's device.
    let other = Device::new("@mallory:example.org", &alice.device_id);
    upload(&alice, json!({ "device_keys": other.device_keys() }))
        .await
        .err(400, "M_INVALID_PARAM");
    // A signature that does not verify, with good one-time keys beside it: nothing is stored.
    let mut forged = dev.device_keys();
    forged["keys"][format!("curve25519:{}", alice.device_id)] = json!("AAAA");
    upload(
        &alice,
        json!({ "device_keys": forged, "one_time_keys": dev.one_time_keys("B", 3) }),
    )
    .await
    .err(400, "M_INVALID_SIGNATURE");
    // A one-time key signed by another key.
    let stranger = Device::new(&alice.user_id, "OTHER");
    upload(
        &alice,
        json!({ "one_time_keys": { "signed_curve25519:C0": stranger.signed_key(false) } }),
    )
    .await
    .err(400, "M_INVALID_SIGNATURE");
    // The same key id again with a different key.
    upload(
        &alice,
        json!({ "one_time_keys": { "signed_curve25519:A0": dev.signed_key(false) } }),
    )
    .await
    .err(400, "M_INVALID_PARAM");
    // Malformed shapes.
    upload(&alice, json!({ "one_time_keys": { "nocolon": "abc" } }))
        .await
        .err(400, "M_INVALID_PARAM");
    upload(&alice, json!({ "one_time_keys": [1, 2] }))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { "not a user": [] } }),
        )
        .await
        .err(400, "M_INVALID_PARAM");

    let r = upload(&alice, json!({})).await;
    assert_eq!(
        r.ok()["one_time_key_counts"]["signed_curve25519"],
        1,
        "only the first upload's key is there"
    );
    let q = query(&alice, &alice.user_id).await;
    assert_eq!(
        q["device_keys"][&alice.user_id][&alice.device_id]["keys"]
            [format!("curve25519:{}", alice.device_id)],
        dev.curve25519,
        "the device keys are the ones first uploaded"
    );
}

async fn send_to_device(from: &Client, txn: &str, messages: Value) {
    from.put(
        &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
        json!({ "messages": messages }),
    )
    .await
    .ok();
}

fn to_device_bodies(sync: &Value) -> Vec<String> {
    sync["to_device"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["content"]["n"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_device_messages_arrive_once_and_survive_a_crash() {
    let mut server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let first = alice.sync("").await;

    send_to_device(
        &bob,
        "t1",
        json!({ &alice.user_id: { &alice.device_id: { "n": "one" } } }),
    )
    .await;
    // The same transaction again is not a second message.
    send_to_device(
        &bob,
        "t1",
        json!({ &alice.user_id: { &alice.device_id: { "n": "one" } } }),
    )
    .await;
    send_to_device(
        &bob,
        "t2",
        json!({ &alice.user_id: { &alice.device_id: { "n": "two" } } }),
    )
    .await;

    // Acknowledged messages are kept until the device syncs past them, even across a crash.
    server.crash_and_restart().await;
    let s1 = alice.sync(&format!("since={}", next_batch(&first))).await;
    assert_eq!(to_device_bodies(&s1), ["one", "two"]);
    let ev = &s1["to_device"]["events"][0];
    assert_eq!(ev["sender"], bob.user_id.as_str());
    assert_eq!(ev["type"], "m.test");
    // The same since again (a retried request): the same messages.
    let again = alice.sync(&format!("since={}", next_batch(&first))).await;
    assert_eq!(to_device_bodies(&again), ["one", "two"]);
    // Past them: gone.
    let s2 = alice
        .sync(&format!("since={}&timeout=0", next_batch(&s1)))
        .await;
    assert!(to_device_bodies(&s2).is_empty(), "{s2}");

    // `*` reaches every device of the user, and a long-polling sync wakes for it.
    let mut second = server.client();
    second.login("alice", "password-1234").await.ok();
    let base = second.sync("").await;
    let waiting = {
        let second = second.clone();
        let since = next_batch(&base);
        tokio::spawn(async move { second.sync(&format!("since={since}&timeout=10000")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    send_to_device(
        &bob,
        "t3",
        json!({ &alice.user_id: { "*": { "n": "all" } } }),
    )
    .await;
    let woke = waiting.await.unwrap();
    assert_eq!(to_device_bodies(&woke), ["all"]);
    let s3 = alice.sync(&format!("since={}", next_batch(&s2))).await;
    assert_eq!(to_device_bodies(&s3), ["all"]);

    // Messages to devices that do not exist vanish; a bad user id is refused.
    send_to_device(
        &bob,
        "t4",
        json!({ &alice.user_id: { "NOSUCH": { "n": "x" } } }),
    )
    .await;
    bob.put(
        "/_matrix/client/v3/sendToDevice/m.test/t5",
        json!({ "messages": { "not-a-user": { "D": {} } } }),
    )
    .await
    .err(400, "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_to_device_messages_than_one_sync_carries() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    for i in 0..130 {
        send_to_device(
            &bob,
            &format!("m{i}"),
            json!({ &alice.user_id: { &alice.device_id: { "n": i.to_string() } } }),
        )
        .await;
    }
    let mut seen = vec![];
    let mut since = String::new();
    for _ in 0..4 {
        let q = if since.is_empty() {
            String::new()
        } else {
            format!("since={since}")
        };
        let s = alice.sync(&q).await;
        let got = to_device_bodies(&s);
        assert!(got.len() <= 100, "one sync carries at most 100");
        seen.extend(got);
        since = next_batch(&s);
    }
    let want: Vec<String> = (0..130).map(|i| i.to_string()).collect();
    assert_eq!(seen, want, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lists_report_changed_and_left() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let t0 = next_batch(&alice.sync("").await);

    bob.join(&room).await.ok();
    let s = alice.sync(&format!("since={t0}")).await;
    assert!(
        s["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .contains(&json!(bob.user_id)),
        "a new room-mate's devices are news: {s}"
    );
    let t1 = next_batch(&s);

    // Bob's keys change; Carol, who shares no room, is not Alice's business.
    let dev = Device::new(&bob.user_id, &bob.device_id);
    upload(&bob, json!({ "device_keys": dev.device_keys() }))
        .await
        .ok();
    let cdev = Device::new(&carol.user_id, &carol.device_id);
    upload(&carol, json!({ "device_keys": cdev.device_keys() }))
        .await
        .ok();
    let s = alice.sync(&format!("since={t1}&timeout=5000")).await;
    assert_eq!(s["device_lists"]["changed"], json!([bob.user_id]));
    let t2 = next_batch(&s);
    let changes = alice
        .get(&format!(
            "/_matrix/client/v3/keys/changes?from={t1}&to={t2}"
        ))
        .await;
    assert_eq!(changes.ok()["changed"], json!([bob.user_id]));

    // Bob deletes his device: a change too (by logging out).
    let mut bob2 = server.client();
    bob2.login("bob", "password-1234").await.ok();
    bob2.post("/_matrix/client/v3/logout", json!({})).await.ok();
    let s = alice.sync(&format!("since={t2}&timeout=5000")).await;
    assert_eq!(s["device_lists"]["changed"], json!([bob.user_id]));
    let t3 = next_batch(&s);

    // Bob leaves the only room they share: left.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    let s = alice.sync(&format!("since={t3}&timeout=5000")).await;
    assert_eq!(s["device_lists"]["left"], json!([bob.user_id]), "{s}");
    assert_eq!(s["device_lists"]["changed"], json!([]));

    // Alice's own second device is news to her first.
    let t4 = next_batch(&s);
    let mut alice2 = server.client();
    alice2.login("alice", "password-1234").await.ok();
    let adev = Device::new(&alice.user_id, &alice2.device_id);
    upload(&alice2, json!({ "device_keys": adev.device_keys() }))
        .await
        .ok();
    let s = alice.sync(&format!("since={t4}&timeout=5000")).await;
    assert_eq!(s["device_lists"]["changed"], json!([alice.user_id]));
    let q = query(&alice, &alice.user_id).await;
    assert!(q["device_keys"][&alice.user_id][&alice2.device_id].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_keys_and_signatures() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dev = Device::new(&alice.user_id, &alice.device_id);
    upload(&alice, json!({ "device_keys": dev.device_keys() }))
        .await
        .ok();
    let cs = CrossSigning::new(&alice.user_id);
    const UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";

    // A self-signing key the master did not sign is refused.
    let mut bad = cs.upload_body();
    bad["self_signing_key"] = CrossSigning::new(&alice.user_id).self_signing_key();
    alice
        .post(UPLOAD, bad)
        .await
        .err(400, "M_INVALID_SIGNATURE");
    // Without a master key there is nothing to sign with.
    alice
        .post(UPLOAD, json!({ "self_signing_key": cs.self_signing_key() }))
        .await
        .err(400, "M_MISSING_PARAM");

    // The first upload needs no password; the same again neither; new keys do.
    alice.post(UPLOAD, cs.upload_body()).await.ok();
    alice.post(UPLOAD, cs.upload_body()).await.ok();
    let other = CrossSigning::new(&alice.user_id);
    let r = alice.post(UPLOAD, other.upload_body()).await;
    assert_eq!(r.status, 401, "replacing keys needs auth: {}", r.body);
    assert!(r.body["flows"].is_array());

    // Alice signs her device with her self-signing key.
    const SIGS: &str = "/_matrix/client/v3/keys/signatures/upload";
    let signed = cs.self_signing.sign(&alice.user_id, dev.device_keys());
    let r = alice
        .post(
            SIGS,
            json!({ &alice.user_id: { &alice.device_id: signed } }),
        )
        .await;
    assert_eq!(r.ok()["failures"], json!({}));
    // A signature by some other key fails, and says so per key.
    let forged = CrossSigning::new(&alice.user_id)
        .self_signing
        .sign(&alice.user_id, dev.device_keys());
    let r = alice
        .post(
            SIGS,
            json!({ &alice.user_id: { &alice.device_id: forged } }),
        )
        .await;
    assert_eq!(
        r.ok()["failures"][&alice.user_id][&alice.device_id]["errcode"],
        "M_INVALID_SIGNATURE"
    );

    // Bob sees the master and self-signing keys and the signature on the device, not the
    // user-signing key.
    let q = query(&bob, &alice.user_id).await;
    assert_eq!(q["master_keys"][&alice.user_id], cs.master_key());
    assert_eq!(
        q["self_signing_keys"][&alice.user_id],
        cs.self_signing_key()
    );
    assert!(q["user_signing_keys"].get(&alice.user_id).is_none());
    assert!(
        q["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
            [cs.self_signing.key_id()]
        .is_string(),
        "{q}"
    );
    let q = query(&alice, &alice.user_id).await;
    assert_eq!(
        q["user_signing_keys"][&alice.user_id],
        cs.user_signing_key()
    );

    // Bob cross-signs Alice's master key; only Bob sees his signature.
    let bcs = CrossSigning::new(&bob.user_id);
    bob.post(UPLOAD, bcs.upload_body()).await.ok();
    let signed = bcs.user_signing.sign(&bob.user_id, cs.master_key());
    let r = bob
        .post(
            SIGS,
            json!({ &alice.user_id: { &cs.master.public: signed } }),
        )
        .await;
    assert_eq!(r.ok()["failures"], json!({}));
    let q = query(&bob, &alice.user_id).await;
    assert!(q["master_keys"][&alice.user_id]["signatures"][&bob.user_id]
        [bcs.user_signing.key_id()]
    .is_string());
    let q = query(&alice, &alice.user_id).await;
    assert!(q["master_keys"][&alice.user_id]["signatures"]
        .get(&bob.user_id)
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_backup_versions_and_sessions() {
    let server = Server::start().await;
    let alice = server.user("alice").await;
    const V: &str = "/_matrix/client/v3/room_keys/version";
    alice.get(V).await.err(404, "M_NOT_FOUND");
    let auth = json!({ "public_key": "abcdefg", "signatures": {} });
    alice
        .post(V, json!({ "algorithm": "m.unknown", "auth_data": auth }))
        .await
        .err(400, "M_INVALID_PARAM");
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let new_version = || async {
        alice
            .post(V, json!({ "algorithm": algorithm, "auth_data": auth }))
            .await
            .ok()["version"]
            .as_str()
            .expect("version")
            .to_owned()
    };
    let v1 = new_version().await;
    let info = alice.get(V).await.ok().clone();
    assert_eq!(info["version"], v1.as_str());
    assert_eq!(info["count"], 0);
    let etag0 = info["etag"].clone();

    let room = format!("!r{}:{}", rand_suffix(), server.server_name);
    let key = |verified: bool, index: u64| {
        json!({
            "first_message_index": index, "forwarded_count": 0, "is_verified": verified,
            "session_data": { "ephemeral": "e", "ciphertext": format!("c{index}"), "mac": "m" },
        })
    };
    let path = format!(
        "/_matrix/client/v3/room_keys/keys/{}/sess1?version={v1}",
        enc(&room)
    );
    let r = alice.put(&path, key(false, 5)).await;
    assert_eq!(r.ok()["count"], 1);
    assert_ne!(r.ok()["etag"], etag0);
    // A worse copy (higher index) does not replace it; a verified one does.
    alice.put(&path, key(false, 9)).await.ok();
    assert_eq!(alice.get(&path).await.ok()["first_message_index"], 5);
    alice.put(&path, key(true, 7)).await.ok();
    assert_eq!(alice.get(&path).await.ok()["first_message_index"], 7);
    let all = alice
        .get(&format!("/_matrix/client/v3/room_keys/keys?version={v1}"))
        .await;
    assert_eq!(
        all.ok()["rooms"][&room]["sessions"]["sess1"]["is_verified"],
        true
    );

    // Malformed key data, a missing version, a version that is not current.
    alice
        .put(&path, json!({ "session_data": {} }))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .put(
            &format!("/_matrix/client/v3/room_keys/keys/{}/sess1", enc(&room)),
            key(false, 1),
        )
        .await
        .err(400, "M_MISSING_PARAM");
    let v2 = new_version().await;
    assert_ne!(v1, v2);
    let r = alice.put(&path, key(false, 1)).await;
    r.err(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(r.body["current_version"], v2.as_str());

    // Deleting a version removes it and its keys; its number is not reused.
    alice.delete(&format!("{V}/{v2}"), json!({})).await.ok();
    alice
        .get(&format!("{V}/{v2}"))
        .await
        .err(404, "M_NOT_FOUND");
    assert_eq!(alice.get(V).await.ok()["version"], v1.as_str());
    let v3 = new_version().await;
    assert!(v3 != v2 && v3 != v1);
    let r = alice
        .delete(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["count"], 0);
    alice.get(&path).await.err(404, "M_NOT_FOUND");
}
