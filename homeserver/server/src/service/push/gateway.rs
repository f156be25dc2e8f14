//! Delivery to push gateways (`POST /_matrix/push/v1/notify`). One worker per pusher walks the
//! user's notifications past the pusher's stored position, so a restart resumes where delivery
//! stopped and a slow gateway holds up only its own pusher. Failures back off exponentially;
//! pushkeys the gateway rejects lose their pusher, as the spec requires.

use std::{collections::HashMap, sync::Arc, time::Duration};

use plexus_store::StoreError;
use ruma::{push::Action, OwnedUserId, UserId};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::service::push::pushers::PusherKey;
use crate::service::push::{
    evaluate::tweaks,
    unread::{self, Stored},
    PushError,
};
use crate::service::{App, Services};

/// Notifications one pass of a worker sends before looking for new work.
const BATCH: usize = 100;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Wakes the delivery workers of users who were just notified.
pub struct Pushers {
    /// Users with at least one pusher (possibly one since deleted): whom a wake concerns,
    /// without a store read per notified user on the send path.
    users: std::sync::Mutex<std::collections::HashSet<OwnedUserId>>,
    tx: mpsc::UnboundedSender<OwnedUserId>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<OwnedUserId>>>,
}

impl Default for Pushers {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            users: Default::default(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Pushers {
    /// Tell the workers of these users (those with pushers) that there may be work.
    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        let with_pushers = self.users.lock().unwrap_or_else(|p| p.into_inner());
        for u in users {
            if with_pushers.contains(u) {
                let _ = self.tx.send(u.to_owned());
            }
        }
    }

    /// After `user` set a pusher: deliver to it from now on.
    pub fn added(&self, user: &UserId) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_owned());
        let _ = self.tx.send(user.to_owned());
    }

    /// Start delivering: a dispatcher that owns one worker per pusher, beginning with every
    /// pusher that exists (work left from before a restart).
    pub fn spawn(app: &App) -> Result<(), PushError> {
        let Some(mut rx) = app
            .pushers
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        let client = crate::service::federation::client::http_client(
            true,
            app.settings.push.allow_loopback,
            Default::default(),
        )?;
        let app = app.clone();
        let initial = app.pusher_records.users_with_pushers()?;
        app.pushers
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(initial.iter().cloned());
        tokio::spawn(async move {
            let mut workers: HashMap<PusherKey, (Arc<Notify>, tokio::task::JoinHandle<()>)> =
                HashMap::new();
            let mut wake_user = |user: OwnedUserId| {
                let pushers = match app.pusher_records.of_user(&user) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(user_id = %user, error = %e, "pushers unreadable");
                        return;
                    }
                };
                workers.retain(|_, (_, h)| !h.is_finished());
                for (key, _) in pushers {
                    let (wake, _) = workers.entry(key.clone()).or_insert_with(|| {
                        let wake = Arc::new(Notify::new());
                        let task = tokio::spawn(worker(
                            app.clone(),
                            client.clone(),
                            user.clone(),
                            key,
                            wake.clone(),
                        ));
                        (wake, task)
                    });
                    wake.notify_one();
                }
            };
            for u in initial {
                wake_user(u);
            }
            while let Some(u) = rx.recv().await {
                wake_user(u);
            }
        });
        Ok(())
    }
}

async fn worker(
    app: App,
    client: reqwest::Client,
    user: OwnedUserId,
    key: PusherKey,
    wake: Arc<Notify>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match deliver(&app, &client, &user, &key).await {
            Ok(Pass::CaughtUp) => {
                backoff = FIRST_BACKOFF;
                wake.notified().await;
            }
            Ok(Pass::More) => backoff = FIRST_BACKOFF,
            Ok(Pass::Gone) => return,
            Err(e) => {
                tracing::warn!(user_id = %user, error = %e, retry_in = ?backoff, "push delivery failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

enum Pass {
    CaughtUp,
    More,
    /// The pusher was deleted (by its user, or because the gateway rejected its pushkey).
    Gone,
}

async fn deliver(
    app: &Services,
    client: &reqwest::Client,
    user: &UserId,
    key: &PusherKey,
) -> Result<Pass, PushError> {
    let Some(pusher) = app.pusher_records.get(key)? else {
        return Ok(Pass::Gone);
    };
    let progress = app.pusher_records.delivered(key)?;
    let todo: Vec<(u64, Stored)> =
        unread::notifications(app, user, progress.saturating_add(1), u64::MAX)
            .take(BATCH)
            .collect::<Result<_, StoreError>>()?;
    let more = todo.len() == BATCH;
    for (count, n) in todo {
        // Read before it could be delivered: nothing to alert about any more.
        if unread::is_unread(app, user, n.short_room, count)? {
            if let Some(body) = request_body(app, user, &pusher, &n)? {
                if post(client, app, &pusher, &body).await? {
                    app.pusher_records.remove(key)?;
                    tracing::info!(user_id = %user, "push gateway rejected the pushkey; pusher removed");
                    return Ok(Pass::Gone);
                }
            }
        }
        app.pusher_records.set_delivered(key, count)?;
    }
    Ok(if more { Pass::More } else { Pass::CaughtUp })
}

/// POST one notification; answers whether the gateway rejected this pusher's pushkey.
async fn post(
    client: &reqwest::Client,
    app: &Services,
    pusher: &Value,
    body: &Value,
) -> Result<bool, PushError> {
    let url = pusher["data"]["url"]
        .as_str()
        .ok_or_else(|| PushError::Internal("pusher without url".into()))?;
    let parsed = reqwest::Url::parse(url).map_err(|e| PushError::Internal(e.to_string()))?;
    if let Some(why) = crate::service::federation::client::literal_ip_refused(
        &parsed,
        app.settings.push.allow_loopback,
    ) {
        return Err(PushError::BadGateway(format!("push gateway is a {why}")));
    }
    let resp = client
        .post(parsed)
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| {
            PushError::BadGateway(format!(
                "push gateway: {}",
                crate::service::federation::client::error_chain(&e)
            ))
        })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(PushError::BadGateway(format!(
            "push gateway answered {status}"
        )));
    }
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    let pushkey = &pusher["pushkey"];
    Ok(answer["rejected"]
        .as_array()
        .is_some_and(|r| r.contains(pushkey)))
}

/// The `/notify` request for one notification, in the pusher's format; `None` if the event is
/// gone.
fn request_body(
    app: &Services,
    user: &UserId,
    pusher: &Value,
    n: &Stored,
) -> Result<Option<Value>, PushError> {
    let Some(event) = app.rooms.pdu_json(n.event)? else {
        return Ok(None);
    };
    let actions: Vec<Action> = serde_json::from_value(n.actions.clone()).unwrap_or_default();
    let tweaks = tweaks(&actions);
    let high = tweaks.contains_key("sound")
        || tweaks.get("highlight") == Some(&Value::Bool(true))
        || event["type"] == "m.room.encrypted";
    let mut data = pusher["data"].clone();
    if let Some(d) = data.as_object_mut() {
        d.remove("url");
    }
    let mut device = json!({
        "app_id": pusher["app_id"],
        "pushkey": pusher["pushkey"],
        "pushkey_ts": pusher["pushkey_ts"].as_u64().unwrap_or(0) / 1000,
        "data": data,
    });
    if !tweaks.is_empty() {
        device["tweaks"] = Value::Object(tweaks);
    }
    let mut note = json!({
        "event_id": event["event_id"],
        "room_id": n.room_id,
        "prio": if high { "high" } else { "low" },
        "devices": [device],
    });
    let unread = unread::total_unread(app, user)?;
    if unread > 0 {
        note["counts"] = json!({ "unread": unread });
    }
    if pusher["data"]["format"] != "event_id_only" {
        let state = app
            .rooms
            .current_state(n.short_room)?
            .map(|s| s.0)
            .unwrap_or(0);
        let sender = event["sender"].as_str().unwrap_or_default();
        note["type"] = event["type"].clone();
        note["sender"] = event["sender"].clone();
        if let Some(c) = event.get("content") {
            note["content"] = c.clone();
        }
        if let Some(name) = app
            .rooms
            .state_json(state, "m.room.member", sender)?
            .and_then(|m| m["content"]["displayname"].as_str().map(str::to_owned))
        {
            note["sender_display_name"] = json!(name);
        }
        if let Some(name) = app
            .rooms
            .state_json(state, "m.room.name", "")?
            .and_then(|e| e["content"]["name"].as_str().map(str::to_owned))
        {
            note["room_name"] = json!(name);
        }
        if let Some(alias) = app
            .rooms
            .state_json(state, "m.room.canonical_alias", "")?
            .and_then(|e| e["content"]["alias"].as_str().map(str::to_owned))
        {
            note["room_alias"] = json!(alias);
        }
        if event["type"] == "m.room.member" {
            note["user_is_target"] = json!(event["state_key"] == user.as_str());
        }
    }
    Ok(Some(json!({ "notification": note })))
}
