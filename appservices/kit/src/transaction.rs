//! The body of `PUT /_matrix/app/v1/transactions/{txnId}`, read into one struct whatever names
//! the homeserver used: stable `ephemeral` and `to_device` or their MSC2409 unstable names, and
//! the MSC3202 extensions an appservice needs to run its own E2EE devices.
//!
//! Events stay `serde_json::Value`: the kit passes them through, and each bridge reads the few
//! fields it cares about.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

/// One-time key counts: user id → device id → algorithm → count.
pub type OneTimeKeyCounts = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;
/// Unused fallback key types: user id → device id → algorithms.
pub type FallbackKeyTypes = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// What the homeserver pushed in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    /// The homeserver's id for it, unique per appservice; the kit deduplicates on it.
    pub txn_id: String,
    /// Room events (timeline and state), client format.
    pub events: Vec<Value>,
    /// `m.typing`, `m.receipt`, `m.presence` (needs `receive_ephemeral` in the registration).
    pub ephemeral: Vec<Value>,
    /// To-device messages for the appservice's users (MSC2409/MSC4203).
    pub to_device: Vec<Value>,
    /// Device list changes of users the appservice's users share rooms with (MSC3202).
    pub device_lists: DeviceLists,
    /// One-time key counts of the appservice's devices (MSC3202).
    pub one_time_keys_count: OneTimeKeyCounts,
    /// Fallback key types not used yet (MSC3202).
    pub unused_fallback_key_types: FallbackKeyTypes,
}

/// Users whose devices changed, and users the appservice no longer shares a room with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct DeviceLists {
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub left: Vec<String>,
}

/// Why a transaction body was refused (answered 400, so the homeserver sees its own bug).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TransactionError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    BadJson(String),
}

impl TransactionError {
    /// The Matrix errcode to answer with.
    pub fn errcode(&self) -> &'static str {
        match self {
            TransactionError::NotJson(_) => "M_NOT_JSON",
            TransactionError::BadJson(_) => "M_BAD_JSON",
        }
    }
}

/// The first of `keys` present in `body` (stable names come first): homeservers send the same
/// data under several names, and taking one avoids handling it twice.
fn first<'a>(body: &'a Map<String, Value>, keys: &[&str]) -> Option<(&'a str, &'a Value)> {
    keys.iter()
        .find_map(|k| body.get_key_value(*k))
        .map(|(k, v)| (k.as_str(), v))
}

/// A list of events. Entries that are not objects are dropped: one malformed entry should not
/// make the homeserver retry (and fail) the whole transaction forever.
fn events(body: &Map<String, Value>, keys: &[&str]) -> Result<Vec<Value>, TransactionError> {
    match first(body, keys) {
        None | Some((_, Value::Null)) => Ok(Vec::new()),
        Some((_, Value::Array(list))) => {
            Ok(list.iter().filter(|e| e.is_object()).cloned().collect())
        }
        Some((k, _)) => Err(TransactionError::BadJson(format!("`{k}` must be an array"))),
    }
}

fn typed<T: serde::de::DeserializeOwned + Default>(
    body: &Map<String, Value>,
    keys: &[&str],
) -> Result<T, TransactionError> {
    match first(body, keys) {
        None | Some((_, Value::Null)) => Ok(T::default()),
        Some((k, v)) => {
            T::deserialize(v).map_err(|e| TransactionError::BadJson(format!("`{k}`: {e}")))
        }
    }
}

impl Transaction {
    /// Read a transaction body. Absent fields are empty (`events` too: nothing to do is not an
    /// error); present fields of the wrong shape are refused.
    pub fn parse(txn_id: &str, body: &[u8]) -> Result<Transaction, TransactionError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| TransactionError::NotJson(e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(TransactionError::BadJson("body must be an object".into()));
        };
        Ok(Transaction {
            txn_id: txn_id.to_owned(),
            events: events(&body, &["events"])?,
            ephemeral: events(&body, &["ephemeral", "de.sorunome.msc2409.ephemeral"])?,
            to_device: events(&body, &["to_device", "de.sorunome.msc2409.to_device"])?,
            device_lists: typed(&body, &["device_lists", "org.matrix.msc3202.device_lists"])?,
            one_time_keys_count: typed(
                &body,
                &[
                    "device_one_time_keys_count",
                    "org.matrix.msc3202.device_one_time_keys_count",
                    "org.matrix.msc3202.device_one_time_key_counts",
                ],
            )?,
            unused_fallback_key_types: typed(
                &body,
                &[
                    "device_unused_fallback_key_types",
                    "org.matrix.msc3202.device_unused_fallback_key_types",
                ],
            )?,
        })
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.ephemeral.is_empty()
            && self.to_device.is_empty()
            && self.device_lists == DeviceLists::default()
            && self.one_time_keys_count.is_empty()
            && self.unused_fallback_key_types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<Transaction, TransactionError> {
        Transaction::parse("7", v.to_string().as_bytes())
    }

    #[test]
    fn reads_the_unstable_names_synapse_sends() {
        let t = parse(json!({
            "events": [{"type": "m.room.message", "event_id": "$a"}],
            "de.sorunome.msc2409.ephemeral": [{"type": "m.typing", "room_id": "!r:hs"}],
            "de.sorunome.msc2409.to_device": [{"type": "m.room_key_request", "to_user_id": "@b:hs"}],
            "org.matrix.msc3202.device_lists": {"changed": ["@c:hs"], "left": ["@d:hs"]},
            "org.matrix.msc3202.device_one_time_key_counts": {"@b:hs": {"DEV": {"signed_curve25519": 50}}},
            "org.matrix.msc3202.device_unused_fallback_key_types": {"@b:hs": {"DEV": ["signed_curve25519"]}},
        }))
        .unwrap();
        assert_eq!(t.txn_id, "7");
        assert_eq!(t.events.len(), 1);
        assert_eq!(t.ephemeral[0]["type"], "m.typing");
        assert_eq!(t.to_device[0]["type"], "m.room_key_request");
        assert_eq!(t.device_lists.changed, vec!["@c:hs"]);
        assert_eq!(t.device_lists.left, vec!["@d:hs"]);
        assert_eq!(
            t.one_time_keys_count["@b:hs"]["DEV"]["signed_curve25519"],
            50
        );
        assert_eq!(
            t.unused_fallback_key_types["@b:hs"]["DEV"],
            vec!["signed_curve25519"]
        );
        assert!(!t.is_empty());
    }

    #[test]
    fn stable_names_win_and_the_same_data_is_not_taken_twice() {
        let receipt = json!({"type": "m.receipt", "room_id": "!r:hs", "content": {}});
        let t = parse(json!({
            "events": [],
            "ephemeral": [receipt],
            "de.sorunome.msc2409.ephemeral": [receipt, {"type": "m.typing"}],
            "org.matrix.msc3202.device_one_time_keys_count": {"@b:hs": {"D": {"x": 1}}},
            "org.matrix.msc3202.device_one_time_key_counts": {"@b:hs": {"D": {"x": 9}}},
        }))
        .unwrap();
        assert_eq!(t.ephemeral, vec![receipt]);
        assert_eq!(t.one_time_keys_count["@b:hs"]["D"]["x"], 1);
        assert!(t.to_device.is_empty());
    }

    #[test]
    fn empty_and_minimal_bodies() {
        assert!(parse(json!({})).unwrap().is_empty());
        assert!(parse(json!({"events": [], "ephemeral": null}))
            .unwrap()
            .is_empty());
        // A stray non-object entry is dropped, not fatal.
        let t = parse(json!({"events": [1, {"type": "m.x"}]})).unwrap();
        assert_eq!(t.events, vec![json!({"type": "m.x"})]);
    }

    #[test]
    fn malformed_bodies_are_refused_with_an_errcode() {
        let e = Transaction::parse("1", b"{nope").unwrap_err();
        assert_eq!(e.errcode(), "M_NOT_JSON");
        assert_eq!(parse(json!([])).unwrap_err().errcode(), "M_BAD_JSON");
        assert_eq!(
            parse(json!({"events": {}})).unwrap_err().errcode(),
            "M_BAD_JSON"
        );
        let e = parse(json!({"org.matrix.msc3202.device_lists": {"changed": "x"}})).unwrap_err();
        assert_eq!(e.errcode(), "M_BAD_JSON");
        assert!(e.to_string().contains("device_lists"), "{e}");
    }
}
