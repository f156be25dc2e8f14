//! Unread notifications. Each notification a user has not read is one row, removed when a read
//! receipt (or the user's own later event) passes it, so counting costs what is unread, not the
//! room's history. The `/notifications` list keeps every notification, read or not.

use std::collections::BTreeMap;

use plexus_store::{Batch, Table};
use ruma::{RoomId, UserId};
use serde_json::{json, Value};

use super::evaluate::Notified;
use crate::{
    error::ApiResult,
    service::{decode, encode, Services},
};

/// `user \0 n`: a notification's key (n: its count) and an unread row's room prefix (n: the
/// short room id).
fn user_key(user: &UserId, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 17);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn unread_key(user: &UserId, short_room: u64, count: u64) -> Vec<u8> {
    let mut k = user_key(user, short_room);
    k.extend_from_slice(&count.to_be_bytes());
    k
}

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
) {
    for n in notified {
        let mut flag = vec![u8::from(n.highlight)];
        flag.extend_from_slice(thread.unwrap_or("").as_bytes());
        batch.put(
            Table::PushUnread,
            &unread_key(&n.user, short_room, count),
            &flag,
        );
        let stored = Stored {
            room_id: room_id.to_string(),
            short_room,
            event: short,
            actions: json!(n.actions),
            ts,
            highlight: n.highlight,
        };
        batch.put(
            Table::PushNotification,
            &user_key(&n.user, count),
            &encode(&stored),
        );
    }
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
    fn covers(&self, thread: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Main => thread.is_empty(),
            Self::Thread(t) => thread == t.as_bytes(),
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
    let from = user_key(user, short_room);
    let to = unread_key(user, short_room, upto.saturating_add(1));
    let mut any = false;
    for item in app.store.kv.range(Table::PushUnread, &from, &to) {
        let (k, v) = item?;
        if scope.covers(v.get(1..).unwrap_or_default()) {
            batch.delete(Table::PushUnread, &k);
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
) -> ApiResult<(Counts, BTreeMap<String, Counts>)> {
    let mut main = Counts::default();
    let mut threads: BTreeMap<String, Counts> = BTreeMap::new();
    for item in app
        .store
        .kv
        .scan_prefix(Table::PushUnread, &user_key(user, short_room))
    {
        let (_, v) = item?;
        let highlight = v.first() == Some(&1);
        match v.get(1..).filter(|t| !t.is_empty()) {
            None => main.add(highlight),
            Some(t) => threads
                .entry(String::from_utf8_lossy(t).into_owned())
                .or_default()
                .add(highlight),
        }
    }
    Ok((main, threads))
}

/// Unread notifications across all the user's rooms (the badge a push gateway shows).
pub fn total_unread(app: &Services, user: &UserId) -> ApiResult<u64> {
    let mut prefix = user.as_bytes().to_vec();
    prefix.push(0);
    let mut n = 0;
    for item in app.store.kv.scan_prefix(Table::PushUnread, &prefix) {
        item?;
        n += 1;
    }
    Ok(n)
}

pub fn is_unread(app: &Services, user: &UserId, short_room: u64, count: u64) -> ApiResult<bool> {
    Ok(app
        .store
        .kv
        .contains(Table::PushUnread, &unread_key(user, short_room, count))?)
}

/// The user's notifications with counts in `[from, to)`, oldest first (reverse it for newest
/// first).
pub fn notifications<'a>(
    app: &'a Services,
    user: &UserId,
    from: u64,
    to: u64,
) -> impl DoubleEndedIterator<Item = ApiResult<(u64, Stored)>> + 'a {
    app.store
        .kv
        .range(
            Table::PushNotification,
            &user_key(user, from),
            &user_key(user, to),
        )
        .map(|item| {
            let (k, v) = item?;
            let tail = k.get(k.len().saturating_sub(8)..).unwrap_or_default();
            let count = u64::from_be_bytes(tail.try_into().unwrap_or([0; 8]));
            Ok((count, decode::<Stored>(&v)?))
        })
}
