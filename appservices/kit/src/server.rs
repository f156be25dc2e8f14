//! The HTTP side the homeserver calls: transactions, ping, user and alias queries, third-party
//! lookups. An axum [`Router`] the appservice serves (alone, or merged into its own).
//!
//! Every route checks the `hs_token` (the `Authorization: Bearer` header, or the legacy
//! `access_token` query parameter): none given answers 401 `M_UNAUTHORIZED`, a wrong one 403
//! `M_FORBIDDEN`, as the Application Service API asks.
//!
//! Transactions are handled one at a time in arrival order (homeservers send them that way),
//! and the [`Handler`] is awaited before the 200: an error answers 500 and the homeserver sends
//! the same transaction again later, so a failed bridge action is retried, not lost. A handler
//! must therefore not wait for a later transaction (the homeserver only sends it after this one
//! is answered).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header::AUTHORIZATION, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::transaction::Transaction;
use crate::txn_store::TxnStore;

/// Transactions can be large (Synapse batches up to 100 events of up to 64 KiB, plus
/// ephemeral and to-device data); axum's default 2 MiB would refuse some.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the appservice does with what the homeserver sends. Only [`Handler::transaction`] is
/// required; every query defaults to "not found" (404 `M_NOT_FOUND`).
///
/// Implementations may write the methods as `async fn`; the futures must be `Send` (they run on
/// the server's tasks).
pub trait Handler: Send + Sync + 'static {
    /// Handle one transaction. Called once per transaction id (a retried one is answered
    /// without calling again), unless this returns an error: then the homeserver retries it and
    /// it is handled again.
    fn transaction(
        &self,
        txn: Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// `GET /users/{userId}`: should this namespaced user exist? To say yes, create it first
    /// (e.g. `Intent::ensure_registered`), then answer `true`.
    fn query_user(&self, user_id: &str) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = user_id;
        async { Ok(false) }
    }

    /// `GET /rooms/{roomAlias}`: should this namespaced alias exist? To say yes, create the
    /// room and the alias first, then answer `true`.
    fn query_alias(&self, alias: &str) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        let _ = alias;
        async { Ok(false) }
    }

    /// `POST /ping`: the homeserver checks it can reach the appservice. Answered `{}` after
    /// this returns.
    fn ping(
        &self,
        transaction_id: Option<&str>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = transaction_id;
        async { Ok(()) }
    }

    /// `GET /thirdparty/protocol/{protocol}`: the protocol's metadata, `None` if unknown.
    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Value>, HandlerError>> + Send {
        let _ = protocol;
        async { Ok(None) }
    }

    /// `GET /thirdparty/user/{protocol}?fields...`: matching third-party users (empty: 404).
    fn thirdparty_users(
        &self,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }

    /// `GET /thirdparty/location/{protocol}?fields...`: matching portal rooms (empty: 404).
    fn thirdparty_locations(
        &self,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        let _ = (protocol, fields);
        async { Ok(Vec::new()) }
    }

    /// `GET /thirdparty/user?userid=`: the third-party users behind a Matrix user (empty: 404).
    fn thirdparty_users_by_id(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        let _ = user_id;
        async { Ok(Vec::new()) }
    }

    /// `GET /thirdparty/location?alias=`: the third-party locations behind an alias (empty:
    /// 404).
    fn thirdparty_locations_by_alias(
        &self,
        alias: &str,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        let _ = alias;
        async { Ok(Vec::new()) }
    }
}

/// So the appservice can keep a handle on its handler (to read its state) and give the router
/// another.
impl<T: Handler> Handler for Arc<T> {
    fn transaction(
        &self,
        txn: Transaction,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).transaction(txn)
    }
    fn query_user(&self, user_id: &str) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_user(user_id)
    }
    fn query_alias(&self, alias: &str) -> impl Future<Output = Result<bool, HandlerError>> + Send {
        (**self).query_alias(alias)
    }
    fn ping(
        &self,
        transaction_id: Option<&str>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).ping(transaction_id)
    }
    fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> impl Future<Output = Result<Option<Value>, HandlerError>> + Send {
        (**self).thirdparty_protocol(protocol)
    }
    fn thirdparty_users(
        &self,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        (**self).thirdparty_users(protocol, fields)
    }
    fn thirdparty_locations(
        &self,
        protocol: &str,
        fields: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        (**self).thirdparty_locations(protocol, fields)
    }
    fn thirdparty_users_by_id(
        &self,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        (**self).thirdparty_users_by_id(user_id)
    }
    fn thirdparty_locations_by_alias(
        &self,
        alias: &str,
    ) -> impl Future<Output = Result<Vec<Value>, HandlerError>> + Send {
        (**self).thirdparty_locations_by_alias(alias)
    }
}

struct Shared<H> {
    handler: H,
    store: TxnStore,
    /// Serialises transactions: in order, and a retry racing its original waits for it.
    txn_lock: tokio::sync::Mutex<()>,
}

/// The router for `hs_token`, handing what arrives to `handler`, remembering handled
/// transactions in `store`. Serves the `/_matrix/app/v1` paths and the legacy unprefixed ones
/// (`/transactions`, `/users`, `/rooms`, `/_matrix/app/unstable/thirdparty`) that older
/// homeservers call. Has no fallback, so it can be merged into the appservice's own router;
/// [`unrecognized`] is the spec's answer for other paths.
pub fn router<H: Handler>(hs_token: &str, handler: H, store: TxnStore) -> Router {
    let shared = Arc::new(Shared {
        handler,
        store,
        txn_lock: tokio::sync::Mutex::new(()),
    });
    let token: Arc<str> = hs_token.into();
    let mut r = Router::new();
    for base in ["/_matrix/app/v1", ""] {
        r = r
            .route(
                &format!("{base}/transactions/{{txn_id}}"),
                put(transaction::<H>),
            )
            .route(&format!("{base}/users/{{*user_id}}"), get(query_user::<H>))
            .route(&format!("{base}/rooms/{{*alias}}"), get(query_alias::<H>));
    }
    for base in ["/_matrix/app/v1", "/_matrix/app/unstable"] {
        r = r
            .route(
                &format!("{base}/thirdparty/protocol/{{protocol}}"),
                get(tp_protocol::<H>),
            )
            .route(
                &format!("{base}/thirdparty/user/{{protocol}}"),
                get(tp_users::<H>),
            )
            .route(
                &format!("{base}/thirdparty/location/{{protocol}}"),
                get(tp_locations::<H>),
            )
            .route(&format!("{base}/thirdparty/user"), get(tp_users_by_id::<H>))
            .route(
                &format!("{base}/thirdparty/location"),
                get(tp_locations_by_alias::<H>),
            );
    }
    r.route("/_matrix/app/v1/ping", post(ping::<H>))
        .route_layer(middleware::from_fn_with_state(token, check_token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// The answer to a path the appservice does not serve: 404 `M_UNRECOGNIZED`, which tells a
/// homeserver trying a newer path to fall back to the legacy one.
pub async fn unrecognized() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "unrecognized request",
    )
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": message}))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

fn failed(what: &str, e: HandlerError) -> Response {
    tracing::error!(error = %e, "{what} failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "M_UNKNOWN",
        &format!("{what} failed"),
    )
}

/// Compare without an early exit, so the time taken does not reveal how much of a guess was
/// right.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

async fn check_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let from_header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let given = from_header.or_else(|| {
        query_pairs(req.uri().query())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v)
    });
    match given {
        None => error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "no hs_token given",
        ),
        Some(t) if !same_token(&t, &token) => {
            error(StatusCode::FORBIDDEN, "M_FORBIDDEN", "wrong hs_token")
        }
        Some(_) => next.run(req).await,
    }
}

async fn transaction<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(txn_id): Path<String>,
    body: Bytes,
) -> Response {
    let _in_order = s.txn_lock.lock().await;
    if s.store.contains(&txn_id).await {
        tracing::debug!(txn_id, "transaction already handled");
        return ok(json!({}));
    }
    let txn = match Transaction::parse(&txn_id, &body) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(txn_id, error = %e, "malformed transaction");
            return error(StatusCode::BAD_REQUEST, e.errcode(), &e.to_string());
        }
    };
    if let Err(e) = s.handler.transaction(txn).await {
        return failed("handling the transaction", e);
    }
    // Handled: the homeserver must hear 200 even if this cannot be written down (it is
    // remembered in memory regardless); answering 500 would make it send the events again.
    if let Err(e) = s.store.insert(&txn_id).await {
        tracing::error!(txn_id, error = %e, "could not record the transaction as handled");
    }
    ok(json!({}))
}

async fn ping<H: Handler>(State(s): State<Arc<Shared<H>>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let txn_id = body.get("transaction_id").and_then(Value::as_str);
    match s.handler.ping(txn_id).await {
        Ok(()) => ok(json!({})),
        Err(e) => failed("ping", e),
    }
}

fn found(yes: bool, what: &str) -> Response {
    if yes {
        ok(json!({}))
    } else {
        error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            &format!("no such {what}"),
        )
    }
}

fn list(found: Vec<Value>) -> Response {
    if found.is_empty() {
        error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no matches")
    } else {
        ok(Value::Array(found))
    }
}

async fn query_user<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(user_id): Path<String>,
) -> Response {
    match s.handler.query_user(&user_id).await {
        Ok(yes) => found(yes, "user"),
        Err(e) => failed("the user query", e),
    }
}

async fn query_alias<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(alias): Path<String>,
) -> Response {
    match s.handler.query_alias(&alias).await {
        Ok(yes) => found(yes, "alias"),
        Err(e) => failed("the alias query", e),
    }
}

async fn tp_protocol<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(protocol): Path<String>,
) -> Response {
    match s.handler.thirdparty_protocol(&protocol).await {
        Ok(Some(v)) => ok(v),
        Ok(None) => found(false, "protocol"),
        Err(e) => failed("the protocol query", e),
    }
}

/// The lookup fields: the query string without the legacy token.
fn fields(query: Option<&str>) -> BTreeMap<String, String> {
    query_pairs(query)
        .filter(|(k, _)| k != "access_token")
        .collect()
}

async fn tp_users<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(protocol): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    match s
        .handler
        .thirdparty_users(&protocol, &fields(q.as_deref()))
        .await
    {
        Ok(v) => list(v),
        Err(e) => failed("the third-party user query", e),
    }
}

async fn tp_locations<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    Path(protocol): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    match s
        .handler
        .thirdparty_locations(&protocol, &fields(q.as_deref()))
        .await
    {
        Ok(v) => list(v),
        Err(e) => failed("the third-party location query", e),
    }
}

fn param(q: Option<&str>, name: &str) -> Option<String> {
    query_pairs(q).find(|(k, _)| k == name).map(|(_, v)| v)
}

fn missing(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "M_MISSING_PARAM",
        &format!("`{name}` is required"),
    )
}

async fn tp_users_by_id<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(user_id) = param(q.as_deref(), "userid") else {
        return missing("userid");
    };
    match s.handler.thirdparty_users_by_id(&user_id).await {
        Ok(v) => list(v),
        Err(e) => failed("the third-party user query", e),
    }
}

async fn tp_locations_by_alias<H: Handler>(
    State(s): State<Arc<Shared<H>>>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(alias) = param(q.as_deref(), "alias") else {
        return missing("alias");
    };
    match s.handler.thirdparty_locations_by_alias(&alias).await {
        Ok(v) => list(v),
        Err(e) => failed("the third-party location query", e),
    }
}
