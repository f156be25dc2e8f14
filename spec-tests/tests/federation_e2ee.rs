//! E2EE across two federated `plexus` processes: keys queried and claimed through the other
//! server, to-device messages as EDUs, device list and cross-signing updates followed, a
//! missed update repaired by fetching the list again.

use plexus_spec_tests::{
    enc, eventually,
    keys::{CrossSigning, Device},
    Client, Server,
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
    let t = bob.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let t = alice.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let t = alice.sync("").await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
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
