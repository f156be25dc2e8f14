//! `/sync` v3. Since-tokens are stream positions; state comes from snapshots (never by replaying
//! the timeline), filters apply while reading, and an empty incremental sync waits on the
//! user's notifier until something concerns them or the timeout passes.

use std::{collections::BTreeSet, time::Duration};

use axum::{extract::State, Json};
use ruma::RoomId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    filter::{resolve, Filter},
    messages::member_events_for,
};
use crate::{
    error::{ApiError, ApiResult},
    http::extract::{parse_token, Auth, Query},
    service::{
        accounts::Session,
        rooms::{Membership, RoomRef},
        App,
    },
};

/// Longest a client may make us wait.
const MAX_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// Long-polls one access token may hold open; an older one is answered when a newer one
/// comes (a client that reconnects has given up on its old request anyway).
const LONG_POLLS_PER_TOKEN: u64 = 3;
/// Long-polls one user may hold open across all their devices.
const LONG_POLLS_PER_USER: u64 = 32;
/// Most timeline entries one room inspects per sync.
const SCAN_CAP: usize = 5_000;
#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    timeout: Option<String>,
    full_state: Option<String>,
    set_presence: Option<String>,
}

/// Hand-typed: ruma's response leaves out every empty section (`rooms`, `device_lists`, an empty
/// `state` or `ephemeral`), which Plexus has always sent and clients and tests built on it read.
pub async fn sync(
    State(app): State<App>,
    Auth(s): Auth,
    Query(q): Query<SyncQuery>,
) -> ApiResult<Json<Value>> {
    let since = q.since.as_deref().map(parse_token).transpose()?;
    let mut filter = resolve(&app, &s, q.filter.as_deref())?;
    filter.room.timeline.ignored = app.account_data.ignored_users(&s.user_id)?;
    let timeout = match q.timeout.as_deref() {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::InvalidParam("timeout must be an integer".into()))?,
        None => 0,
    }
    .min(MAX_TIMEOUT_MS);
    let full_state = match q.full_state.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "full_state must be true or false".into(),
            ))
        }
    };
    // Syncing is activity: the user is online unless the client says otherwise.
    let presence = q.set_presence.as_deref().unwrap_or("online");
    if !matches!(presence, "online" | "offline" | "unavailable") {
        return Err(ApiError::InvalidParam(
            "set_presence must be online, offline or unavailable".into(),
        ));
    }
    if presence != "offline" {
        // Presence is a side effect: a sync still answers when it cannot be written (disk full).
        if let Err(e) = app
            .update_presence(&s.user_id, presence, None, presence == "online")
            .await
        {
            tracing::debug!(user = %s.user_id, error = %e, "presence not updated");
        }
    }
    let mut rx = app.notifier.subscribe(&s.user_id);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut polls = None;
    let mut stopping = app.stopping.subscribe();
    loop {
        let (body, changed) = build_off_workers(&app, &s, since, &filter, full_state).await?;
        if changed || since.is_none() || full_state || tokio::time::Instant::now() >= deadline {
            return Ok(Json(body));
        }
        let (by_token, by_user) = polls.get_or_insert_with(|| {
            (
                // An appservice's token is shared by all its users: key by who acts, too.
                app.long_polls.enter(
                    format!("t\0{}\0{}\0{}", s.access_token, s.user_id, s.txn_scope()),
                    LONG_POLLS_PER_TOKEN,
                ),
                app.long_polls
                    .enter(format!("u\0{}", s.user_id), LONG_POLLS_PER_USER),
            )
        });
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, rx.changed()) => {
                if matches!(woken, Ok(Ok(()))) {
                    continue;
                }
            }
            () = by_token.superseded() => {}
            () = by_user.superseded() => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
        let (body, _) = build_off_workers(&app, &s, since, &filter, full_state).await?;
        return Ok(Json(body));
    }
}

/// [`build`] on the blocking pool: a full-state sync of a big room takes long enough to hold
/// up every request that shares an async worker with it.
async fn build_off_workers(
    app: &App,
    s: &Session,
    since: Option<u64>,
    filter: &Filter,
    full_state: bool,
) -> ApiResult<(Value, bool)> {
    let (app, s, filter) = (app.clone(), s.clone(), filter.clone());
    crate::service::accounts::blocking(move || build(&app, &s, since, &filter, full_state)).await?
}

/// The sync response and whether it carries anything new.
pub fn build(
    app: &App,
    s: &Session,
    since: Option<u64>,
    filter: &Filter,
    full_state: bool,
) -> ApiResult<(Value, bool)> {
    let now = app.store.current_count();
    let since = since.map(|c| c.min(now));
    // To-device first: when more wait than one response carries, the whole response stops at
    // the last one delivered, so the next token still covers the rest.
    // An appservice syncing without a device has no to-device inbox or keys.
    let device = s
        .device_id
        .as_deref()
        .map(|d| d.as_str())
        .unwrap_or_default();
    let (to_device, cut) = app.e2ee.to_device_since(&s.user_id, device, since, now)?;
    let now = cut.unwrap_or(now);
    let (lists_changed, lists_left) = match since {
        Some(c) => app.device_list_changes(&s.user_id, c, now)?,
        None => Default::default(),
    };
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    let mut knock = Map::new();
    let room_account_data = app.account_data.changed_since(&s.user_id, since, true)?;

    for (room_id, m) in app.rooms.user_rooms(&s.user_id)? {
        if m.forgotten || !filter.room.allows_room(room_id.as_str()) {
            continue;
        }
        let Some(room) = app.rooms.room(&room_id)? else {
            continue;
        };
        let changed_since = since.is_none_or(|c| m.count > c);
        match m.membership.as_str() {
            "join" => {
                let ad = room_account_data
                    .get(room_id.as_str())
                    .cloned()
                    .unwrap_or_default();
                if let Some(v) =
                    room_section(app, s, &room, &m, since, now, filter, full_state, ad)?
                {
                    join.insert(room_id.to_string(), v);
                }
            }
            "knock" if changed_since => {
                knock.insert(
                    room_id.to_string(),
                    json!({ "knock_state": { "events": invite_state(app, &s.user_id, &room, &m)? } }),
                );
            }
            // Invites from ignored users are not shown.
            "invite"
                if changed_since && !filter.room.timeline.ignored.contains(m.sender.as_str()) =>
            {
                invite.insert(
                    room_id.to_string(),
                    json!({ "invite_state": { "events": invite_state(app, &s.user_id, &room, &m)? } }),
                );
            }
            "leave" | "ban"
                if (since.is_some() && changed_since)
                    || (since.is_none() && filter.room.include_leave) =>
            {
                if let Some(v) = room_section(
                    app,
                    s,
                    &room,
                    &m,
                    since,
                    m.count,
                    filter,
                    full_state,
                    vec![],
                )? {
                    leave.insert(room_id.to_string(), v);
                }
            }
            _ => {}
        }
    }
    let global = app.account_data.changed_since(&s.user_id, since, false)?;
    let mut global_events = global.get("").cloned().unwrap_or_default();
    // Clients expect their push rules in the first sync, stored or not.
    if since.is_none() && !global_events.iter().any(|e| e["type"] == "m.push_rules") {
        let rules = app.account_data.push_rules(&s.user_id)?;
        global_events.push(json!({ "type": "m.push_rules", "content": { "global": rules } }));
    }
    let mut presence = app.presence_since(&s.user_id, since)?;
    presence.retain(|e| filter.presence.allows(e));
    let changed = !join.is_empty()
        || !invite.is_empty()
        || !leave.is_empty()
        || !knock.is_empty()
        || !global_events.is_empty()
        || !presence.is_empty()
        || !to_device.is_empty()
        || !lists_changed.is_empty()
        || !lists_left.is_empty();
    Ok((
        json!({
            "next_batch": now.to_string(),
            "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
            "account_data": { "events": global_events },
            "presence": { "events": presence },
            "to_device": { "events": to_device },
            "device_lists": { "changed": lists_changed, "left": lists_left },
            "device_one_time_keys_count": app.e2ee.one_time_key_counts(&s.user_id, device)?,
            "device_unused_fallback_key_types": app.e2ee.unused_fallback_key_types(&s.user_id, device)?,
        }),
        changed,
    ))
}

fn invite_state(
    app: &App,
    user: &ruma::UserId,
    room: &RoomRef,
    m: &Membership,
) -> ApiResult<Vec<Value>> {
    let mut events = match app
        .rooms
        .stored_stripped_state(user, &room.meta.room_id, &m.event_id)?
    {
        Some(stored) => stored,
        None => app
            .rooms
            .stripped_state_events(room.short, Some(&m.sender))?
            .iter()
            .map(plexus_core::client_event::to_stripped)
            .collect(),
    };
    if let Some(short) = app.rooms.short_event(&m.event_id)? {
        if let Some(ev) = app.rooms.pdu_json(short)? {
            events.push(plexus_core::client_event::to_stripped(&ev));
        }
    }
    Ok(events)
}

/// Whether the room's history goes back before its oldest stored event: that event has prev
/// events (only the create event has none), as when this server joined over federation.
fn starts_before_store(app: &App, short_room: u64) -> ApiResult<bool> {
    let Some(first) = app.rooms.timeline(short_room, 0, u64::MAX - 1).next() else {
        return Ok(false);
    };
    let (_, short) = first?;
    Ok(app
        .rooms
        .pdu_by_short(short)?
        .is_some_and(|p| !p.prev_events.is_empty()))
}

/// One joined (or left) room: timeline after `since` up to `upper`, the state the client lacks,
/// summary and room account data. `None` if nothing changed.
#[allow(clippy::too_many_arguments)]
fn room_section(
    app: &App,
    s: &Session,
    room: &RoomRef,
    m: &Membership,
    since: Option<u64>,
    upper: u64,
    filter: &Filter,
    full_state: bool,
    account_data: Vec<Value>,
) -> ApiResult<Option<Value>> {
    let room_id: &RoomId = &room.meta.room_id;
    let tl_filter = &filter.room.timeline;
    let limit = tl_filter
        .limit
        .unwrap_or(10)
        .min(app.settings.max_page as u64) as usize;
    let lower = since.unwrap_or(0);
    // Newly joined since the token: the client knows nothing of this room yet.
    let newly = match since {
        None => true,
        Some(c) => {
            m.count > c && {
                let at = app.rooms.state_at_count(room.short, c)?;
                app.rooms
                    .state_pdu(at, "m.room.member", s.user_id.as_str())?
                    .and_then(|p| p.membership())
                    .as_deref()
                    != Some("join")
            }
        }
    };

    // Timeline: newest first while scanning, `limit + 1` visible events tell us if it is limited.
    // A room joined since the token gets its recent history whenever it happened, as an
    // initial sync would: events before the token are news to a client that was not in the
    // room. (A room left or banned from without ever joining shows only what followed.)
    let history = newly && m.membership == "join";
    let scan_from = if history { 0 } else { lower };
    let mut picked: Vec<(u64, u64, Value)> = vec![];
    let mut limited = false;
    for (scanned, item) in app
        .rooms
        .timeline(room.short, scan_from, upper)
        .rev()
        .enumerate()
    {
        if scanned >= SCAN_CAP {
            limited = true;
            break;
        }
        let (count, short) = item?;
        let Some(pdu) = app.rooms.pdu_by_short(short)? else {
            continue;
        };
        if !app.rooms.can_see(&s.user_id, room_id, short, &pdu)? {
            continue;
        }
        if picked.len() == limit {
            limited = true;
            break;
        }
        let Some(stored) = app.rooms.pdu_json(short)? else {
            continue;
        };
        if tl_filter.allows(&stored) {
            picked.push((count, short, stored));
        }
    }
    picked.reverse();
    // The timeline of a room new to an incremental sync does not follow on from what the
    // client had (a rejoined room's old timeline ends at the leave): `limited` tells it to
    // start afresh, as Synapse does. In an initial sync, a room whose history goes back further
    // than what was stored (joined over federation) is limited too; clients page back from
    // `prev_batch`. A room the client already had is complete after the token.
    if !limited && newly && (since.is_some() || starts_before_store(app, room.short)?) {
        limited = true;
    }

    // Ephemeral: typing and receipts, only while joined; all of them for a room new to the
    // client, whose history it is seeing for the first time.
    let mut ephemeral = vec![];
    if m.membership == "join" {
        let since = if newly { None } else { since };
        if let Some(users) = app.typing.since(room_id, since) {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        let own = |u: &str| u == s.user_id.as_str();
        if let Some(content) = app.receipts.since(room.short, since, &own)? {
            ephemeral.push(json!({ "type": "m.receipt", "content": content }));
        }
        ephemeral.retain(|e| filter.room.ephemeral.allows(e));
    }
    if !newly && !full_state && picked.is_empty() && account_data.is_empty() && ephemeral.is_empty()
    {
        return Ok(None);
    }

    // State: what lies between what the client knows and the start of the timeline.
    let timeline_start_hash = match picked.first() {
        Some((_, short, _)) => app
            .rooms
            .event_state(*short)?
            .map(|(before, _)| before)
            .unwrap_or(0),
        None => app.rooms.state_at_count(room.short, upper)?,
    };
    let start_map = app.rooms.state_map(timeline_start_hash)?;
    let state_shorts: Vec<u64> = if newly || full_state {
        start_map.values().copied().collect()
    } else if limited {
        let known = app
            .rooms
            .state_map(app.rooms.state_at_count(room.short, lower)?)?;
        start_map
            .iter()
            .filter(|(k, v)| known.get(k) != Some(v))
            .map(|(_, v)| *v)
            .collect()
    } else {
        vec![]
    };
    let st_filter = &filter.room.state;
    let senders: BTreeSet<String> = picked
        .iter()
        .filter_map(|(_, _, e)| e["sender"].as_str().map(str::to_owned))
        .collect();
    let mut state = vec![];
    let timeline_ids: BTreeSet<u64> = picked.iter().map(|(_, sh, _)| *sh).collect();
    for short in state_shorts {
        if timeline_ids.contains(&short) {
            continue;
        }
        let Some(stored) = app.rooms.pdu_json(short)? else {
            continue;
        };
        if !st_filter.allows(&stored) {
            continue;
        }
        if st_filter.lazy_load_members && stored["type"] == "m.room.member" {
            let target = stored["state_key"].as_str().unwrap_or_default();
            if target != s.user_id.as_str() && !senders.contains(target) {
                continue;
            }
        }
        state.push(app.client_event_inner(short, &stored, room_id, Some(s), false)?);
    }
    if st_filter.lazy_load_members && !(newly || full_state || limited) {
        // Incremental: make sure the client can render every sender in the timeline.
        for ev in member_events_for(app, room, timeline_start_hash, &senders, s)? {
            let mut ev = ev;
            if let Some(o) = ev.as_object_mut() {
                o.remove("room_id");
            }
            state.push(ev);
        }
    }

    let mut timeline = Vec::with_capacity(picked.len());
    for (_, short, stored) in &picked {
        timeline.push(app.client_event(*short, stored, room_id, Some(s), false)?);
    }
    let prev_batch = picked.first().map(|(c, _, _)| c - 1).unwrap_or(upper);

    let mut section = json!({
        "timeline": { "events": timeline, "limited": limited, "prev_batch": prev_batch.to_string() },
        "state": { "events": state },
        "account_data": { "events": account_data },
        "ephemeral": { "events": ephemeral },
        "summary": summary(app, s, room)?,
    });
    if m.membership == "join" {
        let (mut main, threads) =
            crate::service::push::unread::room_counts(app, &s.user_id, room.short)?;
        if tl_filter.unread_thread_notifications {
            if !threads.is_empty() {
                section["unread_thread_notifications"] = threads
                    .iter()
                    .map(|(root, c)| (root.clone(), c.json()))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
        } else {
            for c in threads.values() {
                main.notifications += c.notifications;
                main.highlights += c.highlights;
            }
        }
        section["unread_notifications"] = main.json();
    }
    Ok(Some(section))
}

/// `m.heroes` and member counts, for clients that name rooms after their members.
fn summary(app: &App, s: &Session, room: &RoomRef) -> ApiResult<Value> {
    let members = app.rooms.room_members(room.short)?;
    let joined = members.iter().filter(|(_, m)| m == "join").count();
    let invited = members.iter().filter(|(_, m)| m == "invite").count();
    let heroes: Vec<String> = members
        .iter()
        .filter(|(u, m)| *u != s.user_id && (m == "join" || m == "invite"))
        .take(5)
        .map(|(u, _)| u.to_string())
        .collect();
    Ok(
        json!({ "m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited }),
    )
}
