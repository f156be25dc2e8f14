//! A push gateway for tests: answers `POST /_matrix/push/v1/notify` on loopback, records every
//! request, and can be told to fail or to reject pushkeys.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc, Mutex,
};

use serde_json::{json, Value};

use crate::loopback_http::{serve, HttpRequest};

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    /// The status this gateway answered.
    pub status: u16,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Request>>,
    rejected: Mutex<Vec<String>>,
    status: AtomicU16,
}

pub struct Gateway {
    /// The full notify URL, for a pusher's `data.url`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    pub async fn start() -> Gateway {
        let shared = Arc::new(Shared::default());
        shared.status.store(200, Ordering::SeqCst);
        let s = shared.clone();
        let (port, task) = serve(Arc::new(move |req| {
            let out = answer(&s, req);
            Box::pin(async move { out })
        }))
        .await;
        Gateway {
            url: format!("http://127.0.0.1:{port}/_matrix/push/v1/notify"),
            shared,
            task,
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The notifications this gateway accepted (answered 200), oldest first.
    pub fn accepted(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body["notification"].clone())
            .collect()
    }

    /// Answer every later request with this status.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// List this pushkey as rejected in every later answer.
    pub fn reject(&self, pushkey: &str) {
        self.shared
            .rejected
            .lock()
            .unwrap()
            .push(pushkey.to_owned());
    }
}

fn answer(shared: &Shared, req: HttpRequest) -> (u16, Value) {
    let status = shared.status.load(Ordering::SeqCst);
    shared.requests.lock().unwrap().push(Request {
        path: req.target,
        status,
        body: req.body,
    });
    if status == 200 {
        (
            status,
            json!({ "rejected": *shared.rejected.lock().unwrap() }),
        )
    } else {
        (status, json!({ "error": "gateway told to fail" }))
    }
}
