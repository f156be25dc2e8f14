//! Device list changes: one stream row per user whose devices or cross-signing keys changed,
//! the `m.device_list_update` / `m.signing_key_update` EDUs for local users' changes (written
//! to the durable EDU outbox in the same batch), and what a user's sync or `/keys/changes`
//! reports as changed or left.

use std::collections::BTreeSet;

use plexus_store::{schema, Batch, StoreError};
use ruma::{api::client::keys::get_key_changes, OwnedServerName, OwnedUserId, UserId};
use serde_json::{json, Value};

use crate::{
    error::ApiResult,
    http::{extract::parse_token, ruma::Ruma},
    service::{App, Services},
};

/// One change to a local user's devices or cross-signing keys.
pub enum Change {
    /// A device's keys or display name changed (or it appeared).
    Device {
        id: String,
        keys: Option<Value>,
        display_name: Option<String>,
    },
    Deleted {
        id: String,
    },
    /// The public cross-signing keys changed.
    CrossSigning {
        master: Option<Value>,
        self_signing: Option<Value>,
    },
}

impl Change {
    fn edu(&self, user: &UserId, stream_id: u64, prev: Option<u64>) -> Value {
        match self {
            Change::Device {
                id,
                keys,
                display_name,
            } => {
                let mut c = json!({
                    "user_id": user, "device_id": id, "stream_id": stream_id,
                    "prev_id": prev.into_iter().collect::<Vec<_>>(), "deleted": false,
                });
                if let Some(k) = keys {
                    c["keys"] = k.clone();
                }
                if let Some(n) = display_name {
                    c["device_display_name"] = json!(n);
                }
                json!({ "edu_type": "m.device_list_update", "content": c })
            }
            Change::Deleted { id } => json!({
                "edu_type": "m.device_list_update",
                "content": {
                    "user_id": user, "device_id": id, "stream_id": stream_id,
                    "prev_id": prev.into_iter().collect::<Vec<_>>(), "deleted": true,
                },
            }),
            Change::CrossSigning {
                master,
                self_signing,
            } => {
                let mut c = json!({ "user_id": user });
                if let Some(m) = master {
                    c["master_key"] = m.clone();
                }
                if let Some(s) = self_signing {
                    c["self_signing_key"] = s.clone();
                }
                json!({ "edu_type": "m.signing_key_update", "content": c })
            }
        }
    }
}

/// Move `user`'s row in the change stream to `count`; answers the previous position.
fn stream_row(
    app: &Services,
    b: &mut Batch,
    user: &UserId,
    count: u64,
    prev: Option<u64>,
) -> Result<Option<u64>, StoreError> {
    let prev = match prev {
        Some(p) => Some(p),
        None => schema::USER__DEVICE_LIST_COUNT.get(&app.store.kv, user.as_str())?,
    };
    if let Some(p) = prev {
        schema::COUNT__DEVICE_LIST_USER.delete(b, p);
    }
    schema::COUNT__DEVICE_LIST_USER.put(b, count, user.as_str())?;
    schema::USER__DEVICE_LIST_COUNT.put(b, user.as_str(), &count)?;
    Ok(prev)
}

/// Commit `batch` together with the change rows and outbound EDUs of `changes` to a local
/// user's devices, make it durable, and wake whoever must hear of it.
pub async fn commit_local_changes(
    app: &Services,
    user: &UserId,
    changes: Vec<Change>,
    batch: Batch,
) -> ApiResult<()> {
    let (locals, servers) = audience(app, user)?;
    let servers: Vec<OwnedServerName> = if app.federation.is_some() {
        servers.into_iter().collect()
    } else {
        vec![]
    };
    let n = changes.len().max(1) as u64;
    let (last, ()) = app.store.commit_with_counts(n, |first, b| {
        b.append(batch);
        let mut prev = None;
        for (i, change) in changes.iter().enumerate() {
            let count = first + i as u64;
            prev = stream_row(app, b, user, count, prev)?;
            let edu = change.edu(user, count, prev);
            for dest in &servers {
                schema::DEST_COUNT_SEQ__EDU.put(b, (dest.as_str(), count, 0), &edu)?;
            }
            prev = Some(count);
        }
        Ok(())
    })?;
    app.store.flush().await?;
    app.notifier
        .wake(locals.iter().map(|u| u.as_ref()).chain([user]), last);
    if let Some(fed) = &app.federation {
        for d in &servers {
            fed.sender.wake(d);
        }
    }
    Ok(())
}

/// A remote user's device list changed: local users who share a room with them see it in
/// their next sync.
pub async fn commit_remote_change(app: &Services, user: &UserId, batch: Batch) -> ApiResult<()> {
    let (locals, _) = audience(app, user)?;
    let (count, ()) = app.store.commit_with_count(|count, b| {
        b.append(batch);
        stream_row(app, b, user, count, None)?;
        Ok(())
    })?;
    app.store.flush().await?;
    app.notifier.wake(locals.iter().map(|u| u.as_ref()), count);
    Ok(())
}

/// Local users who share a joined room with `user`, and the other servers in those rooms.
pub fn audience(
    app: &Services,
    user: &UserId,
) -> ApiResult<(BTreeSet<OwnedUserId>, BTreeSet<OwnedServerName>)> {
    let mut locals = BTreeSet::new();
    let mut servers = BTreeSet::new();
    for (room_id, m) in app.user_rooms(user)? {
        if m.membership != "join" {
            continue;
        }
        let Some(room) = app.room(&room_id)? else {
            continue;
        };
        let a = app.room_audience(room.short)?;
        locals.extend(a.local_joined);
        servers.extend(a.servers);
    }
    locals.remove(user);
    servers.remove(app.server_name());
    Ok((locals, servers))
}

/// Whether any local user shares a joined room with `user`: only then do we track their keys.
pub fn shared_with_local(app: &Services, user: &UserId) -> ApiResult<bool> {
    for (room_id, m) in app.user_rooms(user)? {
        if m.membership != "join" {
            continue;
        }
        if let Some(room) = app.room(&room_id)? {
            if !app.room_audience(room.short)?.local_joined.is_empty() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Users whose device lists `user` must re-fetch (`changed`) or may stop tracking (`left`)
/// between stream positions `since` and `upper`.
pub fn changes_for(
    app: &Services,
    user: &UserId,
    since: u64,
    upper: u64,
) -> ApiResult<(BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>)> {
    let mut joined = vec![];
    let mut changed = BTreeSet::new();
    let mut left_candidates = BTreeSet::new();
    let in_range = |c: u64| c > since && c <= upper;
    for (room_id, m) in app.user_rooms(user)? {
        let Some(room) = app.room(&room_id)? else {
            continue;
        };
        match m.membership.as_str() {
            "join" => {
                joined.push(room.short);
                let mut i_joined = false;
                let mut joins = vec![];
                for (who, membership) in member_changes(app, room.short, since, upper)? {
                    if who == user {
                        i_joined |= membership == "join";
                    } else if membership == "join" {
                        joins.push(who);
                    } else if membership == "leave" || membership == "ban" {
                        left_candidates.insert(who);
                    }
                }
                if i_joined {
                    // Newly here: everyone in the room is news to this user.
                    for (who, membership) in app.room_members(room.short)? {
                        if membership == "join" && who != user {
                            changed.insert(who);
                        }
                    }
                } else {
                    changed.extend(joins);
                }
            }
            "leave" | "ban" if in_range(m.count) => {
                for (who, membership) in app.room_members(room.short)? {
                    if membership == "join" {
                        left_candidates.insert(who);
                    }
                }
            }
            _ => {}
        }
    }
    let shares = |other: &UserId| -> ApiResult<bool> {
        for short in &joined {
            let m: Option<String> =
                schema::ROOM_USER__MEMBERSHIP.get(&app.store.kv, (*short, other.as_str()))?;
            if m.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    };
    for item in schema::COUNT__DEVICE_LIST_USER.stream::<String>(&app.store.kv, since, upper) {
        let (_, who) = item?;
        let Ok(who) = OwnedUserId::try_from(who) else {
            continue;
        };
        // A user's own device changes are news to their other devices.
        if who == user || shares(&who)? {
            changed.insert(who);
        }
    }
    let mut left = BTreeSet::new();
    for who in left_candidates {
        if who != user && !shares(&who)? {
            changed.remove(&who);
            left.insert(who);
        }
    }
    Ok((changed, left))
}

/// `(user, membership)` of member events in the room between `since` and `upper`.
fn member_changes(
    app: &Services,
    short_room: u64,
    since: u64,
    upper: u64,
) -> ApiResult<Vec<(OwnedUserId, String)>> {
    let mut out = vec![];
    for item in schema::ROOM_COUNT_USER__MEMBERSHIP.range::<String>(
        &app.store.kv,
        (short_room, since + 1, ""),
        (short_room, upper.saturating_add(1), ""),
    ) {
        let ((_, _, who), membership) = item?;
        if let Ok(who) = OwnedUserId::try_from(who) {
            out.push((who, membership));
        }
    }
    Ok(out)
}

/// `GET /keys/changes`: the same answer a sync from `from` to `to` gives in `device_lists`.
pub async fn changes(
    app: App,
    req: Ruma<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let (s, q) = (req.caller, req.body);
    let from = parse_token(&q.from)?;
    let to = parse_token(&q.to)?.min(app.store.current_count());
    let (changed, left) = changes_for(&app, &s.user_id, from, to.max(from))?;
    Ok(get_key_changes::v3::Response::new(
        changed.into_iter().collect(),
        left.into_iter().collect(),
    ))
}
