//! Wakes long-polling `/sync` requests of the users a write concerns, and the consumers that
//! follow every write (appservice senders).

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

/// Long-polls in progress, counted per key (an access token, a user): each new one under a
/// key ends the wait of those started more than a few polls before it, so a client that
/// opens thousands of `/sync`s holds only the last few, and their memory comes back.
#[derive(Default)]
pub struct LongPolls {
    started: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// Keys kept before the idle ones are dropped.
const LONG_POLL_KEYS: usize = 10_000;

/// One long-poll's place under its key.
pub struct LongPoll {
    number: u64,
    keep: u64,
    rx: watch::Receiver<u64>,
}

impl LongPolls {
    /// Start a long-poll under `key`, which ends once `keep` more have started under it.
    pub fn enter(&self, key: String, keep: u64) -> LongPoll {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if started.len() >= LONG_POLL_KEYS {
            started.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = started.entry(key).or_insert_with(|| watch::channel(0).0);
        let mut number = 0;
        tx.send_modify(|n| {
            *n += 1;
            number = *n;
        });
        LongPoll {
            number,
            keep,
            rx: tx.subscribe(),
        }
    }
}

impl LongPoll {
    /// Resolves when this poll has been superseded (never otherwise).
    pub async fn superseded(&mut self) {
        let last = self.number + self.keep;
        if self.rx.wait_for(|n| *n >= last).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
    /// Told of every write, whoever it concerns.
    any: watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            any: watch::channel(0).0,
        }
    }
}

impl Notifier {
    /// For consumers of the whole stream: changes on every wake.
    pub fn subscribe_any(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Subscribe before reading, so that a write between the read and the wait is not missed.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>, count: u64) {
        self.any.send_replace(count);
        let mut map = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for u in users {
            if let Some(tx) = map.get(u) {
                if tx.receiver_count() == 0 {
                    map.remove(u);
                } else {
                    tx.send_replace(count);
                }
            }
        }
    }
}
