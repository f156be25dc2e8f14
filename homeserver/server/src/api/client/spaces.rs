//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: a space's tree, depth first, with the
//! rooms the user may see. Rooms this server is in are read from current state; the rest are
//! asked of the servers their parent's `m.space.child` event names. And
//! `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`, one room the same way.

use std::collections::{HashMap, HashSet};

use axum::{extract::State, Json};
use ruma::{OwnedRoomId, OwnedServerName, RoomId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::membership::{room_and_via, ViaQuery};
use crate::http::extract::parse_room_id;
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, MaybeAuth, Path, Query},
    service::federation::hierarchy::{self, wanted},
    service::{spaces::Viewer, App},
};

/// Deepest level walked, whatever `max_depth` asks.
const MAX_DEPTH: u64 = 10;
/// Most rooms looked at for one page, so a huge or cyclic tree cannot tie the server up.
const MAX_WALK: usize = 500;
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 100;

#[derive(Deserialize)]
pub struct HierarchyQuery {
    from: Option<String>,
    limit: Option<u64>,
    max_depth: Option<u64>,
    suggested_only: Option<bool>,
}

/// `next_batch`: how many rooms were returned so far, and the walk's parameters, which a
/// later page may not change.
fn token(skip: usize, max_depth: u64, suggested_only: bool) -> String {
    format!("{skip}_{max_depth}_{}", u8::from(suggested_only))
}

fn parse_token(t: &str, max_depth: u64, suggested_only: bool) -> ApiResult<usize> {
    let bad = || ApiError::InvalidParam("unknown or malformed `from` token".into());
    let mut parts = t.split('_');
    let skip: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let depth: u64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let suggested = parts.next().ok_or_else(bad)?;
    if parts.next().is_some() {
        return Err(bad());
    }
    if depth != max_depth || suggested != u8::from(suggested_only).to_string() {
        return Err(ApiError::InvalidParam(
            "max_depth and suggested_only cannot change between pages".into(),
        ));
    }
    Ok(skip)
}

/// A room's summary with `children_state` if the user may see it: from here when this
/// server is in the room, else from a sibling's federation answer or the servers in `via`.
async fn lookup(
    app: &App,
    id: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
    viewer: Viewer<'_>,
    fetched: &mut HashMap<OwnedRoomId, Value>,
) -> ApiResult<Option<Value>> {
    if let Some(room) = app.rooms.resident_room(id)? {
        let mut s = app.room_summary(&room)?;
        if !app.may_preview(id, &s, viewer)? {
            return Ok(None);
        }
        s["children_state"] = json!(app.children_state(&room)?);
        return Ok(Some(s));
    }
    let summary = match fetched.remove(id) {
        Some(s) => s,
        None => {
            let Some(resp) = hierarchy::fetch(app, id, via, suggested_only).await else {
                return Ok(None);
            };
            for c in resp["children"].as_array().into_iter().flatten() {
                if let Some(cid) = c["room_id"].as_str().and_then(|s| RoomId::parse(s).ok()) {
                    fetched.insert(cid, c.clone());
                }
            }
            resp["room"].clone()
        }
    };
    // The other server answers for its users; ours still need the spec's reasons here.
    if app.may_preview(id, &summary, viewer)? {
        Ok(Some(summary))
    } else {
        Ok(None)
    }
}

fn via_of(child: &Value) -> Vec<OwnedServerName> {
    child["content"]["via"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
        .collect()
}

/// Hand-typed: ruma's `RoomSummary` leaves out a `public` `join_rule`, and remote rooms' extras.
pub async fn hierarchy(
    State(app): State<App>,
    Auth(s): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<HierarchyQuery>,
) -> ApiResult<Json<Value>> {
    let root = parse_room_id(&room_id)?;
    let limit = match q.limit {
        Some(0) => return Err(ApiError::InvalidParam("limit must be positive".into())),
        Some(l) => l.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    } as usize;
    let max_depth = q.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
    let suggested_only = q.suggested_only.unwrap_or(false);
    let skip = match &q.from {
        Some(t) => parse_token(t, max_depth, suggested_only)?,
        None => 0,
    };
    let viewer = Viewer::User(&s.user_id);
    let root_via: Vec<OwnedServerName> = root
        .server_name()
        .map(|s| s.to_owned())
        .into_iter()
        .collect();
    let mut stack = vec![(root.clone(), 0u64, root_via)];
    let mut seen = HashSet::new();
    let mut fetched = HashMap::new();
    let (mut rooms, mut index, mut more) = (vec![], 0usize, false);
    while let Some((id, depth, via)) = stack.pop() {
        if !seen.insert(id.clone()) || seen.len() > MAX_WALK {
            continue;
        }
        let Some(summary) = lookup(&app, &id, &via, suggested_only, viewer, &mut fetched).await?
        else {
            if depth == 0 {
                return Err(ApiError::Forbidden(
                    "You are not allowed to view this room.".into(),
                ));
            }
            continue;
        };
        if rooms.len() == limit {
            more = true;
            break;
        }
        if summary["room_type"] == "m.space" && depth < max_depth {
            let children = summary["children_state"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in children.iter().rev().filter(|c| wanted(c, suggested_only)) {
                if let Some(cid) = c["state_key"].as_str().and_then(|s| RoomId::parse(s).ok()) {
                    if !seen.contains(&cid) {
                        stack.push((cid, depth + 1, via_of(c)));
                    }
                }
            }
        }
        if index >= skip {
            rooms.push(summary);
        }
        index += 1;
    }
    let mut body = json!({ "rooms": rooms });
    if more {
        body["next_batch"] = json!(token(skip + limit, max_depth, suggested_only));
    }
    Ok(Json(body))
}

/// A room's summary, for anyone who may preview it (without a token: public, knockable and
/// world-readable rooms only), with the caller's membership.
///
/// Hand-typed: ruma's `RoomSummary` leaves out a `public` `join_rule` (and MSC3266's names).
pub async fn room_summary(
    State(app): State<App>,
    MaybeAuth(session): MaybeAuth,
    Path(room): Path<String>,
    Query(q): Query<ViaQuery>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::NotFound("Room not found.".into());
    let (room_id, via) = room_and_via(&app, &room, &q).await?;
    let via: Vec<OwnedServerName> = via
        .into_iter()
        .chain(room_id.server_name().map(ToOwned::to_owned))
        .collect();
    let viewer = match &session {
        Some(s) => Viewer::User(&s.user_id),
        None => Viewer::Anyone,
    };
    let mut summary = lookup(&app, &room_id, &via, false, viewer, &mut HashMap::new())
        .await?
        .ok_or_else(not_found)?;
    if let Some(o) = summary.as_object_mut() {
        o.remove("children_state");
    }
    if let Some(s) = &session {
        if let Some(m) = app.rooms.membership(&s.user_id, &room_id)? {
            summary["membership"] = json!(m.membership);
        }
    }
    Ok(Json(summary))
}

/// The summary on MSC3266's unstable paths, with the MSC's unstable names for the room version
/// and encryption beside the stable ones.
///
/// Hand-typed, as [`room_summary`] is: ruma's response has no room for the unstable names.
pub async fn room_summary_unstable(
    app: State<App>,
    session: MaybeAuth,
    room: Path<String>,
    q: Query<ViaQuery>,
) -> ApiResult<Json<Value>> {
    let Json(mut summary) = room_summary(app, session, room, q).await?;
    for (stable, unstable) in [
        ("room_version", "im.nheko.summary.room_version"),
        // The MSC's first name for it, which some clients still read.
        ("room_version", "im.nheko.summary.version"),
        ("encryption", "im.nheko.summary.encryption"),
    ] {
        if let Some(v) = summary.get(stable).cloned() {
            summary[unstable] = v;
        }
    }
    Ok(Json(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_carry_the_walk_parameters() {
        let t = token(20, 3, true);
        assert_eq!(parse_token(&t, 3, true).unwrap(), 20);
        assert!(parse_token(&t, 4, true).is_err());
        assert!(parse_token(&t, 3, false).is_err());
        for bad in ["", "x_3_1", "20_3", "20_3_1_9", "-1_3_1"] {
            assert!(parse_token(bad, 3, true).is_err(), "{bad}");
        }
    }
}
