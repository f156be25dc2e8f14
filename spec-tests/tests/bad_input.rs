//! Bad input gets the spec's error with the right status, never a panic, and changes nothing.

use plexus_spec_tests::{enc, Server};
use serde_json::json;

#[tokio::test]
async fn malformed_bodies() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let send = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/a",
        enc(&room)
    );
    alice
        .raw("PUT", &send, Some(b"{not json".to_vec()))
        .await
        .err(400, "M_NOT_JSON");
    alice
        .raw("PUT", &send, Some(b"[1,2]".to_vec()))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .raw(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(b"{\"invite\": \"x\"}".to_vec()),
        )
        .await
        .err(400, "M_BAD_JSON");
    alice
        .raw(
            "POST",
            "/_matrix/client/v3/login",
            Some(b"\xff\xfe".to_vec()),
        )
        .await
        .err(400, "M_NOT_JSON");
    // Nothing was sent by the failed requests.
    let m = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(&room)
        ))
        .await;
    assert!(m.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["type"] != "m.room.message"));
}

#[tokio::test]
async fn too_large() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let big = "x".repeat(70_000);
    let r = alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            json!({"body": big}),
        )
        .await;
    r.err(413, "M_TOO_LARGE");
    // Under the body limit but over the event limit once signed and wrapped.
    let nearly = "y".repeat(65_400);
    let r = alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big2",
                enc(&room)
            ),
            json!({"body": nearly}),
        )
        .await;
    r.err(413, "M_TOO_LARGE");
    let m = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(&room)
        ))
        .await;
    assert!(m.ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["type"] != "m.room.message"));
}

#[tokio::test]
async fn tokens() {
    let srv = Server::start().await;
    let c = srv.client();
    c.get("/_matrix/client/v3/account/whoami")
        .await
        .err(401, "M_MISSING_TOKEN");
    let mut bad = srv.client();
    bad.token = Some("nope".into());
    let r = bad.get("/_matrix/client/v3/account/whoami").await;
    r.err(401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.body["soft_logout"], false);
    let alice = srv.user("alice").await;
    // The deprecated query parameter works too.
    let q = format!(
        "/_matrix/client/v3/account/whoami?access_token={}",
        alice.token.clone().unwrap()
    );
    assert_eq!(c.get(&q).await.ok()["user_id"], "@alice:localhost");
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let srv = Server::start().await;
    let c = srv.client();
    c.get("/_matrix/client/v3/no/such/thing")
        .await
        .err(404, "M_UNRECOGNIZED");
    c.get("/_matrix/federation/v1/version")
        .await
        .err(404, "M_UNRECOGNIZED");
    c.raw("DELETE", "/_matrix/client/v3/login", None)
        .await
        .err(405, "M_UNRECOGNIZED");
    c.raw("PUT", "/_matrix/client/v3/sync", None)
        .await
        .err(405, "M_UNRECOGNIZED");
    // CORS preflight for browsers.
    let r = c.raw("OPTIONS", "/_matrix/client/v3/login", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_ids() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .get("/_matrix/client/v3/rooms/not-a-room/state")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": "bob"}),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/not-an-event",
            enc(&room)
        ))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/profile/not-a-user")
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"room_alias_name": "a:b"}),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    let r = alice
        .get("/_matrix/client/v3/rooms/!unknown:localhost/state")
        .await;
    r.err(403, "M_FORBIDDEN");
}

/// Endpoints read through ruma's request types: the same errors for the same mistakes, at
/// every path ruma's metadata lists for them.
#[tokio::test]
async fn typed_endpoints_refuse_alike_at_every_path() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let room = alice.create_room(json!({})).await;
    // An endpoint that reads nothing from its body still refuses a body that is not JSON.
    alice
        .raw("POST", "/_matrix/client/v3/logout", Some(b"nope".to_vec()))
        .await
        .err(400, "M_NOT_JSON");
    alice
        .raw("POST", "/_matrix/client/v3/logout", Some(b"[]".to_vec()))
        .await
        .err(400, "M_BAD_JSON");
    // A required query parameter that is absent, and one that is malformed.
    let c = srv.client();
    c.get("/_matrix/client/v3/register/available")
        .await
        .err(400, "M_MISSING_PARAM");
    alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=x&dir=f",
            enc(&room)
        ))
        .await
        .err(400, "M_INVALID_PARAM");
    // A malformed user id in a body is a bad parameter, as it is in a path.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            json!({"user_id": "bob"}),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    // The r0 twin of a v3 path, and an unstable path from ruma's metadata, answer alike.
    let who = alice.get("/_matrix/client/r0/account/whoami").await;
    assert_eq!(who.ok()["user_id"], "@alice:localhost");
    let aliases = alice
        .get(&format!(
            "/_matrix/client/unstable/org.matrix.msc2432/rooms/{}/aliases",
            enc(&room)
        ))
        .await;
    assert_eq!(aliases.ok()["aliases"], json!([]));
    // The token is checked before the body: no token and a bad body is M_MISSING_TOKEN.
    c.raw("POST", "/_matrix/client/v3/logout", Some(b"nope".to_vec()))
        .await
        .err(401, "M_MISSING_TOKEN");
}
