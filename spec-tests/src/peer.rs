//! Speaking as another server: signed federation requests and PDUs built and signed with a
//! server's own key, for hostile-input tests and for benchmarks that feed a homeserver's
//! `/send` directly (Plexus or Synapse alike: peers are addressed by server name, which on
//! the loopback test network is also the address).

use base64::Engine;
use plexus_core::{
    builder::{build_pdu, EventRef, NewEvent, RoomContext},
    room_version,
    ruma::{
        canonical_json::{to_canonical_value, CanonicalJsonValue},
        OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
    },
    signing::ServerKey,
};
use serde_json::{json, Value};

use crate::{enc, rand_suffix, Client, Server};

/// A server the test speaks as: its name and signing key.
pub struct Peer {
    pub name: String,
    pub key: ServerKey,
    pub http: reqwest::Client,
}

impl Peer {
    pub fn x_matrix(
        &self,
        key: &ServerKey,
        dest: &str,
        method: &str,
        uri: &str,
        body: Option<&Value>,
    ) -> String {
        let mut obj =
            json!({ "method": method, "uri": uri, "origin": self.name, "destination": dest });
        if let Some(b) = body {
            obj["content"] = b.clone();
        }
        let canonical = match to_canonical_value(&obj).unwrap() {
            CanonicalJsonValue::Object(o) => serde_json::to_string(&o).unwrap(),
            _ => unreachable!(),
        };
        let sig =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.sign(canonical.as_bytes()));
        format!(
            "X-Matrix origin=\"{}\",destination=\"{dest}\",key=\"{}\",sig=\"{sig}\"",
            self.name,
            key.key_id()
        )
    }

    /// `PUT /send/{txn}` to `to`, signed (for the exact URI sent) with `key` as if for `dest`,
    /// or unsigned when `key` is `None`.
    pub async fn send(
        &self,
        to: &str,
        key: Option<(&ServerKey, &str)>,
        body: &Value,
    ) -> (u16, Value) {
        let path = format!("/_matrix/federation/v1/send/{}", rand_suffix());
        self.put(to, key, &path, body).await
    }

    /// `PUT path` to `to`, signed as [`Peer::send`] describes.
    pub async fn put(
        &self,
        to: &str,
        key: Option<(&ServerKey, &str)>,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        self.signed("PUT", to, key, path, body).await
    }

    /// `POST path` to `to`, correctly signed.
    pub async fn post(&self, to: &str, path: &str, body: &Value) -> (u16, Value) {
        self.signed("POST", to, Some((&self.key, to)), path, body)
            .await
    }

    async fn signed(
        &self,
        method: &str,
        to: &str,
        key: Option<(&ServerKey, &str)>,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let url = format!("https://{to}{path}");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, url).json(body);
        if let Some((key, dest)) = key {
            req = req.header(
                "authorization",
                self.x_matrix(key, dest, method, path, Some(body)),
            );
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` from `to`, correctly signed.
    pub async fn get(&self, to: &str, path: &str) -> (u16, Value) {
        let url = format!("https://{to}{path}");
        let auth = self.x_matrix(&self.key, to, "GET", path, None);
        let r = self
            .http
            .get(url)
            .header("authorization", auth)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `PUT /v2/invite` of `pdu` (federation form) with `state` as invite_room_state.
    pub async fn invite(&self, to: &str, version: &str, pdu: &Value, state: Value) -> (u16, Value) {
        let room = pdu["room_id"].as_str().unwrap();
        let id = event_id_of(version, pdu);
        let path = format!("/_matrix/federation/v2/invite/{}/{}", enc(room), enc(&id));
        let body = json!({ "room_version": version, "event": pdu, "invite_room_state": state });
        self.put(to, Some((&self.key, to)), &path, &body).await
    }

    /// A message from `sender`, signed with this server's key and stamped now.
    pub fn message(
        &self,
        room: &str,
        sender: &str,
        prev: &OwnedEventId,
        auth: &[OwnedEventId],
        body: &str,
    ) -> (String, Value) {
        message_at(
            room,
            sender,
            &self.name,
            &self.key,
            prev,
            auth,
            body,
            now_ms(),
        )
    }

    /// A correctly signed transaction of `pdus`; answers the per-PDU results.
    pub async fn transaction(&self, to: &str, pdus: Vec<Value>) -> Value {
        let body = json!({ "origin": self.name, "origin_server_ts": 1, "pdus": pdus, "edus": [] });
        let (status, res) = self.send(to, Some((&self.key, to)), &body).await;
        assert_eq!(status, 200, "{res}");
        res
    }
}

/// The event id of the latest event and of the state events a message needs.
pub async fn context(
    alice: &Client,
    room: &str,
    sender: &str,
) -> (OwnedEventId, Vec<OwnedEventId>) {
    let m = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
            enc(room)
        ))
        .await;
    let last = m.body["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let st = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)))
        .await;
    let mut auth = vec![];
    for e in st.body.as_array().unwrap() {
        let key = (
            e["type"].as_str().unwrap(),
            e["state_key"].as_str().unwrap(),
        );
        if key == ("m.room.power_levels", "") || key == ("m.room.member", sender) {
            auth.push(OwnedEventId::try_from(e["event_id"].as_str().unwrap()).unwrap());
        }
    }
    (OwnedEventId::try_from(last).unwrap(), auth)
}

/// Wall-clock time in milliseconds, for `origin_server_ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A message PDU in federation form from `sender`, built for `origin` and signed with `key`
/// (which need not be `origin`'s), stamped with `origin_server_ts`.
#[allow(clippy::too_many_arguments)]
pub fn message_at(
    room: &str,
    sender: &str,
    origin: &str,
    key: &ServerKey,
    prev: &OwnedEventId,
    auth: &[OwnedEventId],
    body: &str,
    origin_server_ts: u64,
) -> (String, Value) {
    message_at_depth(
        room,
        sender,
        origin,
        key,
        prev,
        auth,
        body,
        origin_server_ts,
        100,
    )
}

/// [`message_at`] with the `depth` a hostile server chooses.
#[allow(clippy::too_many_arguments)]
pub fn message_at_depth(
    room: &str,
    sender: &str,
    origin: &str,
    key: &ServerKey,
    prev: &OwnedEventId,
    auth: &[OwnedEventId],
    body: &str,
    origin_server_ts: u64,
    depth: u64,
) -> (String, Value) {
    let ev = NewEvent {
        kind: "m.room.message".into(),
        content: json!({ "msgtype": "m.text", "body": body }),
        state_key: None,
        redacts: None,
    };
    let at = At {
        prev: std::slice::from_ref(prev),
        auth,
        origin_server_ts,
        depth,
    };
    pdu_at(room, sender, origin, key, &ev, &at)
}

/// Where in a room's graph a hand-built event goes.
pub struct At<'a> {
    pub prev: &'a [OwnedEventId],
    pub auth: &'a [OwnedEventId],
    pub origin_server_ts: u64,
    pub depth: u64,
}

/// Any event of a version 12 room in federation form, from `sender`, built for `origin` and
/// signed with `key`, at the place in the graph `at` names.
pub fn pdu_at(
    room: &str,
    sender: &str,
    origin: &str,
    key: &ServerKey,
    ev: &NewEvent,
    at: &At,
) -> (String, Value) {
    let rules = room_version::rules(&RoomVersionId::V12).unwrap();
    let sender = UserId::parse(sender).unwrap();
    let origin = <&ServerName>::try_from(origin).unwrap();
    let room_id = RoomId::parse(room).unwrap();
    let refs = |ids: &[OwnedEventId]| {
        ids.iter()
            .map(|i| EventRef {
                event_id: i.clone(),
                sha256: None,
            })
            .collect()
    };
    let ctx = RoomContext {
        room_id: Some(&room_id),
        rules: &rules,
        sender: &sender,
        origin,
        prev_events: refs(at.prev),
        auth_events: refs(at.auth),
        depth: at.depth,
        origin_server_ts: at.origin_server_ts,
    };
    let built = build_pdu(ev, &ctx, key).unwrap();
    let mut v = serde_json::to_value(&built.stored).unwrap();
    v.as_object_mut().unwrap().remove("event_id");
    (built.event_id.to_string(), v)
}

/// B's own signing key in a file, so the test can speak as B.
pub fn key_file() -> (tempfile::TempDir, String, ServerKey) {
    let keydir = tempfile::tempdir().unwrap();
    let key_path = keydir.path().join("b.key");
    let key = ServerKey::generate().unwrap();
    let (version, doc) = key.to_stored();
    std::fs::write(&key_path, format!("{version} {doc}\n")).unwrap();
    let path = key_path.to_str().unwrap().to_owned();
    (keydir, path, key)
}

pub fn peer_for(b: &Server, key: ServerKey) -> Peer {
    Peer {
        name: b.server_name.clone(),
        key,
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap(),
    }
}

pub fn event_id_of(version: &str, pdu: &Value) -> String {
    let rules = room_version::rules(&RoomVersionId::try_from(version).unwrap()).unwrap();
    let obj = match to_canonical_value(pdu).unwrap() {
        CanonicalJsonValue::Object(o) => o,
        _ => unreachable!(),
    };
    format!(
        "${}",
        plexus_core::ruma::signatures::reference_hash(&obj, &rules).unwrap()
    )
}

/// Feeds `total` chained message PDUs from `sender` into `room` on server `to`, in
/// transactions of `batch`, asserting each is accepted; answers the wall time in seconds.
/// Building and signing is inside the timed loop, the same for every server measured.
#[allow(clippy::too_many_arguments)]
pub async fn feed_messages(
    peer: &Peer,
    to: &str,
    room: &str,
    sender: &str,
    mut prev: OwnedEventId,
    auth: &[OwnedEventId],
    total: usize,
    batch: usize,
) -> f64 {
    let start = std::time::Instant::now();
    for t in 0..total / batch {
        let mut pdus = vec![];
        for i in 0..batch {
            let (id, pdu) = peer.message(room, sender, &prev, auth, &format!("m{t}-{i}"));
            prev = OwnedEventId::try_from(id).expect("event id");
            pdus.push(pdu);
        }
        let res = peer.transaction(to, pdus).await;
        assert!(
            res["pdus"]
                .as_object()
                .expect("pdus")
                .values()
                .all(|v| v == &json!({})),
            "{res}"
        );
    }
    start.elapsed().as_secs_f64()
}

/// Extra state events for the inbound benchmarks: `PLEXUS_BENCH_STATE`, default 1000.
pub fn bench_state_events() -> usize {
    std::env::var("PLEXUS_BENCH_STATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The inbound benchmark: 1,000 messages from `sender` (a user of `peer` already in `room`)
/// into server `to` in 50-PDU transactions; prints the rate under `label`.
pub async fn measure_inbound(
    label: &str,
    peer: &Peer,
    owner: &Client,
    to: &str,
    room: &str,
    sender: &str,
    n_state: usize,
) {
    let (prev, auth) = context(owner, room, sender).await;
    let (total, batch) = (1000, 50);
    let secs = feed_messages(peer, to, room, sender, prev, &auth, total, batch).await;
    println!(
        "{label} inbound: {total} PDUs in {batch}-PDU transactions, room with {n_state} state events: {secs:.2} s, {:.0} PDUs/s",
        total as f64 / secs
    );
}

/// The admin's side of issue 19's race, as the admin's server (`peer`) sends it: an admin
/// topic ("admin") and power levels `pl` without `demoted`, both on `prev` (with `auth`, the
/// power levels and the admin's membership), stamped two and one seconds ago so that a
/// moderator's topic set now is the later one. `(event id, PDU)` of each, topic first.
pub fn topic_and_demotion(
    peer: &Peer,
    room: &str,
    admin: &str,
    pl: &Value,
    demoted: &str,
    prev: &OwnedEventId,
    auth: &[OwnedEventId],
) -> [(String, Value); 2] {
    let state = |kind: &str, content: Value| NewEvent {
        kind: kind.into(),
        content,
        state_key: Some(String::new()),
        redacts: None,
    };
    let at = |ago: u64| At {
        prev: std::slice::from_ref(prev),
        auth,
        origin_server_ts: now_ms() - ago,
        depth: 100,
    };
    let topic = state("m.room.topic", json!({"topic": "admin"}));
    let mut without = pl.clone();
    if let Some(users) = without["users"].as_object_mut() {
        users.remove(demoted);
    }
    let pls = state("m.room.power_levels", without);
    [
        pdu_at(room, admin, &peer.name, &peer.key, &topic, &at(2000)),
        pdu_at(room, admin, &peer.name, &peer.key, &pls, &at(1000)),
    ]
}
