//! One end-to-end scenario for the kit against a real homeserver, written against the standard
//! APIs only, so the same function runs against Synapse (tests/synapse.rs) and Plexus.
//!
//! The caller binds the appservice's listener first (its port goes into the registration),
//! writes the registration with [`write_registration`], starts the homeserver with it, then
//! calls [`run`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plexus_appservice::{
    registration, AppService, Command, Error, Handler, HandlerError, RetryPolicy, Transaction,
    TxnStore,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The appservice's own user.
pub const BOT_LOCALPART: &str = "kitbot";
/// Ghosts are `@_kit_*`.
pub const GHOST_PREFIX: &str = "_kit_";

/// How long anything that goes through the homeserver may take.
const WAIT: Duration = Duration::from_secs(30);

/// Where the scenario runs.
pub struct Homeserver<'a> {
    /// Client API base, e.g. `http://127.0.0.1:8008`.
    pub base_url: &'a str,
    /// The server's name, the part after `:` in its user ids.
    pub server_name: &'a str,
    /// The registration file the homeserver was started with.
    pub registration: &'a Path,
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}{:x}{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// Write the scenario's registration (JSON, which YAML readers take too): the appservice at
/// `http://127.0.0.1:{as_port}`, fresh tokens, exclusive `@_kit_*` users and `#_kit_*`
/// aliases on `server_name`, ephemeral events under both names, MSC3202 on.
pub fn write_registration(path: &Path, as_port: u16, server_name: &str) -> std::io::Result<()> {
    let server = regex_escape(server_name);
    let reg = json!({
        "id": "plexus-kit-scenario",
        "url": format!("http://127.0.0.1:{as_port}"),
        "as_token": format!("as_{}", unique()),
        "hs_token": format!("hs_{}", unique()),
        "sender_localpart": BOT_LOCALPART,
        "rate_limited": false,
        "receive_ephemeral": true,
        "de.sorunome.msc2409.push_ephemeral": true,
        "org.matrix.msc3202": true,
        "protocols": ["kitproto"],
        "namespaces": {
            "users": [{"exclusive": true, "regex": format!("@{GHOST_PREFIX}.*:{server}")}],
            "aliases": [{"exclusive": true, "regex": format!("#{GHOST_PREFIX}.*:{server}")}],
            "rooms": [],
        },
    });
    std::fs::write(path, serde_json::to_string_pretty(&reg)?)
}

/// The scenario's appservice: records what arrives, has its bot accept invites, and answers
/// `!echo` commands as the bot.
struct Bridge {
    service: AppService,
    txns: Mutex<Vec<Transaction>>,
    pings: Mutex<Vec<Option<String>>>,
}

impl Bridge {
    fn events(&self) -> Vec<Value> {
        let txns = self.txns.lock().unwrap_or_else(|e| e.into_inner());
        txns.iter().flat_map(|t| t.events.clone()).collect()
    }

    fn ephemeral(&self) -> Vec<Value> {
        let txns = self.txns.lock().unwrap_or_else(|e| e.into_inner());
        txns.iter().flat_map(|t| t.ephemeral.clone()).collect()
    }
}

impl Handler for Bridge {
    async fn transaction(&self, txn: Transaction) -> Result<(), HandlerError> {
        let bot = self.service.bot_user_id();
        for ev in &txn.events {
            let room = ev["room_id"].as_str().unwrap_or_default();
            if ev["type"] == "m.room.member"
                && ev["state_key"] == bot.as_str()
                && ev["content"]["membership"] == "invite"
            {
                self.service.bot().join(room).await?;
            }
            let sender = ev["sender"].as_str().unwrap_or_default();
            if self.service.may_act_as(sender) {
                continue; // never answer ourselves
            }
            if let Some(cmd) = Command::from_event(ev, "!") {
                if cmd.name == "echo" {
                    self.service
                        .bot()
                        .send_notice(room, &cmd.args.join(" "))
                        .await?;
                }
            }
        }
        self.txns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(txn);
        Ok(())
    }

    async fn ping(&self, transaction_id: Option<&str>) -> Result<(), HandlerError> {
        self.pings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(transaction_id.map(str::to_owned));
        Ok(())
    }
}

/// A plain Client-Server user, with nothing from the kit, to see what the appservice did.
struct User {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
}

/// Percent-encode one path segment.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl User {
    /// Register with the dummy auth stage (open registration), following the session if the
    /// server first asks for one.
    async fn register(base: &str, localpart: &str) -> User {
        let http = reqwest::Client::new();
        let url = format!("{base}/_matrix/client/v3/register");
        let mut body = json!({
            "username": localpart,
            "password": "kit-scenario-password",
            "auth": {"type": "m.login.dummy"},
        });
        for _ in 0..2 {
            let resp = http.post(&url).json(&body).send().await.expect("register");
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if status == 200 {
                return User {
                    http,
                    base: base.to_owned(),
                    token: v["access_token"].as_str().expect("access_token").to_owned(),
                    user_id: v["user_id"].as_str().expect("user_id").to_owned(),
                };
            }
            assert_eq!(status, 401, "register {localpart}: {v}");
            body["auth"]["session"] = v["session"].clone();
        }
        panic!("could not register {localpart}");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    async fn send(&self, room: &str, content: Value) -> String {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room),
            unique()
        );
        let v = self.ok(reqwest::Method::PUT, &path, Some(content)).await;
        v["event_id"].as_str().expect("event_id").to_owned()
    }

    /// The room's latest messages, newest first.
    async fn messages(&self, room: &str) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            enc(room)
        );
        let v = self.ok(reqwest::Method::GET, &path, None).await;
        v["chunk"].as_array().cloned().unwrap_or_default()
    }

    async fn membership(&self, room: &str, user: &str) -> Option<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(room),
            enc(user)
        );
        let (s, v) = self.call(reqwest::Method::GET, &path, None).await;
        (s == 200)
            .then(|| v["membership"].as_str().map(str::to_owned))
            .flatten()
    }
}

/// Poll `check` until it gives a value, or fail with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn from_with_body<'a>(msgs: &'a [Value], sender: &str, body: &str) -> Option<&'a Value> {
    msgs.iter().find(|m| {
        m["type"] == "m.room.message" && m["sender"] == sender && m["content"]["body"] == body
    })
}

/// Run the scenario. Panics (with what failed) on the first thing that is not as expected.
pub async fn run(hs: Homeserver<'_>, listener: TcpListener) {
    let reg = registration::load(hs.registration).expect("registration");
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let service = AppService::with_retry_policy(reg, hs.base_url, hs.server_name, policy)
        .expect("appservice");
    let bridge = Arc::new(Bridge {
        service: service.clone(),
        txns: Mutex::new(Vec::new()),
        pings: Mutex::new(Vec::new()),
    });
    let server = {
        let (service, bridge) = (service.clone(), bridge.clone());
        tokio::spawn(async move { service.serve(listener, bridge, TxnStore::default()).await })
    };
    let bot = service.bot_user_id();

    // Ping: the homeserver reaches us with the right hs_token, we reach it with the as_token.
    let ms = service.ping().await.expect("ping");
    assert!(ms < 30_000, "ping took {ms} ms");
    assert_eq!(
        bridge.pings.lock().unwrap_or_else(|e| e.into_inner()).len(),
        1,
        "the homeserver's ping reached the handler"
    );

    // A ghost comes into existence and names itself.
    let ghost_id = format!("@{GHOST_PREFIX}ghost{}:{}", unique(), hs.server_name);
    let ghost = service.intent(&ghost_id).expect("ghost intent");
    ghost.ensure_registered().await.expect("register ghost");
    ghost
        .ensure_registered()
        .await
        .expect("second time is a no-op");
    ghost
        .set_displayname("Kit Ghost")
        .await
        .expect("displayname");

    // Acting outside the namespace fails here, before any request.
    let user = User::register(hs.base_url, &format!("kituser{}", unique())).await;
    for outside in [
        user.user_id.as_str(),
        &format!("@{GHOST_PREFIX}x:elsewhere.example"),
    ] {
        assert!(
            matches!(service.intent(outside), Err(Error::NotInNamespace { .. })),
            "{outside} refused locally"
        );
    }

    let profile = user
        .ok(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&ghost_id)),
            None,
        )
        .await;
    assert_eq!(profile["displayname"], "Kit Ghost");

    // A normal user makes a room, gives the ghost enough power to set the topic (by editing
    // the power levels the room got, which works whether or not the room version lists the
    // creator in them), and invites the ghost: the invite reaches the appservice in a
    // transaction.
    let room = user
        .ok(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(json!({"preset": "private_chat", "name": "kit scenario"})),
        )
        .await["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    let pl_path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.power_levels",
        enc(&room)
    );
    let mut levels = user.ok(reqwest::Method::GET, &pl_path, None).await;
    levels["users"][&ghost_id] = json!(50);
    user.ok(reqwest::Method::PUT, &pl_path, Some(levels)).await;
    user.ok(
        reqwest::Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        Some(json!({"user_id": ghost_id})),
    )
    .await;
    eventually("the ghost's invite in a transaction", || async {
        bridge
            .events()
            .iter()
            .any(|e| {
                e["type"] == "m.room.member"
                    && e["room_id"] == room.as_str()
                    && e["state_key"] == ghost_id.as_str()
                    && e["content"]["membership"] == "invite"
            })
            .then_some(())
    })
    .await;

    // The ghost joins and talks; the user reads it.
    assert_eq!(ghost.join(&room).await.expect("ghost joins"), room);
    let said = ghost
        .send_text(&room, "hello from the ghost")
        .await
        .expect("ghost sends");
    let msgs = user.messages(&room).await;
    let seen = from_with_body(&msgs, &ghost_id, "hello from the ghost").expect("user sees it");
    assert_eq!(seen["event_id"], said.as_str());

    // State as the ghost: set, read back, and a missing one is None.
    ghost
        .set_state(&room, "m.room.topic", "", json!({"topic": "kit topic"}))
        .await
        .expect("set topic");
    let topic = ghost.state(&room, "m.room.topic", "").await.expect("topic");
    assert_eq!(topic.expect("topic present")["topic"], "kit topic");
    assert_eq!(
        ghost
            .state(&room, "org.plexus.kit.nothing", "")
            .await
            .expect("missing state"),
        None
    );

    // An alias in the appservice's namespace, resolved.
    let alias = format!("#{GHOST_PREFIX}room{}:{}", unique(), hs.server_name);
    assert_eq!(ghost.resolve_alias(&alias).await.expect("resolve"), None);
    ghost.create_alias(&alias, &room).await.expect("alias");
    let resolved = ghost
        .resolve_alias(&alias)
        .await
        .expect("resolve")
        .expect("alias exists");
    assert_eq!(resolved.room_id, room);

    // The bot is invited, accepts from its handler, and answers `!echo` (not in a notice).
    user.ok(
        reqwest::Method::POST,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        Some(json!({"user_id": bot})),
    )
    .await;
    eventually("the bot to join", || async {
        (user.membership(&room, &bot).await.as_deref() == Some("join")).then_some(())
    })
    .await;
    user.send(
        &room,
        json!({"msgtype": "m.notice", "body": "!echo not for bots"}),
    )
    .await;
    user.send(
        &room,
        json!({"msgtype": "m.text", "body": "!echo hello world"}),
    )
    .await;
    let msgs = eventually("the bot's echo", || async {
        let msgs = user.messages(&room).await;
        from_with_body(&msgs, &bot, "hello world")
            .is_some()
            .then_some(msgs)
    })
    .await;
    assert!(
        from_with_body(&msgs, &bot, "not for bots").is_none(),
        "the bot answered a notice"
    );

    // Ephemeral data reaches the appservice: the user's read receipt on the ghost's message.
    user.ok(
        reqwest::Method::POST,
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&said)
        ),
        Some(json!({})),
    )
    .await;
    eventually("the receipt as ephemeral data", || async {
        bridge
            .ephemeral()
            .iter()
            .any(|e| {
                e["type"] == "m.receipt" && e["content"][&said]["m.read"][&user.user_id].is_object()
            })
            .then_some(())
    })
    .await;

    // Refusals come back typed, with the homeserver's errcode.
    let err = ghost
        .join(&format!("!nosuchroom{}:{}", unique(), hs.server_name))
        .await
        .expect_err("joining a room that does not exist");
    let status = err.status().expect("a Matrix error");
    assert!((400..500).contains(&status), "{err}");
    assert!(err.errcode().is_some_and(|c| c.starts_with("M_")), "{err}");

    // Media: upload as the ghost, read back as the user.
    let mxc = ghost
        .upload(b"kit upload".to_vec(), "text/plain", Some("kit.txt"))
        .await
        .expect("upload");
    let (server_name, media_id) = mxc
        .strip_prefix("mxc://")
        .and_then(|r| r.split_once('/'))
        .expect("mxc://server/id");
    let resp = user
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{}",
            hs.base_url,
            enc(server_name),
            enc(media_id)
        ))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.bytes().await.expect("body")[..], b"kit upload");

    // The appservice's own room directory for its network: publish, then withdraw.
    service
        .set_room_directory_visibility("kitnet", &room, true)
        .await
        .expect("publish in the appservice directory");
    service
        .set_room_directory_visibility("kitnet", &room, false)
        .await
        .expect("withdraw from the appservice directory");

    // The bot leaves; the appservice is still serving.
    service.bot().leave(&room).await.expect("bot leaves");
    assert!(!server.is_finished(), "the appservice endpoint stopped");
    server.abort();
}
