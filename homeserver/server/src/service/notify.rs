//! Wakes long-polling `/sync` requests of the users a write concerns, and the consumers that
//! follow every write (appservice senders).

use std::{collections::HashMap, sync::Mutex};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

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
