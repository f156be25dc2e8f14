//! Sync response building, without HTTP: an initial sync of a user in 50 rooms with 100 events
//! each, and the incremental sync that finds nothing new (what every idle client costs).
// Test and bench code: a failed step is the run failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use plexus::{
    api::client::{filter::Filter, sync::build},
    config::Config,
    service::{
        accounts::Session,
        writer::{send_one, RoomWriter},
        App, Services,
    },
};
use plexus_core::builder::NewEvent;
use ruma::{OwnedUserId, RoomVersionId};
use serde_json::json;

fn state(kind: &str, key: &str, content: serde_json::Value) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        content,
        state_key: Some(key.into()),
        redacts: None,
    }
}

async fn setup(app: &App, owner: &OwnedUserId, reader: &OwnedUserId) {
    for r in 0..50 {
        let mut w = RoomWriter::create(app, RoomVersionId::V11).unwrap();
        w.append(
            owner,
            state("m.room.create", "", json!({"room_version": "11"})),
            None,
        )
        .unwrap();
        w.append(
            owner,
            state(
                "m.room.member",
                owner.as_str(),
                json!({"membership": "join"}),
            ),
            None,
        )
        .unwrap();
        w.append(
            owner,
            state(
                "m.room.power_levels",
                "",
                json!({"users": {owner.as_str(): 100}}),
            ),
            None,
        )
        .unwrap();
        w.append(
            owner,
            state("m.room.join_rules", "", json!({"join_rule": "public"})),
            None,
        )
        .unwrap();
        w.append(
            owner,
            state("m.room.name", "", json!({"name": format!("room {r}")})),
            None,
        )
        .unwrap();
        w.append(
            reader,
            state(
                "m.room.member",
                reader.as_str(),
                json!({"membership": "join"}),
            ),
            None,
        )
        .unwrap();
        for i in 0..100 {
            w.append(
                owner,
                NewEvent {
                    kind: "m.room.message".into(),
                    content: json!({"msgtype": "m.text", "body": format!("message {i}")}),
                    state_key: None,
                    redacts: None,
                },
                None,
            )
            .unwrap();
        }
        let room_id = w.room_id.clone().unwrap();
        w.commit().await.unwrap();
        send_one(
            app,
            &room_id,
            owner,
            NewEvent {
                kind: "m.room.topic".into(),
                content: json!({"topic": "t"}),
                state_key: Some(String::new()),
                redacts: None,
            },
            None,
        )
        .await
        .unwrap();
    }
}

fn bench_sync(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let app = Services::open(cfg.validate().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let owner: OwnedUserId = "@owner:localhost".try_into().unwrap();
    let reader: OwnedUserId = "@reader:localhost".try_into().unwrap();
    rt.block_on(setup(&app, &owner, &reader));
    let session = Session {
        user_id: reader.clone(),
        device_id: Some("BENCH".into()),
        appservice: None,
        access_token: String::new(),
    };
    let filter = Filter::default();
    let now = app.store.current_count();

    let mut group = c.benchmark_group("sync response");
    group.sample_size(20);
    group.bench_function("initial sync, 50 rooms x 100 events", |b| {
        b.iter(|| black_box(build(&app, &session, None, &filter, false).unwrap()))
    });
    group.bench_function("incremental sync with nothing new, 50 rooms", |b| {
        b.iter(|| black_box(build(&app, &session, Some(now), &filter, false).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_sync);
criterion_main!(benches);
