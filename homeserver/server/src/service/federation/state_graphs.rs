//! Hand-built event graphs fed through inbound ingest in many orders: the room's current state
//! must be the resolution of the states at all its forward extremities, whatever order the
//! branches arrive in. The graphs are Synapse's state resolution v2 test cases
//! (`tests/state/test_v2.py`) that end in forward extremities, and the race from issue 19.

use std::collections::HashMap;

use plexus_core::builder::{build_pdu, EventRef, NewEvent, RoomContext};
use plexus_core::signing::ServerKey;
use plexus_core::{auth::auth_types, room_version, Pdu};
use ruma::{OwnedEventId, OwnedRoomId, RoomVersionId, UserId};
use serde_json::{json, Value};

use super::ingest::{self, Checked, Outcome};
use crate::service::{rooms::RoomMeta, writer::room_rows, App, Services};

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const CHARLIE: &str = "@charlie:example.org";
const ZARA: &str = "@zara:example.org";
const ELLA: &str = "@ella:example.org";

/// A room's events by name, each with the state after it (for picking auth events).
struct Graph {
    version: RoomVersionId,
    key: ServerKey,
    room_id: Option<OwnedRoomId>,
    events: Vec<(String, Checked)>,
    by_name: HashMap<String, usize>,
    state_after: HashMap<String, HashMap<(String, String), OwnedEventId>>,
    /// Set: events are built as if the state were the one after this event, whatever their
    /// prev events say (a hostile server's story).
    story: Option<String>,
}

impl Graph {
    /// The initial events of Synapse's tests: create, alice joins, power levels, public join
    /// rules, bob, charlie and zara join (a line).
    fn new(version: RoomVersionId) -> Graph {
        let mut g = Graph {
            version: version.clone(),
            key: ServerKey::generate().expect("key"),
            room_id: None,
            events: vec![],
            by_name: HashMap::new(),
            state_after: HashMap::new(),
            story: None,
        };
        let v12 = g.rules().authorization.room_create_event_id_as_room_id;
        if !v12 {
            g.room_id = Some("!graph:example.org".try_into().expect("room id"));
        }
        let mut create = json!({ "room_version": version.as_str() });
        if !g.rules().authorization.use_room_create_sender {
            create["creator"] = json!(ALICE);
        }
        g.add("CREATE", ALICE, "m.room.create", Some(""), create, &[]);
        g.add(
            "IMA",
            ALICE,
            "m.room.member",
            Some(ALICE),
            join(),
            &["CREATE"],
        );
        let pl = g.power(&[(ALICE, 100)]);
        g.add(
            "IPOWER",
            ALICE,
            "m.room.power_levels",
            Some(""),
            pl,
            &["IMA"],
        );
        let jr = json!({ "join_rule": "public" });
        g.add("IJR", ALICE, "m.room.join_rules", Some(""), jr, &["IPOWER"]);
        g.add("IMB", BOB, "m.room.member", Some(BOB), join(), &["IJR"]);
        g.add(
            "IMC",
            CHARLIE,
            "m.room.member",
            Some(CHARLIE),
            join(),
            &["IMB"],
        );
        g.add("IMZ", ZARA, "m.room.member", Some(ZARA), join(), &["IMC"]);
        g
    }

    fn rules(&self) -> ruma::room_version_rules::RoomVersionRules {
        room_version::rules(&self.version).expect("rules")
    }

    /// Power levels naming `users`; room creators are left out where the room version gives
    /// them unlimited power instead (v12).
    fn power(&self, users: &[(&str, i64)]) -> Value {
        let creators_listed = !self
            .rules()
            .authorization
            .explicitly_privilege_room_creators;
        let users: serde_json::Map<String, Value> = users
            .iter()
            .filter(|(u, _)| creators_listed || *u != ALICE)
            .map(|(u, l)| (u.to_string(), json!(l)))
            .collect();
        json!({ "users": users })
    }

    /// Build, sign and record an event on `prevs` (state for its auth events: the prevs' states
    /// merged, later prevs winning, which is all these graphs need).
    fn add(
        &mut self,
        name: &str,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prevs: &[&str],
    ) {
        let rules = self.rules();
        let sender = UserId::parse(sender).expect("user id");
        let mut state: HashMap<(String, String), OwnedEventId> = HashMap::new();
        match &self.story {
            Some(at) => state.extend(self.state_after[at].clone()),
            None => {
                for p in prevs {
                    state.extend(self.state_after[*p].clone());
                }
            }
        }
        let types = auth_types(&rules, kind, &sender, state_key, &content).expect("auth types");
        let auth_events = types
            .iter()
            .filter_map(|(t, k)| state.get(&(t.to_string(), k.clone())))
            .map(|id| EventRef::of(&self.pdu_by_id(id)))
            .collect();
        let prev_events: Vec<EventRef> = prevs.iter().map(|p| EventRef::of(&self.pdu(p))).collect();
        let depth = prevs
            .iter()
            .map(|p| u64::from(self.pdu(p).depth))
            .max()
            .unwrap_or(0)
            + 1;
        let ctx = RoomContext {
            room_id: self.room_id.as_deref(),
            rules: &rules,
            sender: &sender,
            origin: ruma::server_name!("example.org"),
            prev_events,
            auth_events,
            depth,
            // Distinct and increasing: ties in mainline order fall to the timestamp.
            origin_server_ts: 1_700_000_000_000 + self.events.len() as u64,
        };
        let ev = NewEvent {
            kind: kind.into(),
            content,
            state_key: state_key.map(str::to_owned),
            redacts: None,
        };
        let built = build_pdu(&ev, &ctx, &self.key).expect("build");
        if self.room_id.is_none() {
            let id = format!("!{}", &built.event_id.as_str()[1..]);
            self.room_id = Some(id.try_into().expect("room id"));
        }
        if let Some(sk) = state_key {
            state.insert((kind.into(), sk.into()), built.event_id.clone());
        }
        let stored = serde_json::to_value(&built.stored).expect("json");
        let checked = Checked {
            event_id: built.event_id,
            stored,
            pdu: built.pdu,
        };
        self.by_name.insert(name.into(), self.events.len());
        self.state_after.insert(name.into(), state);
        self.events.push((name.into(), checked));
    }

    fn pdu(&self, name: &str) -> Pdu {
        self.events[self.by_name[name]].1.pdu.clone()
    }

    fn pdu_by_id(&self, id: &OwnedEventId) -> Pdu {
        self.events
            .iter()
            .find(|(_, c)| &c.event_id == id)
            .map(|(_, c)| c.pdu.clone())
            .expect("known event")
    }

    fn name_of(&self, id: &str) -> String {
        self.events
            .iter()
            .find(|(_, c)| c.event_id.as_str() == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| id.to_owned())
    }

    /// Orders in which every event comes after its prev events: the order built, and each
    /// rotation of the events after the initial ones that still respects the graph.
    fn orders(&self, initial: usize) -> Vec<Vec<usize>> {
        let rest: Vec<usize> = (initial..self.events.len()).collect();
        let mut out = vec![];
        let mut perm = rest.clone();
        permutations(&mut perm, 0, &mut |p| {
            if out.len() < 200 && self.respects_prevs(initial, p) {
                out.push((0..initial).chain(p.iter().copied()).collect());
            }
        });
        out
    }

    fn respects_prevs(&self, initial: usize, order: &[usize]) -> bool {
        let mut seen: Vec<OwnedEventId> = self.events[..initial]
            .iter()
            .map(|(_, c)| c.event_id.clone())
            .collect();
        for &i in order {
            let c = &self.events[i].1;
            if !c.pdu.prev_events.iter().all(|p| seen.contains(p)) {
                return false;
            }
            seen.push(c.event_id.clone());
        }
        true
    }
}

fn permutations(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
    if k == v.len() {
        f(v);
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permutations(v, k + 1, f);
        v.swap(k, i);
    }
}

fn join() -> Value {
    json!({ "membership": "join" })
}

fn services(dir: &tempfile::TempDir) -> App {
    let cfg = crate::config::Config {
        server_name: "plexus.test".into(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    Services::open(cfg.validate().expect("settings")).expect("services")
}

/// What a server made of a graph: current state as `(type, state_key) -> event name`, the
/// events soft-failed and the forward extremities.
struct Ingested {
    state: HashMap<(String, String), String>,
    soft_failed: Vec<String>,
    tips: Vec<String>,
}

/// One server's copy of a graph's room, fed event by event through inbound ingest.
struct Replica<'g> {
    g: &'g Graph,
    _dir: tempfile::TempDir,
    app: App,
    room: crate::service::rooms::RoomRef,
    soft_failed: Vec<String>,
}

impl<'g> Replica<'g> {
    /// The graph's room, known to a fresh server but with no events yet.
    fn new(g: &'g Graph) -> Replica<'g> {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = services(&dir);
        let room_id = g.room_id.clone().expect("room id");
        let mut batch = plexus_store::Batch::default();
        let short = app.store.kv.unique_id().expect("id");
        let meta = RoomMeta {
            room_id: room_id.clone(),
            version: g.version.clone(),
        };
        room_rows(&mut batch, short, &meta).expect("rows");
        app.store.commit(batch).expect("commit");
        let room = app.rooms.room(&room_id).expect("read").expect("room");
        Replica {
            g,
            _dir: dir,
            app,
            room,
            soft_failed: vec![],
        }
    }

    async fn persist(&mut self, name: &str) -> Outcome {
        let c = self.g.events[self.g.by_name[name]].1.clone();
        let outcome = ingest::persist(&self.app, &self.room, &self.g.rules(), c, None)
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
        if outcome == Outcome::SoftFailed {
            self.soft_failed.push(name.to_owned());
        }
        outcome
    }

    /// What `/state_ids` at `point` answers when a gap cannot be filled: `point` stored with
    /// the state after `state_of` (the peer's word) as the state before it.
    async fn bridge(&self, point: &str, state_of: &str) {
        let g = self.g;
        let state_ids: Vec<OwnedEventId> = g.state_after[state_of].values().cloned().collect();
        let known: Vec<Checked> = g.events.iter().map(|(_, c)| c.clone()).collect();
        let point = g.events[g.by_name[point]].1.clone();
        super::join::store_state_and_point(&self.app, &self.g.rules(), known, &state_ids, point)
            .await
            .expect("bridged");
    }

    fn view(&self) -> Ingested {
        let (app, g) = (&self.app, self.g);
        let name = |short: u64| {
            let pdu = app.rooms.pdu_by_short(short).expect("read").expect("pdu");
            g.name_of(pdu.event_id.as_str())
        };
        let mut state = HashMap::new();
        let (hash, _) = app
            .rooms
            .current_state(self.room.short)
            .expect("read")
            .expect("state");
        for (&sk, &ev) in app.rooms.state_map(hash).expect("map").iter() {
            state.insert(app.rooms.state_key_of(sk).expect("key"), name(ev));
        }
        let mut tips: Vec<String> = app
            .rooms
            .extremities(self.room.short)
            .expect("tips")
            .into_iter()
            .map(name)
            .collect();
        tips.sort();
        Ingested {
            state,
            soft_failed: self.soft_failed.clone(),
            tips,
        }
    }
}

impl Ingested {
    /// The event name at `(kind, key)` of the current state.
    fn at(&self, kind: &str, key: &str) -> Option<&str> {
        self.state
            .get(&(kind.to_owned(), key.to_owned()))
            .map(String::as_str)
    }
}

/// Feed the graph's events in `order` through inbound ingest.
async fn ingest_in_order(g: &Graph, order: &[usize]) -> Ingested {
    let mut r = Replica::new(g);
    for &i in order {
        r.persist(&g.events[i].0).await;
    }
    r.view()
}

/// Every order of `g`'s events after the first `initial` ends with `expected` at each of its
/// keys (`None`: the key is absent).
async fn converges(g: &Graph, initial: usize, expected: &[((&str, &str), Option<&str>)]) {
    let orders = g.orders(initial);
    assert!(!orders.is_empty());
    for order in &orders {
        let got = ingest_in_order(g, order).await;
        let names: Vec<&str> = order.iter().map(|&i| g.events[i].0.as_str()).collect();
        for ((t, k), want) in expected {
            assert_eq!(
                got.at(t, k),
                *want,
                "{} {t}/{k} after ingesting {names:?} (soft-failed {:?})",
                g.version,
                got.soft_failed
            );
        }
    }
}

const INITIAL: usize = 7;

fn versions() -> [RoomVersionId; 2] {
    [RoomVersionId::V11, RoomVersionId::V12]
}

/// Issue 19: a moderator's topic and an admin's topic race; the admin's next event, on the
/// same parents as its topic, demotes the moderator. The admin's topic stands.
#[tokio::test]
async fn concurrent_topics_and_a_demotion_keep_the_admins_topic() {
    for v in versions() {
        let mut g = Graph::new(v);
        let pl = g.power(&[(ALICE, 100), (BOB, 100), (CHARLIE, 50)]);
        g.add("PA", ALICE, "m.room.power_levels", Some(""), pl, &["IMZ"]);
        // The moderator's topic is the later one: between the two topics alone, it would win.
        let t = json!({ "topic": "admin" });
        g.add("TB", BOB, "m.room.topic", Some(""), t, &["PA"]);
        let t = json!({ "topic": "moderator" });
        g.add("TC", CHARLIE, "m.room.topic", Some(""), t, &["PA"]);
        let pl = g.power(&[(ALICE, 100), (BOB, 100)]);
        g.add("PB", BOB, "m.room.power_levels", Some(""), pl, &["PA"]);
        converges(
            &g,
            INITIAL,
            &[
                (("m.room.topic", ""), Some("TB")),
                (("m.room.power_levels", ""), Some("PB")),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn ban_vs_power_levels() {
    for v in versions() {
        let mut g = Graph::new(v);
        let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
        g.add(
            "PA",
            ALICE,
            "m.room.power_levels",
            Some(""),
            pl.clone(),
            &["IMZ"],
        );
        g.add("MA", ALICE, "m.room.member", Some(ALICE), join(), &["PA"]);
        let ban = json!({ "membership": "ban" });
        g.add("MB", ALICE, "m.room.member", Some(BOB), ban, &["MA"]);
        g.add("PB", BOB, "m.room.power_levels", Some(""), pl, &["PA"]);
        converges(
            &g,
            INITIAL,
            &[
                (("m.room.power_levels", ""), Some("PA")),
                (("m.room.member", ALICE), Some("MA")),
                (("m.room.member", BOB), Some("MB")),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn join_rule_evasion() {
    for v in versions() {
        let mut g = Graph::new(v);
        let jr = json!({ "join_rule": "invite" });
        g.add("JR", ALICE, "m.room.join_rules", Some(""), jr, &["IMZ"]);
        g.add("ME", ELLA, "m.room.member", Some(ELLA), join(), &["IMZ"]);
        converges(
            &g,
            INITIAL,
            &[
                (("m.room.join_rules", ""), Some("JR")),
                (("m.room.member", ELLA), None),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn topic_basic() {
    for v in versions() {
        let mut g = Graph::new(v);
        let t = |s: &str| json!({ "topic": s });
        g.add("T1", ALICE, "m.room.topic", Some(""), t("1"), &["IMZ"]);
        let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
        g.add(
            "PA1",
            ALICE,
            "m.room.power_levels",
            Some(""),
            pl.clone(),
            &["T1"],
        );
        g.add("T2", ALICE, "m.room.topic", Some(""), t("2"), &["PA1"]);
        let pl0 = g.power(&[(ALICE, 100), (BOB, 0)]);
        g.add("PA2", ALICE, "m.room.power_levels", Some(""), pl0, &["T2"]);
        g.add("PB", BOB, "m.room.power_levels", Some(""), pl, &["PA1"]);
        g.add("T3", BOB, "m.room.topic", Some(""), t("3"), &["PB"]);
        converges(
            &g,
            INITIAL,
            &[
                (("m.room.power_levels", ""), Some("PA2")),
                (("m.room.topic", ""), Some("T2")),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn mainline_sort() {
    for v in versions() {
        let mut g = Graph::new(v);
        let t = |s: &str| json!({ "topic": s });
        g.add("T1", ALICE, "m.room.topic", Some(""), t("1"), &["IMZ"]);
        let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
        g.add(
            "PA1",
            ALICE,
            "m.room.power_levels",
            Some(""),
            pl.clone(),
            &["T1"],
        );
        g.add("T2", ALICE, "m.room.topic", Some(""), t("2"), &["PA1"]);
        let mut pl2 = pl.clone();
        pl2["events"] = json!({ "m.room.power_levels": 100 });
        g.add("PA2", ALICE, "m.room.power_levels", Some(""), pl2, &["T2"]);
        g.add("PB", BOB, "m.room.power_levels", Some(""), pl, &["PA1"]);
        g.add("T3", BOB, "m.room.topic", Some(""), t("3"), &["PA2"]);
        g.add("T4", ALICE, "m.room.topic", Some(""), t("4"), &["PB"]);
        converges(
            &g,
            INITIAL,
            &[
                (("m.room.power_levels", ""), Some("PA2")),
                (("m.room.topic", ""), Some("T3")),
            ],
        )
        .await;
    }
}

/// An event built on a soft-failed one supersedes the soft-failed event's parents too: they
/// do not stay behind as forward extremities (Synapse #5269).
#[tokio::test]
async fn soft_failed_parents_do_not_dangle() {
    let mut g = Graph::new(RoomVersionId::V12);
    let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
    g.add("PA", ALICE, "m.room.power_levels", Some(""), pl, &["IMZ"]);
    let ban = json!({ "membership": "ban" });
    g.add("X", ALICE, "m.room.member", Some(BOB), ban, &["PA"]);
    let t = |s: &str| json!({ "topic": s });
    g.add("P", ALICE, "m.room.topic", Some(""), t("alice"), &["PA"]);
    g.add("E", BOB, "m.room.topic", Some(""), t("bob"), &["P"]);
    let msg = json!({ "msgtype": "m.text", "body": "hi" });
    g.add("N", CHARLIE, "m.room.message", None, msg, &["E"]);
    let order: Vec<usize> = (0..g.events.len()).collect();
    let got = ingest_in_order(&g, &order).await;
    assert_eq!(got.soft_failed, vec!["E".to_owned()]);
    assert_eq!(got.tips, vec!["N".to_owned(), "X".to_owned()]);
    // N's branch replaced alice's topic with bob's, which the ban overrules: resolving X and N
    // leaves no topic (as Synapse, whose extremities are the same two, has it).
    assert_eq!(got.at("m.room.topic", ""), None);
}

/// A server that missed a stretch of the room (down, or partitioned) and bridged the gap with
/// the state a peer gave it for the gap's far end judges the next event by that state too:
/// bob was promoted while it was away, so his topic is not soft-failed against its stale
/// current state.
#[tokio::test]
async fn an_event_across_a_bridged_gap_is_judged_with_its_own_state() {
    let mut g = Graph::new(RoomVersionId::V12);
    let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
    g.add("PA", ALICE, "m.room.power_levels", Some(""), pl, &["IMZ"]);
    let t = json!({ "topic": "bob" });
    g.add("T", BOB, "m.room.topic", Some(""), t, &["PA"]);

    let mut r = Replica::new(&g);
    for (name, _) in &g.events[..INITIAL] {
        r.persist(name).await;
    }
    r.bridge("PA", "IMZ").await;
    assert_eq!(r.persist("T").await, Outcome::Accepted);
    let got = r.view();
    assert_eq!(got.at("m.room.topic", ""), Some("T"));
    // The state across the gap is only the peer's word: the extremity before the gap stays,
    // so its state is resolved with what came after (here they agree on bob's topic).
    assert_eq!(got.tips, ["IMZ", "T"]);
}

/// A peer cannot replace the room's state by inventing a gap: the far end's state it hands
/// over (bob as he was before his ban) is resolved against the state at our extremities, and
/// the ban stands.
#[tokio::test]
async fn a_fabricated_gap_does_not_undo_a_ban() {
    let mut g = Graph::new(RoomVersionId::V12);
    let pl = g.power(&[(ALICE, 100), (BOB, 50)]);
    g.add("PA", ALICE, "m.room.power_levels", Some(""), pl, &["IMZ"]);
    let ban = json!({ "membership": "ban" });
    g.add("MB", ALICE, "m.room.member", Some(BOB), ban, &["PA"]);
    // B's story: a message on top of the ban, whose auth events and claimed state are from
    // before it, and bob's topic on that.
    g.story = Some("PA".into());
    let msg = json!({ "msgtype": "m.text", "body": "gap" });
    g.add("P", BOB, "m.room.message", None, msg, &["MB"]);
    let t = json!({ "topic": "bob" });
    g.add("T", BOB, "m.room.topic", Some(""), t, &["P"]);
    let msg = json!({ "msgtype": "m.text", "body": "innocent" });
    g.add("N", CHARLIE, "m.room.message", None, msg, &["P"]);
    g.story = None;

    let mut r = Replica::new(&g);
    for name in [
        "CREATE", "IMA", "IPOWER", "IJR", "IMB", "IMC", "IMZ", "PA", "MB",
    ] {
        assert_eq!(r.persist(name).await, Outcome::Accepted, "{name}");
    }
    r.bridge("P", "PA").await;
    assert_eq!(r.persist("T").await, Outcome::SoftFailed);
    assert_eq!(
        r.view().at("m.room.member", BOB),
        Some("MB"),
        "bob is still banned"
    );
    // An innocent message on the far end of the gap passes, but does not make the peer's
    // story current: the ban's extremity stays beside it and the two are resolved.
    assert_eq!(r.persist("N").await, Outcome::Accepted);
    let got = r.view();
    assert_eq!(
        got.at("m.room.member", BOB),
        Some("MB"),
        "still banned after N"
    );
    assert_eq!(got.tips, ["MB", "N"]);
    assert_eq!(got.at("m.room.topic", ""), None);
}

/// A message on one of two branches takes its parent's place among the extremities and
/// leaves the current state (the resolution of both branches) as it was.
#[tokio::test]
async fn a_message_on_one_branch_keeps_the_resolved_state() {
    let mut g = Graph::new(RoomVersionId::V12);
    let topic = json!({ "topic": "branch a" });
    g.add("TA", ALICE, "m.room.topic", Some(""), topic, &["IMZ"]);
    let name = json!({ "name": "branch b" });
    g.add("NB", ALICE, "m.room.name", Some(""), name, &["IMZ"]);
    let msg = json!({ "msgtype": "m.text", "body": "on a" });
    g.add("M", CHARLIE, "m.room.message", None, msg, &["TA"]);
    let order: Vec<usize> = (0..g.events.len()).collect();
    let got = ingest_in_order(&g, &order).await;
    assert_eq!(got.tips, vec!["M".to_owned(), "NB".to_owned()]);
    assert_eq!(got.at("m.room.topic", ""), Some("TA"));
    assert_eq!(got.at("m.room.name", ""), Some("NB"));
}
