//! The indexer: follows the store's event stream and backfill queue from the position the
//! index last committed, so sending never waits for indexing and a crash loses nothing (the
//! index simply resumes from its last commit).

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use plexus_search::Opened;

use super::{index_event, IndexingError};
use crate::service::Services;

/// Stream rows indexed per commit. A commit makes a segment: larger batches while catching
/// up, and whatever has arrived when keeping up.
const BATCH: usize = 5_000;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long new writes gather before the next commit while keeping up (how far searches
/// lag behind sends, at most, plus the commit itself).
const COALESCE: Duration = Duration::from_millis(100);
/// How often a long catch-up reports progress.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Start the indexer (after reporting how the index was found).
pub fn start(app: &Arc<Services>) {
    match app.search.take_opened() {
        Some(Opened::Created { reason }) => {
            tracing::info!(reason = %reason, "search index: building it from the store");
        }
        Some(Opened::Existing(position)) => {
            tracing::info!(position, "search index: resuming");
        }
        None => {}
    }
    tokio::spawn(run(Arc::downgrade(app)));
}

async fn run(app: Weak<Services>) {
    let mut woken = match app.upgrade() {
        Some(svc) => svc.notifier.subscribe_any(),
        None => return,
    };
    let mut backoff = Duration::ZERO;
    let mut catch_up = CatchUp::default();
    loop {
        woken.borrow_and_update();
        let Some(svc) = app.upgrade() else { return };
        let step = tokio::task::spawn_blocking(move || step(&svc, BATCH)).await;
        match step {
            Ok(Ok(None)) => {
                backoff = Duration::ZERO;
                catch_up.done();
                // Nothing new: wait for a write (the periodic look is a safety net).
                let _ = tokio::time::timeout(Duration::from_secs(30), woken.changed()).await;
            }
            Ok(Ok(Some(n))) => {
                backoff = Duration::ZERO;
                if let Some(svc) = app.upgrade() {
                    catch_up.progress(n, svc.search.position(), svc.store.current_count());
                }
                if n < BATCH {
                    // Keeping up with live traffic: let writes gather for a moment, so a busy
                    // server commits the index a few times a second, not once per message.
                    tokio::time::sleep(COALESCE).await;
                }
            }
            Ok(Err(e)) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::error!(error = %e, retry_in = ?backoff, "search index: indexing failed");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::error!(error = %e, retry_in = ?backoff, "search index: indexer panicked");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Progress reports for a catch-up that takes a while (a rebuild, or a backlog after a crash).
#[derive(Default)]
struct CatchUp {
    started: Option<Instant>,
    last_report: Option<Instant>,
    events: u64,
}

impl CatchUp {
    fn progress(&mut self, n: usize, position: u64, end: u64) {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.events += n as u64;
        // Quiet while keeping up; a report every few seconds once it takes longer.
        let due = self.last_report.unwrap_or(started);
        if now.duration_since(due) >= REPORT_EVERY {
            self.last_report = Some(now);
            tracing::info!(
                events = self.events,
                position,
                of = end,
                "search index: catching up"
            );
        }
    }

    fn done(&mut self) {
        if let (Some(started), Some(_)) = (self.started, self.last_report) {
            tracing::info!(
                events = self.events,
                seconds = started.elapsed().as_secs_f64(),
                "search index: caught up"
            );
        }
        *self = CatchUp::default();
    }
}

/// Index what the stream and the backfill queue hold past the index's position (at most
/// `max` rows of each) and commit. Answers how many events it looked at; `None` when the
/// index was already current.
pub fn step(svc: &Services, max: usize) -> Result<Option<usize>, IndexingError> {
    let from = svc.search.position();
    let now = svc.store.current_count();
    if now <= from {
        return Ok(None);
    }
    let [timeline, backfill] = svc.rooms.placed_since(from, now, max)?;
    // A table cut short at `max` was read only up to its last row.
    let mut upto = now;
    for part in [&timeline, &backfill] {
        if part.len() == max {
            upto = upto.min(part.last().map_or(now, |r| r.0));
        }
    }
    let mut all: Vec<&(u64, Vec<u64>)> = timeline.iter().chain(backfill.iter()).collect();
    all.retain(|r| r.0 <= upto);
    all.sort_by_key(|r| r.0);
    let mut edits = HashMap::new();
    let mut n = 0;
    for (_, shorts) in all {
        for short in shorts {
            index_event(svc, *short, &mut edits)?;
            n += 1;
        }
    }
    // Positions that hold no events (receipts, typing, keys...) need no commit: after a
    // restart they are looked at again and still hold none.
    if n > 0 {
        svc.search.index.commit(upto)?;
    }
    svc.search.set_position(upto);
    Ok(Some(n))
}

/// `plexus rebuild-search-index`: empty the index and index the whole store again, reporting
/// as it goes. Answers the number of events looked at.
pub fn rebuild(svc: &Services) -> Result<u64, IndexingError> {
    svc.search.index.clear()?;
    svc.search.set_position(0);
    let mut catch_up = CatchUp::default();
    while let Some(n) = step(svc, BATCH)? {
        catch_up.progress(n, svc.search.position(), svc.store.current_count());
    }
    // Record the final position even if its last rows held nothing to index.
    svc.search.index.commit(svc.search.position())?;
    let events = catch_up.events;
    catch_up.done();
    Ok(events)
}
