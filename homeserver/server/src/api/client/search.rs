//! `POST /search`: the `room_events` category over the full-text index. The index answers
//! candidates in order; only events the user may see (history visibility and membership at
//! each event) and that pass the filter are returned.

use std::collections::{BTreeMap, BTreeSet};

use axum::{extract::State, Json};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use plexus_search::{Cursor, Key, Order, Query as IndexQuery, QueryPart};
use ruma::{OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{filter::EventFilter, messages::events_around};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body, Query},
    service::{accounts::Session, search::searchable, App, Services},
};

/// Results per page unless the filter says otherwise, and the most it may ask for.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Most candidates one request looks at (hidden ones included) before answering with what it
/// has and a `next_batch`, so a search through history the user cannot see stays cheap.
const SCAN_CAP: usize = 1_000;
const DEFAULT_CONTEXT: usize = 5;
const MAX_CONTEXT: usize = 100;

#[derive(Deserialize)]
pub struct SearchBody {
    search_categories: Map<String, Value>,
}

#[derive(Deserialize)]
struct Criteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<EventFilter>,
    order_by: Option<String>,
    event_context: Option<ContextRequest>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

#[derive(Deserialize)]
struct ContextRequest {
    before_limit: Option<u64>,
    after_limit: Option<u64>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<GroupBy>,
}

#[derive(Deserialize)]
struct GroupBy {
    key: String,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    next_batch: Option<String>,
}

/// A `next_batch`: where the candidates continue, for which ordering, and (for a group's
/// token) the room or sender the group is about.
#[derive(Serialize, Deserialize)]
struct Batch {
    order: Order,
    cursor: Cursor,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<String>,
}

impl Batch {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> ApiResult<Batch> {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| ApiError::InvalidParam("next_batch is not a token from /search".into()))
    }
}

/// The request's `room_events`, checked.
struct Request {
    term: String,
    parts: Vec<QueryPart>,
    keys: Vec<Key>,
    filter: EventFilter,
    order: Order,
    limit: usize,
    context: Option<(usize, usize, bool)>,
    include_state: bool,
    group_by: Vec<String>,
}

fn parse(criteria: &Value) -> ApiResult<Request> {
    if !criteria.is_object() {
        return Err(ApiError::BadJson("room_events must be an object".into()));
    }
    let c: Criteria = serde_json::from_value(criteria.clone())
        .map_err(|e| ApiError::BadJson(format!("invalid room_events: {e}")))?;
    let keys = match c.keys {
        None => Key::ALL.to_vec(),
        Some(keys) => keys
            .iter()
            .map(|k| {
                Key::parse(k).ok_or_else(|| {
                    ApiError::InvalidParam(format!(
                        "unknown key {k:?}: content.body, content.name or content.topic"
                    ))
                })
            })
            .collect::<ApiResult<_>>()?,
    };
    let order = match c.order_by.as_deref() {
        None | Some("rank") => Order::Rank,
        Some("recent") => Order::Recent,
        Some(o) => {
            return Err(ApiError::InvalidParam(format!(
                "order_by must be rank or recent, not {o:?}"
            )))
        }
    };
    let filter = c.filter.unwrap_or_default();
    let limit = filter
        .limit
        .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let context = c.event_context.map(|e| {
        let n = |v: Option<u64>| v.map_or(DEFAULT_CONTEXT, |v| (v as usize).min(MAX_CONTEXT));
        (n(e.before_limit), n(e.after_limit), e.include_profile)
    });
    let mut group_by = vec![];
    for g in c.groupings.map(|g| g.group_by).unwrap_or_default() {
        if g.key != "room_id" && g.key != "sender" {
            return Err(ApiError::InvalidParam(format!(
                "group_by key must be room_id or sender, not {:?}",
                g.key
            )));
        }
        if !group_by.contains(&g.key) {
            group_by.push(g.key);
        }
    }
    Ok(Request {
        parts: plexus_search::query_parts(&c.search_term),
        term: c.search_term,
        keys,
        filter,
        order,
        limit,
        context,
        include_state: c.include_state,
        group_by,
    })
}

/// `POST /_matrix/client/v3/search`.
///
/// Hand-typed: ruma ignores unknown categories (`M_INVALID_PARAM` here) and empty `results`.
pub async fn search(
    State(app): State<App>,
    Auth(s): Auth,
    Query(q): Query<SearchQuery>,
    Body(body): Body<SearchBody>,
) -> ApiResult<Json<Value>> {
    if let Some(name) = body
        .search_categories
        .keys()
        .find(|k| k.as_str() != "room_events")
    {
        return Err(ApiError::InvalidParam(format!(
            "unknown search category {name:?}: only room_events is supported"
        )));
    }
    let mut categories = Map::new();
    if let Some(criteria) = body.search_categories.get("room_events") {
        let mut req = parse(criteria)?;
        let batch = q.next_batch.as_deref().map(Batch::decode).transpose()?;
        if batch.as_ref().is_some_and(|b| b.order != req.order) {
            return Err(ApiError::InvalidParam(
                "next_batch belongs to a search with another order_by".into(),
            ));
        }
        req.filter.ignored = app.account_data.ignored_users(&s.user_id)?;
        let svc = app.clone();
        let answer = tokio::task::spawn_blocking(move || room_events(&svc, &s, req, batch))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        categories.insert("room_events".to_owned(), answer);
    }
    Ok(Json(json!({ "search_categories": categories })))
}

/// A result that passed the checks.
struct Found {
    short: u64,
    room_id: OwnedRoomId,
    sender: String,
    stored: Value,
    rank: f32,
}

fn room_events(
    app: &Services,
    s: &Session,
    mut req: Request,
    batch: Option<Batch>,
) -> ApiResult<Value> {
    // A group's token narrows the search to its room or sender.
    if let Some(b) = &batch {
        if let Some(r) = &b.room {
            req.filter.rooms = Some(vec![r.clone()]);
        }
        if let Some(u) = &b.sender {
            req.filter.senders = Some(vec![u.clone()]);
        }
    }
    // Every room whose state the user may read (joined, or left after being joined, and not
    // forgotten; or world-readable): whether they may see each event there is decided per
    // event below.
    let mut rooms = vec![];
    for (room_id, _) in app.rooms.user_rooms(&s.user_id)? {
        if req.filter.allows_room(room_id.as_str()) {
            if let Some(r) = app.rooms.room(&room_id)? {
                if app.visible_state_hash(&s.user_id, &r).is_ok() {
                    rooms.push(r.short);
                }
            }
        }
    }
    let mut cursor = batch.as_ref().map(|b| b.cursor);
    let mut found: Vec<Found> = vec![];
    let mut count = None;
    // The index's count includes what the user may not see: it is only told when no candidate
    // was held back, else the answer counts what it returns.
    let mut held_back = false;
    let mut scanned = 0;
    let mut next = None;
    'pages: loop {
        let want = (req.limit - found.len()).max(10) * 2;
        let page = app.search.index.search(&IndexQuery {
            parts: &req.parts,
            rooms: &rooms,
            keys: &req.keys,
            order: req.order,
            after: cursor,
            limit: want,
            count: count.is_none(),
        })?;
        if count.is_none() {
            count = page.count;
        }
        let offset = match cursor {
            Some(Cursor::Offset(n)) => n,
            _ => 0,
        };
        for (i, hit) in page.hits.iter().enumerate() {
            scanned += 1;
            let here = match req.order {
                Order::Rank => Cursor::Offset(offset + i + 1),
                Order::Recent => Cursor::Below(hit.order),
            };
            match visible(app, s, &req.filter, hit.event, hit.rank)? {
                Some(f) => found.push(f),
                None => held_back = true,
            }
            let more = i + 1 < page.hits.len() || page.next.is_some();
            if found.len() == req.limit || scanned >= SCAN_CAP {
                next = more.then_some(here);
                break 'pages;
            }
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let count = count.filter(|_| !held_back);
    answer(app, s, &req, batch, found, count, next)
}

/// The stored event behind a candidate, if the user may see it and the filter lets it through.
fn visible(
    app: &Services,
    s: &Session,
    filter: &EventFilter,
    short: u64,
    rank: f32,
) -> ApiResult<Option<Found>> {
    let (Some(pdu), Some(stored)) = (app.rooms.pdu_by_short(short)?, app.rooms.pdu_json(short)?)
    else {
        return Ok(None);
    };
    let Some(room_id) = pdu.room_id.clone() else {
        return Ok(None);
    };
    if !filter.allows(&stored) || !app.rooms.can_see(&s.user_id, &room_id, short, &pdu)? {
        return Ok(None);
    }
    Ok(Some(Found {
        short,
        room_id,
        sender: pdu.sender.to_string(),
        stored,
        rank,
    }))
}

fn answer(
    app: &Services,
    s: &Session,
    req: &Request,
    batch: Option<Batch>,
    found: Vec<Found>,
    count: Option<usize>,
    next: Option<Cursor>,
) -> ApiResult<Value> {
    let mut results = vec![];
    let mut highlights: Vec<String> = vec![];
    let mut seen_words = BTreeSet::new();
    for f in &found {
        if let Some(text) = searchable(app, f.short, &f.stored)? {
            for w in plexus_search::matched_words(&req.parts, &text.text) {
                if seen_words.insert(w.clone()) {
                    highlights.push(w);
                }
            }
        }
        let mut r = json!({
            "rank": f.rank,
            "result": app.client_event(f.short, &f.stored, &f.room_id, Some(s), true)?,
        });
        if let Some((before, after, profiles)) = req.context {
            r["context"] = context(app, s, f, before, after, profiles, &req.filter)?;
        }
        results.push(r);
    }
    // The words of the query itself, as typed, for results whose text was written otherwise.
    for w in req.term.split_whitespace() {
        let w = w.trim_matches('"');
        if !w.is_empty() && seen_words.insert(w.to_owned()) {
            highlights.push(w.to_owned());
        }
    }
    let mut out = json!({
        "results": results,
        "count": count.unwrap_or(found.len()),
        "highlights": highlights,
    });
    let token = |room: Option<String>, sender: Option<String>| {
        next.map(|cursor| {
            Batch {
                order: req.order,
                cursor,
                room: room.or_else(|| batch.as_ref().and_then(|b| b.room.clone())),
                sender: sender.or_else(|| batch.as_ref().and_then(|b| b.sender.clone())),
            }
            .encode()
        })
    };
    if let Some(t) = token(None, None) {
        out["next_batch"] = json!(t);
    }
    if !req.group_by.is_empty() {
        let mut groups = Map::new();
        for key in &req.group_by {
            let mut by: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
            for (i, f) in found.iter().enumerate() {
                let value = if key == "room_id" {
                    f.room_id.to_string()
                } else {
                    f.sender.clone()
                };
                let entry = by.entry(value).or_insert((i + 1, vec![]));
                entry
                    .1
                    .push(f.stored["event_id"].as_str().unwrap_or_default().to_owned());
            }
            let mut g = Map::new();
            for (value, (order, ids)) in by {
                let mut v = json!({ "order": order, "results": ids });
                let t = if key == "room_id" {
                    token(Some(value.clone()), None)
                } else {
                    token(None, Some(value.clone()))
                };
                if let Some(t) = t {
                    v["next_batch"] = json!(t);
                }
                g.insert(value, v);
            }
            groups.insert(key.clone(), Value::Object(g));
        }
        out["groups"] = Value::Object(groups);
    }
    if req.include_state {
        let mut state = Map::new();
        let rooms: BTreeSet<&RoomId> = found.iter().map(|f| f.room_id.as_ref()).collect();
        for room_id in rooms {
            let Some(room) = app.rooms.room(room_id)? else {
                continue;
            };
            let hash = app.visible_state_hash(&s.user_id, &room)?;
            let mut events = vec![];
            for sh in app.rooms.state_map(hash)?.values() {
                if let Some(st) = app.rooms.pdu_json(*sh)? {
                    events.push(app.client_event_inner(*sh, &st, room_id, Some(s), true)?);
                }
            }
            state.insert(room_id.to_string(), Value::Array(events));
        }
        out["state"] = Value::Object(state);
    }
    Ok(out)
}

/// A result's `context`: the events around it and, if asked, the senders' profiles as they
/// were at the result.
fn context(
    app: &Services,
    s: &Session,
    f: &Found,
    before: usize,
    after: usize,
    profiles: bool,
    filter: &EventFilter,
) -> ApiResult<Value> {
    let mut out = json!({ "events_before": [], "events_after": [] });
    let mut senders = BTreeSet::from([f.sender.clone()]);
    let room = app.rooms.room(&f.room_id)?;
    // Backfilled events have no timeline position: they come without neighbours.
    if let (Some(room), Some((_, count))) = (room, app.rooms.event_position(f.short)?) {
        let around = events_around(app, s, &room, count, before, after, filter)?;
        senders.extend(around.senders);
        out = json!({
            "events_before": around.before,
            "events_after": around.after,
            "start": around.start.to_string(),
            "end": around.end.to_string(),
        });
    }
    if profiles {
        let hash = app
            .rooms
            .event_state(f.short)?
            .map_or(0, |(_, after)| after);
        let mut info = Map::new();
        for u in senders {
            let Some(member) = app.rooms.state_pdu(hash, "m.room.member", &u)? else {
                continue;
            };
            let content = member.content_value();
            let mut p = Map::new();
            for k in ["displayname", "avatar_url"] {
                if let Some(v) = content.get(k).filter(|v| v.is_string()) {
                    p.insert(k.to_owned(), v.clone());
                }
            }
            info.insert(u, Value::Object(p));
        }
        out["profile_info"] = Value::Object(info);
    }
    Ok(out)
}
