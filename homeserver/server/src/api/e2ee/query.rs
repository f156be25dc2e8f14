//! `/keys/query` and `/keys/claim`: local users from the store, remote users from their
//! servers (device lists of users we share a room with come from the tracked copy).

use std::{collections::BTreeMap, time::Duration};

use axum::{extract::State, Json};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::extract::{Auth, Body},
    service::{
        e2ee::cross_signing::{SELF_SIGNING, USER_SIGNING},
        App, Services,
    },
};

/// How long a client waits for other servers by default (the spec's `timeout`).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The keys of a set of users, in the shape of a `/keys/query` answer.
#[derive(Default)]
pub struct KeysAnswer {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    pub user_signing_keys: Map<String, Value>,
    pub failures: Map<String, Value>,
}

impl KeysAnswer {
    pub fn json(self) -> Value {
        json!({
            "device_keys": self.device_keys,
            "master_keys": self.master_keys,
            "self_signing_keys": self.self_signing_keys,
            "user_signing_keys": self.user_signing_keys,
            "failures": self.failures,
        })
    }

    /// A remote server's answer for its users, keeping only what it may speak for.
    fn merge_remote(&mut self, server: &OwnedServerName, answer: &Value) {
        for (field, into) in [
            ("device_keys", &mut self.device_keys),
            ("master_keys", &mut self.master_keys),
            ("self_signing_keys", &mut self.self_signing_keys),
        ] {
            for (user, v) in answer[field].as_object().into_iter().flatten() {
                let theirs =
                    OwnedUserId::try_from(user.as_str()).is_ok_and(|u| u.server_name() == server);
                if theirs {
                    into.insert(user.clone(), v.clone());
                }
            }
        }
    }
}

/// Parse `{user: [device, ...]}`, grouping users by server.
pub fn parse_query(
    requested: &Map<String, Value>,
) -> ApiResult<BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<String>>>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<String>>> = BTreeMap::new();
    for (user, devices) in requested {
        let user = OwnedUserId::try_from(user.as_str())
            .map_err(|e| ApiError::InvalidParam(format!("invalid user id {user:?}: {e}")))?;
        let devices = devices
            .as_array()
            .ok_or_else(|| ApiError::BadJson("device lists must be arrays".into()))?
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::BadJson("device ids must be strings".into()))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        out.entry(user.server_name().to_owned())
            .or_default()
            .insert(user, devices);
    }
    Ok(out)
}

/// Local users' keys. `viewer` is the local user asking (who sees display names, their own
/// user-signing key and the signatures they made); `None` for another server.
pub fn local_keys(
    app: &Services,
    users: &BTreeMap<OwnedUserId, Vec<String>>,
    viewer: Option<&UserId>,
    out: &mut KeysAnswer,
) -> ApiResult<()> {
    for (user, wanted) in users {
        if app.accounts.user(user)?.is_none() {
            continue;
        }
        let mut devices = Map::new();
        for (device, rec) in app.accounts.devices(user)? {
            if !wanted.is_empty() && !wanted.contains(&device) {
                continue;
            }
            let Some(mut keys) = app.e2ee.device_keys(user, &device)? else {
                continue;
            };
            if let (Some(_), Some(name)) = (viewer, rec.display_name) {
                keys["unsigned"] = json!({ "device_display_name": name });
            }
            devices.insert(device, keys);
        }
        out.device_keys
            .insert(user.to_string(), Value::Object(devices));
        if let Some(m) = app.e2ee.master_key_for(user, viewer)? {
            out.master_keys.insert(user.to_string(), m);
        }
        if let Some(k) = app.e2ee.cross_signing_key(user, SELF_SIGNING)? {
            out.self_signing_keys.insert(user.to_string(), k);
        }
        if viewer == Some(user.as_ref()) {
            if let Some(k) = app.e2ee.cross_signing_key(user, USER_SIGNING)? {
                out.user_signing_keys.insert(user.to_string(), k);
            }
        }
    }
    Ok(())
}

/// The client's `timeout` for other servers' answers, bounded to a minute.
fn remote_timeout(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(60_000))
}

/// Ask each server at once, each within `timeout`; answers per server, an error as text.
async fn ask_servers<T, F, Fut>(
    app: &App,
    remote: Vec<(OwnedServerName, T)>,
    timeout: Duration,
    ask: F,
) -> Vec<(OwnedServerName, Result<Value, String>)>
where
    F: Fn(App, OwnedServerName, T) -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    futures_util::future::join_all(remote.into_iter().map(|(server, users)| {
        let asked = ask(app.clone(), server.clone(), users);
        async move {
            let r = tokio::time::timeout(timeout, asked)
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            (server, r)
        }
    }))
    .await
}

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: Map<String, Value>,
    timeout: Option<u64>,
}

/// `POST /keys/query`.
/// Hand-written: ruma's response leaves out `failures` and key maps when empty; clients get `{}`.
pub async fn query(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<QueryBody>,
) -> ApiResult<Json<Value>> {
    let by_server = parse_query(&body.device_keys)?;
    let timeout = remote_timeout(body.timeout);
    let mut out = KeysAnswer::default();
    let mut remote = vec![];
    for (server, users) in by_server {
        if server == app.server_name() {
            local_keys(&app, &users, Some(&s.user_id), &mut out)?;
        } else if app.federation.is_some() {
            remote.push((server, users));
        }
    }
    let answers = ask_servers(&app, remote, timeout, |app, server, users| async move {
        crate::service::e2ee::federation::query_remote(&app, &server, &users).await
    })
    .await;
    for (server, r) in answers {
        match r {
            Ok(answer) => out.merge_remote(&server, &answer),
            Err(why) => {
                out.failures
                    .insert(server.to_string(), json!({ "status": 503, "message": why }));
            }
        }
    }
    // The viewer's signatures on remote users' master keys live here.
    for (user, key) in out.master_keys.iter_mut() {
        if let Ok(u) = OwnedUserId::try_from(user.as_str()) {
            if !app.is_local(&u) {
                app.e2ee.add_viewer_signatures(key, &u, &s.user_id)?;
            }
        }
    }
    Ok(Json(out.json()))
}

/// Parse `{user: {device: algorithm}}`, grouping users by server.
pub fn parse_claim(
    requested: &Map<String, Value>,
) -> ApiResult<BTreeMap<OwnedServerName, Map<String, Value>>> {
    let mut out: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in requested {
        let id = OwnedUserId::try_from(user.as_str())
            .map_err(|e| ApiError::InvalidParam(format!("invalid user id {user:?}: {e}")))?;
        let ok = devices
            .as_object()
            .is_some_and(|d| d.values().all(Value::is_string));
        if !ok {
            return Err(ApiError::BadJson(
                "one_time_keys must map devices to algorithms".into(),
            ));
        }
        out.entry(id.server_name().to_owned())
            .or_default()
            .insert(user.clone(), devices.clone());
    }
    Ok(out)
}

/// Claim keys of local users: `{user: {device: {"algorithm:id": key}}}`. Unknown users and
/// devices, and devices with no key left, are simply absent.
pub async fn claim_local(
    app: &App,
    requested: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let (out, taken) = app.e2ee.claim_keys(requested).await?;
    if taken {
        app.store.flush().await?;
        // Their one-time key counts went down: syncs and appservices (MSC3202) should learn.
        let claimed: Vec<OwnedUserId> = out
            .keys()
            .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
            .collect();
        app.notifier.wake(
            claimed.iter().map(|u| u.as_ref()),
            app.store.current_count(),
        );
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: Map<String, Value>,
    timeout: Option<u64>,
}

/// `POST /keys/claim`.
/// Hand-written: ruma's response leaves out `failures` when empty; clients get `{}`.
pub async fn claim(
    State(app): State<App>,
    Auth(_s): Auth,
    Body(body): Body<ClaimBody>,
) -> ApiResult<Json<Value>> {
    let by_server = parse_claim(&body.one_time_keys)?;
    let timeout = remote_timeout(body.timeout);
    let mut keys = Map::new();
    let mut failures = Map::new();
    let mut remote = vec![];
    for (server, users) in by_server {
        if server == app.server_name() {
            keys.extend(claim_local(&app, &users).await?);
        } else if app.federation.is_some() {
            remote.push((server, users));
        }
    }
    let answers = ask_servers(&app, remote, timeout, |app, server, users| async move {
        crate::service::e2ee::federation::claim_remote(&app, &server, users).await
    })
    .await;
    for (server, r) in answers {
        match r {
            Ok(answer) => {
                for (user, v) in answer["one_time_keys"].as_object().into_iter().flatten() {
                    if OwnedUserId::try_from(user.as_str()).is_ok_and(|u| u.server_name() == server)
                    {
                        keys.insert(user.clone(), v.clone());
                    }
                }
            }
            Err(why) => {
                failures.insert(server.to_string(), json!({ "status": 503, "message": why }));
            }
        }
    }
    Ok(Json(json!({ "one_time_keys": keys, "failures": failures })))
}
