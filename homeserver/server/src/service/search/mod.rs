//! Full-text search: the index (`plexus-search`, under `DATA_DIR/search`), the indexer that
//! keeps it current behind the write path, and what an event contributes to it.

pub mod indexer;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use plexus_search::{Doc, Key, Opened, SearchError, SearchIndex};
use serde_json::Value;

use crate::service::{rooms::RoomsError, Services};

/// Why events could not be indexed: the index refused, or their rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexingError {
    #[error(transparent)]
    Index(#[from] SearchError),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}

pub struct Search {
    pub index: Arc<SearchIndex>,
    /// The store's stream position the index reflects (committed and searchable).
    position: AtomicU64,
    /// How the index was found at start-up, for the indexer to report once.
    opened: Mutex<Option<Opened>>,
}

impl Search {
    pub fn open(dir: &std::path::Path) -> Result<Search, SearchError> {
        let (index, opened) = SearchIndex::open(dir)?;
        let position = match opened {
            Opened::Existing(p) => p,
            Opened::Created { .. } => 0,
        };
        Ok(Search {
            index: Arc::new(index),
            position: AtomicU64::new(position),
            opened: Mutex::new(Some(opened)),
        })
    }

    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    fn set_position(&self, p: u64) {
        self.position.store(p, Ordering::Release);
    }

    fn take_opened(&self) -> Option<Opened> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Whether a stored event is an edit (`m.replace`): its text counts for the original.
fn edit_target(stored: &Value) -> Option<&str> {
    let rel = &stored["content"]["m.relates_to"];
    (rel["rel_type"] == "m.replace")
        .then(|| rel["event_id"].as_str())
        .flatten()
}

/// What an event is found by.
pub struct Searchable {
    pub key: Key,
    pub text: String,
    /// The edit the text comes from, when the message was edited.
    pub edit: Option<u64>,
}

/// The searchable part of an event as it is now: a message's body (its latest edit's, if
/// edited), or the name or topic a state event sets. `None`: nothing to find it by (another
/// type, encrypted, redacted, or an edit, which is found through its original).
pub fn searchable(
    svc: &Services,
    short: u64,
    stored: &Value,
) -> Result<Option<Searchable>, RoomsError> {
    let kind = stored["type"].as_str().unwrap_or_default();
    let state_key = stored.get("state_key").and_then(Value::as_str);
    let mut edit = None;
    let (key, text) = match (kind, state_key) {
        ("m.room.message", None) => {
            if edit_target(stored).is_some() {
                return Ok(None);
            }
            match svc.rooms.latest_edit(short, stored)? {
                Some((e, edited)) => {
                    edit = Some(e);
                    (
                        Key::Body,
                        edited["content"]["m.new_content"]["body"].clone(),
                    )
                }
                None => (Key::Body, stored["content"]["body"].clone()),
            }
        }
        ("m.room.name", Some("")) => (Key::Name, stored["content"]["name"].clone()),
        ("m.room.topic", Some("")) => (
            Key::Topic,
            plexus_core::client_event::plain_topic(&stored["content"])
                .map(|t| Value::String(t.to_owned()))
                .unwrap_or(Value::Null),
        ),
        _ => return Ok(None),
    };
    Ok(text
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Searchable {
            key,
            text: t.to_owned(),
            edit,
        }))
}

/// Order key for "recent": timeline events by stream position, above every backfilled event
/// (which came from before the room's timeline here), those by their timestamp.
fn order_key(svc: &Services, short: u64, stored: &Value) -> Result<Option<(u64, u64)>, RoomsError> {
    const TIMELINE: u64 = 1 << 63;
    if let Some((room, count)) = svc.rooms.event_position(short)? {
        return Ok(Some((room, TIMELINE | count)));
    }
    let Some(room_id) = stored["room_id"]
        .as_str()
        .and_then(|r| ruma::RoomId::parse(r).ok())
    else {
        return Ok(None);
    };
    // Timestamp, then the low bits of the short id so that events of the same millisecond
    // still have distinct keys (a page boundary must not fall between equal keys).
    let ts = stored["origin_server_ts"]
        .as_u64()
        .unwrap_or(0)
        .min((1 << 47) - 1);
    Ok(svc
        .rooms
        .room(&room_id)?
        .map(|r| (r.short, ts << 16 | (short & 0xFFFF))))
}

/// Index `short` as it now stands (`stored`: its JSON if already read). `edits` notes which
/// edit's text went where, for a redaction of that edit later in the same batch (the index
/// answers for earlier ones).
fn reindex(
    svc: &Services,
    short: u64,
    stored: Option<Value>,
    edits: &mut HashMap<u64, u64>,
) -> Result<(), IndexingError> {
    let stored = match stored {
        Some(v) => Some(v),
        None => svc.rooms.pdu_json(short)?,
    };
    let mut doc = None;
    if let Some(stored) = stored {
        if let (Some(found), Some((room, order))) = (
            searchable(svc, short, &stored)?,
            order_key(svc, short, &stored)?,
        ) {
            if let Some(e) = found.edit {
                edits.insert(e, short);
            }
            doc = Some(Doc {
                event: short,
                room,
                key: found.key,
                text: found.text,
                order,
                edit: found.edit,
            });
        }
    }
    Ok(svc.search.index.put(short, doc)?)
}

/// What a newly stored event changes in the index: itself; for an edit, the original; for a
/// redaction, the redacted event, or the original whose text came from a redacted edit.
fn index_event(
    svc: &Services,
    short: u64,
    edits: &mut HashMap<u64, u64>,
) -> Result<(), IndexingError> {
    let Some(stored) = svc.rooms.pdu_json(short)? else {
        return Ok(());
    };
    if stored["type"] == "m.room.redaction" {
        // The redacted event, from where the room version puts it.
        let in_content = match stored["room_id"].as_str().map(ruma::RoomId::parse) {
            Some(Ok(room_id)) => svc.redacts_in_content(&room_id)?,
            _ => false,
        };
        let redacts = svc
            .rooms
            .pdu_by_short(short)?
            .and_then(|p| p.redacted_event(in_content).cloned());
        let Some(target) = redacts
            .map(|id| svc.rooms.short_event(&id))
            .transpose()?
            .flatten()
        else {
            return Ok(());
        };
        let mut originals = svc.search.index.edited_by(target)?;
        originals.extend(edits.get(&target));
        for o in originals {
            reindex(svc, o, None, edits)?;
        }
        return reindex(svc, target, None, edits);
    }
    match edit_target(&stored).and_then(|id| ruma::EventId::parse(id).ok()) {
        Some(id) => match svc.rooms.short_event(&id)? {
            Some(original) => reindex(svc, original, None, edits),
            None => Ok(()),
        },
        None => reindex(svc, short, Some(stored), edits),
    }
}
