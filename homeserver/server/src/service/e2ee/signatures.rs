//! Signed JSON as keys travel: checking a signature, merging signatures, the part a signature
//! covers. Pure functions, shared by the endpoints and the service.

use base64::Engine;
use ruma::{CanonicalJsonObject, SigningKeyAlgorithm};
use serde_json::Value;

/// Unpadded (or padded) standard base64, as keys and signatures travel.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Whether `object` carries a valid ed25519 signature by `signer` with key `key_id`
/// (`ed25519:...`) whose public key is `public_key` (base64). Other signatures on the object
/// are ignored: device keys carry the device's own and, later, cross-signing signatures.
pub fn signed_by(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(sig) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .and_then(unbase64)
    else {
        return false;
    };
    let Some(key) = unbase64(public_key) else {
        return false;
    };
    let Ok(canonical) = serde_json::from_value::<CanonicalJsonObject>(object.clone()) else {
        return false;
    };
    let Ok(text) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &key,
        &sig,
        text.as_bytes(),
    )
    .is_ok()
}

/// `object` with `other`'s signatures merged in (both being signed key objects).
pub fn merge_signatures(object: &mut Value, other: &Value) {
    let Some(add) = other.get("signatures").and_then(Value::as_object) else {
        return;
    };
    let Some(o) = object.as_object_mut() else {
        return;
    };
    let sigs = o
        .entry("signatures")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(sigs) = sigs.as_object_mut() else {
        return;
    };
    for (signer, keys) in add {
        let Some(keys) = keys.as_object() else {
            continue;
        };
        let entry = sigs
            .entry(signer.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(e) = entry.as_object_mut() {
            for (k, v) in keys {
                e.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The object without `signatures` and `unsigned`: what a signature covers, so two uploads of
/// the same key compare equal whatever signatures either carries.
pub fn signed_part(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures_verify_and_merge() {
        let pair = ruma::signatures::Ed25519KeyPair::from_der(
            &ruma::signatures::Ed25519KeyPair::generate(),
            "DEV".into(),
        )
        .unwrap();
        let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(pair.public_key());
        let mut obj: CanonicalJsonObject =
            serde_json::from_value(json!({"user_id": "@a:x", "keys": {"k": "v"}})).unwrap();
        ruma::signatures::sign_json("@a:x", &pair, &mut obj).unwrap();
        let signed = serde_json::to_value(&obj).unwrap();
        assert!(signed_by(&signed, "@a:x", "ed25519:DEV", &public));
        assert!(!signed_by(&signed, "@b:x", "ed25519:DEV", &public));
        let mut tampered = signed.clone();
        tampered["keys"]["k"] = json!("w");
        assert!(!signed_by(&tampered, "@a:x", "ed25519:DEV", &public));
        // Another signer's signature does not disturb the check.
        let mut both = signed.clone();
        merge_signatures(
            &mut both,
            &json!({"signatures": {"@b:x": {"ed25519:X": "sig"}}}),
        );
        assert!(signed_by(&both, "@a:x", "ed25519:DEV", &public));
        assert_eq!(both["signatures"]["@b:x"]["ed25519:X"], "sig");
        assert_eq!(
            signed_part(&both),
            json!({"user_id": "@a:x", "keys": {"k": "v"}})
        );
    }
}
