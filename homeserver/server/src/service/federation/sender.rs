//! The outbound sender: one queue and one transaction in flight per destination, PDUs read from
//! the durable outbox (written in the same batch as the event, so a crash loses nothing), EDUs
//! from memory, exponential back-off while the peer is down and catch-up when it returns.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::Duration,
};

use plexus_store::{schema, Batch, First, StoreError};
use ruma::{OwnedServerName, ServerName};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::service::{now_ms, Services};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// EDUs are ephemeral: past this many queued for a peer that is down, the oldest are dropped.
const MAX_QUEUED_EDUS: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Queue {
    /// New work (PDUs in the outbox or EDUs in memory).
    work: Notify,
    /// The peer contacted us: it is up, stop backing off.
    up: Notify,
    edus: Mutex<VecDeque<Value>>,
}

#[derive(Default)]
pub struct Sender {
    queues: Mutex<HashMap<OwnedServerName, Arc<Queue>>>,
    app: OnceLock<Weak<Services>>,
    txn: AtomicU64,
}

/// Percent-encode one path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A stored event as it travels between servers: no `unsigned`, and an `event_id` only in the
/// room versions (1 and 2) whose ids are not hashes.
pub fn federation_form(stored: &Value) -> Value {
    let mut v = stored.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("unsigned");
        if o.get("event_id")
            .and_then(Value::as_str)
            .is_some_and(|id| !id.contains(':'))
        {
            o.remove("event_id");
        }
    }
    v
}

impl Sender {
    /// Queue an event for each destination server in the outbox, in the same batch that
    /// persists it.
    pub fn stage_pdus(
        batch: &mut Batch,
        dests: &[OwnedServerName],
        count: u64,
        short: u64,
    ) -> Result<(), StoreError> {
        for d in dests {
            schema::DEST_COUNT__PDU.put(batch, (d.as_str(), count), &short)?;
        }
        Ok(())
    }

    /// An EDU for `dest` into the durable outbox, in the batch of the change it tells of (a
    /// to-device message, a device list update): unlike the EDUs held in memory, it survives
    /// a restart.
    pub fn stage_edu(
        batch: &mut Batch,
        dest: &str,
        count: u64,
        edu: &Value,
    ) -> Result<(), StoreError> {
        schema::DEST_COUNT_SEQ__EDU.put(batch, (dest, count, 0), edu)
    }

    /// Start the queues with anything left in the outbox from before a restart.
    pub fn start(&self, app: &Arc<Services>) {
        let _ = self.app.set(Arc::downgrade(app));
        let mut dests = BTreeSet::new();
        let kv = &app.store.kv;
        let pdus = schema::DEST_COUNT__PDU
            .iter::<u64>(kv)
            .map(|r| r.map(|((dest, _), _)| dest));
        let edus = schema::DEST_COUNT_SEQ__EDU
            .iter::<serde::de::IgnoredAny>(kv)
            .map(|r| r.map(|((dest, _, _), _)| dest));
        for dest in pdus.chain(edus).flatten() {
            if let Ok(d) = OwnedServerName::try_from(dest) {
                dests.insert(d);
            }
        }
        for d in dests {
            tracing::info!(destination = %d, "resuming federation queue");
            self.wake(&d);
        }
    }

    fn queue(&self, dest: &ServerName) -> Option<Arc<Queue>> {
        let app = self.app.get()?.clone();
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(dest) {
            return Some(q.clone());
        }
        let q = Arc::new(Queue::default());
        queues.insert(dest.to_owned(), q.clone());
        tokio::spawn(run(app, dest.to_owned(), q.clone()));
        Some(q)
    }

    /// PDUs were queued for `dest` in the outbox.
    pub fn wake(&self, dest: &ServerName) {
        if let Some(q) = self.queue(dest) {
            q.work.notify_one();
        }
    }

    pub fn send_edu(&self, dest: &ServerName, edu: Value) {
        if let Some(q) = self.queue(dest) {
            let mut edus = q.edus.lock().unwrap_or_else(|p| p.into_inner());
            if edus.len() >= MAX_QUEUED_EDUS {
                edus.pop_front();
            }
            edus.push_back(edu);
            drop(edus);
            q.work.notify_one();
        }
    }

    /// `dest` just sent us a request: whatever we hold for it can go now.
    pub fn peer_is_up(&self, dest: &ServerName) {
        let q = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dest)
            .cloned();
        if let Some(q) = q {
            q.up.notify_one();
        }
    }

    fn next_txn(&self) -> String {
        format!("{}-{}", now_ms(), self.txn.fetch_add(1, Ordering::Relaxed))
    }
}

#[tracing::instrument(name = "federation_sender", skip_all, fields(destination = %dest))]
async fn run(app: Weak<Services>, dest: OwnedServerName, q: Arc<Queue>) {
    let mut backoff = Duration::ZERO;
    loop {
        let Some(svc) = app.upgrade() else { return };
        let Some(fed) = svc.federation.clone() else {
            return;
        };
        let kv = &svc.store.kv;
        let mut keys = vec![];
        let mut pdus = vec![];
        for ((_, count), short) in schema::DEST_COUNT__PDU
            .prefix::<First<1>, u64>(kv, (dest.as_str(),))
            .take(MAX_PDUS)
            .flatten()
        {
            if let Ok(Some(p)) = svc.rooms.pdu_json(short) {
                pdus.push(federation_form(&p));
            }
            keys.push(count);
        }
        // Durable EDUs (to-device messages, device list updates) first, in order.
        let mut edu_keys = vec![];
        let mut edus = vec![];
        // A row that does not read as JSON is dropped with the rest of the transaction.
        for ((_, count, seq), raw) in schema::DEST_COUNT_SEQ__EDU
            .prefix_raw::<First<1>>(kv, (dest.as_str(),))
            .take(MAX_EDUS)
            .flatten()
        {
            if let Ok(edu) = serde_json::from_slice::<Value>(&raw) {
                edus.push(edu);
            }
            edu_keys.push((count, seq));
        }
        let durable = edus.len();
        {
            let mut e = q.edus.lock().unwrap_or_else(|p| p.into_inner());
            let n = e.len().min(MAX_EDUS - edu_keys.len());
            edus.extend(e.drain(..n));
        }
        if keys.is_empty() && edus.is_empty() && edu_keys.is_empty() {
            drop(svc);
            q.work.notified().await;
            continue;
        }
        let txn = fed.sender.next_txn();
        let body = json!({
            "origin": svc.server_name(),
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        });
        let path = format!("/_matrix/federation/v1/send/{}", enc(&txn));
        match fed
            .request(&svc, &dest, http::Method::PUT, &path, Some(body), true)
            .await
        {
            Ok(resp) => {
                backoff = Duration::ZERO;
                if let Some(results) = resp.get("pdus").and_then(Value::as_object) {
                    for (id, r) in results {
                        if let Some(err) = r.get("error") {
                            tracing::warn!(destination = %dest, event_id = %id, error = %err, "peer refused a PDU");
                        }
                    }
                }
                let mut b = plexus_store::Batch::default();
                for count in &keys {
                    schema::DEST_COUNT__PDU.delete(&mut b, (dest.as_str(), *count));
                }
                for (count, seq) in &edu_keys {
                    schema::DEST_COUNT_SEQ__EDU.delete(&mut b, (dest.as_str(), *count, *seq));
                }
                if let Err(e) = svc.store.commit(b) {
                    tracing::error!(error = %e, "cannot clear the outbox");
                }
                tracing::debug!(destination = %dest, pdus = keys.len(), edus = edus.len(), "transaction sent");
            }
            Err(e) => {
                {
                    let mut queued = q.edus.lock().unwrap_or_else(|p| p.into_inner());
                    // The durable ones stay in the store and are read again.
                    for edu in edus.into_iter().skip(durable).rev() {
                        if queued.len() < MAX_QUEUED_EDUS {
                            queued.push_front(edu);
                        }
                    }
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(500), MAX_BACKOFF);
                tracing::info!(destination = %dest, error = %e, retry_in = ?backoff, "transaction failed");
                drop(svc);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = q.up.notified() => { backoff = Duration::ZERO; }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_form_keeps_only_v1_event_ids() {
        let v3 = json!({"event_id": "$abc", "unsigned": {"age": 1}, "type": "m.room.message"});
        assert_eq!(federation_form(&v3), json!({"type": "m.room.message"}));
        let v1 = json!({"event_id": "$abc:example.org", "type": "m.room.message"});
        assert_eq!(federation_form(&v1)["event_id"], "$abc:example.org");
        assert_eq!(enc("$a/b+c:d"), "%24a%2Fb%2Bc%3Ad");
    }
}
