//! Filters: stored per user, applied while reading timelines and state.

use axum::{extract::State, Json};
use ruma::api::client::filter::RoomEventFilter;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, JsonObject, Path},
    service::{accounts::Session, App},
};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EventFilter {
    pub limit: Option<u64>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    /// Sync: count each thread's notifications apart from the main timeline's.
    pub unread_thread_notifications: bool,
    /// Users the reader ignores (`m.ignored_user_list`): their events are hidden, except state.
    #[serde(skip)]
    pub ignored: std::collections::BTreeSet<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomFilter {
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub account_data: EventFilter,
    pub include_leave: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    pub event_fields: Option<Vec<String>>,
    pub event_format: Option<String>,
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub room: RoomFilter,
}

/// `*` matches any suffix, as the spec allows in type and sender lists.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl EventFilter {
    pub fn allows(&self, ev: &Value) -> bool {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or_default();
        let sender = ev.get("sender").and_then(Value::as_str).unwrap_or_default();
        if self.not_types.iter().any(|p| glob(p, kind)) {
            return false;
        }
        if self
            .types
            .as_ref()
            .is_some_and(|t| !t.iter().any(|p| glob(p, kind)))
        {
            return false;
        }
        if self.not_senders.iter().any(|s| s == sender) {
            return false;
        }
        if ev.get("state_key").is_none() && self.ignored.contains(sender) {
            return false;
        }
        if self
            .senders
            .as_ref()
            .is_some_and(|s| !s.iter().any(|x| x == sender))
        {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = ev
                .get("content")
                .and_then(|c| c.get("url"))
                .is_some_and(Value::is_string);
            if has != want {
                return false;
            }
        }
        true
    }
}

/// `rooms` (when given) names the room and `not_rooms` does not.
fn room_listed(rooms: Option<&Vec<String>>, not_rooms: &[String], room_id: &str) -> bool {
    !not_rooms.iter().any(|r| r == room_id) && rooms.is_none_or(|r| r.iter().any(|x| x == room_id))
}

impl RoomFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        room_listed(self.rooms.as_ref(), &self.not_rooms, room_id)
    }
}

impl EventFilter {
    /// The room lists of a room event filter (`/search` reads them).
    pub fn allows_room(&self, room_id: &str) -> bool {
        room_listed(self.rooms.as_ref(), &self.not_rooms, room_id)
    }
}

pub fn parse_filter(v: Value) -> ApiResult<Filter> {
    let f: Filter =
        serde_json::from_value(v).map_err(|e| ApiError::BadJson(format!("invalid filter: {e}")))?;
    if let Some(fmt) = &f.event_format {
        if fmt != "client" && fmt != "federation" {
            return Err(ApiError::BadJson(
                "event_format must be client or federation".into(),
            ));
        }
    }
    Ok(f)
}

/// A filter given inline (`{...}`) or by id.
pub fn resolve(app: &App, s: &Session, filter: Option<&str>) -> ApiResult<Filter> {
    match filter {
        None => Ok(Filter::default()),
        Some(f) if f.trim_start().starts_with('{') => {
            let v: Value = serde_json::from_str(f)
                .map_err(|e| ApiError::InvalidParam(format!("filter is not JSON: {e}")))?;
            parse_filter(v).map_err(|e| ApiError::InvalidParam(e.to_string()))
        }
        Some(id) => {
            let v = app
                .filters
                .get(&s.user_id, id)?
                .ok_or_else(|| ApiError::NotFound("Unknown filter".into()))?;
            parse_filter(v)
        }
    }
}

/// A room event filter given inline on `/messages` and `/context`.
pub fn parse_event_filter(filter: Option<&str>) -> ApiResult<EventFilter> {
    match filter {
        None => Ok(EventFilter::default()),
        Some(f) => serde_json::from_str(f)
            .map_err(|e| ApiError::InvalidParam(format!("invalid filter: {e}"))),
    }
}

/// A room event filter ruma has read, as this module's own (so it filters as one given inline
/// does).
pub fn event_filter_of(f: &RoomEventFilter) -> ApiResult<EventFilter> {
    serde_json::to_value(f)
        .and_then(serde_json::from_value)
        .map_err(|e| ApiError::InvalidParam(format!("invalid filter: {e}")))
}

/// Hand-typed: a filter is kept and answered as the client wrote it; ruma's `FilterDefinition`
/// would drop fields it does not know and those at their default.
pub async fn create(
    State(app): State<App>,
    Auth(s): Auth,
    Path(user): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let v = Value::Object(body);
    parse_filter(v.clone())?;
    let id = app.filters.create(&s.user_id, &v)?;
    app.store.flush().await?;
    Ok(Json(json!({ "filter_id": id })))
}

/// Hand-typed, as [`create`] is.
pub async fn get(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.require_self(&user)?;
    let v = app
        .filters
        .get(&s.user_id, &id)?
        .ok_or_else(|| ApiError::NotFound("Unknown filter".into()))?;
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_types_senders_and_urls() {
        let f: EventFilter = serde_json::from_value(json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "not_senders": ["@x:y"]
        }))
        .unwrap();
        assert!(f.allows(&json!({"type": "m.room.message", "sender": "@a:y"})));
        assert!(!f.allows(&json!({"type": "m.room.member", "sender": "@a:y"})));
        assert!(!f.allows(&json!({"type": "m.reaction", "sender": "@a:y"})));
        assert!(!f.allows(&json!({"type": "m.room.message", "sender": "@x:y"})));
        let u: EventFilter = serde_json::from_value(json!({"contains_url": true})).unwrap();
        assert!(u.allows(&json!({"type": "m.room.message", "content": {"url": "mxc://a/b"}})));
        assert!(!u.allows(&json!({"type": "m.room.message", "content": {}})));
    }

    #[test]
    fn ruma_filters_read_as_given() {
        let given = json!({
            "types": ["m.room.*"], "not_types": ["m.room.member"], "senders": ["@a:y"],
            "not_senders": ["@x:y"], "rooms": ["!r:y"], "not_rooms": ["!s:y"],
            "contains_url": false, "lazy_load_members": true, "limit": 3
        });
        let r: RoomEventFilter = serde_json::from_value(given.clone()).unwrap();
        let ours = serde_json::to_value(event_filter_of(&r).unwrap()).unwrap();
        let direct: EventFilter = serde_json::from_value(given).unwrap();
        assert_eq!(ours, serde_json::to_value(direct).unwrap());
        let empty = event_filter_of(&Default::default()).unwrap();
        assert!(empty.types.is_none() && !empty.lazy_load_members);
    }

    #[test]
    fn bad_filters_are_rejected() {
        assert!(parse_filter(json!({"room": {"timeline": {"limit": "ten"}}})).is_err());
        assert!(parse_filter(json!({"event_format": "xml"})).is_err());
        assert!(parse_filter(json!({"room": {"timeline": {"limit": 5}}})).is_ok());
    }
}
