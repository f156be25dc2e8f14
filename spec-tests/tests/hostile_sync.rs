//! Long-poll floods and heavy syncs: thousands of `/sync`s on one token hold only a few open
//! (and their memory comes back), and building big syncs does not hold up other requests.

use std::time::{Duration, Instant};

use plexus_spec_tests::{enc, next_batch, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_long_polls_on_one_token_holds_only_a_few() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let since = next_batch(&alice.sync("timeout=0").await);
    let (rss0, _) = s.memory_kib();
    let started = Instant::now();
    let path = format!("/_matrix/client/v3/sync?since={since}&timeout=30000");
    let polls: Vec<_> = (0..1500)
        .map(|_| {
            let (c, path) = (alice.clone(), path.clone());
            tokio::spawn(async move {
                let r = c.get(&path).await;
                (r.status, Instant::now())
            })
        })
        .collect();
    // All but the last few are answered long before their 30 s are up, with nothing new.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let answered = polls.iter().filter(|p| p.is_finished()).count();
    assert!(
        answered >= 1500 - 3,
        "{answered} of 1500 long-polls were answered within 8 s"
    );
    // The ones still waiting wake for a message, as a client expects.
    alice.send_text(&room, "wake up").await;
    let mut statuses = vec![];
    for p in polls {
        let (status, at) = p.await.unwrap();
        statuses.push(status);
        assert!(at.duration_since(started) < Duration::from_secs(20));
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Memory held by the burst goes back.
    let rss = plexus_spec_tests::eventually(30, "RSS to come back after the burst", || {
        let (rss, _) = s.memory_kib();
        async move { (rss < rss0 + 40 * 1024).then_some(rss) }
    })
    .await;
    println!("RSS before {rss0} KiB, after the burst {rss} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_syncs_do_not_hold_up_other_requests() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    // A room with 2,000 state events.
    let writes: Vec<_> = (0..8)
        .map(|w| {
            let (c, room) = (alice.clone(), room.clone());
            tokio::spawn(async move {
                for i in 0..250 {
                    c.put_state(
                        &room,
                        "org.example.big",
                        &format!("{w}-{i}"),
                        json!({"n": i}),
                    )
                    .await
                    .ok();
                }
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    let mut loaders = vec![];
    for i in 0..24 {
        let c = s.user(&format!("reader{i}")).await;
        c.join(&room).await.ok();
        loaders.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(8);
            while Instant::now() < until {
                c.get("/_matrix/client/v3/sync?full_state=true&timeout=0")
                    .await
                    .ok();
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        alice.get("/_matrix/client/v3/account/whoami").await.ok();
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for l in loaders {
        l.await.unwrap();
    }
    println!("slowest whoami under 24 full-state sync loops: {worst:?}");
    assert!(
        worst < Duration::from_millis(150),
        "a whoami waited {worst:?} behind sync builds"
    );
    let _ = enc(&room);
}
