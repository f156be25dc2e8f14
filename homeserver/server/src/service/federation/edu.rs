//! EDUs: typing, read receipts and presence, both ways. A server may only speak for its own
//! users, in rooms where those users are joined.

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::FederationError;
use crate::service::{rooms::RoomsError, App, Services};

fn remote_member(
    app: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    user: &str,
) -> Option<OwnedUserId> {
    let u = OwnedUserId::try_from(user).ok()?;
    let room = app.rooms.room(room_id).ok()??;
    (u.server_name() == origin
        && app.rooms.is_joined(&u, room_id).ok()?
        && super::acl::allowed(app, room.short, origin).ok()?)
    .then_some(u)
}

pub async fn handle(app: &App, origin: &ServerName, edu: &Value) -> Result<(), FederationError> {
    let content = edu.get("content").cloned().unwrap_or(Value::Null);
    match edu.get("edu_type").and_then(Value::as_str) {
        Some("m.typing") => {
            let room = content.get("room_id").and_then(Value::as_str);
            let user = content.get("user_id").and_then(Value::as_str);
            let (Some(room), Some(user)) = (room, user) else {
                return Ok(());
            };
            let Ok(room_id) = OwnedRoomId::try_from(room) else {
                return Ok(());
            };
            let Some(user) = remote_member(app, origin, &room_id, user) else {
                return Ok(());
            };
            let typing = content.get("typing").and_then(Value::as_bool) == Some(true);
            let timeout = content
                .get("timeout")
                .and_then(Value::as_u64)
                .unwrap_or(30_000);
            app.set_typing(&room_id, &user, typing.then_some(timeout))?;
        }
        Some("m.receipt") => {
            let Some(rooms) = content.as_object() else {
                return Ok(());
            };
            for (room, by_type) in rooms {
                let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
                    continue;
                };
                let Some(r) = app.rooms.room(&room_id)? else {
                    continue;
                };
                let Some(read) = by_type.get("m.read").and_then(Value::as_object) else {
                    continue;
                };
                for (user, receipt) in read {
                    let Some(user) = remote_member(app, origin, &room_id, user) else {
                        continue;
                    };
                    // A thread is `main` or its root's event id; anything else is refused
                    // rather than stored and shown to every member.
                    let thread = receipt
                        .get("data")
                        .and_then(|d| d.get("thread_id"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !(thread.is_empty() || thread == "main" || EventId::parse(thread).is_ok()) {
                        continue;
                    }
                    for ev in receipt
                        .get("event_ids")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .take(1)
                        .filter(|ev| receipt_target_ok(app, r.short, ev))
                    {
                        app.set_receipt(&room_id, r.short, &user, "m.read", ev, thread)
                            .await?;
                    }
                }
            }
        }
        Some("m.presence") => {
            for p in content
                .get("push")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .take(100)
            {
                let Some(user) = p
                    .get("user_id")
                    .and_then(Value::as_str)
                    .and_then(|u| OwnedUserId::try_from(u).ok())
                    .filter(|u| u.server_name() == origin)
                else {
                    continue;
                };
                let presence = match p.get("presence").and_then(Value::as_str) {
                    Some(s @ ("online" | "offline" | "unavailable")) => s,
                    _ => continue,
                };
                // Presence of users nobody here shares a room with is of no use to anyone here.
                if !app
                    .presence_audience(&user)?
                    .iter()
                    .any(|u| app.is_local(u))
                {
                    continue;
                }
                let msg = p.get("status_msg").and_then(Value::as_str).map(|m| {
                    let mut end = m.len().min(MAX_STATUS_MSG_BYTES);
                    while !m.is_char_boundary(end) {
                        end -= 1;
                    }
                    m[..end].to_owned()
                });
                let active = p.get("currently_active").and_then(Value::as_bool) == Some(true);
                app.update_presence(&user, presence, Some(msg), active)
                    .await?;
            }
        }
        Some("m.direct_to_device") => {
            crate::service::e2ee::to_device::receive(app, origin, &content).await?;
        }
        Some("m.device_list_update") => {
            crate::service::e2ee::federation::device_list_update(app, origin, &content).await?;
        }
        Some("m.signing_key_update") => {
            crate::service::e2ee::federation::signing_key_update(app, origin, &content).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Tell the other servers in the room that a local user is typing (or stopped).
pub fn send_typing(
    app: &Services,
    room_id: &RoomId,
    user: &UserId,
    timeout_ms: Option<u64>,
) -> Result<(), RoomsError> {
    if !outbound(app, user) {
        return Ok(());
    }
    let Some(room) = app.rooms.room(room_id)? else {
        return Ok(());
    };
    let edu = json!({
        "edu_type": "m.typing",
        "content": {
            "room_id": room_id,
            "user_id": user,
            "typing": timeout_ms.is_some(),
            "timeout": timeout_ms.unwrap_or(0),
        }
    });
    broadcast(
        app,
        app.rooms.room_servers(room.short)?.iter().map(|s| &**s),
        edu,
    );
    Ok(())
}

/// Pass a local user's public read receipt to the other servers in the room.
pub fn send_receipt(
    app: &Services,
    room_id: &RoomId,
    short_room: u64,
    user: &UserId,
    event_id: &str,
    thread: &str,
) -> Result<(), RoomsError> {
    if !outbound(app, user) {
        return Ok(());
    }
    let mut data = json!({ "ts": crate::service::now_ms() });
    if !thread.is_empty() {
        data["thread_id"] = json!(thread);
    }
    let edu = json!({
        "edu_type": "m.receipt",
        "content": { room_id.as_str(): { "m.read": { user.as_str(): {
            "event_ids": [event_id],
            "data": data,
        } } } }
    });
    broadcast(
        app,
        app.rooms.room_servers(short_room)?.iter().map(|s| &**s),
        edu,
    );
    Ok(())
}

/// Pass a local user's presence to the servers of everyone who shares a room with them.
pub fn send_presence(
    app: &Services,
    user: &UserId,
    audience: &std::collections::BTreeSet<OwnedUserId>,
    presence: &str,
    status_msg: Option<&str>,
    last_active_ago: u64,
) {
    if !outbound(app, user) {
        return;
    }
    let mut p = json!({
        "user_id": user,
        "presence": presence,
        "last_active_ago": last_active_ago,
        "currently_active": presence == "online",
    });
    if let Some(m) = status_msg {
        p["status_msg"] = json!(m);
    }
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [p] } });
    let servers: std::collections::BTreeSet<&ServerName> = audience
        .iter()
        .map(|u| u.server_name())
        .filter(|s| *s != app.server_name())
        .collect();
    broadcast(app, servers, edu);
}

/// EDUs go out only for our own users, and only with federation on.
fn outbound(app: &Services, user: &UserId) -> bool {
    app.federation.is_some() && app.is_local(user)
}

fn broadcast<'a>(app: &Services, servers: impl IntoIterator<Item = &'a ServerName>, edu: Value) {
    if let Some(fed) = &app.federation {
        for d in servers {
            fed.sender.send_edu(d, edu.clone());
        }
    }
}

/// The longest presence status message kept from a peer (clients are held to the same).
const MAX_STATUS_MSG_BYTES: usize = 1024;

/// A receipt's event id must be an event id, and one of this room when we have the event (a
/// receipt may come before its event, so an unknown one is kept).
fn receipt_target_ok(app: &Services, short_room: u64, ev: &str) -> bool {
    let Ok(id) = EventId::parse(ev) else {
        return false;
    };
    match app.rooms.short_event(&id) {
        Ok(Some(short)) => {
            matches!(app.rooms.event_position(short), Ok(Some((room, _))) if room == short_room)
        }
        Ok(None) => true,
        Err(_) => false,
    }
}
