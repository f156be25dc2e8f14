//! Micro-benchmarks of the room core, where regressions show first: canonical JSON, hashing and
//! signing, signature verification, event auth in a 1,000-member room, and state resolution
//! over two branches of 1,000 state events each.
// Test and bench code: a failed step is the run failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use plexus_core::{
    auth,
    builder::{build_pdu, EventRef, NewEvent, RoomContext},
    room_version,
    testing::TestRoom,
    Pdu,
};
use ruma::{
    canonical_json::to_canonical_value,
    events::StateEventType,
    serde::Base64,
    signatures::{verify_event, PublicKeyMap, PublicKeySet},
    state_res::{self, utils::event_id_set::EventIdSet},
    OwnedEventId, RoomVersionId, UserId,
};
use serde_json::json;

const ALICE: &str = "@alice:example.org";

fn message() -> NewEvent {
    NewEvent {
        kind: "m.room.message".into(),
        content: json!({
            "msgtype": "m.text",
            "body": "Where did we decide the schema? I think it was in the design review last week.",
            "format": "org.matrix.custom.html",
            "formatted_body": "Where did we decide the <b>schema</b>?",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}}
        }),
        state_key: None,
        redacts: None,
    }
}

/// A public v11 room with `n` joined members besides the creator.
fn room_with_members(n: usize) -> TestRoom {
    let mut room = TestRoom::new(RoomVersionId::V11, ALICE);
    room.send(
        ALICE,
        "m.room.power_levels",
        Some(""),
        json!({"users": {ALICE: 100}}),
    )
    .unwrap();
    room.send(
        ALICE,
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "public"}),
    )
    .unwrap();
    for i in 0..n {
        let u = format!("@user{i}:example.org");
        room.send(&u, "m.room.member", Some(&u), json!({"membership": "join"}))
            .unwrap();
    }
    room
}

fn bench_canonical_json(c: &mut Criterion) {
    let ev = json!({
        "type": "m.room.message", "sender": ALICE, "room_id": "!room:example.org",
        "origin_server_ts": 1_700_000_000_000u64, "depth": 12,
        "content": message().content,
        "prev_events": ["$a", "$b"], "auth_events": ["$c", "$d", "$e"],
        "hashes": {"sha256": "abc"}, "signatures": {"example.org": {"ed25519:a": "sig"}},
    });
    c.bench_function("canonical JSON of a message event", |b| {
        b.iter(|| {
            let v = to_canonical_value(black_box(&ev)).unwrap();
            black_box(serde_json::to_string(&v).unwrap())
        })
    });
}

fn bench_hash_sign_verify(c: &mut Criterion) {
    let room = room_with_members(0);
    let rules = room.rules.clone();
    let sender = UserId::parse(ALICE).unwrap();
    let last = room.last.clone().unwrap();
    let ctx = RoomContext {
        room_id: room.room_id.as_deref(),
        rules: &rules,
        sender: &sender,
        origin: ruma::server_name!("example.org"),
        prev_events: vec![EventRef::of(&room.events[&last])],
        auth_events: room
            .state
            .values()
            .take(3)
            .map(|id| EventRef::of(&room.events[id]))
            .collect(),
        depth: 10,
        origin_server_ts: 1_700_000_000_000,
    };
    let ev = message();
    c.bench_function("hash, sign and id a message PDU", |b| {
        b.iter(|| black_box(build_pdu(black_box(&ev), &ctx, &room.key).unwrap()))
    });

    let built = build_pdu(&ev, &ctx, &room.key).unwrap();
    let mut obj = built.stored.clone();
    obj.remove("event_id");
    let mut keys = PublicKeyMap::new();
    let mut set = PublicKeySet::new();
    set.insert(
        room.key.key_id(),
        Base64::parse(room.key.public_key_b64()).unwrap(),
    );
    keys.insert("example.org".into(), set);
    c.bench_function("verify hashes and signature of a PDU", |b| {
        b.iter(|| black_box(verify_event(&keys, black_box(&obj), &rules).unwrap()))
    });
}

fn bench_auth(c: &mut Criterion) {
    let room = room_with_members(1000);
    let rules = room.rules.clone();
    let sender = UserId::parse("@user500:example.org").unwrap();
    let types =
        auth::auth_types(&rules, "m.room.message", &sender, None, &message().content).unwrap();
    let auth_events: Vec<EventRef> = types
        .iter()
        .filter_map(|(t, k)| room.state.get(&(t.to_string(), k.clone())))
        .map(|id| EventRef::of(&room.events[id]))
        .collect();
    let last = room.last.clone().unwrap();
    let ctx = RoomContext {
        room_id: room.room_id.as_deref(),
        rules: &rules,
        sender: &sender,
        origin: ruma::server_name!("example.org"),
        prev_events: vec![EventRef::of(&room.events[&last])],
        auth_events,
        depth: 2000,
        origin_server_ts: 1_700_000_000_000,
    };
    let pdu = build_pdu(&message(), &ctx, &room.key).unwrap().pdu;
    c.bench_function("event auth of a message in a 1,000-member room", |b| {
        b.iter(|| {
            auth::check(
                &rules,
                black_box(&pdu),
                |id| room.events.get(id).cloned(),
                |t, k| {
                    room.state
                        .get(&(t.to_string(), k.to_owned()))
                        .and_then(|id| room.events.get(id).cloned())
                },
            )
            .unwrap()
        })
    });
}

fn bench_state_res(c: &mut Criterion) {
    let base = room_with_members(2);
    let mut a = base.clone();
    let mut b = base.clone();
    // Two branches of 1,000 state events each; 100 keys are set on both, so they conflict.
    for i in 0..1000 {
        let key = if i < 100 {
            format!("shared{i}")
        } else {
            format!("a{i}")
        };
        a.send(
            ALICE,
            "org.example.bench",
            Some(&key),
            json!({"branch": "a", "i": i}),
        )
        .unwrap();
        let key = if i < 100 {
            format!("shared{i}")
        } else {
            format!("b{i}")
        };
        b.send(
            ALICE,
            "org.example.bench",
            Some(&key),
            json!({"branch": "b", "i": i}),
        )
        .unwrap();
    }
    let mut events: HashMap<OwnedEventId, Pdu> = a.events.clone();
    events.extend(b.events.clone());
    let to_map = |room: &TestRoom| -> state_res::StateMap<OwnedEventId> {
        room.state
            .iter()
            .map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone()))
            .collect()
    };
    let maps = [to_map(&a), to_map(&b)];
    let chains: Vec<EventIdSet<OwnedEventId>> = [&a, &b]
        .iter()
        .map(|r| {
            r.auth_chain(r.state.values().cloned())
                .into_iter()
                .collect()
        })
        .collect();
    let rules = room_version::rules(&RoomVersionId::V11).unwrap();
    let v2 = *rules.state_res.v2_rules().unwrap();
    let mut group = c.benchmark_group("state resolution");
    group.sample_size(10);
    group.bench_function("two branches of 1,000 state events (v11)", |bench| {
        bench.iter(|| {
            let resolved = state_res::resolve(
                &rules.authorization,
                &v2,
                maps.iter(),
                chains.clone(),
                |id| events.get(id).cloned(),
                |_| None,
            )
            .unwrap();
            black_box(resolved)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_canonical_json,
    bench_hash_sign_verify,
    bench_auth,
    bench_state_res
);
criterion_main!(benches);
