//! Registration, login, tokens, devices, password change, deactivation, profile.

use plexus_spec_tests::{enc, Server};
use serde_json::{json, Value};

#[tokio::test]
async fn register_login_whoami_logout() {
    let srv = Server::start().await;
    let mut alice = srv.client();
    let reg = alice.register("alice", "secret-pw").await;
    assert_eq!(reg["user_id"], "@alice:localhost");
    assert!(reg["device_id"].is_string() && reg["access_token"].is_string());

    let me = alice.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(me.ok()["user_id"], "@alice:localhost");
    assert_eq!(me.body["device_id"], reg["device_id"]);

    // Taken, invalid and available usernames.
    let c = srv.client();
    c.get("/_matrix/client/v3/register/available?username=alice")
        .await
        .err(400, "M_USER_IN_USE");
    c.get("/_matrix/client/v3/register/available?username=Bad%20Name")
        .await
        .err(400, "M_INVALID_USERNAME");
    assert_eq!(
        c.get("/_matrix/client/v3/register/available?username=carol")
            .await
            .ok()["available"],
        true
    );
    c.post(
        "/_matrix/client/v3/register",
        json!({"username": "alice", "password": "x"}),
    )
    .await
    .err(400, "M_USER_IN_USE");
    c.post("/_matrix/client/v3/register?kind=guest", json!({}))
        .await
        .err(403, "M_GUEST_ACCESS_FORBIDDEN");

    // Login flows and a second device.
    let flows = c.get("/_matrix/client/v3/login").await;
    assert_eq!(flows.ok()["flows"][0]["type"], "m.login.password");
    let mut second = srv.client();
    second.login("alice", "wrong").await.err(403, "M_FORBIDDEN");
    let r = second.login("@alice:localhost", "secret-pw").await;
    assert_ne!(r.ok()["device_id"], reg["device_id"]);
    let devices = alice.get("/_matrix/client/v3/devices").await;
    assert_eq!(devices.ok()["devices"].as_array().unwrap().len(), 2);

    // Logout kills only that token.
    second
        .post("/_matrix/client/v3/logout", json!({}))
        .await
        .ok();
    second
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    alice.get("/_matrix/client/v3/account/whoami").await.ok();

    // logout/all kills every token.
    let mut third = srv.client();
    third.login("alice", "secret-pw").await.ok();
    alice
        .post("/_matrix/client/v3/logout/all", json!({}))
        .await
        .ok();
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    third
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let srv = Server::start().await;
    srv.user("rita").await;
    let c = srv.client();
    let r = c
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "rita"},
                   "password": "password-1234", "refresh_token": true}),
        )
        .await;
    let body = r.ok().clone();
    assert!(body["expires_in_ms"].as_u64().unwrap() > 0);
    let refresh = body["refresh_token"].as_str().unwrap();
    let r2 = c
        .post(
            "/_matrix/client/v3/refresh",
            json!({"refresh_token": refresh}),
        )
        .await;
    let new_access = r2.ok()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_access, body["access_token"].as_str().unwrap());
    // The old refresh token and old access token are gone; the new one works.
    c.post(
        "/_matrix/client/v3/refresh",
        json!({"refresh_token": refresh}),
    )
    .await
    .err(401, "M_UNKNOWN_TOKEN");
    let mut old = srv.client();
    old.token = body["access_token"].as_str().map(str::to_owned);
    old.get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    old.token = Some(new_access);
    old.get("/_matrix/client/v3/account/whoami").await.ok();
}

#[tokio::test]
async fn password_change_needs_uia_and_logs_out_others() {
    let srv = Server::start().await;
    let alice = srv.user("pat").await;
    let mut other = srv.client();
    other.login("pat", "password-1234").await.ok();

    let first = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({"new_password": "new-pw-5678"}),
        )
        .await;
    assert_eq!(first.status, 401);
    assert_eq!(first.body["flows"][0]["stages"][0], "m.login.password");
    let session = first.body["session"].as_str().unwrap();
    let wrong = alice
        .post("/_matrix/client/v3/account/password", json!({"new_password": "new-pw-5678",
            "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": "pat"}, "password": "nope"}}))
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    alice
        .post("/_matrix/client/v3/account/password", json!({"new_password": "new-pw-5678",
            "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": "pat"}, "password": "password-1234"}}))
        .await
        .ok();
    alice.get("/_matrix/client/v3/account/whoami").await.ok();
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    let mut c = srv.client();
    c.login("pat", "password-1234")
        .await
        .err(403, "M_FORBIDDEN");
    c.login("pat", "new-pw-5678").await.ok();
}

#[tokio::test]
async fn deactivation_leaves_rooms_and_blocks_login() {
    let srv = Server::start().await;
    let alice = srv.user("dora").await;
    let bob = srv.user("dan").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    alice.join(&room).await.ok();
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dora"}, "password": "password-1234"});
    alice
        .post(
            "/_matrix/client/v3/account/deactivate",
            json!({"auth": auth}),
        )
        .await
        .ok();
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    let members = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&room)
        ))
        .await;
    assert!(
        members.ok()["joined"].get("@dora:localhost").is_none(),
        "{}",
        members.body
    );
    let mut c = srv.client();
    c.login("dora", "password-1234")
        .await
        .err(403, "M_USER_DEACTIVATED");
}

#[tokio::test]
async fn devices_rename_and_delete_with_uia() {
    let srv = Server::start().await;
    let alice = srv.user("devi").await;
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    alice
        .put(&path, json!({"display_name": "laptop"}))
        .await
        .ok();
    assert_eq!(alice.get(&path).await.ok()["display_name"], "laptop");
    alice
        .get("/_matrix/client/v3/devices/NOPE")
        .await
        .err(404, "M_NOT_FOUND");
    let mut phone = srv.client();
    phone.login("devi", "password-1234").await.ok();
    let ppath = format!("/_matrix/client/v3/devices/{}", phone.device_id);
    let first = alice.delete(&ppath, json!({})).await;
    assert_eq!(first.status, 401);
    let auth = json!({"type": "m.login.password", "session": first.body["session"], "identifier": {"type": "m.id.user", "user": "devi"}, "password": "password-1234"});
    alice.delete(&ppath, json!({"auth": auth})).await.ok();
    phone
        .get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        alice.get("/_matrix/client/v3/devices").await.ok()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `GET /devices` says when and from where each device was last seen: null before its first
/// request after login, then the loopback address and a time later than the login.
#[tokio::test]
async fn devices_say_when_and_where_they_were_last_seen() {
    let srv = Server::start().await;
    let alice = srv.user("seen").await;
    let mut phone = srv.client();
    phone.login("seen", "password-1234").await.ok();
    let find = |list: &Value, id: &str| -> Value {
        list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {list}"))
    };
    let before = alice.get("/_matrix/client/v3/devices").await.ok().clone();
    let phone_before = find(&before, &phone.device_id);
    assert!(phone_before["last_seen_ip"].is_null(), "{phone_before}");
    let at_login = phone_before["last_seen_ts"].as_u64().unwrap();
    // The listing request itself counts for alice's own device.
    assert_eq!(find(&before, &alice.device_id)["last_seen_ip"], "127.0.0.1");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    phone.get("/_matrix/client/v3/account/whoami").await.ok();
    let after = alice.get("/_matrix/client/v3/devices").await.ok().clone();
    let phone_after = find(&after, &phone.device_id);
    assert_eq!(phone_after["last_seen_ip"], "127.0.0.1", "{phone_after}");
    assert!(
        phone_after["last_seen_ts"].as_u64().unwrap() > at_login,
        "{phone_before} then {phone_after}"
    );
    let one = alice
        .get(&format!("/_matrix/client/v3/devices/{}", phone.device_id))
        .await
        .ok()
        .clone();
    assert_eq!(one["last_seen_ip"], "127.0.0.1", "{one}");
    // Kept across a restart.
    let mut srv = srv;
    assert!(srv.terminate(10).is_some_and(|s| s.success()));
    srv.restart().await;
    let again = alice.get("/_matrix/client/v3/devices").await.ok().clone();
    assert_eq!(find(&again, &phone.device_id), phone_after, "{again}");
}

#[tokio::test]
async fn profile_is_propagated_to_rooms() {
    let srv = Server::start().await;
    let alice = srv.user("prof").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put(
            "/_matrix/client/v3/profile/@prof:localhost/displayname",
            json!({"displayname": "Professor"}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get("/_matrix/client/v3/profile/@prof:localhost")
            .await
            .ok()["displayname"],
        "Professor"
    );
    assert_eq!(
        alice
            .get("/_matrix/client/v3/profile/@prof:localhost/displayname")
            .await
            .ok()["displayname"],
        "Professor"
    );
    alice
        .get("/_matrix/client/v3/profile/@ghost:localhost")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .put(
            "/_matrix/client/v3/profile/@other:localhost/displayname",
            json!({"displayname": "x"}),
        )
        .await
        .err(403, "M_FORBIDDEN");
    let member = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/@prof:localhost",
            enc(&room)
        ))
        .await;
    assert_eq!(member.ok()["displayname"], "Professor");
    alice
        .put(
            "/_matrix/client/v3/profile/@prof:localhost/avatar_url",
            json!({"avatar_url": "mxc://localhost/abc"}),
        )
        .await
        .ok();
    let member = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/@prof:localhost",
            enc(&room)
        ))
        .await;
    assert_eq!(member.ok()["avatar_url"], "mxc://localhost/abc");
}

#[tokio::test]
async fn registration_policies() {
    let srv = Server::start_with(&[("PLEXUS_REGISTRATION", "disabled")]).await;
    srv.client()
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "x", "password": "y"}),
        )
        .await
        .err(403, "M_FORBIDDEN");

    let srv = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "token"),
        ("PLEXUS_REGISTRATION_TOKEN", "let-me-in"),
    ])
    .await;
    let c = srv.client();
    let first = c
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "tok", "password": "pw-123456"}),
        )
        .await;
    assert_eq!(first.status, 401);
    assert_eq!(
        first.body["flows"][0]["stages"][0],
        "m.login.registration_token"
    );
    let session = first.body["session"].as_str().unwrap();
    let bad = c
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "tok", "password": "pw-123456",
            "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
        )
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["errcode"], "M_FORBIDDEN");
    // A dummy stage is not one of this server's flows.
    let dummy = c
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "tok", "password": "pw-123456",
            "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(dummy.status, 401);
    let ok = c
        .post("/_matrix/client/v3/register", json!({"username": "tok", "password": "pw-123456",
            "auth": {"type": "m.login.registration_token", "token": "let-me-in", "session": session}}))
        .await;
    assert_eq!(ok.ok()["user_id"], "@tok:localhost");
}

#[tokio::test]
async fn discovery_endpoints() {
    let srv = Server::start().await;
    let c = srv.client();
    let v = c.get("/_matrix/client/versions").await;
    for version in ["v1.12", "v1.13", "v1.14", "v1.15"] {
        assert!(
            v.ok()["versions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == version),
            "{version}: {}",
            v.body
        );
    }
    // v1.15 offers OAuth 2.0 as an alternative to the legacy API; Plexus serves the legacy one
    // and says so with the spec's 404.
    c.get("/_matrix/client/v1/auth_metadata")
        .await
        .err(404, "M_UNRECOGNIZED");
    // No third-party identifiers: an empty list, and the v1.13 error for adding one.
    let alice = srv.user("alice").await;
    assert_eq!(
        alice.get("/_matrix/client/v3/account/3pid").await.ok(),
        &serde_json::json!({"threepids": []})
    );
    // requestToken takes no access token (spec).
    for medium in ["email", "msisdn"] {
        c.post(
            &format!("/_matrix/client/v3/account/3pid/{medium}/requestToken"),
            serde_json::json!({"client_secret": "s", "email": "a@b.c", "send_attempt": 1}),
        )
        .await
        .err(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    }
    let wk = c.get("/.well-known/matrix/client").await;
    assert!(wk.ok()["m.homeserver"]["base_url"]
        .as_str()
        .unwrap()
        .starts_with("http"));
    c.get("/_matrix/client/v3/capabilities")
        .await
        .err(401, "M_MISSING_TOKEN");
    let alice = srv.user("cap").await;
    let caps = alice.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(
        caps.ok()["capabilities"]["m.room_versions"]["default"],
        "12"
    );
    assert_eq!(
        caps.body["capabilities"]["m.room_versions"]["available"]["1"],
        "stable"
    );
}

#[tokio::test]
async fn profile_fields_can_be_deleted() {
    let srv = Server::start().await;
    let alice = srv.user("delia").await;
    let path = "/_matrix/client/v3/profile/@delia:localhost/avatar_url";
    alice
        .put(path, json!({"avatar_url": "mxc://localhost/x"}))
        .await
        .ok();
    alice.delete(path, json!({})).await.ok();
    alice.get(path).await.err(404, "M_NOT_FOUND");
    alice
        .get("/_matrix/client/v3/profile/@delia:localhost/m.tz")
        .await
        .err(404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn openid_tokens_and_registration_token_validity() {
    let srv = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "token"),
        ("PLEXUS_REGISTRATION_TOKEN", "open-sesame"),
    ])
    .await;
    let c = srv.client();
    let v = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(
        c.get(&format!("{v}?token=open-sesame")).await.ok()["valid"],
        true
    );
    assert_eq!(c.get(&format!("{v}?token=nope")).await.ok()["valid"], false);
    // No token at all is a missing parameter (the spec's M_MISSING_PARAM); before requests
    // were read through ruma's types this said M_INVALID_PARAM.
    c.get(v).await.err(400, "M_MISSING_PARAM");
    let open = Server::start().await;
    open.client()
        .get(&format!("{v}?token=x"))
        .await
        .err(403, "M_FORBIDDEN");

    let alice = open.user("alice").await;
    let r = alice
        .post(
            "/_matrix/client/v3/user/@alice:localhost/openid/request_token",
            json!({}),
        )
        .await;
    assert!(r.ok()["access_token"].as_str().unwrap().len() >= 20);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["matrix_server_name"], "localhost");
    assert!(r.body["expires_in"].as_u64().unwrap() > 0);
    alice
        .post(
            "/_matrix/client/v3/user/@bob:localhost/openid/request_token",
            json!({}),
        )
        .await
        .err(403, "M_FORBIDDEN");
}
