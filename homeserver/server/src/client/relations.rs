//! `/relations`: the events that relate to a given event (reactions, edits, thread replies,
//! references), from an index written when each event is persisted.

use axum::{extract::State, Json};
use ruma::EventId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::extract::{parse_room_id, parse_token};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{page_limit, Auth, Path, Query},
    service::{accounts::Session, App},
};

/// How deep `recurse=true` follows relations of relations.
const MAX_DEPTH: usize = 3;
/// Most related events one request gathers before paging.
const GATHER_CAP: usize = 10_000;

#[derive(Deserialize, Default)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    dir: Option<String>,
    recurse: Option<String>,
}

/// `(count, short id)` of the room's events relating to `parent`.
fn children(app: &App, short_room: u64, parent: &str) -> ApiResult<Vec<(u64, u64)>> {
    app.relation_children(short_room, parent, GATHER_CAP)
}

async fn relations(
    app: App,
    s: Session,
    room_id: String,
    event_id: String,
    rel_type: Option<String>,
    event_type: Option<String>,
    q: RelationsQuery,
) -> ApiResult<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| ApiError::InvalidParam(format!("invalid event id: {e}")))?;
    let not_found = || ApiError::NotFound("Event not found".into());
    let room = app.room(&room_id)?.ok_or_else(not_found)?;
    let short = app.short_event(&event_id)?.ok_or_else(not_found)?;
    let parent = app.pdu_by_short(short)?.ok_or_else(not_found)?;
    if app
        .event_position(short)?
        .is_none_or(|(r, _)| r != room.short)
        || app.forgot(&s.user_id, &room_id)?
        || !app.can_see(&s.user_id, &room_id, short, &parent)?
    {
        return Err(not_found());
    }
    let backwards = match q.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(ApiError::InvalidParam("dir must be b or f".into())),
    };
    let recurse = match q.recurse.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "recurse must be true or false".into(),
            ))
        }
    };
    let limit = page_limit(q.limit.as_deref(), 5, app.settings.max_page)?;
    let from = q.from.as_deref().map(parse_token).transpose()?;
    let to = q.to.as_deref().map(parse_token).transpose()?;

    // Gather (recursively if asked), then keep what the filters and visibility allow.
    let mut found: Vec<(u64, u64)> = vec![];
    let mut frontier = vec![event_id.to_string()];
    for _ in 0..if recurse { MAX_DEPTH } else { 1 } {
        let mut next = vec![];
        for p in &frontier {
            for (count, child) in children(&app, room.short, p)? {
                found.push((count, child));
                if let Some(id) = app.pdu_by_short(child)?.map(|c| c.event_id.to_string()) {
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
        let (Some(pdu), Some(stored)) = (app.pdu_by_short(child)?, app.pdu_json(child)?) else {
            continue;
        };
        let rel = &stored["content"]["m.relates_to"];
        // A redacted relation has lost its content and no longer relates.
        if !recurse && rel["event_id"] != event_id.as_str() {
            continue;
        }
        if rel_type.as_deref().is_some_and(|t| rel["rel_type"] != t)
            || event_type.as_deref().is_some_and(|t| stored["type"] != t)
        {
            continue;
        }
        if rel["rel_type"].is_null() || !app.can_see(&s.user_id, &room_id, child, &pdu)? {
            continue;
        }
        last = Some(count);
        chunk.push(app.client_event(child, &stored, &room_id, Some(&s), true)?);
    }
    let mut out = json!({ "chunk": chunk });
    if let (true, Some(c)) = (more, last) {
        out["next_batch"] = json!(if backwards { c - 1 } else { c }.to_string());
    }
    if let Some(f) = &q.from {
        out["prev_batch"] = json!(f);
    }
    if recurse {
        out["recursion_depth"] = json!(MAX_DEPTH);
    }
    Ok(Json(out))
}

pub async fn all(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations(app, s, room_id, event_id, None, None, q).await
}

pub async fn by_rel_type(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations(app, s, room_id, event_id, Some(rel_type), None, q).await
}

pub async fn by_rel_and_event_type(
    State(app): State<App>,
    Auth(s): Auth,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations(
        app,
        s,
        room_id,
        event_id,
        Some(rel_type),
        Some(event_type),
        q,
    )
    .await
}
