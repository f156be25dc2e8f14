//! An appservice for tests: serves the Application Service API on loopback, records every
//! transaction, can be told to fail, and makes users and aliases on query like a bridge does.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
};

use serde_json::{json, Value};

use crate::loopback_http::{serve, HttpRequest};

#[derive(Default)]
struct Shared {
    /// Every transaction attempt: (txn id, body, status answered).
    attempts: Mutex<Vec<(String, Value, u16)>>,
    requests: Mutex<Vec<HttpRequest>>,
    /// Status for transactions and pings.
    status: AtomicU16,
    /// Where to register users asked about.
    homeserver: Mutex<Option<String>>,
    /// Users and alias localparts this appservice makes when asked.
    makes: Mutex<BTreeSet<String>>,
    protocol: Mutex<Option<Value>>,
}

pub struct FakeAppservice {
    pub id: String,
    pub port: u16,
    pub as_token: String,
    pub hs_token: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAppservice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAppservice {
    pub async fn start(id: &str) -> FakeAppservice {
        let shared = Arc::new(Shared::default());
        shared.status.store(200, Ordering::SeqCst);
        let hs_token = format!("hs-{id}-{}", crate::free_port());
        let as_token = format!("as-{id}-{}", crate::free_port());
        let (s, expected, asx) = (shared.clone(), hs_token.clone(), as_token.clone());
        let (port, task) = serve(Arc::new(move |req| {
            let (s, expected, asx) = (s.clone(), expected.clone(), asx.clone());
            Box::pin(async move { answer(&s, &expected, &asx, req).await })
        }))
        .await;
        FakeAppservice {
            id: id.to_owned(),
            port,
            as_token,
            hs_token,
            shared,
            task,
        }
    }

    /// A registration file for this appservice: users `@<prefix>*`, aliases `#<prefix>*`
    /// (both exclusive) on `server`, with `extra` YAML lines appended.
    pub fn registration(&self, prefix: &str, server: &str, extra: &str) -> String {
        let server = server.replace('.', "\\\\.");
        format!(
            "id: {id}\nurl: \"http://127.0.0.1:{port}\"\nas_token: \"{a}\"\nhs_token: \"{h}\"\n\
             sender_localpart: {id}_bot\nrate_limited: false\nnamespaces:\n  users:\n    - \
             exclusive: true\n      regex: \"@{prefix}.*:{server}\"\n  aliases:\n    - \
             exclusive: true\n      regex: \"#{prefix}.*:{server}\"\n{extra}\n",
            id = self.id,
            port = self.port,
            a = self.as_token,
            h = self.hs_token,
        )
    }

    pub fn set_homeserver(&self, base: &str) {
        *self.shared.homeserver.lock().unwrap() = Some(base.to_owned());
    }

    /// Make this user localpart or alias localpart when the homeserver asks about it.
    pub fn makes(&self, localpart: &str) {
        self.shared
            .makes
            .lock()
            .unwrap()
            .insert(localpart.to_owned());
    }

    pub fn set_protocol(&self, meta: Value) {
        *self.shared.protocol.lock().unwrap() = Some(meta);
    }

    /// Answer later transactions and pings with this status.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Every transaction attempt: (txn id, body, status answered), oldest first.
    pub fn attempts(&self) -> Vec<(String, Value, u16)> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// Transactions this appservice accepted, oldest first.
    pub fn accepted(&self) -> Vec<(String, Value)> {
        self.attempts()
            .into_iter()
            .filter(|(_, _, s)| *s == 200)
            .map(|(t, b, _)| (t, b))
            .collect()
    }

    /// Timeline events of accepted transactions, in the order received (a transaction the
    /// appservice saw twice counts once, as a real one de-duplicates by id).
    pub fn events(&self) -> Vec<Value> {
        let mut seen = BTreeSet::new();
        let mut out = vec![];
        for (txn, body) in self.accepted() {
            if seen.insert(txn) {
                out.extend(body["events"].as_array().cloned().unwrap_or_default());
            }
        }
        out
    }

    /// Everything of one kind of data in accepted transactions (`ephemeral`, ...).
    pub fn field(&self, key: &str) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .flat_map(|(_, b)| match &b[key] {
                Value::Array(a) => a.clone(),
                Value::Null => vec![],
                other => vec![other.clone()],
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

/// Answer a user or alias query: for a localpart it makes, make it on the homeserver first
/// (`POST /_matrix/client/v3/<endpoint>` with `body`) and answer 200, as bridges do.
async fn make(
    s: &Shared,
    hs: Option<String>,
    as_token: &str,
    local: &str,
    endpoint: &str,
    body: Value,
) -> (u16, Value) {
    let wanted = s.makes.lock().unwrap().contains(local);
    if let (true, Some(hs)) = (wanted, hs) {
        let r = reqwest::Client::new()
            .post(format!("{hs}/_matrix/client/v3/{endpoint}"))
            .bearer_auth(as_token)
            .json(&body)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return (200, json!({}));
        }
    }
    (
        404,
        json!({ "errcode": "M_NOT_FOUND", "error": "not made here" }),
    )
}

async fn answer(s: &Shared, hs_token: &str, as_token: &str, req: HttpRequest) -> (u16, Value) {
    s.requests.lock().unwrap().push(req.clone());
    if req.authorization.as_deref() != Some(&format!("Bearer {hs_token}")) {
        return (
            403,
            json!({ "errcode": "M_FORBIDDEN", "error": "bad hs_token" }),
        );
    }
    let path = req.path().to_owned();
    let status = s.status.load(Ordering::SeqCst);
    if let Some(txn) = path.strip_prefix("/_matrix/app/v1/transactions/") {
        s.attempts
            .lock()
            .unwrap()
            .push((txn.to_owned(), req.body.clone(), status));
        return (status, json!({}));
    }
    if path == "/_matrix/app/v1/ping" {
        return (status, json!({}));
    }
    let hs = s.homeserver.lock().unwrap().clone();
    let decoded = path
        .replace("%40", "@")
        .replace("%3A", ":")
        .replace("%23", "#");
    if let Some(user) = decoded.strip_prefix("/_matrix/app/v1/users/") {
        let local = user.trim_start_matches('@').split(':').next().unwrap_or("");
        let body = json!({ "type": "m.login.application_service", "username": local });
        return make(s, hs, as_token, local, "register", body).await;
    }
    if let Some(alias) = decoded.strip_prefix("/_matrix/app/v1/rooms/") {
        let local = alias
            .trim_start_matches('#')
            .split(':')
            .next()
            .unwrap_or("");
        let body = json!({ "room_alias_name": local });
        return make(s, hs, as_token, local, "createRoom", body).await;
    }
    if let Some(rest) = path.strip_prefix("/_matrix/app/v1/thirdparty/") {
        if rest.starts_with("protocol/") {
            if let Some(p) = s.protocol.lock().unwrap().clone() {
                return (200, p);
            }
        }
        if rest.starts_with("user") {
            return (
                200,
                json!([{ "userid": "@x_alice:remote", "protocol": "fake", "fields": {
                    "query": req.target.split('?').nth(1).unwrap_or("") } }]),
            );
        }
        return (404, json!({ "errcode": "M_NOT_FOUND", "error": "nothing" }));
    }
    (
        404,
        json!({ "errcode": "M_UNRECOGNIZED", "error": "unknown" }),
    )
}
