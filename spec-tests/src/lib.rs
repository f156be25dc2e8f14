//! Black-box test harness: real `plexus` processes on free loopback ports with temporary data
//! dirs, and a small JSON client that returns exactly what a Matrix client would see.

pub mod fake_appservice;
pub mod keys;
pub mod loopback_http;
pub mod peer;
pub mod push_gateway;
pub mod synapse;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// The `plexus` binary: `PLEXUS_BIN`, else the one built next to this test executable.
pub fn plexus_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLEXUS_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/plexus
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("plexus");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p plexus` first or set PLEXUS_BIN",
        bin.display()
    );
    bin
}

/// A loopback port nobody listens on, for a server the test starts. Picked below the kernel's
/// ephemeral range (32768 and up on Linux): a port the OS hands out for `:0` may be taken by
/// an outgoing connection (a peer's, a client's) between the pick and the server's bind, which
/// made parallel federation tests fail with "address already in use". Each call in a process
/// takes the next port, from an offset that differs between processes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

/// A running `plexus` process. Killed on drop; its data dir lives as long as the value.
pub struct Server {
    pub base: String,
    pub port: u16,
    /// Federation port and server name (`127.0.0.1:<fed_port>`) of a federating server.
    pub fed_port: Option<u16>,
    pub server_name: String,
    pub data: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// A server with open registration.
    pub async fn start() -> Server {
        Self::start_with(&[("PLEXUS_REGISTRATION", "open")]).await
    }

    /// A server that federates on loopback: named `127.0.0.1:<port>`, TLS with a generated
    /// self-signed certificate, peers' certificates not verified.
    pub async fn federated() -> Server {
        Self::federated_with(&[]).await
    }

    pub async fn federated_with(extra: &[(&str, &str)]) -> Server {
        let fed = free_port();
        let name = format!("127.0.0.1:{fed}");
        let mut env = vec![
            ("PLEXUS_REGISTRATION", "open"),
            ("PLEXUS_SERVER_NAME", name.as_str()),
            ("PLEXUS_FEDERATION_LISTEN", name.as_str()),
            ("PLEXUS_FEDERATION_VERIFY_TLS", "false"),
            ("PLEXUS_FEDERATION_ALLOW_LOOPBACK", "true"),
        ];
        env.extend_from_slice(extra);
        Self::start_with(&env).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = data.path().join("plexus.log");
        let fed_port = env
            .iter()
            .find(|(k, _)| *k == "PLEXUS_FEDERATION_LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok());
        let server_name = env
            .iter()
            .find(|(k, _)| *k == "PLEXUS_SERVER_NAME")
            .map_or("localhost".to_owned(), |(_, v)| v.to_string());
        let mut s = Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            fed_port,
            server_name,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log,
            data,
            child: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = self.plexus_command();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("spawn plexus"));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("{}/_matrix/client/versions", self.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("plexus exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "plexus did not come up:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident and peak resident memory of the process, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> (u64, u64) {
        let pid = self.pid().expect("server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then wait up to `secs` for the process to exit; its exit status, or `None`
    /// if it is still running then.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `kill -9`: no shutdown, no final flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL then start again on the same port and data dir.
    pub async fn crash_and_restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// Start again after [`Self::kill9`], on the same port and data dir.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// The server's data dir (`PLEXUS_DATA_DIR`).
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// `plexus` with this server's settings.
    fn plexus_command(&self) -> Command {
        let mut cmd = Command::new(plexus_bin());
        cmd.env("PLEXUS_DATA_DIR", self.data_dir())
            .env("PLEXUS_CLIENT_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("PLEXUS_SERVER_NAME", "localhost")
            .env("PLEXUS_LOG", "warn,plexus=info")
            // As Synapse's rc_* limits are raised for tests: a test that is about rate limits
            // turns them on (PLEXUS_RATE_LIMITS=on).
            .env("PLEXUS_RATE_LIMITS", "off");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run a `plexus` subcommand with this server's settings (stop the server first).
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        self.plexus_command()
            .args(args)
            .output()
            .expect("run plexus")
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::new(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    /// Register a fresh user (dummy auth) and return a logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        let mut c = self.client();
        c.register(name, "password-1234").await;
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a response looked like: status and JSON body (`Null` if not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Resp {
    pub fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success, got {}: {}",
            self.status,
            self.body
        );
        &self.body
    }

    /// Assert a Matrix error.
    pub fn err(&self, status: u16, errcode: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        assert_eq!(
            self.body["errcode"], errcode,
            "errcode; body: {}",
            self.body
        );
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
}

/// A response read as bytes, for media: status, headers, body.
#[derive(Debug)]
pub struct Bytes {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Bytes {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as a Matrix error, asserted.
    pub fn err(&self, status: u16, errcode: &str) {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        Resp {
            status: self.status,
            body,
        }
        .err(status, errcode)
    }

    /// The body, asserting success.
    pub fn ok(&self) -> &[u8] {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        &self.body
    }
}

impl Client {
    /// `POST /_matrix/media/v3/upload`; the `mxc://` URI without its scheme (`server/id`).
    pub async fn upload(
        &self,
        data: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> String {
        let r = self.upload_raw(data, Some(content_type), filename).await;
        let body: Value = serde_json::from_slice(r.ok()).expect("upload answer is JSON");
        body["content_uri"]
            .as_str()
            .and_then(|u| u.strip_prefix("mxc://"))
            .unwrap_or_else(|| panic!("no content_uri in {body}"))
            .to_owned()
    }

    pub async fn upload_raw(
        &self,
        data: Vec<u8>,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Bytes {
        let mut path = "/_matrix/media/v3/upload".to_owned();
        if let Some(f) = filename {
            path.push_str(&format!("?filename={}", enc(f)));
        }
        let mut headers = vec![];
        if let Some(t) = content_type {
            headers.push(("content-type", t.to_owned()));
        }
        self.bytes("POST", &path, &headers, Some(data.into())).await
    }

    /// Any request whose answer is read as bytes.
    pub async fn bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<reqwest::Body>,
    ) -> Bytes {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, url).timeout(Duration::from_secs(60));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Bytes {
            status,
            headers,
            body,
        }
    }

    /// `GET` of a media path, read as bytes.
    pub async fn media(&self, path: &str) -> Bytes {
        self.bytes("GET", path, &[], None).await
    }

    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        let url = format!("{}{}", self.base, path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, url).timeout(Duration::from_secs(60));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.raw("POST", path, Some(body.to_string().into_bytes()))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.raw("PUT", path, Some(body.to_string().into_bytes()))
            .await
    }
    pub async fn delete(&self, path: &str, body: Value) -> Resp {
        self.raw("DELETE", path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn register(&mut self, name: &str, password: &str) -> Value {
        let first = self
            .post(
                "/_matrix/client/v3/register",
                json!({"username": name, "password": password}),
            )
            .await;
        assert_eq!(
            first.status, 401,
            "register should start UIA: {}",
            first.body
        );
        let session = first.body["session"].as_str().expect("session").to_owned();
        let r = self
            .post(
                "/_matrix/client/v3/register",
                json!({"username": name, "password": password, "auth": {"type": "m.login.dummy", "session": session}}),
            )
            .await;
        let body = r.ok().clone();
        self.adopt(&body);
        body
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Resp {
        let r = self
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password}),
            )
            .await;
        if r.status == 200 {
            self.adopt(&r.body.clone());
        }
        r
    }

    fn adopt(&mut self, body: &Value) {
        self.token = body["access_token"].as_str().map(str::to_owned);
        self.user_id = body["user_id"].as_str().unwrap_or_default().to_owned();
        self.device_id = body["device_id"].as_str().unwrap_or_default().to_owned();
    }

    pub async fn create_room(&self, body: Value) -> String {
        let r = self.post("/_matrix/client/v3/createRoom", body).await;
        r.ok()["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send_message(room, json!({"msgtype": "m.text", "body": body}))
            .await
    }

    /// Send an `m.room.message` with this content; its event id.
    pub async fn send_message(&self, room: &str, content: Value) -> String {
        let txn = format!("t{}", rand_suffix());
        let r = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                content,
            )
            .await;
        r.ok()["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn join(&self, room: &str) -> Resp {
        self.post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({}))
            .await
    }

    /// Join through another server named in `via` (a room this server may not be in).
    pub async fn join_via(&self, room: &str, server: &str) -> Resp {
        self.post(
            &format!("/_matrix/client/v3/join/{}?via={}", enc(room), enc(server)),
            json!({}),
        )
        .await
    }

    /// Start (or stop) typing in a room, with a 30 s timeout.
    pub async fn typing(&self, room: &str, typing: bool) -> Resp {
        self.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(room),
                enc(&self.user_id)
            ),
            json!({"typing": typing, "timeout": 30000}),
        )
        .await
    }

    pub async fn sync(&self, query: &str) -> Value {
        self.get(&format!("/_matrix/client/v3/sync?{query}"))
            .await
            .ok()
            .clone()
    }
}

/// Poll `check` every 100 ms until it gives a value or `secs` pass (then panic with `what`).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Client {
    /// Page `/messages` backwards in pages of `limit` from `from` (a sync's `prev_batch`; `None`:
    /// the newest event) until an answer has no `end`: every event, newest first, and the `end`
    /// tokens seen.
    pub async fn page_back(
        &self,
        room: &str,
        limit: usize,
        mut from: Option<String>,
    ) -> (Vec<Value>, Vec<String>) {
        let mut events = vec![];
        let mut tokens = vec![];
        for _ in 0..100 {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
                enc(room)
            );
            if let Some(f) = &from {
                path.push_str(&format!("&from={}", enc(f)));
            }
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.body);
            events.extend(r.body["chunk"].as_array().into_iter().flatten().cloned());
            match r.body["end"].as_str() {
                Some(e) => {
                    tokens.push(e.to_owned());
                    from = Some(e.to_owned());
                }
                None => return (events, tokens),
            }
        }
        panic!("pagination never ended");
    }

    /// Bodies of the latest `m.room.message` events in a room, oldest first (via `/messages`).
    pub async fn recent_bodies(&self, room: &str) -> Vec<String> {
        let r = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(room)
            ))
            .await;
        if r.status != 200 {
            return vec![];
        }
        let mut out: Vec<String> = r.body["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        out.reverse();
        out
    }

    /// `GET /rooms/{room}/event/{id}`.
    pub async fn event(&self, room: &str, id: &str) -> Resp {
        self.get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(id)
        ))
        .await
    }

    /// The content of a state event, if the caller may see it.
    pub async fn state(&self, room: &str, kind: &str, key: &str) -> Option<Value> {
        let r = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                enc(room),
                enc(key)
            ))
            .await;
        (r.status == 200).then_some(r.body)
    }

    /// `PUT` a state event (`key` may be empty).
    pub async fn put_state(&self, room: &str, kind: &str, key: &str, content: Value) -> Resp {
        self.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                enc(room),
                enc(key)
            ),
            content,
        )
        .await
    }

    /// `user`'s membership in the room as this client sees it.
    pub async fn membership(&self, room: &str, user: &str) -> Option<String> {
        self.state(room, "m.room.member", user)
            .await
            .and_then(|c| c["membership"].as_str().map(str::to_owned))
    }

    pub async fn joined_members(&self, room: &str) -> Vec<String> {
        let r = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                enc(room)
            ))
            .await;
        let mut v: Vec<String> = r.body["joined"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Percent-encode a path segment (room ids, aliases, event ids contain `!#$:`).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}{}", std::process::id(), n)
}

/// A sync response's `next_batch` token.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Timeline events of a room in a sync response.
pub fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub fn bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A PNG of `w`×`h` with a gradient (alpha channel, so thumbnails of it stay PNG).
pub fn test_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x % 251) as u8, (y % 241) as u8, 77, 255])
    }));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode png");
    out
}

/// A JPEG photograph stand-in of `w`×`h`.
pub fn test_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 200) as u8, (y % 200) as u8, 50])
    }));
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .expect("encode jpeg");
    out
}

/// Width and height of an image answer.
pub fn image_dims(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("an image");
    (img.width(), img.height())
}
