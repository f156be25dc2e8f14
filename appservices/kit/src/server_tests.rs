//! The router driven in-process with `oneshot`: token checks, idempotency, retries after a
//! failed handler, the queries' defaults and answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{router, unrecognized, Handler, HandlerError, Transaction, TxnStore};

const TOKEN: &str = "hs-secret";

#[derive(Default)]
struct Recorder {
    txns: Mutex<Vec<Transaction>>,
    fail_next: AtomicBool,
    pings: Mutex<Vec<Option<String>>>,
}

impl Handler for Recorder {
    async fn transaction(&self, txn: Transaction) -> Result<(), HandlerError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(HandlerError::msg("bridge down"));
        }
        self.txns.lock().unwrap().push(txn);
        Ok(())
    }
    async fn ping(&self, transaction_id: Option<&str>) -> Result<(), HandlerError> {
        self.pings
            .lock()
            .unwrap()
            .push(transaction_id.map(str::to_owned));
        Ok(())
    }
}

/// Answers every query, to see the arguments arrive.
struct Knows;

impl Handler for Knows {
    async fn transaction(&self, _: Transaction) -> Result<(), HandlerError> {
        Ok(())
    }
    async fn query_user(&self, user_id: &str) -> Result<bool, HandlerError> {
        if user_id == "@_x_boom:hs" {
            return Err(HandlerError::msg("db down"));
        }
        Ok(user_id == "@_x_a/b:hs")
    }
    async fn query_alias(&self, alias: &str) -> Result<bool, HandlerError> {
        Ok(alias == "#_x_room:hs")
    }
    async fn thirdparty_protocol(&self, protocol: &str) -> Result<Option<Value>, HandlerError> {
        Ok((protocol == "gitx").then(|| json!({"instances": []})))
    }
    async fn thirdparty_users(
        &self,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, HandlerError> {
        Ok(vec![
            json!({"protocol": protocol, "fields": fields, "userid": "@_x_a:hs"}),
        ])
    }
    async fn thirdparty_locations_by_alias(&self, alias: &str) -> Result<Vec<Value>, HandlerError> {
        Ok(vec![
            json!({"alias": alias, "protocol": "gitx", "fields": {}}),
        ])
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn recorder() -> (Arc<Recorder>, Router) {
    let h = Arc::new(Recorder::default());
    (h.clone(), router(TOKEN, h, TxnStore::in_memory(100)))
}

#[tokio::test]
async fn hs_token_is_checked_on_every_route() {
    let (h, app) = recorder();
    for (method, uri) in [
        ("PUT", "/_matrix/app/v1/transactions/1"),
        ("PUT", "/transactions/1"),
        ("POST", "/_matrix/app/v1/ping"),
        ("GET", "/_matrix/app/v1/users/@a:hs"),
        ("GET", "/_matrix/app/v1/rooms/%23a:hs"),
        ("GET", "/_matrix/app/v1/thirdparty/protocol/x"),
        ("GET", "/_matrix/app/v1/thirdparty/user/x"),
        ("GET", "/_matrix/app/v1/thirdparty/location/x"),
        ("GET", "/_matrix/app/v1/thirdparty/user?userid=@a:hs"),
        ("GET", "/_matrix/app/v1/thirdparty/location?alias=%23a:hs"),
    ] {
        let (s, b) = call(&app, method, uri, None, "{}").await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (401, Some("M_UNAUTHORIZED")),
            "{uri}"
        );
        let (s, b) = call(&app, method, uri, Some("wrong"), "{}").await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{uri}"
        );
        // A longer or shorter guess is as wrong.
        let (s, _) = call(&app, method, uri, Some("hs-secret-and-more"), "{}").await;
        assert_eq!(s, 403, "{uri}");
    }
    assert!(h.txns.lock().unwrap().is_empty());

    // The legacy query parameter, and a case-insensitive scheme.
    let (s, _) = call(
        &app,
        "PUT",
        "/transactions/1?access_token=hs-secret",
        None,
        "{}",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, "PUT", "/transactions/2?access_token=nope", None, "{}").await;
    assert_eq!(s, 403);
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("PUT")
                .uri("/_matrix/app/v1/transactions/3")
                .header("authorization", "bearer hs-secret")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A non-Bearer scheme is no token at all.
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method("PUT")
                .uri("/_matrix/app/v1/transactions/4")
                .header("authorization", "Basic aHM6c2VjcmV0")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.txns.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_transaction_is_handled_once_and_retried_after_a_failure() {
    let (h, app) = recorder();
    let body = json!({
        "events": [{"type": "m.room.message", "event_id": "$1", "room_id": "!r:hs"}],
        "de.sorunome.msc2409.ephemeral": [{"type": "m.typing", "room_id": "!r:hs"}],
    })
    .to_string();
    let uri = "/_matrix/app/v1/transactions/t1";
    assert_eq!(
        call(&app, "PUT", uri, Some(TOKEN), &body).await,
        (200, json!({}))
    );
    // The homeserver lost our 200 and sends it again: answered, not handled again. The legacy
    // path shares the memory.
    assert_eq!(
        call(&app, "PUT", uri, Some(TOKEN), &body).await,
        (200, json!({}))
    );
    assert_eq!(
        call(&app, "PUT", "/transactions/t1", Some(TOKEN), &body)
            .await
            .0,
        200
    );
    {
        let txns = h.txns.lock().unwrap();
        assert_eq!(txns.len(), 1);
        assert_eq!(txns[0].txn_id, "t1");
        assert_eq!(txns[0].events[0]["event_id"], "$1");
        assert_eq!(txns[0].ephemeral[0]["type"], "m.typing");
    }

    // The handler fails: 500, and the retry is handled (not taken as done).
    h.fail_next.store(true, Ordering::SeqCst);
    let uri = "/_matrix/app/v1/transactions/t2";
    let (s, b) = call(&app, "PUT", uri, Some(TOKEN), &body).await;
    assert_eq!((s, b["errcode"].as_str()), (500, Some("M_UNKNOWN")));
    assert_eq!(h.txns.lock().unwrap().len(), 1);
    assert_eq!(call(&app, "PUT", uri, Some(TOKEN), &body).await.0, 200);
    assert_eq!(h.txns.lock().unwrap().len(), 2);
    assert_eq!(call(&app, "PUT", uri, Some(TOKEN), &body).await.0, 200);
    assert_eq!(h.txns.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn malformed_transactions_are_400_and_not_remembered() {
    let (h, app) = recorder();
    let uri = "/_matrix/app/v1/transactions/bad";
    let (s, b) = call(&app, "PUT", uri, Some(TOKEN), "{not json").await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (s, b) = call(&app, "PUT", uri, Some(TOKEN), r#"{"events": 3}"#).await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    assert_eq!(
        call(&app, "PUT", uri, Some(TOKEN), r#"{"events": []}"#)
            .await
            .0,
        200
    );
    assert_eq!(h.txns.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_retries_of_one_transaction_are_handled_once() {
    let (h, app) = recorder();
    let calls = (0..8).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            call(
                &app,
                "PUT",
                "/_matrix/app/v1/transactions/same",
                Some(TOKEN),
                "{}",
            )
            .await
        })
    });
    for c in calls {
        assert_eq!(c.await.unwrap().0, 200);
    }
    assert_eq!(h.txns.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn handled_ids_survive_a_restart_with_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("txns.log");
    let count = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl Handler for Count {
        async fn transaction(&self, _: Transaction) -> Result<(), HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    for _restart in 0..2 {
        let store = TxnStore::open(&path, 100).await.unwrap();
        let app = router(TOKEN, Count(count.clone()), store);
        let (s, _) = call(
            &app,
            "PUT",
            "/_matrix/app/v1/transactions/42",
            Some(TOKEN),
            "{}",
        )
        .await;
        assert_eq!(s, 200);
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ping_answers_empty_and_passes_the_transaction_id() {
    let (h, app) = recorder();
    let r = call(
        &app,
        "POST",
        "/_matrix/app/v1/ping",
        Some(TOKEN),
        r#"{"transaction_id":"p1"}"#,
    )
    .await;
    assert_eq!(r, (200, json!({})));
    assert_eq!(
        call(&app, "POST", "/_matrix/app/v1/ping", Some(TOKEN), "")
            .await
            .0,
        200
    );
    assert_eq!(*h.pings.lock().unwrap(), vec![Some("p1".to_owned()), None]);
}

#[tokio::test]
async fn queries_default_to_not_found() {
    let (_, app) = recorder();
    for uri in [
        "/_matrix/app/v1/users/%40a%3Ahs",
        "/users/@a:hs",
        "/_matrix/app/v1/rooms/%23a%3Ahs",
        "/rooms/%23a:hs",
        "/_matrix/app/v1/thirdparty/protocol/irc",
        "/_matrix/app/v1/thirdparty/user/irc?nick=x",
        "/_matrix/app/v1/thirdparty/location/irc",
        "/_matrix/app/v1/thirdparty/user?userid=@a:hs",
        "/_matrix/app/v1/thirdparty/location?alias=%23a:hs",
        "/_matrix/app/unstable/thirdparty/protocol/irc",
    ] {
        let (s, b) = call(&app, "GET", uri, Some(TOKEN), "").await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{uri}"
        );
    }
    let (s, b) = call(
        &app,
        "GET",
        "/_matrix/app/v1/thirdparty/user",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
}

#[tokio::test]
async fn queries_reach_the_handler_decoded() {
    let app = router(TOKEN, Knows, TxnStore::default());
    // Synapse quotes the id but leaves `/` alone.
    assert_eq!(
        call(
            &app,
            "GET",
            "/_matrix/app/v1/users/%40_x_a/b%3Ahs",
            Some(TOKEN),
            ""
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/_matrix/app/v1/users/@_x_c:hs",
            Some(TOKEN),
            ""
        )
        .await
        .0,
        404
    );
    let (s, b) = call(
        &app,
        "GET",
        "/_matrix/app/v1/users/@_x_boom:hs",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!((s, b["errcode"].as_str()), (500, Some("M_UNKNOWN")));
    assert_eq!(
        call(
            &app,
            "GET",
            "/_matrix/app/v1/rooms/%23_x_room%3Ahs",
            Some(TOKEN),
            ""
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &app,
            "GET",
            "/_matrix/app/v1/thirdparty/protocol/gitx",
            Some(TOKEN),
            ""
        )
        .await,
        (200, json!({"instances": []}))
    );
    let (s, b) = call(
        &app,
        "GET",
        "/_matrix/app/v1/thirdparty/user/gitx?login=al%20ice&access_token=hs-secret",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!([{"protocol": "gitx", "fields": {"login": "al ice"}, "userid": "@_x_a:hs"}])
    );
    let (s, b) = call(
        &app,
        "GET",
        "/_matrix/app/v1/thirdparty/location?alias=%23r%3Ahs",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!((s, b[0]["alias"].as_str()), (200, Some("#r:hs")));
}

#[tokio::test]
async fn other_paths_can_be_answered_unrecognized() {
    let (_, app) = recorder();
    let app = app.fallback(unrecognized);
    let (s, b) = call(&app, "GET", "/_matrix/app/v1/nothing", Some(TOKEN), "").await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    // Merging into the appservice's own router works (no fallback of ours to clash).
    let (_, mine) = recorder();
    let merged = Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .merge(mine);
    let resp = merged
        .oneshot(
            Request::builder()
                .uri("/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
