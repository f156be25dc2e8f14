//! `/relations`: the events that relate to a given event (reactions, edits, thread replies,
//! references), from an index written when each event is persisted.

use ruma::{
    api::{
        client::relations::{
            get_relating_events, get_relating_events_with_rel_type,
            get_relating_events_with_rel_type_and_event_type,
        },
        Direction,
    },
    events::AnyMessageLikeEvent,
    serde::Raw,
    EventId, RoomId, UInt,
};
use serde_json::Value;

use crate::http::extract::parse_token;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::page_limit,
        ruma::{raw_json, Ruma},
    },
    service::{accounts::Session, App},
};

/// How deep `recurse=true` follows relations of relations.
const MAX_DEPTH: u32 = 3;
/// Most related events one request gathers before paging.
const GATHER_CAP: usize = 10_000;
const DEFAULT_LIMIT: usize = 5;

/// A page's direction, depth, size and bounds, checked.
struct Paging {
    backwards: bool,
    recurse: bool,
    limit: usize,
    from: Option<String>,
    to: Option<String>,
}

impl Paging {
    /// From ruma's request fields, already parsed.
    fn typed(
        app: &App,
        dir: Direction,
        recurse: bool,
        limit: Option<UInt>,
        from: Option<String>,
        to: Option<String>,
    ) -> ApiResult<Paging> {
        let limit = page_limit(
            limit.map(|l| l.to_string()).as_deref(),
            DEFAULT_LIMIT,
            app.settings.max_page,
        )?;
        Ok(Paging {
            backwards: dir == Direction::Backward,
            recurse,
            limit,
            from,
            to,
        })
    }
}

/// A page of related events, for each endpoint's own response.
struct Page {
    chunk: Vec<Value>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

impl Page {
    fn chunk(&self) -> ApiResult<Vec<Raw<AnyMessageLikeEvent>>> {
        self.chunk.iter().map(raw_json).collect()
    }
}

/// `(count, short id)` of the room's events relating to `parent`.
fn children(app: &App, short_room: u64, parent: &str) -> ApiResult<Vec<(u64, u64)>> {
    Ok(app
        .rooms
        .relation_children(short_room, parent, GATHER_CAP)?)
}

/// The room's short id, if the parent event is in it and the user may see it; `M_NOT_FOUND`
/// otherwise.
fn parent(app: &App, s: &Session, room_id: &RoomId, event_id: &EventId) -> ApiResult<u64> {
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.rooms.room(room_id)?.ok_or_else(not_found)?;
    let short = app.rooms.short_event(event_id)?.ok_or_else(not_found)?;
    let parent = app.rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    if app
        .rooms
        .event_position(short)?
        .is_none_or(|(r, _)| r != room.short)
        || app.rooms.forgot(&s.user_id, room_id)?
        || !app.rooms.can_see(&s.user_id, room_id, short, &parent)?
    {
        return Err(not_found());
    }
    Ok(room.short)
}

/// The page of events relating to `event_id` in the room `(short id, id)`.
fn relations(
    app: &App,
    s: &Session,
    (room_short, room_id): (u64, &RoomId),
    event_id: &EventId,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    q: Paging,
) -> ApiResult<Page> {
    let Paging {
        backwards,
        recurse,
        limit,
        from: from_token,
        to,
    } = q;
    let from = from_token.as_deref().map(parse_token).transpose()?;
    let to = to.as_deref().map(parse_token).transpose()?;

    // Gather (recursively if asked), then keep what the filters and visibility allow.
    let mut found: Vec<(u64, u64)> = vec![];
    let mut frontier = vec![event_id.to_string()];
    for _ in 0..if recurse { MAX_DEPTH } else { 1 } {
        let mut next = vec![];
        for p in &frontier {
            for (count, child) in children(app, room_short, p)? {
                found.push((count, child));
                if let Some(id) = app
                    .rooms
                    .pdu_by_short(child)?
                    .map(|c| c.event_id.to_string())
                {
                    next.push(id);
                }
            }
        }
        frontier = next;
    }
    found.sort();
    if backwards {
        found.reverse();
    }
    let mut chunk = vec![];
    let mut last = None;
    let mut more = false;
    for (count, child) in found {
        let in_range = match (backwards, from, to) {
            (true, Some(f), _) if count > f => false,
            (false, Some(f), _) if count <= f => false,
            (true, _, Some(t)) if count <= t => false,
            (false, _, Some(t)) if count > t => false,
            _ => true,
        };
        if !in_range {
            continue;
        }
        if chunk.len() == limit {
            more = true;
            break;
        }
        let (Some(pdu), Some(stored)) =
            (app.rooms.pdu_by_short(child)?, app.rooms.pdu_json(child)?)
        else {
            continue;
        };
        let rel = &stored["content"]["m.relates_to"];
        // A redacted relation has lost its content and no longer relates.
        if !recurse && rel["event_id"] != event_id.as_str() {
            continue;
        }
        if rel_type.is_some_and(|t| rel["rel_type"] != t)
            || event_type.is_some_and(|t| stored["type"] != t)
        {
            continue;
        }
        if rel["rel_type"].is_null() || !app.rooms.can_see(&s.user_id, room_id, child, &pdu)? {
            continue;
        }
        last = Some(count);
        chunk.push(app.client_event(child, &stored, room_id, Some(s), true)?);
    }
    let next_batch = match (more, last) {
        (true, Some(c)) => Some(if backwards { c - 1 } else { c }.to_string()),
        _ => None,
    };
    Ok(Page {
        chunk,
        next_batch,
        prev_batch: from_token,
        recursion_depth: recurse.then_some(UInt::from(MAX_DEPTH)),
    })
}

pub async fn all(
    app: App,
    req: Ruma<get_relating_events::v1::Request>,
) -> ApiResult<get_relating_events::v1::Response> {
    let (s, q) = (req.caller, req.body);
    let room = parent(&app, &s, &q.room_id, &q.event_id)?;
    let paging = Paging::typed(&app, q.dir, q.recurse, q.limit, q.from, q.to)?;
    let room = (room, &*q.room_id);
    let page = relations(&app, &s, room, &q.event_id, None, None, paging)?;
    let mut res = get_relating_events::v1::Response::new(page.chunk()?);
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.recursion_depth = page.recursion_depth;
    Ok(res)
}

pub async fn by_rel_type(
    app: App,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type::v1::Response> {
    let (s, q) = (req.caller, req.body);
    let room = parent(&app, &s, &q.room_id, &q.event_id)?;
    let paging = Paging::typed(&app, q.dir, q.recurse, q.limit, q.from, q.to)?;
    let rel_type = Some(q.rel_type.as_str());
    let room = (room, &*q.room_id);
    let page = relations(&app, &s, room, &q.event_id, rel_type, None, paging)?;
    let mut res = get_relating_events_with_rel_type::v1::Response::new(page.chunk()?);
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.recursion_depth = page.recursion_depth;
    Ok(res)
}

/// The event type is taken from the path as sent: ruma's `TimelineEventType` reads
/// `org.matrix.call.sdp_stream_metadata_changed` as its `m.call` name.
pub async fn by_rel_and_event_type(
    app: App,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let (s, q) = (req.caller, req.body);
    let event_type = req.path.get(3).cloned().unwrap_or_default();
    let room = parent(&app, &s, &q.room_id, &q.event_id)?;
    let paging = Paging::typed(&app, q.dir, q.recurse, q.limit, q.from, q.to)?;
    let rel_type = Some(q.rel_type.as_str());
    let room = (room, &*q.room_id);
    let page = relations(
        &app,
        &s,
        room,
        &q.event_id,
        rel_type,
        Some(event_type.as_str()),
        paging,
    )?;
    let mut res =
        get_relating_events_with_rel_type_and_event_type::v1::Response::new(page.chunk()?);
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.recursion_depth = page.recursion_depth;
    Ok(res)
}
