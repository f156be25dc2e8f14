//! Other servers' signing keys: the cache of them, fetched from their key servers, checked
//! against their own signatures and persisted; and our own signed key response, which the key
//! server and notary endpoints serve.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use ruma::{
    canonical_json::{to_canonical_value, CanonicalJsonObject, CanonicalJsonValue},
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet},
    OwnedServerName, ServerName,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{client::FedError, FederationError};
use crate::service::now_ms;
use crate::service::single_flight::SingleFlight;
use crate::service::Services;

/// How long others may cache our key response.
const OUR_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;
/// Refetch a server's keys at most this often when asked for a key id we do not know.
const REFETCH_AFTER_MS: u64 = 60 * 1000;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KnownKeys {
    /// key id → unpadded base64 public key, every key the server has ever shown us.
    keys: BTreeMap<String, String>,
    /// key id → until when it may sign (ms): `valid_until_ts` capped at a week after the
    /// fetch for current keys, `expired_ts` for old ones. Absent: not known (kept from
    /// before this was recorded), treated as valid.
    #[serde(default)]
    valid_until: BTreeMap<String, u64>,
    /// Its latest self-signed response, served again by our notary endpoint.
    response: Value,
    fetched_at: u64,
}

/// How long one fetch of a server's keys may take: an origin that never answers must not hold
/// its callers (often unauthenticated requests naming it) for long.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// After a failed fetch, requests naming that server fail at once for this long.
const FAILED_FOR_MS: u64 = 30 * 1000;
/// Most servers remembered as failed (attackers can name any number of them).
const FAILED_MAX: usize = 10_000;

/// Key fetches of different servers in progress at once: requests naming thousands of
/// unreachable origins must not open thousands of outbound connections.
const FETCH_SLOTS: usize = 32;

pub struct KeyCache {
    /// Shared, so a lookup per PDU does not copy the stored response.
    mem: Mutex<HashMap<OwnedServerName, Arc<KnownKeys>>>,
    /// One fetch per server at a time; fetches of different servers never wait on each other.
    inflight: SingleFlight<OwnedServerName>,
    /// Servers whose last fetch failed, until when they are not asked again.
    failed: Mutex<HashMap<OwnedServerName, u64>>,
    fetch_slots: tokio::sync::Semaphore,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            mem: Default::default(),
            inflight: Default::default(),
            failed: Default::default(),
            fetch_slots: tokio::sync::Semaphore::new(FETCH_SLOTS),
        }
    }
}

impl KeyCache {
    fn recently_failed(&self, server: &ServerName) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(server).is_some_and(|until| *until > now_ms())
    }

    fn record_failure(&self, server: &ServerName) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.len() >= FAILED_MAX {
            let now = now_ms();
            failed.retain(|_, until| *until > now);
            if failed.len() >= FAILED_MAX {
                failed.clear();
            }
        }
        failed.insert(server.to_owned(), now_ms() + FAILED_FOR_MS);
    }

    fn known(
        &self,
        app: &Services,
        server: &ServerName,
    ) -> Result<Option<Arc<KnownKeys>>, FederationError> {
        if let Some(k) = self
            .mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
        {
            return Ok(Some(k.clone()));
        }
        let Some(k) = app.server_keys.get::<KnownKeys>(server)? else {
            return Ok(None);
        };
        let k = Arc::new(k);
        self.mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_owned(), k.clone());
        Ok(Some(k))
    }

    /// Every known public key of `server`, fetching its key server when one of `key_ids` is
    /// unknown (at most once a minute). With `valid_at` (room versions that enforce key
    /// validity: the event's `origin_server_ts`), keys that expired before then are left out,
    /// and a key that looks expired is refetched in case the server extended it.
    pub async fn verify_keys(
        &self,
        app: &Services,
        server: &ServerName,
        key_ids: &[String],
        valid_at: Option<u64>,
    ) -> Result<PublicKeyMap, FedError> {
        let mut map = PublicKeyMap::new();
        if server == app.server_name() {
            let mut set = PublicKeySet::new();
            set.insert(app.key.key_id(), parse_key(&app.key.public_key_b64())?);
            map.insert(server.to_string(), set);
            return Ok(map);
        }
        let missing = |k: &Option<Arc<KnownKeys>>| {
            k.as_ref().is_none_or(|k| {
                key_ids
                    .iter()
                    .any(|id| !k.keys.contains_key(id) || !k.valid_at(id, valid_at))
            })
        };
        let mut known = self.known(app, server).map_err(FedError::from)?;
        if missing(&known) {
            let _flight = self.inflight.turn(server.to_owned()).await;
            known = self.known(app, server).map_err(FedError::from)?;
            let stale = known
                .as_ref()
                .is_none_or(|k| now_ms().saturating_sub(k.fetched_at) > REFETCH_AFTER_MS);
            if missing(&known) && stale {
                known = Some(self.fetch(app, server, known).await?);
            }
        }
        let known = known.ok_or_else(|| FedError::BadResponse("no keys".into()))?;
        let mut set = PublicKeySet::new();
        for (id, key) in &known.keys {
            if known.valid_at(id, valid_at) {
                set.insert(id.clone(), parse_key(key)?);
            }
        }
        map.insert(server.to_string(), set);
        Ok(map)
    }

    async fn fetch(
        &self,
        app: &Services,
        server: &ServerName,
        old: Option<Arc<KnownKeys>>,
    ) -> Result<Arc<KnownKeys>, FedError> {
        if self.recently_failed(server) {
            return Err(FedError::Unreachable(
                server.to_string(),
                "its key server failed moments ago".into(),
            ));
        }
        let busy = || FedError::Unreachable(server.to_string(), "too many key fetches".into());
        let _slot = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_slots.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let result = self.fetch_now(app, server, old).await;
        if result.is_err() {
            self.record_failure(server);
        }
        result
    }

    async fn fetch_now(
        &self,
        app: &Services,
        server: &ServerName,
        old: Option<Arc<KnownKeys>>,
    ) -> Result<Arc<KnownKeys>, FedError> {
        let fed = app.fed()?;
        let request = fed.request(
            app,
            server,
            http::Method::GET,
            "/_matrix/key/v2/server",
            None,
            false,
        );
        let resp = tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| {
                FedError::Unreachable(server.to_string(), "key server did not answer".into())
            })??;
        let keys = check_key_response(server, &resp)?;
        let mut known = old.map(|k| (*k).clone()).unwrap_or_default();
        let now = now_ms();
        for (id, (key, valid_until)) in keys {
            known.keys.insert(id.clone(), key);
            known
                .valid_until
                .insert(id, valid_until.min(now + MAX_KEY_VALIDITY_MS));
        }
        known.response = resp;
        known.fetched_at = now;
        let known = Arc::new(known);
        app.server_keys
            .put(server, &*known)
            .map_err(|e| FedError::from(FederationError::from(e)))?;
        self.mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_owned(), known.clone());
        tracing::debug!(%server, keys = known.keys.len(), "fetched server keys");
        Ok(known)
    }

    /// The latest response of `server`, valid until at least `min_valid` if the server can
    /// give that: a stored one that expires sooner is refreshed (at most once a minute).
    async fn response(
        &self,
        app: &Services,
        server: &ServerName,
        min_valid: u64,
    ) -> Result<Value, FedError> {
        // Good enough: valid long enough, or fetched so recently that asking again is abuse.
        let usable = |k: &Option<Arc<KnownKeys>>| {
            k.as_ref()
                .filter(|k| {
                    let valid_until = k
                        .response
                        .get("valid_until_ts")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let recent = now_ms().saturating_sub(k.fetched_at) <= REFETCH_AFTER_MS;
                    !k.response.is_null() && (valid_until >= min_valid || recent)
                })
                .map(|k| k.response.clone())
        };
        let known = |this: &Self| this.known(app, server).map_err(FedError::from);
        if let Some(r) = usable(&known(self)?) {
            return Ok(r);
        }
        let _flight = self.inflight.turn(server.to_owned()).await;
        // Someone else may have fetched while we waited.
        let old = known(self)?;
        if let Some(r) = usable(&old) {
            return Ok(r);
        }
        match self.fetch(app, server, old.clone()).await {
            Ok(k) => Ok(k.response.clone()),
            // The server is away: what we have is still the best answer.
            Err(e) => match old {
                Some(k) if !k.response.is_null() => Ok(k.response.clone()),
                _ => Err(e),
            },
        }
    }
}

impl KnownKeys {
    fn valid_at(&self, id: &str, ts: Option<u64>) -> bool {
        match (ts, self.valid_until.get(id)) {
            (Some(ts), Some(until)) => *until >= ts,
            _ => true,
        }
    }
}

/// A key is trusted at most a week past the fetch, whatever `valid_until_ts` claims (spec).
const MAX_KEY_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

fn parse_key(b64: &str) -> Result<Base64, FedError> {
    Base64::parse(b64).map_err(|e| FedError::BadResponse(format!("bad public key: {e}")))
}

/// A key server response is valid when it names the server we asked and is signed by every
/// key it lists as current. Returns its keys, old ones included, each with until when it may
/// sign.
fn check_key_response(
    server: &ServerName,
    resp: &Value,
) -> Result<BTreeMap<String, (String, u64)>, FedError> {
    let bad = |why: &str| FedError::BadResponse(format!("key response of {server}: {why}"));
    if resp.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err(bad("wrong server_name"));
    }
    let mut current = BTreeMap::new();
    for (id, k) in resp
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no verify_keys"))?
    {
        let key = k
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("key without `key`"))?;
        current.insert(id.clone(), key.to_owned());
    }
    let obj = match to_canonical_value(resp) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        _ => return Err(bad("not canonical JSON")),
    };
    // Only the signatures of the server itself count; notaries' are not ours to check here.
    let mut own = CanonicalJsonObject::new();
    for (k, v) in obj {
        if k != "signatures" {
            own.insert(k, v);
        }
    }
    let sigs = resp
        .get("signatures")
        .and_then(|s| s.get(server.as_str()))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("not signed by the server"))?;
    let mut set = PublicKeySet::new();
    let mut only = serde_json::Map::new();
    for (id, sig) in sigs {
        if let Some(key) = current.get(id) {
            set.insert(id.clone(), parse_key(key)?);
            only.insert(id.clone(), sig.clone());
        }
    }
    if set.is_empty() {
        return Err(bad("no signature by a listed key"));
    }
    own.insert(
        "signatures".into(),
        to_canonical_value(json!({ server.as_str(): only })).map_err(|_| bad("signatures"))?,
    );
    let mut map = PublicKeyMap::new();
    map.insert(server.to_string(), set);
    ruma::signatures::verify_json(&map, &own).map_err(|e| bad(&e.to_string()))?;
    let valid_until = resp
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("no valid_until_ts"))?;
    let mut all: BTreeMap<String, (String, u64)> = current
        .into_iter()
        .map(|(id, key)| (id, (key, valid_until)))
        .collect();
    if let Some(old) = resp.get("old_verify_keys").and_then(Value::as_object) {
        for (id, k) in old {
            if let Some(key) = k.get("key").and_then(Value::as_str) {
                let expired = k.get("expired_ts").and_then(Value::as_u64).unwrap_or(0);
                all.entry(id.clone())
                    .or_insert_with(|| (key.to_owned(), expired));
            }
        }
    }
    Ok(all)
}

/// Our own signed key response.
pub fn own_response(app: &Services) -> Result<Value, FederationError> {
    let v = json!({
        "server_name": app.server_name(),
        "verify_keys": { app.key.key_id(): { "key": app.key.public_key_b64() } },
        "old_verify_keys": {},
        "valid_until_ts": now_ms() + OUR_VALIDITY_MS,
    });
    sign_value(app, v)
}

/// Add our signature to a JSON object.
pub fn sign_value(app: &Services, v: Value) -> Result<Value, FederationError> {
    let mut obj = match to_canonical_value(v) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        _ => return Err(FederationError::Internal("not a canonical object".into())),
    };
    ruma::signatures::sign_json(app.server_name().as_str(), app.key.pair(), &mut obj)
        .map_err(|e| FederationError::Internal(e.to_string()))?;
    serde_json::to_value(obj).map_err(|e| FederationError::Internal(e.to_string()))
}

/// One server's keys, countersigned; `min_valid` defaults to now, as the spec says.
pub async fn notarise(
    app: &Services,
    server: &str,
    min_valid: Option<u64>,
) -> Result<Option<Value>, FederationError> {
    let Ok(server) = <&ServerName>::try_from(server) else {
        return Ok(None);
    };
    if server == app.server_name() {
        return own_response(app).map(Some);
    }
    let fed = app.fed().map_err(|_| FederationError::Unrecognized)?;
    match fed
        .keys
        .response(app, server, min_valid.unwrap_or_else(now_ms))
        .await
    {
        Ok(resp) => sign_value(app, resp).map(Some),
        Err(e) => {
            tracing::debug!(%server, error = %e, "notary could not get keys");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_core::signing::ServerKey;

    fn signed(key: &ServerKey, server: &str, v: Value) -> Value {
        let mut obj = match to_canonical_value(v).unwrap() {
            CanonicalJsonValue::Object(o) => o,
            _ => unreachable!(),
        };
        ruma::signatures::sign_json(server, key.pair(), &mut obj).unwrap();
        serde_json::to_value(obj).unwrap()
    }

    #[test]
    fn key_responses_must_be_self_signed() {
        let key = ServerKey::generate().unwrap();
        let other = ServerKey::generate().unwrap();
        let name = <&ServerName>::try_from("a.example").unwrap();
        let body = |k: &ServerKey| {
            json!({
                "server_name": "a.example",
                "verify_keys": { k.key_id(): { "key": k.public_key_b64() } },
                "old_verify_keys": { "ed25519:old": { "key": other.public_key_b64(), "expired_ts": 1 } },
                "valid_until_ts": 1,
            })
        };
        let good = signed(&key, "a.example", body(&key));
        let keys = check_key_response(name, &good).unwrap();
        assert_eq!(keys.len(), 2, "old keys are kept for old events");
        // Signed by a key it does not list: refused.
        let forged = signed(&other, "a.example", body(&key));
        assert!(check_key_response(name, &forged).is_err());
        // Another server's name: refused.
        let wrong = <&ServerName>::try_from("b.example").unwrap();
        assert!(check_key_response(wrong, &good).is_err());
        // Tampered after signing: refused.
        let mut tampered = good.clone();
        tampered["valid_until_ts"] = json!(2);
        assert!(check_key_response(name, &tampered).is_err());
    }
}
