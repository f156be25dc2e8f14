//! Interop with Synapse (from PyPI) as a real federation peer on loopback, both directions:
//! a Synapse user joins a Plexus room and a Plexus user joins a Synapse room; messages, typing
//! and receipts are visible on both sides.
//!
//! Needs python3 with venv; see `plexus_spec_tests::synapse`.

use plexus_spec_tests::{enc, eventually, synapse::Synapse, Client, Server};
use serde_json::{json, Value};

/// Synapse and a federating Plexus on loopback, for the interop tests.
struct Pair {
    syn: Synapse,
    plexus: Server,
}

impl Pair {
    async fn start() -> Pair {
        let syn = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
        let plexus = Server::federated_with(&[("PLEXUS_LOG", "warn,plexus=debug")]).await;
        Pair { syn, plexus }
    }

    /// Both servers' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- plexus\n{}\n--- synapse\n{}",
            self.plexus.log_text(),
            self.syn.log()
        )
    }
}

/// Every ephemeral event of `room` that shows up in `c`'s incremental syncs until `pred` holds.
/// (Synapse caches identical sync requests for minutes, so polling needs `since`.)
async fn watch_ephemeral(
    c: &Client,
    room: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<(), String> {
    let mut since: Option<String> = None;
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let q = match &since {
            Some(s) => format!("timeout=1000&since={}", enc(s)),
            None => "timeout=0".to_owned(),
        };
        let s = c.sync(&q).await;
        since = s["next_batch"].as_str().map(str::to_owned);
        for e in s["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if pred(e) {
                return Ok(());
            }
            seen.push(e.clone());
        }
    }
    Err(format!(
        "{} never saw {what}; saw {}",
        c.user_id,
        Value::Array(seen)
    ))
}

async fn exchange(room: &str, a: &Client, b: &Client, tag: &str, logs: &dyn Fn() -> String) {
    let from_a = format!("{tag}: hello from {}", a.user_id);
    let from_b = format!("{tag}: hello from {}", b.user_id);
    a.send_text(room, &from_a).await;
    let eb = b.send_text(room, &from_b).await;
    for (who, cl) in [(&a.user_id, a), (&b.user_id, b)] {
        eventually(30, &format!("{who} sees both messages ({tag})"), || async {
            let got = cl.recent_bodies(room).await;
            (got.contains(&from_a) && got.contains(&from_b)).then_some(())
        })
        .await;
    }
    // Typing both ways.
    for (typer, watcher) in [(a, b), (b, a)] {
        let r = typer.typing(room, true).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let who = typer.user_id.clone();
        watch_ephemeral(watcher, room, &format!("{who} typing ({tag})"), |e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|u| u == who.as_str()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    }
    // A's read receipt on B's message reaches B.
    let r = a
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(room),
                enc(&eb)
            ),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let who = a.user_id.clone();
    watch_ephemeral(b, room, &format!("{who}'s receipt on {eb} ({tag})"), |e| {
        e["type"] == "m.receipt" && !e["content"][&eb]["m.read"][&who].is_null()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_plexus_join_each_others_rooms() {
    let pair = Pair::start().await;
    let (syn, plexus) = (&pair.syn, &pair.plexus);
    let alice = plexus.user("alice").await;
    let bob = syn.user("bob").await;

    // A Synapse user joins a Plexus room.
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "on plexus"}))
        .await;
    let r = bob
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room),
                enc(&plexus.server_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "synapse user joins a plexus room: {}\n{}",
        r.body,
        syn.log()
    );
    eventually(30, "alice sees bob join", || async {
        alice
            .joined_members(&room)
            .await
            .contains(&bob.user_id)
            .then_some(())
    })
    .await;
    let logs = || pair.logs();
    exchange(&room, &alice, &bob, "plexus room", &logs).await;

    // A Plexus user joins a Synapse room.
    let room2 = bob
        .create_room(json!({"preset": "public_chat", "name": "on synapse"}))
        .await;
    let r = alice
        .post(
            &format!(
                "/_matrix/client/v3/join/{}?server_name={}",
                enc(&room2),
                enc(&syn.server_name)
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "plexus user joins a synapse room: {}\n{}",
        r.body,
        plexus.log_text()
    );
    assert_eq!(
        alice.state(&room2, "m.room.name", "").await.unwrap()["name"],
        "on synapse"
    );
    eventually(30, "bob sees alice join", || async {
        bob.joined_members(&room2)
            .await
            .contains(&alice.user_id)
            .then_some(())
    })
    .await;
    exchange(&room2, &bob, &alice, "synapse room", &logs).await;
}

/// `rooms.<section>.<room>` once it shows up in `c`'s syncs (incremental, as Synapse caches
/// identical requests).
async fn sync_until(c: &Client, section: &str, room: &str, logs: &dyn Fn() -> String) -> Value {
    let mut since: Option<String> = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let q = match &since {
            Some(s) => format!("timeout=1000&since={}", enc(s)),
            None => "timeout=0".to_owned(),
        };
        let s = c.sync(&q).await;
        if let Some(v) = s["rooms"][section].get(room) {
            return v.clone();
        }
        since = s["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{} never saw {room} in {section}\n{}", c.user_id, logs());
}

/// `inviter` invites `invitee` (on the other server) to a new room named `name`; the invitee
/// sees the invite with the name and joins; the inviter sees the join.
async fn invite_and_accept(
    inviter: &Client,
    invitee: &Client,
    name: &str,
    logs: &dyn Fn() -> String,
) {
    let room = inviter
        .create_room(json!({"preset": "private_chat", "name": name}))
        .await;
    let r = inviter
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": invitee.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{name}: invite: {}\n{}", r.body, logs());
    let inv = sync_until(invitee, "invite", &room, logs).await;
    assert!(
        inv["invite_state"]["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["content"]["name"] == name)),
        "{inv}"
    );
    let r = invitee.join(&room).await;
    assert_eq!(r.status, 200, "{name}: accepting: {}\n{}", r.body, logs());
    eventually(
        30,
        &format!("{name}: the inviter sees the join"),
        || async {
            (inviter.membership(&room, &invitee.user_id).await.as_deref() == Some("join"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_plexus_invite_and_knock_across() {
    let pair = Pair::start().await;
    let (syn, plexus) = (&pair.syn, &pair.plexus);
    let logs = || pair.logs();
    let alice = plexus.user("alice").await;
    let erin = plexus.user("erin").await;
    let carol = syn.user("carol").await;
    let dan = syn.user("dan").await;

    // Plexus invites a Synapse user (Synapse countersigns) and the other way round (Plexus
    // countersigns); each sees the room's name in the invite and accepts.
    invite_and_accept(&alice, &carol, "plexus invite", &logs).await;
    invite_and_accept(&dan, &erin, "synapse invite", &logs).await;

    // A Plexus user turns down a Synapse invite; Synapse learns it.
    let room3 = dan.create_room(json!({"preset": "private_chat"})).await;
    let r = dan
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room3)),
            json!({"user_id": alice.user_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sync_until(&alice, "invite", &room3, &logs).await;
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room3)),
            json!({}),
        )
        .await;
    assert_eq!(
        r.status,
        200,
        "rejecting a synapse invite: {}\n{}",
        r.body,
        logs()
    );
    eventually(30, "dan sees the rejection", || async {
        (dan.membership(&room3, &alice.user_id).await.as_deref() == Some("leave")).then_some(())
    })
    .await;

    // A Plexus user knocks on a Synapse room.
    let room4 = dan
        .create_room(json!({
            "room_version": "10",
            "name": "knock here",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        }))
        .await;
    let r = erin
        .post(
            &format!(
                "/_matrix/client/v3/knock/{}?via={}",
                enc(&room4),
                enc(&syn.server_name)
            ),
            json!({"reason": "hi"}),
        )
        .await;
    assert_eq!(r.status, 200, "knocking on synapse: {}\n{}", r.body, logs());
    let k = sync_until(&erin, "knock", &room4, &logs).await;
    assert!(
        k["knock_state"]["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["content"]["name"] == "knock here")),
        "{k}"
    );
    eventually(30, "dan sees the knock", || async {
        (dan.membership(&room4, &erin.user_id).await.as_deref() == Some("knock")).then_some(())
    })
    .await;
}

/// Media both ways: each side downloads and thumbnails what a user of the other uploaded,
/// through its own server, with content, type and filename intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_plexus_fetch_each_others_media() {
    let pair = Pair::start().await;
    let (syn, plexus) = (&pair.syn, &pair.plexus);
    let logs = || pair.logs();
    let alice = plexus.user("alice").await;
    let carol = syn.user("carol").await;
    let picture = plexus_spec_tests::test_png(400, 300);
    for (uploader, downloader, name) in [
        (&alice, &carol, "from plexus.png"),
        (&carol, &alice, "from synapse.png"),
    ] {
        let uri = uploader
            .upload(picture.clone(), "image/png", Some(name))
            .await;
        let got = downloader
            .media(&format!("/_matrix/client/v1/media/download/{uri}"))
            .await;
        assert_eq!(
            got.status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&got.body),
            logs()
        );
        assert_eq!(got.body, picture, "{name}");
        assert_eq!(got.header("content-type"), "image/png", "{name}");
        // Synapse writes names with spaces as `filename*` (RFC 6266); either form will do.
        assert_eq!(
            plexus_media::disposition::filename_of(got.header("content-disposition")).as_deref(),
            Some(name),
            "{}",
            got.header("content-disposition")
        );
        let thumb = downloader
            .media(&format!(
                "/_matrix/client/v1/media/thumbnail/{uri}?width=96&height=96&method=crop"
            ))
            .await;
        assert_eq!(thumb.status, 200, "{name} thumbnail\n{}", logs());
        assert_eq!(
            plexus_spec_tests::image_dims(&thumb.body),
            (96, 96),
            "{name}"
        );
    }
}

/// Spaces both ways: a user joins a space on the other server, and their own server fills in
/// the child rooms it is not in through federation `/hierarchy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_plexus_walk_each_others_spaces() {
    let pair = Pair::start().await;
    let (syn, plexus) = (&pair.syn, &pair.plexus);
    let logs = || pair.logs();
    let alice = plexus.user("alice").await;
    let carol = syn.user("carol").await;
    for (owner, owner_server, visitor, tag) in [
        (&alice, &plexus.server_name, &carol, "plexus space"),
        (&carol, &syn.server_name, &alice, "synapse space"),
    ] {
        let space = owner
            .create_room(json!({
                "preset": "public_chat",
                "name": format!("{tag}"),
                "creation_content": {"type": "m.space"},
            }))
            .await;
        for (i, name) in ["first", "second"].iter().enumerate() {
            let child = owner
                .create_room(json!({"preset": "public_chat", "name": format!("{tag} {name}")}))
                .await;
            owner
                .put_state(
                    &space,
                    "m.space.child",
                    &child,
                    json!({"via": [owner_server], "order": format!("{i}")}),
                )
                .await
                .ok();
        }
        let r = visitor.join_via(&space, owner_server).await;
        assert_eq!(r.status, 200, "{tag}: {}\n{}", r.body, logs());
        let r = visitor
            .get(&format!(
                "/_matrix/client/v1/rooms/{}/hierarchy",
                enc(&space)
            ))
            .await;
        assert_eq!(r.status, 200, "{tag}: {}\n{}", r.body, logs());
        let names: Vec<&str> = r.body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            names,
            [
                tag.to_owned(),
                format!("{tag} first"),
                format!("{tag} second")
            ],
            "{}\n{}",
            r.body,
            logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_plexus_vouch_for_restricted_joins() {
    let pair = Pair::start().await;
    let (syn, plexus) = (&pair.syn, &pair.plexus);
    let logs = || pair.logs();
    let alice = plexus.user("alice").await;
    let carol = syn.user("carol").await;
    for (owner, owner_server, visitor, tag) in [
        (&alice, &plexus.server_name, &carol, "plexus resident"),
        (&carol, &syn.server_name, &alice, "synapse resident"),
    ] {
        let space = owner
            .create_room(json!({"preset": "public_chat", "creation_content": {"type": "m.space"}}))
            .await;
        let room = owner
            .create_room(json!({
                "preset": "private_chat", "room_version": "10",
                "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                    "content": {"join_rule": "restricted",
                                "allow": [{"type": "m.room_membership", "room_id": space}]}}]
            }))
            .await;
        let r = visitor.join_via(&room, owner_server).await;
        assert_eq!(
            r.status,
            403,
            "{tag}: outside the space: {}\n{}",
            r.body,
            logs()
        );
        let r = visitor.join_via(&space, owner_server).await;
        assert_eq!(r.status, 200, "{tag}: {}\n{}", r.body, logs());
        let r = visitor.join_via(&room, owner_server).await;
        assert_eq!(r.status, 200, "{tag}: {}\n{}", r.body, logs());
        let content = eventually(30, &format!("{tag}: the owner sees the join"), || async {
            owner
                .state(&room, "m.room.member", &visitor.user_id)
                .await
                .filter(|c| c["membership"] == "join")
        })
        .await;
        assert_eq!(
            content["join_authorised_via_users_server"],
            owner.user_id,
            "{tag}\n{}",
            logs()
        );
        exchange(&room, owner, visitor, tag, &logs).await;
    }
}

/// A room on `owner`'s server with `n` extra state events, for the join benchmark (sent eight
/// at a time: request size limits rule out one big `initial_state`).
async fn big_room(owner: &Client, n: usize, version: Option<&str>) -> String {
    use futures_util::StreamExt;
    let mut body = json!({"preset": "public_chat"});
    if let Some(v) = version {
        body["room_version"] = json!(v);
    }
    let room = owner.create_room(body).await;
    let puts = futures_util::stream::iter(0..n).map(|i| {
        let room = room.clone();
        async move {
            owner
                .put_state(
                    &room,
                    "org.plexus.bench",
                    &format!("k{i}"),
                    json!({ "i": i }),
                )
                .await
                .ok();
        }
    });
    puts.buffer_unordered(8).collect::<Vec<()>>().await;
    room
}

async fn timed_join(c: &Client, room: &str, via: &str) -> f64 {
    let t = std::time::Instant::now();
    let r = c.join_via(room, via).await;
    assert_eq!(r.status, 200, "{}", r.body);
    t.elapsed().as_secs_f64()
}

/// Joining rooms with many state events from another server (a measurement, not a check):
/// Plexus joining a Plexus room and a Synapse room, and Synapse joining the same Plexus room
/// for comparison. Sizes from `PLEXUS_BENCH_JOIN_STATE` (default `1000,5000`); run with a
/// release `plexus` (`PLEXUS_BIN`) and `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn remote_join_time() {
    let sizes: Vec<usize> = std::env::var("PLEXUS_BENCH_JOIN_STATE")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let syn = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let carol = syn.user("carol").await;
    println!("| state events | Plexus joins Plexus room | Plexus joins Synapse room | Synapse joins Plexus room |");
    println!("| --- | --- | --- | --- |");
    for n in sizes {
        let on_plexus = big_room(&alice, n, None).await;
        let on_synapse = big_room(&carol, n, None).await;
        let bob = b.user(&format!("bob{n}")).await;
        let dave = syn.user(&format!("dave{n}")).await;
        let pp = timed_join(&bob, &on_plexus, &a.server_name).await;
        let ps = timed_join(&bob, &on_synapse, &syn.server_name).await;
        let sp = timed_join(&dave, &on_plexus, &a.server_name).await;
        println!("| {n} | {pp:.2} s | {ps:.2} s | {sp:.2} s |");
    }
}

/// Inbound PDUs per second through Synapse's `/send`: the load of Plexus's
/// `federation_hostile::inbound_pdu_rate`, for the Synapse column in docs/BENCHMARKS.md (a
/// measurement, not a check: run with `-- --ignored --nocapture`). A Plexus server B lends its
/// name and signing key; the test sends as B, into a v12 room on Synapse with
/// `PLEXUS_BENCH_STATE` extra state events (default 1000) that a user of B has joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn synapse_inbound_pdu_rate() {
    use plexus_spec_tests::peer::{bench_state_events, key_file, measure_inbound, peer_for};
    let n_state = bench_state_events();
    let syn = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let (_dir, key_path, key) = key_file();
    let b = Server::federated_with(&[("PLEXUS_SIGNING_KEY_PATH", &key_path)]).await;
    let carol = syn.user("carol").await;
    let bob = b.user("bob").await;
    let room = big_room(&carol, n_state, Some("12")).await;
    let r = bob.join_via(&room, &syn.server_name).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, syn.log());
    let peer = peer_for(&b, key);
    measure_inbound(
        "synapse",
        &peer,
        &carol,
        &syn.server_name,
        &room,
        &bob.user_id,
        n_state,
    )
    .await;
}
