//! Bringing a store written by an earlier build to this build's layout. Each step runs once and
//! leaves a mark, in the same batch as its writes, so a crash leaves the store before or after
//! the step, never half-way. This is the one place that reads layouts the schema no longer
//! declares.

use sha2::Digest;

use crate::{
    codec::{Str, U64},
    schema, Batch, Kv, StoreError, Table, META_SCHEMA, SCHEMA_VERSION,
};

/// Run every step this store still needs.
pub(crate) fn migrate(kv: &Kv) -> Result<(), StoreError> {
    schema_steps(kv)?;
    hash_stored_tokens(kv)?;
    key_relations_by_room(kv)?;
    Ok(())
}

/// Bring the keyspace to [`SCHEMA_VERSION`]. New stores are stamped; a store from a newer build is
/// refused rather than misread.
fn schema_steps(kv: &Kv) -> Result<(), StoreError> {
    let found = kv.get(Table::Meta, META_SCHEMA)?.map(|v| crate::be_u64(&v));
    match found {
        None => {
            let mut b = Batch::default();
            b.put(Table::Meta, META_SCHEMA, &SCHEMA_VERSION.to_be_bytes());
            kv.apply(b)
        }
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew(v)),
        Some(mut v) => {
            // Each step is one batch with its new version stamp: a crash leaves v or v + 1.
            while v < SCHEMA_VERSION {
                let mut b = Batch::default();
                match v {
                    1 => queue_one_time_keys(kv, &mut b)?,
                    2 => rekey_to_device_txns(kv, &mut b)?,
                    _ => return Err(StoreError::SchemaTooNew(v)),
                }
                v += 1;
                b.put(Table::Meta, META_SCHEMA, &v.to_be_bytes());
                kv.apply(b)?;
            }
            Ok(())
        }
    }
}

/// 2 → 3: to-device transaction ids live in the transaction table as `m.to_device\0<txn>`,
/// written before typed keys with a raw NUL; typed keys store a NUL in text as `0xFF`. Rewrite
/// them, so a to-device send retried across the upgrade is still recognised.
fn rekey_to_device_txns(kv: &Kv, b: &mut Batch) -> Result<(), StoreError> {
    use crate::codec::Key;
    for row in kv.scan_prefix(Table::TxnId, b"") {
        let (old, value) = row?;
        // The last part takes the rest of the key, raw NUL included.
        let Ok((user, scope, txn)) = <(Str, Str, Str)>::decode(&old) else {
            continue;
        };
        let new = <(Str, Str, Str)>::encode((&user, &scope, &txn));
        if new != old {
            b.delete(Table::TxnId, &old);
            b.put(Table::TxnId, &new, &value);
        }
    }
    Ok(())
}

/// 1 → 2: one-time keys stored before their upload order was kept get a queue entry at
/// sequence 0, so they are handed out before any uploaded later.
fn queue_one_time_keys(kv: &Kv, b: &mut Batch) -> Result<(), StoreError> {
    for row in kv.scan_prefix(Table::OneTimeKey, b"") {
        let (k, _) = row?;
        // user \0 device \0 algorithm \0 key id
        let Some(cut) = k
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == 0)
            .nth(2)
            .map(|(i, _)| i + 1)
        else {
            continue;
        };
        let mut q = k[..cut].to_vec();
        q.extend_from_slice(&0u64.to_be_bytes());
        q.extend_from_slice(&k[cut..]);
        b.put(Table::OneTimeKeyQueue, &q, b"");
    }
    Ok(())
}

/// The store key of a token: its SHA-256 (the accounts service keys tokens the same way).
fn token_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores written before tokens were hashed keep access, refresh and OpenID tokens verbatim:
/// hash them in place, and in device records, which name their tokens.
fn hash_stored_tokens(kv: &Kv) -> Result<(), StoreError> {
    const DONE: &[u8] = b"tokens_hashed";
    if schema::META.get::<Vec<u8>>(kv, DONE)?.is_some() {
        return Ok(());
    }
    let mut batch = Batch::default();
    for table in [
        schema::TOKEN__SESSION,
        schema::REFRESH_TOKEN__SESSION,
        schema::OPENID_TOKEN__GRANT,
    ] {
        for row in table.iter::<serde_json::Value>(kv) {
            let (key, value) = row?;
            if let Ok(token) = std::str::from_utf8(&key) {
                table.delete(&mut batch, &key);
                table.put(&mut batch, &token_hash(token), &value)?;
            }
        }
    }
    let is_hex_hash = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
    for row in schema::USER_DEVICE__DEVICE.iter::<serde_json::Value>(kv) {
        let ((user, device), mut dev) = row?;
        for field in ["access_token", "refresh_token"] {
            if let Some(t) = dev.get(field).and_then(|t| t.as_str()) {
                if !is_hex_hash(t) {
                    dev[field] = serde_json::Value::String(hex(&token_hash(t)));
                }
            }
        }
        schema::USER_DEVICE__DEVICE.put(&mut batch, (&user, &device), &dev)?;
    }
    schema::META.put(&mut batch, DONE, b"1".as_slice())?;
    kv.apply(batch)?;
    kv.flush_blocking()
}

/// Relation rows written before they were keyed by room (`parent ‖ 0 ‖ count`) move under
/// the room of the event that relates.
fn key_relations_by_room(kv: &Kv) -> Result<(), StoreError> {
    const DONE: &[u8] = b"relations_by_room";
    if schema::META.get::<Vec<u8>>(kv, DONE)?.is_some() {
        return Ok(());
    }
    // Event ids start with `$`; keys of the current layout start with a short room id, whose
    // first byte is 0 for any id below 2^56.
    let mut batch = Batch::default();
    for row in kv.scan_prefix(Table::Relation, b"$") {
        let (old, value) = row?;
        batch.delete(Table::Relation, &old);
        let Some((parent, count)) = legacy_relation_key(&old) else {
            continue;
        };
        let short = crate::be_u64(&value);
        if let Some((room, _)) = schema::EVENT__ROOM_COUNT.get::<(u64, u64)>(kv, short)? {
            schema::ROOM_PARENT_COUNT__RELATION.put(&mut batch, (room, &parent, count), &short)?;
        }
    }
    schema::META.put(&mut batch, DONE, b"1".as_slice())?;
    kv.apply(batch)?;
    kv.flush_blocking()
}

/// `parent ‖ 0 ‖ count`, the relation key before rows were keyed by room.
fn legacy_relation_key(old: &[u8]) -> Option<(String, u64)> {
    use crate::codec::Key;
    <(Str, U64)>::decode(old).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_relation_rows_move_under_their_room() {
        let kv = Kv::memory();
        let count: u64 = 0x8000_0000_0000_0100; // bytes >= 0x80 and a NUL in the count
        let mut old = b"$parent:x".to_vec();
        old.push(0);
        old.extend_from_slice(&count.to_be_bytes());
        let mut b = Batch::default();
        b.put(Table::Relation, &old, &42u64.to_be_bytes());
        schema::EVENT__ROOM_COUNT
            .put(&mut b, 42, &(7u64, count))
            .unwrap();
        kv.apply(b).unwrap();
        key_relations_by_room(&kv).unwrap();
        let rows: Vec<_> = schema::ROOM_PARENT_COUNT__RELATION
            .iter::<u64>(&kv)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows, vec![((7, "$parent:x".to_owned(), count), 42)]);
        assert_eq!(legacy_relation_key(b"$no-nul"), None);
    }

    #[test]
    fn to_device_transactions_written_with_a_raw_nul_are_found_after_the_upgrade() {
        let kv = Kv::memory();
        let mut old = b"@a:x\0DEV\0m.to_device".to_vec();
        old.push(0);
        old.extend_from_slice(b"txn1");
        let mut b = Batch::default();
        b.put(Table::TxnId, &old, b"");
        b.put(Table::TxnId, b"@a:x\0DEV\0room-txn", b"$event");
        kv.apply(b).unwrap();
        let mut b = Batch::default();
        rekey_to_device_txns(&kv, &mut b).unwrap();
        kv.apply(b).unwrap();
        let txns = schema::USER_DEVICE_TXN__EVENTID;
        assert!(txns
            .contains(&kv, ("@a:x", "DEV", "m.to_device\0txn1"))
            .unwrap());
        assert_eq!(
            txns.get::<String>(&kv, ("@a:x", "DEV", "room-txn"))
                .unwrap()
                .as_deref(),
            Some("$event")
        );
        assert_eq!(kv.scan_prefix(Table::TxnId, b"").count(), 2);
    }

    #[test]
    fn verbatim_tokens_are_hashed_once() {
        let kv = Kv::memory();
        let mut b = Batch::default();
        b.put(Table::AccessToken, b"px_secret", br#"{"user_id":"@a:x"}"#);
        schema::USER_DEVICE__DEVICE
            .put(
                &mut b,
                ("@a:x", "D"),
                &serde_json::json!({"access_token": "px_secret"}),
            )
            .unwrap();
        kv.apply(b).unwrap();
        hash_stored_tokens(&kv).unwrap();
        let hashed = token_hash("px_secret");
        let s: Option<serde_json::Value> = schema::TOKEN__SESSION.get(&kv, &hashed).unwrap();
        assert_eq!(s.unwrap()["user_id"], "@a:x");
        assert!(kv.get(Table::AccessToken, b"px_secret").unwrap().is_none());
        let d: serde_json::Value = schema::USER_DEVICE__DEVICE
            .get(&kv, ("@a:x", "D"))
            .unwrap()
            .unwrap();
        assert_eq!(d["access_token"], hex(&hashed));
    }
}
