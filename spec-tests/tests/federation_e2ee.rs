//! E2EE across two federated `plexus` processes: keys queried and claimed through the other
//! server, to-device messages as EDUs, device list and cross-signing updates followed, a
//! missed update repaired by fetching the list again.

use plexus_spec_tests::{
    enc, eventually,
    keys::{CrossSigning, Device},
    next_batch, Client, Server,
};
use serde_json::{json, Value};

async fn query(c: &Client, user: &str) -> Value {
    c.post(
        "/_matrix/client/v3/keys/query",
        json!({ "device_keys": { user: [] } }),
    )
    .await
    .ok()
    .clone()
}

fn changed(sync: &Value) -> Vec<String> {
    sync["device_lists"]["changed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_to_device_and_device_lists_cross_servers() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join_via(&room, &a.server_name).await.ok();
    let bdev = Device::new(&bob.user_id, &bob.device_id);
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "device_keys": bdev.device_keys(), "one_time_keys": bdev.one_time_keys("B", 1) }),
    )
    .await
    .ok();

    // Alice gets Bob's device keys and one-time key from server B.
    let q = query(&alice, &bob.user_id).await;
    assert_eq!(q["failures"], json!({}), "{q}");
    assert_eq!(
        q["device_keys"][&bob.user_id][&bob.device_id]["keys"]
            [format!("ed25519:{}", bob.device_id)],
        bdev.signer.public
    );
    let c = alice
        .post(
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } }),
        )
        .await;
    assert!(
        c.ok()["one_time_keys"][&bob.user_id][&bob.device_id]["signed_curve25519:B0"].is_object(),
        "{}",
        c.body
    );
    let counts = bob.sync("").await["device_one_time_keys_count"].clone();
    assert_eq!(counts["signed_curve25519"], 0, "claimed on B");

    // A to-device message crosses as an EDU and arrives once.
    let t = next_batch(&bob.sync("").await);
    alice
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/x1",
            json!({ "messages": { &bob.user_id: { &bob.device_id: { "hello": "bob" } } } }),
        )
        .await
        .ok();
    let got = eventually(10, "to-device message over federation", || {
        let bob = bob.clone();
        let t = t.clone();
        async move {
            let s = bob.sync(&format!("since={t}")).await;
            let ev = s["to_device"]["events"].as_array()?.first()?.clone();
            Some((ev, s["next_batch"].as_str()?.to_owned()))
        }
    })
    .await;
    assert_eq!(got.0["content"]["hello"], "bob");
    assert_eq!(got.0["sender"], alice.user_id.as_str());
    let s = bob.sync(&format!("since={}", got.1)).await;
    assert_eq!(s["to_device"]["events"], json!([]));

    // Bob adds a device: Alice's server hears (m.device_list_update) and Alice sees both.
    let t = next_batch(&alice.sync("").await);
    let mut bob2 = b.client();
    bob2.login("bob", "password-1234").await.ok();
    let bdev2 = Device::new(&bob.user_id, &bob2.device_id);
    bob2.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "device_keys": bdev2.device_keys() }),
    )
    .await
    .ok();
    eventually(
        10,
        "bob's new device in alice's device_lists.changed",
        || {
            let alice = alice.clone();
            let t = t.clone();
            let bob_id = bob.user_id.clone();
            async move {
                let s = alice.sync(&format!("since={t}")).await;
                changed(&s).contains(&bob_id).then_some(())
            }
        },
    )
    .await;
    let q = query(&alice, &bob.user_id).await;
    let devices = q["device_keys"][&bob.user_id].as_object().unwrap();
    assert!(
        devices.contains_key(&bob.device_id) && devices.contains_key(&bob2.device_id),
        "{q}"
    );

    // Cross-signing keys follow (m.signing_key_update).
    let cs = CrossSigning::new(&bob.user_id);
    bob.post(
        "/_matrix/client/v3/keys/device_signing/upload",
        cs.upload_body(),
    )
    .await
    .ok();
    eventually(10, "bob's master key seen from A", || {
        let alice = alice.clone();
        let bob_id = bob.user_id.clone();
        let want = cs.master_key();
        async move { (query(&alice, &bob_id).await["master_keys"][&bob_id] == want).then_some(()) }
    })
    .await;

    // Bob leaves: Alice's device list tracking of him ends.
    let t = next_batch(&alice.sync("").await);
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    eventually(10, "bob in alice's device_lists.left", || {
        let alice = alice.clone();
        let t = t.clone();
        let bob_id = bob.user_id.clone();
        async move {
            let s = alice.sync(&format!("since={t}")).await;
            (s["device_lists"]["left"] == json!([bob_id])).then_some(())
        }
    })
    .await;
}

/// One EDU in a transaction from `peer` to `to`.
async fn send_edu(peer: &plexus_spec_tests::peer::Peer, to: &str, e: Value) {
    let body = json!({ "origin": peer.name, "origin_server_ts": 1, "pdus": [], "edus": [e] });
    let (status, r) = peer.send(to, Some((&peer.key, to)), &body).await;
    assert_eq!(status, 200, "{r}");
}

/// Speaking as B (with B's own key), device list EDUs are applied when they follow on from
/// what A holds; after a gap in `prev_id`, A drops its copy and fetches B's real list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_device_list_update_makes_the_server_fetch_the_list_again() {
    use plexus_spec_tests::peer::{key_file, peer_for};
    let (_adir, a_key_path, a_key) = key_file();
    let (_bdir, b_key_path, b_key) = key_file();
    let a_env = [("PLEXUS_SIGNING_KEY_PATH", a_key_path.as_str())];
    let b_env = [("PLEXUS_SIGNING_KEY_PATH", b_key_path.as_str())];
    let (a, b) = tokio::join!(
        Server::federated_with(&a_env),
        Server::federated_with(&b_env)
    );
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.join_via(&room, &a.server_name).await.ok();
    let bdev = Device::new(&bob.user_id, &bob.device_id);
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "device_keys": bdev.device_keys() }),
    )
    .await
    .ok();
    eventually(10, "alice sees bob's device", || {
        let alice = alice.clone();
        let (user, device) = (bob.user_id.clone(), bob.device_id.clone());
        async move {
            query(&alice, &user).await["device_keys"][&user]
                .get(&device)
                .map(|_| ())
        }
    })
    .await;
    // B's stream position for Bob, asked as A.
    let as_a = peer_for(&a, a_key);
    let (status, list) = as_a
        .get(
            &b.server_name,
            &format!("/_matrix/federation/v1/user/devices/{}", enc(&bob.user_id)),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let stream = list["stream_id"].as_u64().expect("stream_id");

    let as_b = peer_for(&b, b_key);
    let edu = |device: &str, stream_id: u64, prev: u64| {
        let d = Device::new(&bob.user_id, device);
        json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": bob.user_id, "device_id": device, "stream_id": stream_id,
            "prev_id": [prev], "deleted": false, "keys": d.device_keys(),
        } })
    };
    let devices = |q: Value| -> Vec<String> {
        let mut v: Vec<String> = q["device_keys"][&bob.user_id]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    };

    // Following on from A's copy: applied as it stands.
    send_edu(&as_b, &a.server_name, edu("GHOST", stream + 10, stream)).await;
    let mut want = vec![bob.device_id.clone(), "GHOST".to_owned()];
    want.sort();
    assert_eq!(devices(query(&alice, &bob.user_id).await), want);

    // A gap: A fetches Bob's real list from B, which has no such devices.
    send_edu(
        &as_b,
        &a.server_name,
        edu("GHOST2", stream + 30, stream + 20),
    )
    .await;
    eventually(10, "A re-syncs bob's list from B", || {
        let alice = alice.clone();
        let user = bob.user_id.clone();
        let real = vec![bob.device_id.clone()];
        async move { (devices(query(&alice, &user).await) == real).then_some(()) }
    })
    .await;
}
