//! Encrypted messaging end to end with `plexus-cli`'s client library (Olm and Megolm through
//! vodozemac): on one server, with a second device, and across two federated servers. What the
//! server stores is ciphertext; what the users read is the text.

use plexus_cli::{Client, Message};
use plexus_spec_tests::{enc, eventually, Server};
use serde_json::{json, Value};

async fn register(server: &Server, name: &str) -> Client {
    Client::register(&server.base, name, "password-1234", None)
        .await
        .expect("register")
}

/// Sync until a message with `body` shows up in `room`.
async fn receive(c: &mut Client, room: &str, body: &str) -> Message {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        for m in c.sync_once(1_000).await.expect("sync") {
            if m.room == room && m.body.as_deref() == Some(body) {
                return m;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never read {body:?} (warnings: {:?})",
            c.user_id,
            c.warnings
        );
    }
}

/// Alice and Bob on one server, in an encrypted room Alice made, Bob synced.
async fn encrypted_pair(server: &Server) -> (Client, Client, String) {
    let mut alice = register(server, "alice").await;
    let mut bob = register(server, "bob").await;
    let room = alice
        .create_room(true, std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    bob.join(&room).await.unwrap();
    bob.sync_once(0).await.unwrap();
    (alice, bob, room)
}

/// The event as the server holds it (through the client-server API).
async fn raw_event(c: &Client, room: &str, event_id: &str) -> Value {
    c.api
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(event_id)
        ))
        .await
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_and_a_second_device_read_encrypted_messages() {
    let server = Server::start().await;
    let (mut alice, mut bob, room) = encrypted_pair(&server).await;

    let id = alice.send_text(&room, "the secret plan").await.unwrap();
    let ev = raw_event(&bob, &room, &id).await;
    assert_eq!(ev["type"], "m.room.encrypted");
    assert!(
        !ev.to_string().contains("secret plan"),
        "the server sees only ciphertext: {ev}"
    );
    let m = receive(&mut bob, &room, "the secret plan").await;
    assert!(m.encrypted && m.sender == alice.user_id);

    bob.send_text(&room, "agreed").await.unwrap();
    receive(&mut alice, &room, "agreed").await;

    // Bob's second device gets keys for what is sent after it appears, not before.
    let mut bob2 = Client::login(&server.base, "bob", "password-1234", None)
        .await
        .unwrap();
    bob2.sync_once(0).await.unwrap();
    alice.sync_once(0).await.unwrap();
    alice
        .send_text(&room, "for both of bob's devices")
        .await
        .unwrap();
    receive(&mut bob2, &room, "for both of bob's devices").await;
    receive(&mut bob, &room, "for both of bob's devices").await;
    let old = bob2.messages(&room, 20).await.unwrap();
    let first = old
        .iter()
        .find(|m| m.encrypted && m.sender == alice.user_id)
        .expect("the first message is there");
    assert!(
        first.body.is_none() && first.error.is_some(),
        "a device that did not exist then cannot read it: {first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_messages_cross_servers() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let mut alice = register(&a, "alice").await;
    let mut bob = register(&b, "bob").await;
    let room = alice
        .create_room(true, std::slice::from_ref(&bob.user_id))
        .await
        .unwrap();
    // The invite travels to B; then Bob joins through A.
    eventually(10, "bob's invite", || {
        let bob = bob.api.clone();
        let room = room.clone();
        async move {
            let s = bob.get("/_matrix/client/v3/sync").await.ok()?;
            s["rooms"]["invite"].get(&room).map(|_| ())
        }
    })
    .await;
    bob.join(&room).await.unwrap();
    bob.sync_once(0).await.unwrap();
    alice.sync_once(0).await.unwrap();

    alice.send_text(&room, "across servers").await.unwrap();
    receive(&mut bob, &room, "across servers").await;
    bob.send_text(&room, "and back").await.unwrap();
    receive(&mut alice, &room, "and back").await;
}

/// A room key travels as a to-device message and may reach a client after the event it
/// unlocks (over federation the two take separate paths). The event is read once the key
/// comes, though no later sync carries the event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_came_before_its_key_is_read_when_the_key_comes() {
    let server = Server::start().await;
    let (mut alice, mut bob, room) = encrypted_pair(&server).await;

    // Alice encrypts and sends first, and shares the key only afterwards.
    let (_, key, _) = alice
        .machine
        .room_key_needs(&room, &std::collections::BTreeSet::new());
    let content = alice
        .machine
        .megolm_encrypt(
            &room,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "before its key" }),
        )
        .unwrap();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/early",
        enc(&room)
    );
    alice.api.put(&path, content).await.unwrap();
    let seen = bob.sync_once(0).await.unwrap();
    let early = seen
        .iter()
        .find(|m| m.room == room && m.encrypted)
        .expect("bob's sync carries the event");
    assert!(early.body.is_none() && early.error.is_some(), "{early:?}");

    let answer = alice
        .api
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { &bob.user_id: [] } }),
        )
        .await
        .unwrap();
    alice
        .machine
        .receive_keys(&answer, std::slice::from_ref(&bob.user_id));
    let info = alice.machine.devices[&bob.user_id][&bob.device_id].clone();
    let claimed = alice
        .api
        .post(
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { &bob.user_id: { &bob.device_id: "signed_curve25519" } } }),
        )
        .await
        .unwrap();
    alice
        .machine
        .create_session(
            &bob.user_id,
            &bob.device_id,
            &info,
            &claimed["one_time_keys"][&bob.user_id][&bob.device_id],
        )
        .unwrap();
    let sealed = alice
        .machine
        .olm_encrypt(&bob.user_id, &info, "m.room_key", key)
        .unwrap();
    alice
        .api
        .put(
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/late-key",
            json!({ "messages": { &bob.user_id: { &bob.device_id: sealed } } }),
        )
        .await
        .unwrap();
    let m = receive(&mut bob, &room, "before its key").await;
    assert_eq!(m.event_id, early.event_id);
}
