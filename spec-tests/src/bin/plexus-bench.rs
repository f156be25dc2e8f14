//! `plexus-bench`: drives any homeserver through the plain client-server API and prints figures,
//! so the very same run measures Plexus and Synapse side by side.
//!
//! Loops are bounded by the chosen scale, targets must be loopback addresses, and every response
//! is checked: errors are counted per scenario and printed, and any error makes the exit status 1.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(
    name = "plexus-bench",
    about = "Client-server load tool for Plexus and Synapse"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Scale {
    /// Seconds: a smoke run for CI (too small for meaningful figures).
    Tiny,
    /// A few minutes.
    Small,
    /// Under 30 minutes.
    Full,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario against one running homeserver.
    Run {
        /// Client API base URL, e.g. http://127.0.0.1:8008 (loopback only).
        #[arg(long)]
        base: String,
        #[arg(long, value_enum, default_value = "small")]
        scale: Scale,
        /// PID of the server process, for RSS figures.
        #[arg(long)]
        pid: Option<u32>,
        /// Data directory of the server, for disk figures.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Use this registration token (m.login.registration_token) instead of m.login.dummy.
        #[arg(long)]
        registration_token: Option<String>,
        /// Shell command run after each scenario, with its name in `PLEXUS_BENCH_PHASE`
        /// (spec-tests/bench/instructions.sh dumps callgrind's counts per scenario with it).
        #[arg(long)]
        phase_hook: Option<String>,
    },
    /// Start Plexus and Synapse, run the same scenarios against each, print one table.
    Compare {
        #[arg(long, value_enum, default_value = "small")]
        scale: Scale,
        /// Directory for Synapse's venv and data (see spec-tests/synapse/synapse.sh).
        #[arg(long, default_value = "target/synapse")]
        synapse_dir: PathBuf,
        /// Synapse database: sqlite or postgres.
        #[arg(long, default_value = "sqlite")]
        synapse_db: String,
    },
}

/// How much of each scenario to run.
#[derive(Clone, Copy)]
struct Sizes {
    register_seq: usize,
    register_conc: usize,
    sends: usize,
    wake_rounds: usize,
    init_rooms: usize,
    init_events: usize,
    joins: usize,
    page_events: usize,
}

impl Scale {
    fn sizes(self) -> Sizes {
        match self {
            Scale::Tiny => Sizes {
                register_seq: 4,
                register_conc: 16,
                sends: 200,
                wake_rounds: 20,
                init_rooms: 5,
                init_events: 10,
                joins: 20,
                page_events: 300,
            },
            Scale::Small => Sizes {
                register_seq: 30,
                register_conc: 64,
                sends: 2_000,
                wake_rounds: 200,
                init_rooms: 50,
                init_events: 100,
                joins: 200,
                page_events: 5_000,
            },
            Scale::Full => Sizes {
                register_seq: 100,
                register_conc: 256,
                sends: 10_000,
                wake_rounds: 500,
                init_rooms: 50,
                init_events: 100,
                joins: 1_000,
                page_events: 5_000,
            },
        }
    }
}

/// One figure: name, value, unit, and whether higher is better.
#[derive(Clone, Debug)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    higher_is_better: bool,
}

fn fig(name: impl Into<String>, value: f64, unit: &'static str, higher_is_better: bool) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit,
        higher_is_better,
    }
}

#[derive(Clone)]
struct User {
    token: String,
}

/// The client side of a run against one server, with error accounting.
struct Bench {
    http: reqwest::Client,
    base: String,
    registration_token: Option<String>,
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    run_id: String,
    names: AtomicU64,
    events_created: AtomicU64,
    /// Shell command run after each scenario (`--phase-hook`).
    phase_hook: Option<String>,
}

impl Bench {
    /// Marks the end of a scenario: says so, and runs the phase hook with the scenario's name in
    /// `PLEXUS_BENCH_PHASE` (an instruction counter dumps its counts per scenario this way).
    fn done(&self, phase: &str) {
        eprintln!("  {phase} done");
        let Some(hook) = &self.phase_hook else {
            return;
        };
        // Let background work the scenario caused (indexing, flushes) finish, so that it is
        // counted with this scenario rather than the next.
        std::thread::sleep(Duration::from_secs(5));
        match Command::new("sh")
            .args(["-c", hook])
            .env("PLEXUS_BENCH_PHASE", phase)
            .status()
        {
            Ok(st) if st.success() => {}
            Ok(st) => self.error("phase hook", format!("exited with {st}")),
            Err(e) => self.error("phase hook", e.to_string()),
        }
    }

    fn new(base: &str, registration_token: Option<String>) -> Result<Self, String> {
        check_loopback(base)?;
        let run_id = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        Ok(Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| e.to_string())?,
            base: base.trim_end_matches('/').to_owned(),
            registration_token,
            errors: Mutex::new(BTreeMap::new()),
            run_id,
            names: AtomicU64::new(0),
            events_created: AtomicU64::new(0),
            phase_hook: None,
        })
    }

    fn error(&self, scenario: &str, what: String) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let entry = e.entry(scenario.to_owned()).or_insert((0, what));
        entry.0 += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(n, _)| n)
            .sum()
    }

    /// One request; `Some(body)` on the expected status, otherwise the error is counted.
    async fn call(
        &self,
        scenario: &str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Option<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let v: Value = res.json().await.unwrap_or(Value::Null);
                if status == expect {
                    Some(v)
                } else {
                    self.error(
                        scenario,
                        format!("{method} {path}: {status} {}", v["errcode"]),
                    );
                    None
                }
            }
            Err(e) => {
                self.error(scenario, format!("{method} {path}: {e}"));
                None
            }
        }
    }

    fn fresh_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}x{}",
            self.run_id,
            self.names.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn register(&self, scenario: &str) -> Option<User> {
        let name = self.fresh_name("b");
        let body = json!({ "username": name, "password": "bench-password-1234" });
        let first = self
            .call(
                scenario,
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body.clone()),
                401,
            )
            .await?;
        let session = first["session"].clone();
        let auth = match &self.registration_token {
            Some(t) => {
                json!({ "type": "m.login.registration_token", "token": t, "session": session })
            }
            None => json!({ "type": "m.login.dummy", "session": session }),
        };
        let mut body = body;
        body["auth"] = auth;
        let r = self
            .call(
                scenario,
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
                200,
            )
            .await?;
        Some(User {
            token: r["access_token"].as_str()?.to_owned(),
        })
    }

    async fn users(&self, scenario: &str, n: usize, parallel: usize) -> Vec<User> {
        let sem = Arc::new(Semaphore::new(parallel.max(1)));
        let mut out = Vec::with_capacity(n);
        let futs = (0..n).map(|_| {
            let sem = sem.clone();
            async move {
                let _p = sem.acquire().await.ok()?;
                self.register(scenario).await
            }
        });
        for u in futures_join_all(futs).await.into_iter().flatten() {
            out.push(u);
        }
        out
    }

    async fn create_room(&self, scenario: &str, u: &User, public: bool) -> Option<String> {
        let preset = if public {
            "public_chat"
        } else {
            "private_chat"
        };
        let r = self
            .call(
                scenario,
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&u.token),
                Some(json!({ "preset": preset })),
                200,
            )
            .await?;
        r["room_id"].as_str().map(str::to_owned)
    }

    async fn join(&self, scenario: &str, u: &User, room: &str) -> Option<()> {
        self.call(
            scenario,
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(room)),
            Some(&u.token),
            Some(json!({})),
            200,
        )
        .await
        .map(|_| ())
    }

    async fn send(&self, scenario: &str, u: &User, room: &str, body: &str) -> Option<String> {
        let txn = self.fresh_name("t");
        let r = self
            .call(
                scenario,
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                Some(&u.token),
                Some(json!({ "msgtype": "m.text", "body": body })),
                200,
            )
            .await?;
        self.events_created.fetch_add(1, Ordering::Relaxed);
        r["event_id"].as_str().map(str::to_owned)
    }

    /// Send `n` messages with `in_flight` requests at once, round-robin over `senders`.
    async fn fill(
        &self,
        scenario: &str,
        senders: &[User],
        room: &str,
        n: usize,
        in_flight: usize,
    ) -> Vec<Duration> {
        let sem = Arc::new(Semaphore::new(in_flight));
        let futs = (0..n).map(|i| {
            let sem = sem.clone();
            let u = senders[i % senders.len()].clone();
            async move {
                let _p = sem.acquire().await.ok()?;
                let t = Instant::now();
                self.send(scenario, &u, room, &format!("message {i}"))
                    .await?;
                Some(t.elapsed())
            }
        });
        futures_join_all(futs).await.into_iter().flatten().collect()
    }

    async fn sync(&self, scenario: &str, u: &User, query: &str) -> Option<Value> {
        self.call(
            scenario,
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/sync?{query}"),
            Some(&u.token),
            None,
            200,
        )
        .await
    }
}

/// Run futures concurrently and collect their outputs in order (concurrency is bounded by the
/// semaphores inside them).
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    futures_util::future::join_all(futs).await
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Refuse anything but loopback targets: this tool generates load.
fn check_loopback(base: &str) -> Result<(), String> {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or("base must be http(s)://")?;
    let host = rest.split('/').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("refusing non-loopback target {host}"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Every scenario against one server. Returns the figures; errors are in `bench`.
async fn run_all(
    bench: &Bench,
    sizes: Sizes,
    pid: Option<u32>,
    data_dir: Option<&Path>,
) -> Vec<Figure> {
    let mut figs = vec![];
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = pid.map(|pid| {
        if let Some(idle) = rss_kib(pid) {
            figs.push(fig("RSS idle", idle as f64 / 1024.0, "MiB", false));
        }
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let disk_before = data_dir.map(disk_bytes);
    let events_before = bench.events_created.load(Ordering::Relaxed);

    // register
    let t = Instant::now();
    let seq = bench.users("register", sizes.register_seq, 1).await;
    figs.push(fig(
        "register, sequential",
        seq.len() as f64 / t.elapsed().as_secs_f64(),
        "users/s",
        true,
    ));
    let t = Instant::now();
    let conc = bench.users("register", sizes.register_conc, 16).await;
    figs.push(fig(
        "register, 16 at once",
        conc.len() as f64 / t.elapsed().as_secs_f64(),
        "users/s",
        true,
    ));
    bench.done("register");

    // send: one room, 8 senders, 32 in flight
    let senders: Vec<User> = conc.iter().take(8).cloned().collect();
    if senders.len() == 8 {
        if let Some(room) = bench.create_room("send", &senders[0], true).await {
            for u in &senders[1..] {
                bench.join("send", u, &room).await;
            }
            let t = Instant::now();
            let mut lat = bench.fill("send", &senders, &room, sizes.sends, 32).await;
            let el = t.elapsed().as_secs_f64();
            lat.sort();
            figs.push(fig(
                "send, 8 senders, 32 in flight",
                lat.len() as f64 / el,
                "events/s",
                true,
            ));
            figs.push(fig("send latency p50", percentile(&lat, 0.50), "ms", false));
            figs.push(fig("send latency p95", percentile(&lat, 0.95), "ms", false));
            figs.push(fig("send latency p99", percentile(&lat, 0.99), "ms", false));
        }
    }
    bench.done("send");

    // sync wake-up
    if let (Some(a), Some(b)) = (conc.get(8), conc.get(9)) {
        if let Some(room) = bench.create_room("sync wake-up", a, true).await {
            bench.join("sync wake-up", b, &room).await;
            let mut since = bench
                .sync("sync wake-up", b, "timeout=0")
                .await
                .and_then(|s| s["next_batch"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut lat = vec![];
            for i in 0..sizes.wake_rounds {
                let body = format!("wake {i}");
                let waiter = {
                    let q = format!("since={since}&timeout=30000");
                    let b = b.clone();
                    async move { bench.sync("sync wake-up", &b, &q).await }
                };
                let sender = async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let t = Instant::now();
                    bench.send("sync wake-up", a, &room, &body).await;
                    t
                };
                let (res, t0) = tokio::join!(waiter, sender);
                let mut res = res;
                // The waiting sync may return before the event for other reasons; follow up.
                let mut tries = 0;
                while let Some(r) = &res {
                    since = r["next_batch"].as_str().unwrap_or_default().to_owned();
                    let found = r["rooms"]["join"][&room]["timeline"]["events"]
                        .as_array()
                        .is_some_and(|evs| {
                            evs.iter().any(|e| e["content"]["body"] == body.as_str())
                        });
                    if found {
                        lat.push(t0.elapsed());
                        break;
                    }
                    tries += 1;
                    if tries > 20 {
                        bench.error("sync wake-up", format!("event {body} never arrived"));
                        break;
                    }
                    res = bench
                        .sync("sync wake-up", b, &format!("since={since}&timeout=30000"))
                        .await;
                }
            }
            lat.sort();
            figs.push(fig("sync wake-up p50", percentile(&lat, 0.50), "ms", false));
            figs.push(fig("sync wake-up p99", percentile(&lat, 0.99), "ms", false));
        }
    }
    bench.done("sync wake-up");

    // initial sync of a user in N rooms with M events each
    if let (Some(owner), Some(reader)) = (conc.get(10), conc.get(11)) {
        let mut rooms = vec![];
        for _ in 0..sizes.init_rooms {
            if let Some(r) = bench.create_room("initial sync", owner, true).await {
                bench.join("initial sync", reader, &r).await;
                bench
                    .fill(
                        "initial sync",
                        std::slice::from_ref(owner),
                        &r,
                        sizes.init_events,
                        16,
                    )
                    .await;
                rooms.push(r);
            }
        }
        bench.done("initial sync setup");
        let mut times = vec![];
        for i in 0..3 {
            let t = Instant::now();
            // A different (no-op) timeout each time: Synapse answers identical requests from a
            // response cache, which would measure the cache rather than building the sync.
            if let Some(s) = bench
                .sync("initial sync", reader, &format!("timeout={i}"))
                .await
            {
                let n = s["rooms"]["join"].as_object().map(|o| o.len()).unwrap_or(0);
                if n < rooms.len() {
                    bench.error("initial sync", format!("saw {n} of {} rooms", rooms.len()));
                }
                times.push(t.elapsed());
            }
        }
        times.sort();
        figs.push(fig(
            format!(
                "initial sync, {} rooms x {} events (median of 3)",
                sizes.init_rooms, sizes.init_events
            ),
            percentile(&times, 0.5),
            "ms",
            false,
        ));
    }
    bench.done("initial sync");

    // join scaling
    if let Some(owner) = conc.get(12) {
        let joiners = bench.users("join", sizes.joins, 16).await;
        if let Some(room) = bench.create_room("join", owner, true).await {
            let mut lat = vec![];
            for u in &joiners {
                let t = Instant::now();
                bench.join("join", u, &room).await;
                lat.push(t.elapsed());
            }
            for (lo, hi) in [(1, 10), (11, 100), (101, 500), (501, 1000)] {
                if lat.len() >= lo {
                    let band = &lat[lo - 1..hi.min(lat.len())];
                    let mean = band.iter().map(Duration::as_secs_f64).sum::<f64>()
                        / band.len() as f64
                        * 1000.0;
                    figs.push(fig(
                        format!("join latency, members {lo}-{}", hi.min(lat.len())),
                        mean,
                        "ms",
                        false,
                    ));
                }
            }
        }
    }
    bench.done("join");

    // /messages paging
    if let Some(owner) = conc.get(13) {
        if let Some(room) = bench.create_room("messages", owner, false).await {
            bench
                .fill(
                    "messages",
                    std::slice::from_ref(owner),
                    &room,
                    sizes.page_events,
                    32,
                )
                .await;
            bench.done("messages setup");
            let t = Instant::now();
            let mut pages = 0usize;
            let mut seen = 0usize;
            let mut from: Option<String> = None;
            loop {
                let q = from
                    .as_ref()
                    .map(|f| format!("&from={f}"))
                    .unwrap_or_default();
                let Some(r) = bench
                    .call(
                        "messages",
                        reqwest::Method::GET,
                        &format!(
                            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{q}",
                            enc(&room)
                        ),
                        Some(&owner.token),
                        None,
                        200,
                    )
                    .await
                else {
                    break;
                };
                pages += 1;
                let chunk = r["chunk"].as_array().map(Vec::len).unwrap_or(0);
                seen += r["chunk"]
                    .as_array()
                    .map(|c| c.iter().filter(|e| e["type"] == "m.room.message").count())
                    .unwrap_or(0);
                match r["end"].as_str() {
                    Some(e) if chunk > 0 && pages < 10_000 => from = Some(e.to_owned()),
                    _ => break,
                }
            }
            if seen != sizes.page_events {
                bench.error(
                    "messages",
                    format!("paged {seen} of {} messages", sizes.page_events),
                );
            }
            figs.push(fig(
                format!(
                    "/messages backwards, {} events, 100 a page",
                    sizes.page_events
                ),
                pages as f64 / t.elapsed().as_secs_f64(),
                "pages/s",
                true,
            ));
        }
    }
    bench.done("messages");

    if let Some(s) = sampler {
        s.abort();
        figs.push(fig(
            "RSS peak",
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            "MiB",
            false,
        ));
    }
    if let (Some(dir), Some(before)) = (data_dir, disk_before) {
        let events = bench.events_created.load(Ordering::Relaxed) - events_before;
        let grown = disk_bytes(dir).saturating_sub(before);
        if events > 0 {
            figs.push(fig(
                format!("disk per 100k events (from {events})"),
                grown as f64 / events as f64 * 100_000.0 / 1_048_576.0,
                "MiB",
                false,
            ));
        }
    }
    figs
}

fn print_errors(name: &str, bench: &Bench) {
    let errors = bench.errors.lock().unwrap_or_else(|p| p.into_inner());
    if errors.is_empty() {
        println!("{name}: 0 errors");
    }
    for (scenario, (n, first)) in errors.iter() {
        println!("{name}: {n} errors in {scenario} (first: {first})");
    }
}

fn print_single(figs: &[Figure]) {
    println!("| scenario | value | unit |\n| --- | ---: | --- |");
    for f in figs {
        println!("| {} | {:.1} | {} |", f.name, f.value, f.unit);
    }
}

fn print_compare(p: &[Figure], s: &[Figure]) {
    println!("| scenario | Plexus | Synapse | unit | Plexus advantage |\n| --- | ---: | ---: | --- | ---: |");
    for f in p {
        let other = s.iter().find(|g| g.name == f.name);
        let (sv, ratio) = match other {
            Some(g) => {
                let r = if f.higher_is_better {
                    f.value / g.value
                } else {
                    g.value / f.value
                };
                (format!("{:.1}", g.value), format!("{r:.1}x"))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {:.1} | {sv} | {} | {ratio} |",
            f.name, f.value, f.unit
        );
    }
}

/// A child process that is stopped when dropped.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18999)
}

async fn wait_up(base: &str) -> Result<(), String> {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http
            .get(format!("{base}/_matrix/client/versions"))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{base} did not come up"))
}

fn plexus_bin() -> PathBuf {
    std::env::var("PLEXUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("plexus")))
                .unwrap_or_else(|| "plexus".into())
        })
}

async fn compare(scale: Scale, synapse_dir: &Path, synapse_db: &str) -> Result<bool, String> {
    let sizes = scale.sizes();
    // Plexus
    let pdata = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pport = free_port();
    let child = Command::new(plexus_bin())
        .env("PLEXUS_DATA_DIR", pdata.path())
        .env("PLEXUS_CLIENT_LISTEN", format!("127.0.0.1:{pport}"))
        .env("PLEXUS_REGISTRATION", "open")
        .env("PLEXUS_RATE_LIMITS", "off")
        .env("PLEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start plexus ({}): {e}", plexus_bin().display()))?;
    let ppid = child.id();
    let plexus = Proc(Some(child));
    let pbase = format!("http://127.0.0.1:{pport}");
    wait_up(&pbase).await?;
    eprintln!("plexus ({}) on {pbase}", plexus_bin().display());
    let pb = Bench::new(&pbase, None)?;
    let pfigs = run_all(&pb, sizes, Some(ppid), Some(pdata.path())).await;
    drop(plexus);

    // Synapse
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/synapse/synapse.sh");
    let sport = free_port();
    let status = Command::new("bash")
        .args([
            script,
            "start",
            &synapse_dir.display().to_string(),
            &sport.to_string(),
            synapse_db,
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("synapse.sh start failed".into());
    }
    let sbase = format!("http://127.0.0.1:{sport}");
    let spid: Option<u32> = std::fs::read_to_string(synapse_dir.join("homeserver.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let sb = Bench::new(&sbase, None)?;
    let sdata = synapse_dir.join("data");
    eprintln!("synapse on {sbase}");
    let sfigs = run_all(&sb, sizes, spid, Some(&sdata)).await;
    let _ = Command::new("bash")
        .args([script, "stop", &synapse_dir.display().to_string()])
        .status();

    println!("\n## plexus-bench compare --scale {scale:?}\n");
    print_compare(&pfigs, &sfigs);
    println!();
    print_errors("plexus", &pb);
    print_errors("synapse", &sb);
    Ok(pb.error_count() == 0 && sb.error_count() == 0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ok = match cli.cmd {
        Cmd::Run {
            base,
            scale,
            pid,
            data_dir,
            registration_token,
            phase_hook,
        } => match Bench::new(&base, registration_token) {
            Ok(mut b) => {
                b.phase_hook = phase_hook;
                let figs = run_all(&b, scale.sizes(), pid, data_dir.as_deref()).await;
                println!("\n## plexus-bench run --scale {scale:?} against {base}\n");
                print_single(&figs);
                println!();
                print_errors("server", &b);
                Ok(b.error_count() == 0)
            }
            Err(e) => Err(e),
        },
        Cmd::Compare {
            scale,
            synapse_dir,
            synapse_db,
        } => compare(scale, &synapse_dir, &synapse_db).await,
    };
    match ok {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("plexus-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert!(check_loopback("http://127.0.0.1:8008").is_ok());
        assert!(check_loopback("http://localhost:8008/").is_ok());
        assert!(check_loopback("http://[::1]:8008").is_ok());
        assert!(check_loopback("http://10.0.0.1:8008").is_err());
        assert!(check_loopback("https://matrix.org").is_err());
        assert!(check_loopback("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((percentile(&v, 0.5) - 51.0).abs() < 1.01);
        assert!((percentile(&v, 0.99) - 99.0).abs() < 1.01);
    }
}
