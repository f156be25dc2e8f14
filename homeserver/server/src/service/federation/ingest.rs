//! Accepting PDUs from other servers: signature and hash checks, the three auth checks (auth
//! events, state before, current state for soft-fail), state resolution v2 where branches meet,
//! and persisting exactly like a local event.
//!
//! `EventState` keeps, per event, the state *before* it and the room's current state right
//! after it was persisted (what sync reads). For a linear room the latter is the state after
//! the event; where branches meet it is the resolved state.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use plexus_core::{auth, Pdu};
use plexus_store::{schema, Batch, StateMap};
use ruma::{
    canonical_json::{redact, try_from_json_map, CanonicalJsonObject, CanonicalJsonValue},
    events::StateEventType,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, Verified},
    state_res, EventId, OwnedEventId, OwnedServerName, OwnedUserId, RoomId, ServerName,
};
use serde_json::Value;

use super::{client::FedError, sender::Sender, FederationError};
use crate::service::Services;
use crate::service::{
    push::PushError,
    rooms::{RoomRef, RoomsError},
    writer::{
        event_rows, event_state_row, membership_rows, redacted_form, redacted_row,
        redaction_target, relation_row, room_state_row, timeline_rows, tip_rows,
    },
};

/// Most events fetched to fill one gap or to find missing auth events.
const MAX_FETCH: usize = 100;

/// Why a PDU from another server was refused, or could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid PDU: {0}")]
    Invalid(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("event auth failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Fetch(#[from] FedError),
    /// A failure here, not the PDU's fault.
    #[error("{0}")]
    Local(#[from] FederationError),
}

impl From<plexus_store::StoreError> for IngestError {
    fn from(e: plexus_store::StoreError) -> Self {
        IngestError::Local(e.into())
    }
}

impl From<RoomsError> for IngestError {
    fn from(e: RoomsError) -> Self {
        IngestError::Local(e.into())
    }
}

impl From<PushError> for IngestError {
    fn from(e: PushError) -> Self {
        IngestError::Local(e.into())
    }
}

/// Whether an event belongs to `room_id`: by its `room_id`, or (room version 12 create events,
/// which have none) by the room id being derived from the event id.
pub fn in_room(room_id: Option<&RoomId>, event_id: &EventId, room: &RoomId) -> bool {
    match room_id {
        Some(r) => r == room,
        None => room.as_str().get(1..) == event_id.as_str().get(1..),
    }
}

/// A PDU that passed its signature check, in stored form (redacted if its hash did not match).
#[derive(Clone, Debug)]
pub struct Checked {
    pub event_id: OwnedEventId,
    pub stored: Value,
    pub pdu: Pdu,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    SoftFailed,
    Duplicate,
}

/// The room version's event id for a canonical PDU (v1/v2 carry it, later ones hash it).
pub fn event_id_of(
    obj: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId, String> {
    let id = match rules.event_id_format {
        EventIdFormatVersion::V1 => match obj.get("event_id") {
            Some(CanonicalJsonValue::String(s)) => s.clone(),
            _ => return Err("missing event_id".into()),
        },
        _ => format!(
            "${}",
            ruma::signatures::reference_hash(obj, rules).map_err(|e| e.to_string())?
        ),
    };
    OwnedEventId::try_from(id).map_err(|e| e.to_string())
}

/// A JSON object as canonical JSON (which refuses floats and out-of-range integers).
pub fn canonical_object(v: &Value) -> Result<CanonicalJsonObject, String> {
    match v {
        Value::Object(m) => try_from_json_map(m.clone()).map_err(|e| e.to_string()),
        _ => Err("not a JSON object".into()),
    }
}

/// Check format, signatures and content hash of a PDU received from anyone.
pub async fn check(
    app: &Services,
    rules: &RoomVersionRules,
    raw: &Value,
) -> Result<Checked, IngestError> {
    Ok(check_hash(app, rules, raw).await?.0)
}

/// [`check`], also telling whether the content hash matched (when it did not, the event is
/// kept redacted; some callers must refuse it instead).
pub async fn check_hash(
    app: &Services,
    rules: &RoomVersionRules,
    raw: &Value,
) -> Result<(Checked, bool), IngestError> {
    let mut obj = canonical_object(raw).map_err(|e| IngestError::Invalid(format!("PDU: {e}")))?;
    // Nothing in `unsigned` is covered by signatures: a peer's claims there are dropped.
    obj.remove("unsigned");
    if !matches!(rules.event_id_format, EventIdFormatVersion::V1) {
        obj.remove("event_id");
    }
    plexus_core::builder::check_format(&obj, rules)
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&obj, &rules.signatures)
            .map_err(|e| IngestError::Invalid(e.to_string()))?;
    let fed = app.fed()?;
    // From room version 5 on, a key signs only until its `valid_until_ts`.
    let valid_at = match obj.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) if rules.enforce_key_validity => {
            Some(u64::try_from(i64::from(*ts)).unwrap_or(0))
        }
        _ => None,
    };
    let mut keys = PublicKeyMap::new();
    for server in &servers {
        let ids: Vec<String> = match obj.get("signatures") {
            Some(CanonicalJsonValue::Object(s)) => match s.get(server.as_str()) {
                Some(CanonicalJsonValue::Object(k)) => k.keys().cloned().collect(),
                _ => vec![],
            },
            _ => vec![],
        };
        if ids.is_empty() {
            return Err(IngestError::Signature(format!("not signed by {server}")));
        }
        let set = fed
            .keys
            .verify_keys(app, server, &ids, valid_at)
            .await
            .map_err(|e| IngestError::Signature(format!("keys of {server}: {e}")))?;
        keys.extend(set);
    }
    let verified = ruma::signatures::verify_event(&keys, &obj, rules)
        .map_err(|e| IngestError::Signature(e.to_string()))?;
    let event_id = event_id_of(&obj, rules).map_err(IngestError::Invalid)?;
    if verified == Verified::Signatures {
        tracing::info!(%event_id, "content hash mismatch: keeping the redacted form");
        obj =
            redact(obj, &rules.redaction, None).map_err(|e| IngestError::Invalid(e.to_string()))?;
    }
    obj.insert(
        "event_id".into(),
        CanonicalJsonValue::String(event_id.to_string()),
    );
    let stored = serde_json::to_value(&obj).map_err(|e| IngestError::Invalid(e.to_string()))?;
    let bytes = serde_json::to_vec(&obj).map_err(|e| IngestError::Invalid(e.to_string()))?;
    let pdu = Pdu::from_json(&bytes).map_err(|e| IngestError::Invalid(e.to_string()))?;
    Ok((
        Checked {
            event_id,
            stored,
            pdu,
        },
        verified == Verified::All,
    ))
}

/// Auth rules against the event's own `auth_events`.
pub fn check_against_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch: impl Fn(&EventId) -> Option<Pdu>,
) -> Result<(), IngestError> {
    // v12 rooms do not cite the create event: the room id names it.
    let mut ids = pdu.auth_events.clone();
    if rules.authorization.room_create_event_id_as_room_id {
        if let Some(room) = &pdu.room_id {
            if let Ok(id) = OwnedEventId::try_from(format!("${}", &room.as_str()[1..])) {
                ids.push(id);
            }
        }
    }
    let mut state = Vec::with_capacity(ids.len());
    for id in &ids {
        state.push(fetch(id).ok_or_else(|| IngestError::Auth(format!("auth event {id} unknown")))?);
    }
    check_against_events(rules, pdu, fetch, state)
}

/// Auth rules with `state` (a set of state events) as the room state.
pub fn check_against_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch: impl Fn(&EventId) -> Option<Pdu>,
    state: impl IntoIterator<Item = Pdu>,
) -> Result<(), IngestError> {
    let by_key: HashMap<(StateEventType, String), Pdu> = state
        .into_iter()
        .filter_map(|ev| Some(((ev.kind.to_string().into(), ev.state_key.clone()?), ev)))
        .collect();
    auth::check(rules, pdu, &fetch, |t, k| {
        by_key.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(|e| IngestError::Auth(e.to_string()))
}

/// Check events from a peer against their own auth events, oldest first, each able to rely
/// on the ones before it; those that fail are left out (and so is anything that needs them).
pub fn auth_in_order(
    app: &Services,
    rules: &RoomVersionRules,
    mut events: Vec<Checked>,
) -> HashMap<OwnedEventId, Checked> {
    events.sort_by_key(|c| c.pdu.depth);
    let mut ok: HashMap<OwnedEventId, Checked> = HashMap::new();
    // Depth order is usually enough; a few passes cover auth events of equal depth.
    for _ in 0..4 {
        let before = ok.len();
        let mut next = vec![];
        for c in events {
            let fetch = |id: &EventId| {
                ok.get(id)
                    .map(|c| c.pdu.clone())
                    .or_else(|| app.rooms.pdu(id).ok().flatten())
            };
            match check_against_auth_events(rules, &c.pdu, fetch) {
                Ok(()) => {
                    ok.insert(c.event_id.clone(), c);
                }
                Err(_) => next.push(c),
            }
        }
        events = next;
        if events.is_empty() || ok.len() == before {
            break;
        }
    }
    for c in &events {
        tracing::info!(event_id = %c.event_id, "event fails auth against its auth events; left out");
    }
    ok
}

/// Check every raw PDU of a peer's answer; those that fail are logged and left out.
pub async fn check_each<'a>(
    app: &Services,
    rules: &RoomVersionRules,
    raws: impl IntoIterator<Item = &'a Value>,
) -> Vec<Checked> {
    let mut out = vec![];
    for raw in raws {
        match check(app, rules, raw).await {
            Ok(c) => out.push(c),
            Err(e) => tracing::info!(error = %e, "PDU from a peer refused"),
        }
    }
    out
}

/// Write an event that is known but not part of the timeline (auth chains, fetched state).
pub fn put_outlier(app: &Services, c: &Checked, batch: &mut Batch) -> Result<u64, FederationError> {
    if let Some(s) = app.rooms.short_event(&c.event_id)? {
        return Ok(s);
    }
    let short = app.store.kv.unique_id()?;
    event_rows(batch, short, &c.event_id, &c.stored)?;
    Ok(short)
}

/// The state after an event: the state before it plus itself when it is a state event.
/// Shared, not copied, when the event changes no state.
pub fn state_after(app: &Services, short: u64) -> Result<Option<Arc<StateMap>>, FederationError> {
    let Some((before, _)) = app.rooms.event_state(short)? else {
        return Ok(None);
    };
    let map = app.rooms.state_map(before)?;
    let Some(pdu) = app.rooms.pdu_by_short(short)? else {
        return Ok(Some(map));
    };
    let Some(sk) = &pdu.state_key else {
        return Ok(Some(map));
    };
    let k = app
        .rooms
        .short_state_key_or_create(&pdu.kind.to_string(), sk)?;
    let mut map = (*map).clone();
    map.insert(k, short);
    Ok(Some(Arc::new(map)))
}

/// Whether the event is persisted with its state (not merely known as an outlier).
pub fn has_state(app: &Services, id: &EventId) -> Result<bool, FederationError> {
    Ok(match app.rooms.short_event(id)? {
        Some(s) => app.rooms.event_state(s)?.is_some(),
        None => false,
    })
}

/// Resolve several state maps of a room with state resolution v2 (v2.1 for v12 rooms).
pub fn resolve(
    app: &Services,
    rules: &RoomVersionRules,
    maps: &[&StateMap],
) -> Result<StateMap, FederationError> {
    let mut uniq: Vec<&StateMap> = vec![];
    for m in maps {
        if !uniq.contains(m) {
            uniq.push(m);
        }
    }
    if uniq.len() <= 1 {
        return Ok(uniq.pop().cloned().unwrap_or_default());
    }
    let state_res_rules = rules.state_res.v2_rules().ok_or_else(|| {
        FederationError::Internal("room version without state resolution v2".into())
    })?;
    let mut cache: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut key_names: HashMap<u64, (StateEventType, String)> = HashMap::new();
    let mut ruma_maps = vec![];
    for m in &uniq {
        let mut rm = state_res::StateMap::new();
        for (&sk, &ev) in *m {
            let name = match key_names.get(&sk) {
                Some(n) => n.clone(),
                None => {
                    let (t, k) = app.rooms.state_key_of(sk)?;
                    let n: (StateEventType, String) = (t.into(), k);
                    key_names.insert(sk, n.clone());
                    n
                }
            };
            let pdu = app
                .rooms
                .pdu_by_short(ev)?
                .ok_or_else(|| FederationError::Internal(format!("state event {ev} missing")))?;
            let id = pdu.event_id.clone();
            cache.insert(id.clone(), pdu);
            rm.insert(name, id);
        }
        ruma_maps.push(rm);
    }
    // Full auth chains, shared between the maps.
    let mut chains = vec![];
    for rm in &ruma_maps {
        let starts: Vec<OwnedEventId> = rm.values().cloned().collect();
        chains.push(
            auth_chain(app, &starts, &mut cache)?
                .into_iter()
                .collect::<state_res::utils::event_id_set::EventIdSet<_>>(),
        );
    }
    let fetch = |id: &EventId| {
        cache
            .get(id)
            .cloned()
            .or_else(|| app.rooms.pdu(id).ok().flatten())
    };
    let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
        Some(
            conflicted_subgraph(conflicted, &fetch)
                .into_iter()
                .collect(),
        )
    };
    let resolved = state_res::resolve(
        &rules.authorization,
        state_res_rules,
        &ruma_maps,
        chains,
        fetch,
        subgraph,
    )
    .map_err(|e| FederationError::Internal(format!("state resolution failed: {e}")))?;
    let mut out = StateMap::new();
    for ((t, k), id) in resolved {
        let sk = app.rooms.short_state_key_or_create(&t.to_string(), &k)?;
        let ev = app
            .rooms
            .short_event(&id)?
            .ok_or_else(|| FederationError::Internal(format!("resolved event {id} unknown")))?;
        out.insert(sk, ev);
    }
    Ok(out)
}

/// Every event reachable through `auth_events` from `starts` (the starts included).
pub fn auth_chain(
    app: &Services,
    starts: &[OwnedEventId],
    cache: &mut HashMap<OwnedEventId, Pdu>,
) -> Result<HashSet<OwnedEventId>, FederationError> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = starts.iter().cloned().collect();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let pdu = match cache.get(&id) {
            Some(p) => p.clone(),
            None => match app.rooms.pdu(&id)? {
                Some(p) => {
                    cache.insert(id.clone(), p.clone());
                    p
                }
                None => continue,
            },
        };
        queue.extend(pdu.auth_events.iter().cloned());
    }
    Ok(seen)
}

/// Room v12 (state resolution v2.1): the events on auth paths between conflicted events.
fn conflicted_subgraph(
    conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
    fetch: &impl Fn(&EventId) -> Option<Pdu>,
) -> HashSet<OwnedEventId> {
    let targets: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    // Walk down from every conflicted event, remembering each event's auth parents.
    let mut parents: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut queue: VecDeque<OwnedEventId> = targets.iter().cloned().collect();
    while let Some(id) = queue.pop_front() {
        if parents.contains_key(&id) {
            continue;
        }
        let auth = fetch(&id).map(|p| p.auth_events).unwrap_or_default();
        queue.extend(auth.iter().cloned());
        parents.insert(id, auth);
    }
    // Keep events from which some conflicted event is reachable and that are reachable from one.
    let mut memo: HashMap<OwnedEventId, bool> = HashMap::new();
    fn reaches(
        id: &OwnedEventId,
        parents: &HashMap<OwnedEventId, Vec<OwnedEventId>>,
        targets: &HashSet<OwnedEventId>,
        memo: &mut HashMap<OwnedEventId, bool>,
        depth: usize,
    ) -> bool {
        if let Some(r) = memo.get(id) {
            return *r;
        }
        let r = depth < 10_000
            && parents.get(id).is_some_and(|ps| {
                ps.iter()
                    .any(|p| targets.contains(p) || reaches(p, parents, targets, memo, depth + 1))
            });
        memo.insert(id.clone(), r);
        r
    }
    let mut out: HashSet<OwnedEventId> = HashSet::new();
    for id in parents.keys() {
        if targets.contains(id) || reaches(id, &parents, &targets, &mut memo, 0) {
            out.insert(id.clone());
        }
    }
    out
}

/// Store a snapshot equal to `map` as a delta on `base` (its hash and depth, and its map),
/// reusing `base` when nothing changed; `(hash, depth)`.
fn snapshot(
    app: &Services,
    map: &StateMap,
    base: Option<((u64, u32), &StateMap)>,
    batch: &mut Batch,
) -> Result<Option<(u64, u32)>, FederationError> {
    let empty = StateMap::new();
    let (base_hash, base_map) = match base {
        Some((h, m)) => (Some(h), m),
        None => (None, &empty),
    };
    if base_hash.is_some() && (std::ptr::eq(base_map, map) || base_map == map) {
        return Ok(base_hash);
    }
    if map.is_empty() {
        return Ok(None);
    }
    let mut added = vec![];
    for (k, v) in map {
        if base_map.get(k) != Some(v) {
            added.push((*k, *v));
        }
    }
    let removed: Vec<u64> = base_map
        .keys()
        .filter(|k| !map.contains_key(k))
        .copied()
        .collect();
    let full = map.clone();
    Ok(Some(app.store.state.derive(
        base_hash,
        &added,
        &removed,
        || full,
        batch,
    )?))
}

/// Store `map` (the state before an event) as a delta on the state before its first prev event,
/// which it usually differs from by little.
fn snapshot_on_prev(
    app: &Services,
    map: &StateMap,
    prev_shorts: &[u64],
    batch: &mut Batch,
) -> Result<Option<(u64, u32)>, FederationError> {
    let base = match prev_shorts.first() {
        Some(&p) => with_depth(app, app.rooms.event_state(p)?.map_or(0, |s| s.0))?,
        None => None,
    };
    let base_map = match base {
        Some((h, _)) => Some(app.rooms.state_map(h)?),
        None => None,
    };
    snapshot(app, map, base.zip(base_map.as_deref()), batch)
}

fn with_depth(app: &Services, hash: u64) -> Result<Option<(u64, u32)>, FederationError> {
    if hash == 0 {
        return Ok(None);
    }
    Ok(Some((hash, app.store.state.depth(hash)?)))
}

/// A PDU stored on its own, with the state before it (resolved across its prev events).
struct Before {
    short: u64,
    before: Arc<StateMap>,
    prev_shorts: Vec<u64>,
}

/// Check a PDU against its auth events, store it (as an outlier, so state resolution can read
/// it like any other event), work out the state before it, and check it against that.
fn state_before_checked(
    app: &Services,
    rules: &RoomVersionRules,
    c: &Checked,
) -> Result<Before, IngestError> {
    let pdu = &c.pdu;
    let fetch = |id: &EventId| app.rooms.pdu(id).ok().flatten();
    check_against_auth_events(rules, pdu, fetch)?;
    let short = match app.rooms.short_event(&c.event_id)? {
        Some(s) => s,
        None => {
            let mut b = Batch::default();
            let s = put_outlier(app, c, &mut b)?;
            app.store.commit(b)?;
            s
        }
    };
    let mut prev_states = vec![];
    let mut prev_shorts = vec![];
    for p in &pdu.prev_events {
        let s = app
            .rooms
            .short_event(p)?
            .ok_or_else(|| IngestError::Invalid(format!("prev event {p} unknown")))?;
        let st = state_after(app, s)?
            .ok_or_else(|| IngestError::Invalid(format!("no state known at prev event {p}")))?;
        prev_states.push(st);
        prev_shorts.push(s);
    }
    let before: Arc<StateMap> = match prev_states.as_slice() {
        [one] => one.clone(),
        many => {
            let refs: Vec<&StateMap> = many.iter().map(|m| &**m).collect();
            Arc::new(resolve(app, rules, &refs)?)
        }
    };
    let lookup = |t: &StateEventType, k: &str| -> Option<Pdu> {
        let sk = app.rooms.short_state_key(&t.to_string(), k).ok()??;
        app.rooms.pdu_by_short(*before.get(&sk)?).ok()?
    };
    auth::check(rules, pdu, fetch, lookup)
        .map_err(|e| IngestError::Auth(format!("against the state before it: {e}")))?;
    Ok(Before {
        short,
        before,
        prev_shorts,
    })
}

/// Persist an event from the room's past (backfill): its state before and after, but no
/// timeline position, extremity or current-state change. Answers its short id.
#[tracing::instrument(skip_all, fields(room_id = %room.meta.room_id, event_id = %c.event_id))]
pub async fn persist_historic(
    app: &Services,
    room: &RoomRef,
    rules: &RoomVersionRules,
    c: &Checked,
) -> Result<u64, IngestError> {
    let _guard = app.room_lock(&room.meta.room_id).lock_owned().await;
    if has_state(app, &c.event_id)? {
        return app
            .rooms
            .short_event(&c.event_id)?
            .ok_or_else(|| IngestError::Invalid("stored event without id".into()));
    }
    let Before {
        short,
        before,
        prev_shorts,
    } = state_before_checked(app, rules, c)?;
    let mut pre = Batch::default();
    let before_snap = snapshot_on_prev(app, &before, &prev_shorts, &mut pre)?;
    let after_snap = match &c.pdu.state_key {
        Some(sk) => {
            let k = app
                .rooms
                .short_state_key_or_create(&c.pdu.kind.to_string(), sk)?;
            let full = || {
                let mut m = (*before).clone();
                m.insert(k, short);
                m
            };
            Some(
                app.store
                    .state
                    .derive(before_snap, &[(k, short)], &[], full, &mut pre)?,
            )
        }
        None => before_snap,
    };
    event_state_row(&mut pre, short, before_snap, after_snap)?;
    app.store.commit(pre)?;
    Ok(short)
}

/// Persist a checked PDU whose prev events and auth events are all known, in its room.
/// `forward_from`: set for joins/leaves we accepted as the resident server, which we must pass
/// on to every other server in the room (not back to the one that sent it).
#[tracing::instrument(skip_all, fields(room_id = %room.meta.room_id, event_id = %c.event_id))]
pub async fn persist(
    app: &Services,
    room: &RoomRef,
    rules: &RoomVersionRules,
    c: Checked,
    forward_from: Option<&ServerName>,
) -> Result<Outcome, IngestError> {
    let room_id = room.meta.room_id.clone();
    let _guard = app.room_lock(&room_id).lock_owned().await;
    if has_state(app, &c.event_id)? {
        return Ok(Outcome::Duplicate);
    }
    let pdu = &c.pdu;
    let fetch = |id: &EventId| app.rooms.pdu(id).ok().flatten();
    let Before {
        short,
        before,
        prev_shorts,
    } = state_before_checked(app, rules, &c)?;
    let lookup = |map: &StateMap, t: &StateEventType, k: &str| -> Option<Pdu> {
        let sk = app.rooms.short_state_key(&t.to_string(), k).ok()??;
        app.rooms.pdu_by_short(*map.get(&sk)?).ok()?
    };

    let current_hash = app.rooms.current_state(room.short)?;
    let current: Arc<StateMap> = match current_hash {
        Some((h, _)) => app.rooms.state_map(h)?,
        None => Arc::default(),
    };
    let old_tips = app.rooms.extremities(room.short)?;
    // Extremities this event supersedes: its prev events, and those reached through prev
    // events that were soft-failed (which never became extremities themselves, so their own
    // parents would otherwise dangle as extremities beside this event).
    let covered = superseded_tips(app, &old_tips, &prev_shorts)?;
    // Soft-fail is judged against the current state. Across a gap we bridged with the state a
    // peer gave us, our current state may be the stale one: then it is judged against the
    // resolution of the event's own state and every extremity, as Synapse does. (That state
    // is only the peer's word: the extremities stay, so it is resolved against ours again.)
    let mut bridged = false;
    for &p in &prev_shorts {
        bridged |= is_gap_point(app, p)?;
    }
    let judged: Arc<StateMap> = if bridged {
        let mut maps = vec![before.clone()];
        for &t in &old_tips {
            maps.extend(state_after(app, t)?);
        }
        let refs: Vec<&StateMap> = maps.iter().map(|m| &**m).collect();
        Arc::new(resolve(app, rules, &refs)?)
    } else {
        current.clone()
    };
    let soft_failed = auth::check(rules, pdu, fetch, |t, k| lookup(&judged, t, k)).is_err();

    let mut pre = Batch::default();
    // In a room that grows in a line, the state before is the current state: share its snapshot.
    let before_is_current =
        current_hash.is_some() && (Arc::ptr_eq(&before, &current) || *before == *current);
    let before_snap = if before_is_current {
        current_hash
    } else {
        snapshot_on_prev(app, &before, &prev_shorts, &mut pre)?
    };
    if soft_failed {
        event_state_row(&mut pre, short, before_snap, before_snap)?;
        schema::EVENT__SOFT_FAILED.put(&mut pre, short, &())?;
        app.store.commit(pre)?;
        drop(_guard);
        app.store.flush().await?;
        tracing::info!(event_id = %c.event_id, room_id = %room_id, sender = %pdu.sender, kind = %pdu.kind, "soft-failed against current state");
        return Ok(Outcome::SoftFailed);
    }

    let state_key = match &pdu.state_key {
        Some(sk) => Some(
            app.rooms
                .short_state_key_or_create(&pdu.kind.to_string(), sk)?,
        ),
        None => None,
    };
    let after_self = || {
        let mut m = (*before).clone();
        m.extend(state_key.map(|k| (k, short)));
        m
    };
    // Short ids of the state events whose membership became current.
    let (after_snap, changed): (Option<(u64, u32)>, Vec<u64>) = if old_tips
        .iter()
        .all(|t| covered.contains(t))
    {
        // Builds on every extremity: the new current state is the state after the event.
        let snap = match state_key {
            Some(k) => Some(app.store.state.derive(
                before_snap,
                &[(k, short)],
                &[],
                after_self,
                &mut pre,
            )?),
            None => before_snap,
        };
        let changed = if before_is_current {
            state_key.map(|_| short).into_iter().collect()
        } else {
            let after = after_self();
            diff(&current, &after)
        };
        (snap, changed)
    } else if state_key.is_none() && prev_shorts.len() == 1 && covered == prev_shorts {
        // A message on one branch: it takes its parent's place among the extremities with the
        // same state, so their resolution, the current state, stays as it is.
        (current_hash, vec![])
    } else {
        // Concurrent branches: the current state is the resolution of the states at every
        // forward extremity the room has after this event (not of the old current state and
        // this event's, which loses state a third branch already overrode).
        let mut tip_states = vec![Arc::new(after_self())];
        for &t in old_tips.iter().filter(|t| !covered.contains(t)) {
            match state_after(app, t)? {
                Some(m) => tip_states.push(m),
                None => {
                    tracing::warn!(room_id = %room_id, tip = t, "forward extremity without state")
                }
            }
        }
        let refs: Vec<&StateMap> = tip_states.iter().map(|m| &**m).collect();
        let new_current = resolve(app, rules, &refs)?;
        let base = current_hash.map(|h| (h, &*current));
        (
            snapshot(app, &new_current, base, &mut pre)?,
            diff(&current, &new_current),
        )
    };
    event_state_row(&mut pre, short, before_snap, after_snap)?;
    tip_rows(&mut pre, room.short, &covered, short)?;
    if let Some(snap) = after_snap {
        room_state_row(&mut pre, room.short, snap)?;
    }
    if let Some(target) = pdu.redacted_event(rules.redaction.content_field_redacts) {
        let state = |t: &str, k: &str| -> Result<Option<Pdu>, RoomsError> {
            Ok(app
                .rooms
                .short_state_key(t, k)?
                .and_then(|sk| before.get(&sk).copied())
                .and_then(|e| app.rooms.pdu_by_short(e).ok().flatten()))
        };
        if let Some(t) = redaction_target(app, room.short, rules, &pdu.sender, target, state)? {
            if let Some(redacted) = redacted_form(app, t, &c.stored, &room_id, rules) {
                redacted_row(&mut pre, t, &redacted)?;
            }
        }
    }
    let mut members = vec![];
    for ev in changed {
        let m = if ev == short {
            Some(pdu.clone())
        } else {
            app.rooms.pdu_by_short(ev)?
        };
        members.extend(m.filter(|m| m.membership().is_some()));
    }
    let audience = app.rooms.room_audience(room.short)?;
    let plan = app.rooms.aggregation_plan(room.short, &c.stored)?;
    let judged_at = current_hash.map(|h| h.0).unwrap_or(0);
    let notified = crate::service::push::evaluate::evaluate(
        app, &room_id, &audience, judged_at, rules, &c.stored,
    )
    .await?;
    let dests: Vec<OwnedServerName> = match forward_from {
        Some(from) => audience.servers.into_iter().filter(|s| s != from).collect(),
        None => vec![],
    };
    let mut wake = audience.local;
    wake.extend(
        members
            .iter()
            .filter_map(|m| m.state_key.as_deref())
            .filter_map(|k| OwnedUserId::try_from(k).ok())
            .filter(|u| app.is_local(u)),
    );
    let (last, ()) = app.store.commit_with_count(|count, batch| {
        batch.append(pre);
        timeline_rows(batch, room.short, count, short)?;
        for m in &members {
            membership_rows(batch, room.short, &room_id, m, count)?;
        }
        relation_row(batch, room.short, &c.stored, count, short)?;
        plan.rows(batch, room.short, count, short)?;
        crate::service::push::unread::notification_rows(
            batch,
            &room_id,
            room.short,
            count,
            short,
            pdu.origin_server_ts.get().into(),
            crate::service::push::evaluate::thread_of(&c.stored),
            &notified,
        )?;
        Sender::stage_pdus(batch, &dests, count, short)?;
        Ok(())
    })?;
    drop(_guard);
    app.store.flush().await?;
    if crate::service::user_directory::PublicUsers::changed_by(pdu) {
        app.public_users.mark_stale();
    }
    app.after_room_write(&wake, last, &dests);
    app.pushers.wake(notified.iter().map(|n| n.user.as_ref()));
    Ok(Outcome::Accepted)
}

/// Most soft-failed events walked through when looking for the extremities they hid.
const MAX_SOFT_FAILED_WALK: usize = 100;

/// The forward extremities among `tips` that `prevs` supersede, directly or through
/// soft-failed events: an event that builds on a soft-failed one builds on its parents too.
/// (Never through the far end of a gap, whose state is only a peer's word: the extremities
/// before the gap stay, and their state is resolved with what comes after it.)
fn superseded_tips(
    app: &Services,
    tips: &[u64],
    prevs: &[u64],
) -> Result<Vec<u64>, FederationError> {
    let mut out = vec![];
    let mut seen: HashSet<u64> = HashSet::new();
    let mut queue: VecDeque<u64> = prevs.iter().copied().collect();
    while let Some(short) = queue.pop_front() {
        if seen.len() >= MAX_SOFT_FAILED_WALK {
            break;
        }
        if !seen.insert(short) {
            continue;
        }
        if tips.contains(&short) {
            out.push(short);
            continue;
        }
        if !is_soft_failed(app, short)? {
            continue;
        }
        if let Some(pdu) = app.rooms.pdu_by_short(short)? {
            for p in &pdu.prev_events {
                queue.extend(app.rooms.short_event(p)?);
            }
        }
    }
    Ok(out)
}

/// Whether an event is the far end of a gap: stored with the state a peer gave us for it.
fn is_gap_point(app: &Services, short: u64) -> Result<bool, FederationError> {
    Ok(schema::EVENT__GAP_POINT.contains(&app.store.kv, short)?)
}

/// Whether an event from another server was soft-failed on receipt.
pub fn is_soft_failed(app: &Services, short: u64) -> Result<bool, FederationError> {
    Ok(schema::EVENT__SOFT_FAILED.contains(&app.store.kv, short)?)
}

/// The events of `to` that `from` does not have at the same key.
fn diff(from: &StateMap, to: &StateMap) -> Vec<u64> {
    to.iter()
        .filter(|(k, v)| from.get(k) != Some(v))
        .map(|(_, v)| *v)
        .collect()
}

/// Fetch and check events of `room` by id from `origin` (auth events we lack), oldest first.
pub async fn fetch_events(
    app: &Services,
    origin: &ServerName,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    ids: Vec<OwnedEventId>,
) -> Result<Vec<Checked>, IngestError> {
    let fed = app.fed()?;
    let mut out: BTreeMap<OwnedEventId, Checked> = BTreeMap::new();
    let mut queue: VecDeque<OwnedEventId> = ids.into();
    while let Some(id) = queue.pop_front() {
        if out.contains_key(&id) || app.rooms.short_event(&id)?.is_some() {
            continue;
        }
        if out.len() >= MAX_FETCH {
            return Err(IngestError::Invalid("too many unknown auth events".into()));
        }
        let path = format!(
            "/_matrix/federation/v1/event/{}",
            crate::service::federation::sender::enc(id.as_str())
        );
        let resp = fed
            .request(app, origin, http::Method::GET, &path, None, true)
            .await?;
        let raw = resp
            .get("pdus")
            .and_then(|p| p.get(0))
            .ok_or_else(|| IngestError::Invalid(format!("{origin} has no event {id}")))?;
        let c = check(app, rules, raw).await?;
        if c.event_id != id || c.pdu.room_id.as_deref().is_some_and(|r| r != room_id) {
            return Err(IngestError::Invalid(format!(
                "{origin} answered another event for {id}"
            )));
        }
        queue.extend(c.pdu.auth_events.iter().cloned());
        out.insert(id, c);
    }
    let mut v: Vec<Checked> = out.into_values().collect();
    v.sort_by_key(|c| c.pdu.depth);
    Ok(v)
}

/// Make sure every auth event of `c` is stored (fetched from `origin` if not), each checked
/// against its own auth events.
pub async fn ensure_auth_events(
    app: &Services,
    origin: &ServerName,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    c: &Checked,
) -> Result<(), IngestError> {
    let mut missing = vec![];
    for id in &c.pdu.auth_events {
        if app.rooms.short_event(id)?.is_none() {
            missing.push(id.clone());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let fetched = fetch_events(app, origin, rules, room_id, missing).await?;
    let n = fetched.len();
    let ok = auth_in_order(app, rules, fetched);
    if ok.len() != n {
        return Err(IngestError::Auth(
            "an auth event fails its own auth checks".into(),
        ));
    }
    let mut batch = Batch::default();
    for c in ok.values() {
        put_outlier(app, c, &mut batch)?;
    }
    app.store.commit(batch)?;
    Ok(())
}
