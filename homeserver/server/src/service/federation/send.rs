//! The transaction processing behind `/send`: each PDU checked against the room's ACL and its
//! signatures, gaps before it filled (`get_missing_events`, or the state at the prev events a
//! peer gives), then persisted.

use ruma::{OwnedEventId, OwnedRoomId, RoomId, ServerName};
use serde_json::{json, Value};

use super::{
    ingest::{self, Checked, IngestError},
    sender::enc,
    FederationError,
};
use crate::service::Services;

/// Most events one `get_missing_events` call asks for.
const MISSING_LIMIT: u64 = 20;

/// One PDU of a transaction: its id (if it has one we can name) and what became of it.
pub async fn one_pdu(
    app: &Services,
    origin: &ServerName,
    raw: &Value,
    acl: &mut std::collections::HashMap<u64, bool>,
) -> (Option<String>, Result<ingest::Outcome, IngestError>) {
    let Some(room_id) = raw
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
    else {
        return (None, Err(IngestError::Invalid("no room_id".into())));
    };
    let room = match app.rooms.room(&room_id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return (
                raw.get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                Err(IngestError::Invalid(
                    "this server is not in the room".into(),
                )),
            )
        }
        Err(e) => return (None, Err(e.into())),
    };
    let rules = match plexus_core::room_version::rules(&room.meta.version) {
        Ok(r) => r,
        Err(e) => return (None, Err(IngestError::Invalid(e.to_string()))),
    };
    // The id a PDU would have, for results about PDUs refused before their checks finish.
    let claimed_id = || {
        ingest::canonical_object(raw)
            .ok()
            .and_then(|o| ingest::event_id_of(&o, &rules).ok())
            .map(|i| i.to_string())
    };
    // The ACL as it stands when the transaction arrives, read once per room.
    let allowed = match acl.get(&room.short) {
        Some(a) => *a,
        None => match super::acl::allowed(app, room.short, origin) {
            Ok(a) => *acl.entry(room.short).or_insert(a),
            Err(e) => return (None, Err(e.into())),
        },
    };
    if !allowed {
        let why = format!("{origin} is denied by the room's server ACL");
        return (claimed_id(), Err(IngestError::Auth(why)));
    }
    let checked = match ingest::check(app, &rules, raw).await {
        Ok(c) => c,
        Err(e) => return (claimed_id(), Err(e)),
    };
    let id = checked.event_id.to_string();
    if checked.pdu.room_id.as_deref() != Some(&*room_id) {
        return (
            Some(id),
            Err(IngestError::Invalid("room_id mismatch".into())),
        );
    }
    (
        Some(id),
        accept(app, origin, &room_id, &rules, checked).await,
    )
}

/// Fill gaps and missing auth events, then persist.
#[tracing::instrument(skip_all, fields(origin = %origin, room_id = %room_id, event_id = %checked.event_id))]
pub async fn accept(
    app: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    checked: Checked,
) -> Result<ingest::Outcome, IngestError> {
    let room = app.rooms.room_or_404(room_id)?;
    if ingest::has_state(app, &checked.event_id)? {
        return Ok(ingest::Outcome::Duplicate);
    }
    ingest::ensure_auth_events(app, origin, rules, room_id, &checked).await?;
    let missing = missing_prevs(app, &checked)?;
    if !missing.is_empty() {
        fill_gap(app, origin, room_id, rules, &checked).await?;
    }
    let missing = missing_prevs(app, &checked)?;
    if !missing.is_empty() {
        state_at_prevs(app, origin, room_id, rules, &missing).await?;
    }
    ingest::persist(app, &room, rules, checked, None).await
}

fn missing_prevs(app: &Services, c: &Checked) -> Result<Vec<OwnedEventId>, FederationError> {
    let mut out = vec![];
    for p in &c.pdu.prev_events {
        if !ingest::has_state(app, p)? {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `get_missing_events` between our forward extremities and the event, persisted oldest first.
async fn fill_gap(
    app: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    c: &Checked,
) -> Result<(), IngestError> {
    let room = app.rooms.room_or_404(room_id)?;
    let mut earliest = vec![];
    let mut min_depth = u64::MAX;
    for short in app.rooms.extremities(room.short)? {
        if let Some(p) = app.rooms.pdu_by_short(short)? {
            min_depth = min_depth.min(u64::from(p.depth));
            earliest.push(p.event_id);
        }
    }
    // History from before our newest extremities is not a gap: it is what we joined after.
    let body = json!({
        "earliest_events": earliest,
        "latest_events": [c.event_id],
        "limit": MISSING_LIMIT,
        "min_depth": if min_depth == u64::MAX { 0 } else { min_depth.saturating_sub(1) },
    });
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        enc(room_id.as_str())
    );
    let resp = app
        .fed()?
        .request(app, origin, http::Method::POST, &path, Some(body), true)
        .await?;
    let mut events = vec![];
    for raw in resp
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MISSING_LIMIT as usize)
    {
        match ingest::check(app, rules, raw).await {
            Ok(e) if e.pdu.room_id.as_deref() == Some(room_id) => events.push(e),
            Ok(_) => {}
            Err(e) => tracing::info!(error = %e, "missing event refused"),
        }
    }
    events.sort_by_key(|e| e.pdu.depth);
    for e in events {
        let id = e.event_id.clone();
        ingest::ensure_auth_events(app, origin, rules, room_id, &e).await?;
        if !missing_prevs(app, &e)?.is_empty() {
            // The oldest events of a gap we could not close: their state comes from the peer.
            let missing = missing_prevs(app, &e)?;
            state_at_prevs(app, origin, room_id, rules, &missing).await?;
        }
        if let Err(err) = ingest::persist(app, &room, rules, e, None).await {
            tracing::info!(event_id = %id, error = %err, "missing event refused");
        }
    }
    Ok(())
}

/// For prev events we cannot reach: learn the state at each from the peer, store it with its
/// auth chain, and the prev event itself as the point that state belongs to. `/state_ids`
/// first, fetching only the events we lack; `/state` when that would be too many requests.
pub(super) async fn state_at_prevs(
    app: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &ruma::room_version_rules::RoomVersionRules,
    missing: &[OwnedEventId],
) -> Result<(), IngestError> {
    let fed = app.fed()?;
    for prev in missing.iter().take(5) {
        let query = format!("{}?event_id={}", enc(room_id.as_str()), enc(prev.as_str()));
        let resp = fed
            .request(
                app,
                origin,
                http::Method::GET,
                &format!("/_matrix/federation/v1/state_ids/{query}"),
                None,
                true,
            )
            .await?;
        let ids = |k: &str| -> Vec<OwnedEventId> {
            resp.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|s| OwnedEventId::try_from(s).ok())
                .collect()
        };
        let state_ids = ids("pdu_ids");
        let mut wanted = state_ids.clone();
        wanted.extend(ids("auth_chain_ids"));
        wanted.push(prev.clone());
        let mut all = vec![];
        let mut unknown = vec![];
        for id in wanted {
            match stored_checked(app, &id)? {
                Some(c) => all.push(c),
                None => unknown.push(id),
            }
        }
        if unknown.len() > STATE_IDS_FETCH_MAX {
            let resp = fed
                .request(
                    app,
                    origin,
                    http::Method::GET,
                    &format!("/_matrix/federation/v1/state/{query}"),
                    None,
                    true,
                )
                .await?;
            let list = |k: &str| resp.get(k).and_then(Value::as_array).into_iter().flatten();
            all.extend(ingest::check_each(app, rules, list("pdus")).await);
            all.extend(ingest::check_each(app, rules, list("auth_chain")).await);
            unknown.retain(|id| id == prev && !all.iter().any(|c| &c.event_id == id));
        }
        all.extend(ingest::fetch_events(app, origin, rules, room_id, unknown).await?);
        let at = all
            .iter()
            .position(|c| &c.event_id == prev)
            .ok_or_else(|| IngestError::Invalid(format!("{origin} has no event {prev}")))?;
        let point = all.swap_remove(at);
        super::join::store_state_and_point(app, rules, all, &state_ids, point).await?;
    }
    Ok(())
}

/// Most events fetched one by one to complete a `/state_ids` answer before `/state` is cheaper.
const STATE_IDS_FETCH_MAX: usize = 50;

/// A stored event as a [`Checked`] (it was checked when it was stored).
fn stored_checked(app: &Services, id: &ruma::EventId) -> Result<Option<Checked>, FederationError> {
    let Some(short) = app.rooms.short_event(id)? else {
        return Ok(None);
    };
    Ok(
        match (app.rooms.pdu_json(short)?, app.rooms.pdu_by_short(short)?) {
            (Some(stored), Some(pdu)) => Some(Checked {
                event_id: id.to_owned(),
                stored,
                pdu,
            }),
            _ => None,
        },
    )
}
