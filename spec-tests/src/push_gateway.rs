//! A push gateway for tests: answers `POST /_matrix/push/v1/notify` on loopback, records every
//! request, and can be told to fail or to reject pushkeys.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc, Mutex,
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        shared.status.store(200, Ordering::SeqCst);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
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

async fn serve(conn: tokio::net::TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = conn.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let status = shared.status.load(Ordering::SeqCst);
        shared.requests.lock().unwrap().push(Request {
            path,
            status,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let answer = if status == 200 {
            json!({ "rejected": *shared.rejected.lock().unwrap() }).to_string()
        } else {
            json!({ "error": "gateway told to fail" }).to_string()
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        if write.write_all(head.as_bytes()).await.is_err()
            || write.write_all(answer.as_bytes()).await.is_err()
        {
            return;
        }
    }
}
