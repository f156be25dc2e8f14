//! Backfill: a room's history from before this server joined, fetched from a server in the
//! room when a client pages past what is stored here. Backfilled events get their state
//! (so history visibility applies to them) and a place in the room's `History` index, which
//! `/messages` reads after the timeline; they never change current state or extremities.

use plexus_store::{schema, Batch};
use ruma::OwnedEventId;
use serde_json::Value;

use super::{
    ingest::{self, IngestError},
    sender::enc,
    FederationError,
};
use crate::service::{rooms::RoomRef, writer::backfilled_row, Services};

/// Most events asked for in one `/backfill` request.
const MAX_BACKFILL: usize = 100;

/// `(seq, short event id)` of the room's history rows with `seq` in `[lo, hi]`, newest first.
pub fn history(
    app: &Services,
    short_room: u64,
    lo: u64,
    hi: u64,
) -> impl DoubleEndedIterator<Item = Result<(u64, u64), FederationError>> + '_ {
    schema::ROOM_SEQ__HISTORY_EVENT
        .range(
            &app.store.kv,
            (short_room, lo),
            (short_room, hi.saturating_add(1)),
        )
        .map(|r| {
            let ((_, seq), short) = r?;
            Ok((seq, short))
        })
}

/// The oldest history seq of the room (0 when nothing was backfilled).
fn last_seq(app: &Services, short_room: u64) -> Result<u64, FederationError> {
    Ok(history(app, short_room, 1, u64::MAX)
        .next_back()
        .transpose()?
        .map_or(0, |(seq, _)| seq))
}

fn placed(app: &Services, short: u64) -> Result<bool, FederationError> {
    Ok(schema::EVENT__HISTORY_SEQ.contains(&app.store.kv, short)?)
}

/// The events just before everything stored of the room's history: the prev events of the
/// oldest backfilled event, or of the oldest timeline event.
fn backward_extremities(
    app: &Services,
    room: &RoomRef,
) -> Result<Vec<OwnedEventId>, FederationError> {
    let oldest = match history(app, room.short, 1, u64::MAX).next_back() {
        Some(item) => Some(item?.1),
        None => match app.rooms.timeline(room.short, 0, u64::MAX - 1).next() {
            Some(item) => Some(item?.1),
            None => None,
        },
    };
    let Some(pdu) = oldest
        .map(|s| app.rooms.pdu_by_short(s))
        .transpose()?
        .flatten()
    else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for p in &pdu.prev_events {
        match app.rooms.short_event(p)? {
            Some(s) if placed(app, s)? => {}
            _ => out.push(p.clone()),
        }
    }
    Ok(out)
}

/// Fetch up to about `wanted` events of history from a server in the room and place them;
/// answers how many were added (0 when there is nothing older or nobody to ask).
#[tracing::instrument(skip_all, fields(room_id = %room.meta.room_id, wanted))]
pub async fn backfill(app: &Services, room: &RoomRef, wanted: usize) -> Result<usize, IngestError> {
    let Some(fed) = &app.federation else {
        return Ok(0);
    };
    let v = backward_extremities(app, room)?;
    if v.is_empty() {
        return Ok(0);
    }
    let room_id = &room.meta.room_id;
    let rules = plexus_core::room_version::rules(&room.meta.version)
        .map_err(|e| IngestError::Local(e.into()))?;
    let limit = wanted.clamp(10, MAX_BACKFILL);
    let vs: Vec<String> = v.iter().map(|e| format!("v={}", enc(e.as_str()))).collect();
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?limit={limit}&{}",
        enc(room_id.as_str()),
        vs.join("&")
    );
    for server in app.rooms.room_servers(room.short)? {
        let resp = match fed
            .request(app, &server, http::Method::GET, &path, None, true)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%server, room_id = %room_id, error = %e, "backfill failed");
                continue;
            }
        };
        let pdus = resp
            .get("pdus")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let mut events = ingest::check_each(app, &rules, pdus.take(MAX_BACKFILL)).await;
        events.retain(|c| ingest::in_room(c.pdu.room_id.as_deref(), &c.event_id, room_id));
        events.sort_by_key(|c| c.pdu.depth);
        let mut added = vec![];
        for c in events {
            if let Some(s) = app.rooms.short_event(&c.event_id)? {
                // A soft-failed event is never shown, however a peer's answer lists it.
                if placed(app, s)? || ingest::is_soft_failed(app, s)? {
                    continue;
                }
            }
            let id = c.event_id.clone();
            let stored = async {
                ingest::ensure_auth_events(app, &server, &rules, room_id, &c).await?;
                let mut missing = vec![];
                for p in &c.pdu.prev_events {
                    if !ingest::has_state(app, p)? {
                        missing.push(p.clone());
                    }
                }
                if !missing.is_empty() {
                    super::send::state_at_prevs(app, &server, room_id, &rules, &missing).await?;
                }
                ingest::persist_historic(app, room, &rules, &c).await
            };
            match stored.await {
                Ok(short) => added.push(short),
                Err(e) => tracing::info!(event_id = %id, error = %e, "backfilled event refused"),
            }
        }
        // Oldest first here; the newest of them sits right behind what was stored before.
        let _guard = app.room_lock(room_id).lock_owned().await;
        let mut seq = last_seq(app, room.short)?;
        let mut batch = Batch::default();
        let mut seen = std::collections::HashSet::new();
        let mut fresh = vec![];
        for short in added.iter().rev() {
            if !seen.insert(*short) || placed(app, *short)? {
                continue;
            }
            fresh.push(*short);
            seq += 1;
            schema::ROOM_SEQ__HISTORY_EVENT.put(&mut batch, (room.short, seq), short)?;
            schema::EVENT__HISTORY_SEQ.put(&mut batch, *short, &seq)?;
        }
        if fresh.is_empty() {
            app.store.commit(batch)?;
        } else {
            // A stream position for the search indexer, which follows it after the timeline.
            let (count, ()) = app.store.commit_with_count(|count, b| {
                b.append(batch);
                backfilled_row(b, count, fresh)?;
                Ok(())
            })?;
            app.notifier.wake(std::iter::empty(), count);
        }
        drop(_guard);
        app.store.flush().await?;
        tracing::info!(%server, room_id = %room_id, added = added.len(), "backfilled");
        return Ok(added.len());
    }
    Ok(0)
}
