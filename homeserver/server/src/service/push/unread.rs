//! Unread notifications. Each notification a user has not read is one row, removed when a read
//! receipt (or the user's own later event) passes it, so counting costs what is unread, not the
//! room's history. The `/notifications` list keeps every notification, read or not.

use std::collections::BTreeMap;

use plexus_store::{schema, Batch, First, StoreError};
use ruma::{RoomId, UserId};
use serde_json::{json, Value};

use super::evaluate::Notified;
use crate::service::Services;

/// The stored notification: where, which event, and what the rules said.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub room_id: String,
    pub short_room: u64,
    pub event: u64,
    pub actions: Value,
    pub ts: u64,
    pub highlight: bool,
}

/// The rows for one event's notifications, written in the event's own commit batch so that
/// counts never disagree with the timeline.
#[allow(clippy::too_many_arguments)]
pub fn notification_rows(
    batch: &mut Batch,
    room_id: &RoomId,
    short_room: u64,
    count: u64,
    short: u64,
    ts: u64,
    thread: Option<&str>,
    notified: &[Notified],
) -> Result<(), StoreError> {
    for n in notified {
        schema::USER_ROOM_COUNT__UNREAD.put(
            batch,
            (n.user.as_str(), short_room, count),
            &(u8::from(n.highlight), thread.unwrap_or("").to_owned()),
        )?;
        let stored = Stored {
            room_id: room_id.to_string(),
            short_room,
            event: short,
            actions: json!(n.actions),
            ts,
            highlight: n.highlight,
        };
        schema::USER_COUNT__NOTIFICATION.put(batch, (n.user.as_str(), count), &stored)?;
    }
    Ok(())
}

/// Which unread notifications a read position covers: an unthreaded receipt covers every
/// thread, a `main` one the main timeline, a threaded one its thread.
#[derive(Clone, Copy, Debug)]
pub enum ReadScope<'a> {
    All,
    Main,
    Thread(&'a str),
}

impl<'a> ReadScope<'a> {
    pub fn of_receipt(thread: &'a str) -> Self {
        match thread {
            "" => Self::All,
            "main" => Self::Main,
            t => Self::Thread(t),
        }
    }
    /// Sending an event reads up to it in its own thread.
    pub fn of_event(stored: &'a Value) -> Self {
        match super::evaluate::thread_of(stored) {
            Some(t) => Self::Thread(t),
            None => Self::Main,
        }
    }
    fn covers(&self, thread: &str) -> bool {
        match self {
            Self::All => true,
            Self::Main => thread.is_empty(),
            Self::Thread(t) => thread == *t,
        }
    }
}

/// Delete in `batch` the user's unread rows of the room up to and including `upto`; answers
/// whether any were.
pub fn clear_through(
    app: &Services,
    batch: &mut Batch,
    user: &UserId,
    short_room: u64,
    upto: u64,
    scope: ReadScope<'_>,
) -> Result<bool, plexus_store::StoreError> {
    let unread = schema::USER_ROOM_COUNT__UNREAD;
    let user = user.as_str();
    let mut any = false;
    for item in unread.range::<(u8, String)>(
        &app.store.kv,
        (user, short_room, 0),
        (user, short_room, upto.saturating_add(1)),
    ) {
        let ((_, _, count), (_, thread)) = item?;
        if scope.covers(&thread) {
            unread.delete(batch, (user, short_room, count));
            any = true;
        }
    }
    Ok(any)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

impl Counts {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        self.highlights += u64::from(highlight);
    }
    pub fn json(&self) -> Value {
        json!({ "notification_count": self.notifications, "highlight_count": self.highlights })
    }
}

/// The user's unread counts in a room: the main timeline and each thread apart.
pub fn room_counts(
    app: &Services,
    user: &UserId,
    short_room: u64,
) -> Result<(Counts, BTreeMap<String, Counts>), StoreError> {
    let mut main = Counts::default();
    let mut threads: BTreeMap<String, Counts> = BTreeMap::new();
    for item in schema::USER_ROOM_COUNT__UNREAD
        .prefix::<First<2>, (u8, String)>(&app.store.kv, (user.as_str(), short_room))
    {
        let (_, (flag, thread)) = item?;
        let highlight = flag == 1;
        match thread.is_empty() {
            true => main.add(highlight),
            false => threads.entry(thread).or_default().add(highlight),
        }
    }
    Ok((main, threads))
}

/// Unread notifications across all the user's rooms (the badge a push gateway shows).
pub fn total_unread(app: &Services, user: &UserId) -> Result<u64, StoreError> {
    schema::USER_ROOM_COUNT__UNREAD.count_prefix::<First<1>>(&app.store.kv, (user.as_str(),))
}

pub fn is_unread(
    app: &Services,
    user: &UserId,
    short_room: u64,
    count: u64,
) -> Result<bool, StoreError> {
    schema::USER_ROOM_COUNT__UNREAD.contains(&app.store.kv, (user.as_str(), short_room, count))
}

/// The user's notifications with counts in `[from, to)`, oldest first (reverse it for newest
/// first).
pub fn notifications<'a>(
    app: &'a Services,
    user: &UserId,
    from: u64,
    to: u64,
) -> impl DoubleEndedIterator<Item = Result<(u64, Stored), StoreError>> + 'a {
    let user = user.as_str();
    schema::USER_COUNT__NOTIFICATION
        .range(&app.store.kv, (user, from), (user, to))
        .map(|item| {
            let ((_, count), stored) = item?;
            Ok((count, stored))
        })
}
