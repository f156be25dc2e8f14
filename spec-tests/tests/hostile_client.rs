//! A hostile client, and someone who got hold of the data dir: input the spec bounds, secrets
//! at rest, and single-use tokens.

use std::os::unix::fs::PermissionsExt;

use plexus_spec_tests::{enc, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_keys_are_bounded_as_federation_bounds_them() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let long = "k".repeat(20_000);
    let r = alice
        .put_state(&room, "m.room.topic", &long, json!({"topic": "x"}))
        .await;
    r.err(400, "M_BAD_JSON");
    let at_limit = "k".repeat(255);
    let r = alice
        .put_state(&room, "org.example.s", &at_limit, json!({"a": 1}))
        .await;
    r.ok();
    let over = "k".repeat(256);
    let r = alice
        .put_state(&room, "org.example.s", &over, json!({"a": 1}))
        .await;
    r.err(400, "M_BAD_JSON");
    // The room still works, and nothing of the refused events is in it.
    alice.send_text(&room, "after").await;
    let st = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
        .await;
    assert!(!st.body.to_string().contains(&over), "{}", st.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_passwords_are_refused() {
    let s = Server::start().await;
    let mut c = s.client();
    let first = c
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "eve", "password": ""}),
        )
        .await;
    first.err(400, "M_WEAK_PASSWORD");
    // Nothing was created: the name is still free, and "" logs nobody in.
    let r = c.login("eve", "").await;
    r.err(403, "M_FORBIDDEN");
    c.register("eve", "a real password").await;
    let r = c.login("eve", "").await;
    r.err(403, "M_FORBIDDEN");
    let r = c
        .post(
            "/_matrix/client/v3/account/password",
            json!({"new_password": "", "auth": {"type": "m.login.password",
                   "identifier": {"type": "m.id.user", "user": "eve"}, "password": "a real password"}}),
        )
        .await;
    r.err(400, "M_WEAK_PASSWORD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_ids_are_printable_and_short() {
    let s = Server::start().await;
    let mut c = s.client();
    c.register("dora", "password-1234").await;
    let nl = "A\nB".to_owned();
    let nul = "A\0B".to_owned();
    let long = "D".repeat(10_000);
    for bad in [&nl, &nul, &long, &String::new()] {
        let r = c
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dora"},
                       "password": "password-1234", "device_id": bad}),
            )
            .await;
        r.err(400, "M_INVALID_PARAM");
    }
    let r = c
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dora"},
                   "password": "password-1234", "device_id": "LAPTOP ü"}),
        )
        .await;
    assert_eq!(r.body["device_id"], "LAPTOP ü", "{}", r.body);
    let devices = c.get("/_matrix/client/v3/devices").await;
    let ids: Vec<&str> = devices.ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids
        .iter()
        .all(|d| d.len() < 50 && !d.contains(['\n', '\0'])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_works_once_even_when_raced() {
    let s = Server::start().await;
    let mut c = s.client();
    c.register("rita", "password-1234").await;
    for round in 0..20 {
        let r = c
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "rita"},
                       "password": "password-1234", "refresh_token": true}),
            )
            .await;
        let refresh = r.ok()["refresh_token"].as_str().unwrap().to_owned();
        let body = json!({ "refresh_token": refresh });
        let (x, y) = tokio::join!(
            c.post("/_matrix/client/v3/refresh", body.clone()),
            c.post("/_matrix/client/v3/refresh", body.clone())
        );
        let ok = [&x, &y].iter().filter(|r| r.status == 200).count();
        assert_eq!(
            ok, 1,
            "round {round}: {} {} / {} {}",
            x.status, x.body, y.status, y.body
        );
        let loser = if x.status == 200 { &y } else { &x };
        loser.err(401, "M_UNKNOWN_TOKEN");
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_holds_no_token_and_is_private() {
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("signing.key");
    let key_path_str = key_path.to_str().unwrap().to_owned();
    let mut s = Server::federated_with(&[("PLEXUS_SIGNING_KEY_PATH", key_path_str.as_str())]).await;
    let mut c = s.client();
    c.register("tess", "password-1234").await;
    let r = c
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "tess"},
                   "password": "password-1234", "refresh_token": true}),
        )
        .await;
    let access = r.ok()["access_token"].as_str().unwrap().to_owned();
    let refresh = r.ok()["refresh_token"].as_str().unwrap().to_owned();
    let first_access = c.token.clone().unwrap();
    let openid = c
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                enc(&c.user_id)
            ),
            json!({}),
        )
        .await;
    let openid = openid.ok()["access_token"].as_str().unwrap().to_owned();
    s.kill9();

    let dir = s.data_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&key_path), 0o600, "signing key");
    let all = files(&dir);
    assert!(
        all.iter().any(|p| p.to_string_lossy().contains("tls")),
        "{all:?}"
    );
    for p in &all {
        assert_eq!(mode(p) & 0o077, 0, "{} is open to others", p.display());
        let bytes = std::fs::read(p).unwrap();
        for t in [&access, &refresh, &first_access, &openid] {
            assert!(
                !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                "{} holds a token verbatim",
                p.display()
            );
        }
    }
    // The hashed tokens still work after a restart, the OpenID one for other servers too.
    s.restart().await;
    let userinfo = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!(
            "https://{}/_matrix/federation/v1/openid/userinfo?access_token={openid}",
            s.server_name
        ))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], c.user_id.as_str(), "{userinfo}");
    c.token = Some(access);
    c.get("/_matrix/client/v3/account/whoami").await.ok();
    let r = c
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
        )
        .await;
    r.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_and_state_show_nothing_past_what_a_user_could_see() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let mallory = s.user("mallory").await;
    let ivy = s.user("ivy").await;
    let ben = s.user("ben").await;
    let room = alice
        .create_room(json!({"preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "joined"}}]}))
        .await;
    mallory.join(&room).await.ok();
    let seen = alice.send_text(&room, "mallory saw this").await;
    let r = mallory
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await;
    r.ok();
    alice
        .put_state(
            &room,
            "m.room.topic",
            "",
            json!({"topic": "after mallory left"}),
        )
        .await
        .ok();
    for i in 0..3 {
        alice.send_text(&room, &format!("later {i}")).await;
    }
    let invite = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": ivy.user_id}),
        )
        .await;
    invite.ok();
    let ban = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({"user_id": ben.user_id}),
        )
        .await;
    ban.ok();
    let context = |c: &plexus_spec_tests::Client, ev: String| {
        let c = c.clone();
        let path = format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=20",
            enc(&room),
            enc(&ev)
        );
        async move { c.get(&path).await }
    };

    // Mallory, who left, sees the room as she left it: not the later topic.
    let r = context(&mallory, seen.clone()).await;
    let body = r.ok().to_string();
    assert!(body.contains("mallory saw this"), "{body}");
    assert!(
        !body.contains("after mallory left"),
        "context leaked later state: {body}"
    );
    assert!(!body.contains("later 0"), "{body}");
    let st = mallory
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
        .await;
    assert!(!st.ok().to_string().contains("after mallory left"));

    // Ivy (only invited) and Ben (banned before he ever joined) read no state at all, by
    // their own membership events or otherwise.
    for (who, ev) in [(&ivy, &ivy.user_id), (&ben, &ben.user_id)] {
        let m = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(ev)
            ))
            .await;
        assert_eq!(m.status, 200, "{}", m.body);
        let member_event = alice
            .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == ev.as_str())
            .and_then(|e| e["event_id"].as_str())
            .unwrap()
            .to_owned();
        let r = context(who, member_event).await;
        r.err(403, "M_FORBIDDEN");
        for path in ["state", "state/m.room.topic/", "members"] {
            let r = who
                .get(&format!("/_matrix/client/v3/rooms/{}/{path}", enc(&room)))
                .await;
            r.err(403, "M_FORBIDDEN");
        }
    }

    // Forgetting the room ends Mallory's access to its state.
    mallory
        .post(
            &format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)),
            json!({}),
        )
        .await
        .ok();
    let r = mallory
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
        .await;
    r.err(403, "M_FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_from_another_room_do_not_count() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let mallory = s.user("mallory").await;
    let room = alice.create_room(json!({})).await;
    let target = alice.send_text(&room, "a message mallory cannot see").await;
    let own = alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "in the thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": target}}),
        )
        .await;
    let elsewhere = mallory.create_room(json!({})).await;
    let txn = |n: &str| format!("t{n}{}", plexus_spec_tests::rand_suffix());
    for (kind, content) in [
        (
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "💩"}}),
        ),
        (
            "m.room.message",
            json!({"msgtype": "m.text", "body": "from elsewhere",
            "m.relates_to": {"rel_type": "m.thread", "event_id": target}}),
        ),
        (
            "m.room.message",
            json!({"msgtype": "m.text", "body": "a reference",
            "m.relates_to": {"rel_type": "m.reference", "event_id": target}}),
        ),
    ] {
        mallory
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/{kind}/{}",
                    enc(&elsewhere),
                    txn(kind)
                ),
                content,
            )
            .await
            .ok();
    }
    let r = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&room),
            enc(&target)
        ))
        .await;
    let chunk = r.ok()["chunk"].as_array().unwrap().clone();
    let ids: Vec<&str> = chunk
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, vec![own.as_str()], "{chunk:?}");
    let ev = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&target)
        ))
        .await;
    let relations = ev.ok()["unsigned"]["m.relations"].to_string();
    assert!(!relations.contains("from elsewhere"), "{relations}");
    assert_eq!(
        ev.body["unsigned"]["m.relations"]["m.thread"]["count"], 1,
        "{relations}"
    );
    assert!(
        ev.body["unsigned"]["m.relations"]
            .get("m.reference")
            .is_none(),
        "{relations}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stop_at_the_per_user_quota() {
    let mut s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_MEDIA_MAX_BYTES_PER_USER", "100000"),
    ])
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    alice
        .upload(vec![1; 60_000], "application/octet-stream", None)
        .await;
    let r = alice
        .upload_raw(vec![2; 60_000], Some("application/octet-stream"), None)
        .await;
    r.err(413, "M_TOO_LARGE");
    alice
        .upload(vec![3; 30_000], "application/octet-stream", None)
        .await;
    bob.upload(vec![4; 60_000], "application/octet-stream", None)
        .await;
    // The count survives a crash: 90,000 of 100,000 bytes are used.
    s.crash_and_restart().await;
    let r = alice
        .upload_raw(vec![5; 20_000], Some("application/octet-stream"), None)
        .await;
    r.err(413, "M_TOO_LARGE");
    alice
        .upload(vec![6; 10_000], "application/octet-stream", None)
        .await;
    let r = alice
        .upload_raw(vec![7; 1], Some("application/octet-stream"), None)
        .await;
    r.err(413, "M_TOO_LARGE");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("quota"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_relates_to_an_event_is_bundled_only_when_visible() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat",
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                               "content": {"history_visibility": "joined"}}]}))
        .await;
    bob.join(&room).await.ok();
    let root = alice.send_text(&room, "root bob saw").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "a reply after bob left",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    alice
        .send_message(
            &room,
            json!({"msgtype": "m.text", "body": "* edited after bob left",
                   "m.new_content": {"msgtype": "m.text", "body": "edited after bob left"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
        )
        .await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&root)
    );
    let seen = bob.get(&path).await;
    let body = seen.ok().to_string();
    assert!(body.contains("root bob saw"), "{body}");
    assert!(
        !body.contains("after bob left"),
        "bundled what bob may not see: {body}"
    );
    // Alice, still in the room, sees both bundled.
    let all = alice.get(&path).await.ok().to_string();
    assert!(all.contains("a reply after bob left") && all.contains("edited after bob left"));

    // Once bob forgets the room, even what he saw is gone, in every read.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)),
        json!({}),
    )
    .await
    .ok();
    bob.get(&path).await.err(404, "M_NOT_FOUND");
    let found = bob
        .post(
            "/_matrix/client/v3/search",
            json!({"search_categories": {"room_events": {"search_term": "root"}}}),
        )
        .await;
    assert!(
        !found.ok().to_string().contains("root bob saw"),
        "{}",
        found.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushers_are_bounded_and_go_with_their_device() {
    let s = Server::start().await;
    let mut alice = s.user("alice").await;
    let pusher = |key: String| {
        json!({"pushkey": key, "kind": "http", "app_id": "org.example.app",
               "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
               "data": {"url": "https://push.example.org/_matrix/push/v1/notify"}, "append": true})
    };
    for i in 0..100 {
        alice
            .post("/_matrix/client/v3/pushers/set", pusher(format!("k{i}")))
            .await
            .ok();
    }
    let r = alice
        .post("/_matrix/client/v3/pushers/set", pusher("k100".into()))
        .await;
    r.err(403, "M_FORBIDDEN");
    // Removing one makes room again.
    let mut gone = pusher("k0".into());
    gone["kind"] = serde_json::Value::Null;
    alice
        .post("/_matrix/client/v3/pushers/set", gone)
        .await
        .ok();
    // A second device's pusher stays when the first device logs out; the first's go.
    let mut phone = s.client();
    phone.login("alice", "password-1234").await.ok();
    phone
        .post("/_matrix/client/v3/pushers/set", pusher("phone".into()))
        .await
        .ok();
    let listed = phone.get("/_matrix/client/v3/pushers").await;
    assert_eq!(listed.ok()["pushers"].as_array().unwrap().len(), 100);
    alice
        .post("/_matrix/client/v3/logout", json!({}))
        .await
        .ok();
    alice.token = phone.token.clone();
    let listed = phone.get("/_matrix/client/v3/pushers").await;
    let keys: Vec<&str> = listed.ok()["pushers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pushkey"].as_str())
        .collect();
    assert_eq!(keys, vec!["phone"]);
    assert!(listed.body["pushers"][0].get("device_id").is_none());
}
