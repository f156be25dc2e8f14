//! A full disk: writes are refused with a clear error while it is full and work again as soon
//! as space is back, reads go on, `/health` tells, and SIGTERM still stops the server.
//! The disk is "filled" by a file that takes the free space below the server's reserve.

use std::{io::Write, time::Duration};

use plexus_spec_tests::{
    enc, eventually, next_batch,
    peer::{context, key_file, message_at, now_ms, peer_for},
    Server,
};
use serde_json::json;

/// Both tests fill the one disk: they take turns.
static DISK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Take the disk's free space below `reserve` with a file under `dir`; gone when dropped.
struct Filler(std::path::PathBuf);

impl Filler {
    fn new(dir: &std::path::Path) -> Filler {
        let path = dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 8 * 1024 * 1024];
        for _ in 0..75 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reserve 300 MiB under what is free now, so a 600 MiB file fills the disk.
fn reserve_below_free() -> String {
    let probe = tempfile::tempdir().unwrap();
    (available(probe.path()) - 300 * 1024 * 1024).to_string()
}

/// Bytes free on the filesystem holding `dir`.
fn available(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_without_a_restart() {
    let _turn = DISK.lock().await;
    let reserve = reserve_below_free();
    let mut s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_MIN_FREE_DISK_BYTES", reserve.as_str()),
    ])
    .await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "before").await;
    let since = next_batch(&alice.sync("timeout=0").await);
    let health = |s: &Server| {
        let url = format!("{}/health", s.base);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(health(&s).await, 200);

    // Fill the disk past the reserve.
    let filler = Filler::new(s.data.path());
    let send = |text: &str| {
        let (alice, room, text) = (alice.clone(), room.clone(), text.to_owned());
        async move {
            alice
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                        enc(&room),
                        plexus_spec_tests::rand_suffix()
                    ),
                    json!({"msgtype": "m.text", "body": text}),
                )
                .await
        }
    };
    let r = eventually(5, "writes to be refused", || {
        let send = send("while full");
        async move {
            let r = send.await;
            (r.status != 200).then_some(r)
        }
    })
    .await;
    r.err(503, "M_UNKNOWN");
    assert!(
        r.body["error"].as_str().unwrap().contains("disk is full"),
        "{}",
        r.body
    );
    assert_eq!(health(&s).await, 503);
    // Reads go on, and nothing refused was half-written.
    let sync = alice.sync(&format!("since={since}&timeout=0")).await;
    assert!(!sync.to_string().contains("while full"), "{sync}");
    assert_eq!(alice.recent_bodies(&room).await, vec!["before".to_owned()]);
    let r = s
        .client()
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "bob", "password": "password-1234",
                                                      "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    r.err(503, "M_UNKNOWN");

    // Space comes back: writes work again, with no restart.
    drop(filler);
    eventually(5, "writes to work again", || {
        let send = send("after");
        async move { (send.await.status == 200).then_some(()) }
    })
    .await;
    assert_eq!(health(&s).await, 200);
    assert_eq!(
        alice.recent_bodies(&room).await,
        vec!["before".to_owned(), "after".to_owned()]
    );

    // SIGTERM stops the server promptly even with a long-poll open, which gets its answer.
    let since = next_batch(&alice.sync("timeout=0").await);
    let poll = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .get(&format!(
                    "/_matrix/client/v3/sync?since={since}&timeout=60000"
                ))
                .await
                .status
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = s.terminate(12);
        (status, s)
    })
    .await
    .unwrap();
    assert!(
        status.0.is_some_and(|st| st.success()),
        "plexus did not stop on SIGTERM: {:?}",
        status.0
    );
    assert_eq!(poll.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_told_to_come_back_while_the_disk_is_full() {
    let _turn = DISK.lock().await;
    let reserve = reserve_below_free();
    let (_dir, key_path, key) = key_file();
    let a_env = [("PLEXUS_MIN_FREE_DISK_BYTES", reserve.as_str())];
    let b_env = [("PLEXUS_SIGNING_KEY_PATH", key_path.as_str())];
    let (a, b) = tokio::join!(
        Server::federated_with(&a_env),
        Server::federated_with(&b_env)
    );
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let peer = peer_for(&b, key);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let r = bob.join_via(&room, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (prev, auth) = context(&alice, &room, &bob.user_id).await;
    let (_, pdu) = message_at(
        &room,
        &bob.user_id,
        &b.server_name,
        &peer.key,
        &prev,
        &auth,
        "sent while the disk was full",
        now_ms(),
    );
    let body = json!({"origin": b.server_name, "origin_server_ts": 1, "pdus": [pdu], "edus": []});
    let path = "/_matrix/federation/v1/send/full1";
    let filler = Filler::new(a.data.path());
    // Answered 200, the transaction would never come again: it must be refused whole.
    let (status, res) = eventually(5, "the transaction to be refused", || {
        let peer = &peer;
        let body = body.clone();
        let to = a.server_name.clone();
        async move {
            let (status, res) = peer.put(&to, Some((&peer.key, &to)), path, &body).await;
            (status != 200).then_some((status, res))
        }
    })
    .await;
    assert_eq!(status, 503, "{res}");
    drop(filler);
    // Sent again once there is room: stored, and Alice reads it.
    eventually(5, "the transaction to be taken", || {
        let peer = &peer;
        let body = body.clone();
        let to = a.server_name.clone();
        async move {
            let (status, _) = peer.put(&to, Some((&peer.key, &to)), path, &body).await;
            (status == 200).then_some(())
        }
    })
    .await;
    eventually(5, "alice to read bob's message", || {
        let (alice, room) = (alice.clone(), room.clone());
        async move {
            alice
                .recent_bodies(&room)
                .await
                .contains(&"sent while the disk was full".to_owned())
                .then_some(())
        }
    })
    .await;
}
