//! Bundled aggregations (`unsigned.m.relations`): thread summaries, the latest edit and the
//! references. They are kept up to date as events are written, so rendering an event costs a lookup or two
//! instead of a scan of everything that relates to it. [`Rooms`] reads the relation tables; the
//! bundle for a viewer ([`Services::bundled_relations`]) stays on `Services`, as it renders
//! client events.

use plexus_store::{schema, Batch, First, StoreError};
use ruma::{EventId, RoomId};
use serde_json::{json, Map, Value};

use super::{
    accounts::Session,
    rooms::{Rooms, RoomsError},
    Services,
};

/// What writing one event changes in the aggregation tables, worked out before the commit.
pub enum Plan {
    None,
    Thread {
        root: u64,
        /// The thread's latest count and reply count before this event.
        before: Option<(u64, u64)>,
        sender: String,
    },
    /// A valid edit that is newer than the parent's current latest edit.
    Edit {
        parent: u64,
    },
    Reference {
        parent: u64,
    },
}

/// Most references bundled on one event.
const MAX_REFERENCES: usize = 1000;

fn event_short(rooms: &Rooms, id: &str) -> Result<Option<u64>, RoomsError> {
    match EventId::parse(id) {
        Ok(id) => rooms.short_event(&id),
        Err(_) => Ok(None),
    }
}

/// Whether `edit` may replace `original`: same sender and type, not a state event, not itself
/// an edit, and carrying `m.new_content`.
fn valid_edit(original: &Value, edit: &Value) -> bool {
    original["sender"] == edit["sender"]
        && original["type"] == edit["type"]
        && original.get("state_key").is_none()
        && original["content"]["m.relates_to"]["rel_type"] != "m.replace"
        && edit["content"]["m.new_content"].is_object()
}

/// The later of two edits: by `origin_server_ts`, then event id, as the spec orders them.
fn later(a: &Value, b: &Value) -> bool {
    let key = |e: &Value| {
        (
            e["origin_server_ts"].as_u64().unwrap_or(0),
            e["event_id"].as_str().unwrap_or("").to_owned(),
        )
    };
    key(a) > key(b)
}

impl Rooms {
    /// The aggregation change `stored` (an event about to be written in `short_room`) makes.
    pub fn aggregation_plan(&self, short_room: u64, stored: &Value) -> Result<Plan, RoomsError> {
        let rel = &stored["content"]["m.relates_to"];
        let Some(parent_id) = rel["event_id"].as_str() else {
            return Ok(Plan::None);
        };
        let Some(parent) = event_short(self, parent_id)? else {
            return Ok(Plan::None);
        };
        if self
            .event_position(parent)?
            .is_none_or(|(room, _)| room != short_room)
        {
            return Ok(Plan::None);
        }
        match rel["rel_type"].as_str() {
            Some("m.thread") => {
                let before = self
                    .thread_info(parent)?
                    .map(|t| (t.latest_count, t.replies));
                Ok(Plan::Thread {
                    root: parent,
                    before,
                    sender: stored["sender"].as_str().unwrap_or_default().to_owned(),
                })
            }
            Some("m.replace") => {
                let Some(original) = self.pdu_json(parent)? else {
                    return Ok(Plan::None);
                };
                if !valid_edit(&original, stored) {
                    return Ok(Plan::None);
                }
                let newer = match schema::EVENT__LATEST_EDIT
                    .get::<u64>(&self.store.kv, parent)?
                    .and_then(|e| self.pdu_json(e).ok().flatten())
                {
                    Some(current) => later(stored, &current),
                    None => true,
                };
                Ok(if newer {
                    Plan::Edit { parent }
                } else {
                    Plan::None
                })
            }
            Some("m.reference") => Ok(Plan::Reference { parent }),
            _ => Ok(Plan::None),
        }
    }
}

impl Plan {
    /// The rows of the plan, in the event's commit batch.
    pub fn rows(
        &self,
        batch: &mut Batch,
        short_room: u64,
        count: u64,
        short: u64,
    ) -> Result<(), StoreError> {
        match self {
            Plan::None => Ok(()),
            Plan::Thread {
                root,
                before,
                sender,
            } => {
                let replies = before.map_or(0, |(_, n)| n) + 1;
                if let Some((old, _)) = before {
                    schema::ROOM_COUNT__THREAD_ROOT.delete(batch, (short_room, *old));
                }
                schema::ROOT__THREAD_LATEST.put(batch, *root, &(count, short, replies))?;
                schema::ROOM_COUNT__THREAD_ROOT.put(batch, (short_room, count), root)?;
                schema::ROOT_USER__PARTICIPANT.put(batch, (*root, sender.as_str()), &())
            }
            Plan::Edit { parent } => schema::EVENT__LATEST_EDIT.put(batch, *parent, &short),
            Plan::Reference { parent } => {
                schema::EVENT_COUNT__REFERENCE.put(batch, (*parent, count), &short)
            }
        }
    }
}

/// A thread as stored: its latest reply's count and short id, and how many replies it has.
pub struct ThreadInfo {
    pub latest_count: u64,
    pub latest: u64,
    pub replies: u64,
}

impl Rooms {
    /// `(count, short id)` of up to `cap` events of the room relating to `parent`, oldest
    /// first.
    pub fn relation_children(
        &self,
        short_room: u64,
        parent: &str,
        cap: usize,
    ) -> Result<Vec<(u64, u64)>, RoomsError> {
        schema::ROOM_PARENT_COUNT__RELATION
            .prefix::<First<2>, u64>(&self.store.kv, (short_room, parent))
            .take(cap)
            .map(|r| {
                let ((_, _, count), short) = r?;
                Ok((count, short))
            })
            .collect()
    }

    /// `(count of latest activity, root)` of the room's threads with activity before `before`,
    /// newest first. A thread's older activity rows come too: skip those whose count is not
    /// its [`ThreadInfo::latest_count`].
    pub fn thread_activity(
        &self,
        short_room: u64,
        before: u64,
    ) -> impl Iterator<Item = Result<(u64, u64), RoomsError>> + '_ {
        schema::ROOM_COUNT__THREAD_ROOT
            .range::<u64>(&self.store.kv, (short_room, 0), (short_room, before))
            .rev()
            .map(|item| {
                let ((_, count), root) = item?;
                Ok((count, root))
            })
    }

    pub fn thread_info(&self, root: u64) -> Result<Option<ThreadInfo>, RoomsError> {
        Ok(schema::ROOT__THREAD_LATEST
            .get::<(u64, u64, u64)>(&self.store.kv, root)?
            .map(|(latest_count, latest, replies)| ThreadInfo {
                latest_count,
                latest,
                replies,
            }))
    }

    /// Whether `user` wrote the root of the thread or replied in it.
    pub fn participated(
        &self,
        root: u64,
        root_event: &Value,
        user: &str,
    ) -> Result<bool, RoomsError> {
        if root_event["sender"] == user {
            return Ok(true);
        }
        Ok(schema::ROOT_USER__PARTICIPANT.contains(&self.store.kv, (root, user))?)
    }

    /// The latest edit of an event that is still an edit (a redacted one no longer is): the
    /// one recorded at write time, else the newest remaining one.
    pub fn latest_edit(
        &self,
        short: u64,
        original: &Value,
    ) -> Result<Option<(u64, Value)>, RoomsError> {
        if let Some(e) = schema::EVENT__LATEST_EDIT.get::<u64>(&self.store.kv, short)? {
            if let Some(stored) = self.pdu_json(e)? {
                if valid_edit(original, &stored) {
                    return Ok(Some((e, stored)));
                }
            }
        } else {
            return Ok(None);
        }
        let (Some(id), Some((room, _))) =
            (original["event_id"].as_str(), self.event_position(short)?)
        else {
            return Ok(None);
        };
        let mut best: Option<(u64, Value)> = None;
        for item in
            schema::ROOM_PARENT_COUNT__RELATION.prefix::<First<2>, u64>(&self.store.kv, (room, id))
        {
            let (_, e) = item?;
            if let Some(stored) = self.pdu_json(e)? {
                if stored["content"]["m.relates_to"]["rel_type"] == "m.replace"
                    && valid_edit(original, &stored)
                    && best.as_ref().is_none_or(|(_, b)| later(&stored, b))
                {
                    best = Some((e, stored));
                }
            }
        }
        Ok(best)
    }

    /// Short ids of the events referencing `parent` (`m.reference`), oldest first, at most
    /// `MAX_REFERENCES`.
    pub fn references(&self, parent: u64) -> impl Iterator<Item = Result<u64, RoomsError>> + '_ {
        schema::EVENT_COUNT__REFERENCE
            .prefix::<First<1>, u64>(&self.store.kv, (parent,))
            .take(MAX_REFERENCES)
            .map(|item| Ok(item?.1))
    }
}

impl Services {
    /// `unsigned.m.relations` of an event as `viewer` sees it: the thread summary (for a root,
    /// when `threads`) and the latest edit; `None` when there is nothing to bundle or the
    /// event is redacted.
    pub fn bundled_relations(
        &self,
        short: u64,
        stored: &Value,
        room_id: &RoomId,
        viewer: &Session,
        include_room_id: bool,
        threads: bool,
    ) -> Result<Option<Value>, RoomsError> {
        if stored["unsigned"].get("redacted_because").is_some() {
            return Ok(None);
        }
        let mut out = Map::new();
        // What relates to an event may be newer than what the viewer may see (they left, or
        // history is `joined`): nothing of it is bundled then.
        let visible = |e: u64| -> Result<bool, RoomsError> {
            match self.rooms.pdu_by_short(e)? {
                Some(p) => Ok(self.rooms.can_see(&viewer.user_id, room_id, e, &p)?),
                None => Ok(false),
            }
        };
        if threads {
            if let Some(t) = self
                .rooms
                .thread_info(short)?
                .filter(|t| visible(t.latest).unwrap_or(false))
            {
                if let Some(latest) = self.rooms.pdu_json(t.latest)? {
                    let mut ev = self.client_event_inner(
                        t.latest,
                        &latest,
                        room_id,
                        Some(viewer),
                        include_room_id,
                    )?;
                    if let Some(b) = self.bundled_relations(
                        t.latest,
                        &latest,
                        room_id,
                        viewer,
                        include_room_id,
                        false,
                    )? {
                        ev["unsigned"]["m.relations"] = b;
                    }
                    out.insert(
                        "m.thread".into(),
                        json!({
                            "latest_event": ev,
                            "count": t.replies,
                            "current_user_participated":
                                self.rooms.participated(short, stored, viewer.user_id.as_str())?,
                        }),
                    );
                }
            }
        }
        let mut references = vec![];
        for item in self.rooms.references(short) {
            let e = item?;
            if !visible(e)? {
                continue;
            }
            if let Some(r) = self.rooms.pdu_json(e)? {
                // A redacted reference has lost its relation.
                if r["content"]["m.relates_to"]["rel_type"] == "m.reference" {
                    references.push(json!({ "event_id": r["event_id"] }));
                }
            }
        }
        if !references.is_empty() {
            out.insert("m.reference".into(), json!({ "chunk": references }));
        }
        if let Some((e, edit)) = self
            .rooms
            .latest_edit(short, stored)?
            .filter(|(e, _)| visible(*e).unwrap_or(false))
        {
            out.insert(
                "m.replace".into(),
                self.client_event_inner(e, &edit, room_id, Some(viewer), include_room_id)?,
            );
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_must_match_the_original() {
        let original =
            json!({"sender": "@a:x", "type": "m.room.message", "content": {"body": "hi"}});
        let edit = json!({"sender": "@a:x", "type": "m.room.message",
            "content": {"m.new_content": {"body": "hello"}, "m.relates_to": {"rel_type": "m.replace"}}});
        assert!(valid_edit(&original, &edit));
        let mut other = edit.clone();
        other["sender"] = json!("@b:x");
        assert!(!valid_edit(&original, &other), "someone else's edit");
        let mut redacted = edit.clone();
        redacted["content"] = json!({});
        assert!(!valid_edit(&original, &redacted), "a redacted edit");
        let mut state = original.clone();
        state["state_key"] = json!("");
        assert!(!valid_edit(&state, &edit), "state events are not edited");
    }

    #[test]
    fn later_edits_win_by_timestamp_then_id() {
        let a = json!({"origin_server_ts": 10, "event_id": "$b"});
        let b = json!({"origin_server_ts": 10, "event_id": "$a"});
        let c = json!({"origin_server_ts": 9, "event_id": "$z"});
        assert!(later(&a, &b));
        assert!(later(&b, &c));
        assert!(!later(&c, &a));
    }
}
