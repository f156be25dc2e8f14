//! Building, hashing and signing new PDUs.

use ruma::{
    canonical_json::{to_canonical_value, CanonicalJsonObject, CanonicalJsonValue},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{hash_and_sign_event, reference_hash},
    OwnedEventId, RoomId, ServerName, UserId,
};
use serde_json::Value;

use crate::{signing::random_alnum, signing::ServerKey, CoreError, Pdu};

/// Largest PDU the spec allows, in canonical JSON bytes.
pub const MAX_PDU_BYTES: usize = 65_536;

/// The format limits every PDU must meet, sent or received: size, state key, sender, room and
/// event id lengths, counts of prev and auth events (ruma's check, whose size message leaves
/// its numbers out: the size is checked here first).
pub fn check_format(obj: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<(), CoreError> {
    let size = serde_json::to_vec(obj).map_or(usize::MAX, |v| v.len());
    if size >= MAX_PDU_BYTES {
        return Err(CoreError::TooLarge(size));
    }
    ruma::state_res::check_pdu_format(obj, &rules.event_format).map_err(CoreError::BadPdu)
}

/// What the sender asks for; the rest of the PDU comes from the room.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: String,
    pub content: Value,
    pub state_key: Option<String>,
    /// Top-level `redacts` (room versions before 11).
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    /// A state event of `kind` at `state_key`.
    pub fn state(kind: &str, state_key: &str, content: Value) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: Some(state_key.into()),
            redacts: None,
        }
    }
}

/// A reference to an earlier event: its id and, for v1/v2 rooms, its content hash.
#[derive(Clone, Debug)]
pub struct EventRef {
    pub event_id: OwnedEventId,
    pub sha256: Option<String>,
}

impl EventRef {
    pub fn of(pdu: &Pdu) -> Self {
        Self {
            event_id: pdu.event_id.clone(),
            sha256: pdu.hashes.as_ref().map(|h| h.sha256.clone()),
        }
    }
}

/// The largest depth an event may carry: the spec caps depth, and canonical JSON allows no
/// integer above 2^53 - 1. A room already at the cap stays there.
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

/// The depth of an event whose deepest prev event is at `prev_max`, capped at [`MAX_DEPTH`] so
/// that no event a peer sent can make the room's next local event unbuildable.
pub fn next_depth(prev_max: u64) -> u64 {
    prev_max.saturating_add(1).min(MAX_DEPTH)
}

/// Everything from the room that goes into the PDU.
pub struct RoomContext<'a> {
    /// `None` only for the create event of rooms whose id derives from it (v12+).
    pub room_id: Option<&'a RoomId>,
    pub rules: &'a RoomVersionRules,
    pub sender: &'a UserId,
    pub origin: &'a ServerName,
    pub prev_events: Vec<EventRef>,
    pub auth_events: Vec<EventRef>,
    pub depth: u64,
    pub origin_server_ts: u64,
}

/// A finished PDU: the stored form (with `event_id`) and its parsed view.
pub struct BuiltPdu {
    pub event_id: OwnedEventId,
    pub stored: CanonicalJsonObject,
    pub pdu: Pdu,
}

/// `prev_events`/`auth_events` in the room version's shape.
pub fn refs_json(refs: &[EventRef], rules: &RoomVersionRules) -> CanonicalJsonValue {
    let v1 = matches!(rules.event_id_format, EventIdFormatVersion::V1);
    CanonicalJsonValue::Array(
        refs.iter()
            .map(|r| {
                let id = CanonicalJsonValue::String(r.event_id.to_string());
                if v1 {
                    let mut h = CanonicalJsonObject::new();
                    if let Some(s) = &r.sha256 {
                        h.insert("sha256".into(), CanonicalJsonValue::String(s.clone()));
                    }
                    CanonicalJsonValue::Array(vec![id, CanonicalJsonValue::Object(h)])
                } else {
                    id
                }
            })
            .collect(),
    )
}

/// Build, hash and sign a PDU and derive its event id per the room version.
pub fn build_pdu(
    ev: &NewEvent,
    ctx: &RoomContext<'_>,
    key: &ServerKey,
) -> Result<BuiltPdu, CoreError> {
    let content = match to_canonical_value(&ev.content) {
        Ok(CanonicalJsonValue::Object(o)) => o,
        Ok(_) => return Err(CoreError::BadPdu("content must be an object".into())),
        Err(e) => return Err(CoreError::BadPdu(e.to_string())),
    };
    let mut obj = CanonicalJsonObject::new();
    let s = |v: String| CanonicalJsonValue::String(v);
    obj.insert("type".into(), s(ev.kind.clone()));
    obj.insert("content".into(), CanonicalJsonValue::Object(content));
    obj.insert("sender".into(), s(ctx.sender.to_string()));
    obj.insert("origin".into(), s(ctx.origin.to_string()));
    if let Some(room_id) = ctx.room_id {
        obj.insert("room_id".into(), s(room_id.to_string()));
    }
    if let Some(sk) = &ev.state_key {
        obj.insert("state_key".into(), s(sk.clone()));
    }
    if let Some(r) = &ev.redacts {
        obj.insert("redacts".into(), s(r.to_string()));
    }
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(int(ctx.origin_server_ts)?),
    );
    obj.insert("depth".into(), CanonicalJsonValue::Integer(int(ctx.depth)?));
    obj.insert("prev_events".into(), refs_json(&ctx.prev_events, ctx.rules));
    obj.insert("auth_events".into(), refs_json(&ctx.auth_events, ctx.rules));

    sign_pdu(obj, ctx.rules, ctx.origin, key)
}

/// Hash, sign and name a complete PDU (ours, or a join/leave template from another server
/// that we fill in): v1/v2 ids are `$random:origin`, later ones the reference hash.
pub fn sign_pdu(
    mut obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
    origin: &ServerName,
    key: &ServerKey,
) -> Result<BuiltPdu, CoreError> {
    let s = |v: String| CanonicalJsonValue::String(v);
    obj.remove("signatures");
    obj.remove("hashes");
    obj.remove("unsigned");
    obj.remove("event_id");
    let v1_ids = matches!(rules.event_id_format, EventIdFormatVersion::V1);
    let v1_event_id = if v1_ids {
        let id = format!("${}:{}", random_alnum(18), origin);
        obj.insert("event_id".into(), s(id.clone()));
        Some(id)
    } else {
        None
    };

    hash_and_sign_event(origin.as_str(), key.pair(), &mut obj, &rules.redaction).map_err(|e| {
        match e {
            ruma::signatures::JsonError::PduTooLarge => {
                CoreError::TooLarge(serde_json::to_vec(&obj).map_or(usize::MAX, |v| v.len()))
            }
            e => CoreError::Signing(e.to_string()),
        }
    })?;

    // The limits peers enforce on what we send: the same check that inbound federation applies.
    check_format(&obj, rules)?;

    let event_id = match v1_event_id {
        Some(id) => id,
        None => {
            let hash =
                reference_hash(&obj, rules).map_err(|e| CoreError::Signing(e.to_string()))?;
            let id = format!("${hash}");
            obj.insert("event_id".into(), s(id.clone()));
            id
        }
    };
    let event_id =
        OwnedEventId::try_from(event_id).map_err(|e| CoreError::BadPdu(e.to_string()))?;
    let bytes = serde_json::to_vec(&obj).map_err(|e| CoreError::BadPdu(e.to_string()))?;
    let pdu = Pdu::from_json(&bytes)?;
    Ok(BuiltPdu {
        event_id,
        stored: obj,
        pdu,
    })
}

/// Add this server's signature to another server's event (an invite to one of our users) and
/// leave everything else as it is. Signatures cover the redacted form, as for our own events.
pub fn countersign(
    mut obj: CanonicalJsonObject,
    rules: &RoomVersionRules,
    origin: &ServerName,
    key: &ServerKey,
) -> Result<CanonicalJsonObject, CoreError> {
    obj.remove("unsigned");
    let mut redacted = ruma::canonical_json::redact(obj.clone(), &rules.redaction, None)
        .map_err(|e| CoreError::BadPdu(e.to_string()))?;
    ruma::signatures::sign_json(origin.as_str(), key.pair(), &mut redacted)
        .map_err(|e| CoreError::Signing(e.to_string()))?;
    let ours = match redacted.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(origin.as_str()).cloned(),
        _ => None,
    }
    .ok_or_else(|| CoreError::Signing("no signature produced".into()))?;
    match obj
        .entry("signatures".to_owned())
        .or_insert_with(|| CanonicalJsonValue::Object(Default::default()))
    {
        CanonicalJsonValue::Object(all) => {
            all.insert(origin.to_string(), ours);
        }
        _ => return Err(CoreError::BadPdu("signatures is not an object".into())),
    }
    Ok(obj)
}

fn int(v: u64) -> Result<ruma::Int, CoreError> {
    ruma::Int::try_from(v).map_err(|_| CoreError::BadPdu("integer out of range".into()))
}

#[cfg(test)]
mod tests {
    use ruma::{serde::Base64, signatures::verify_event, user_id, RoomVersionId};
    use serde_json::json;

    use super::*;
    use crate::room_version;

    fn key() -> ServerKey {
        ServerKey::generate().unwrap()
    }

    #[test]
    fn depth_stops_at_the_canonical_json_limit() {
        assert_eq!(next_depth(0), 1);
        assert_eq!(next_depth(MAX_DEPTH - 1), MAX_DEPTH);
        assert_eq!(next_depth(MAX_DEPTH), MAX_DEPTH);
        assert_eq!(next_depth(u64::MAX), MAX_DEPTH);
        assert_eq!(MAX_DEPTH, u64::from(ruma::UInt::MAX));
    }

    fn create(version: RoomVersionId, key: &ServerKey) -> BuiltPdu {
        let rules = room_version::rules(&version).unwrap();
        let room_id = ruma::room_id!("!r:example.org");
        let ctx = RoomContext {
            room_id: (!rules.authorization.room_create_event_id_as_room_id).then_some(room_id),
            rules: &rules,
            sender: user_id!("@alice:example.org"),
            origin: ruma::server_name!("example.org"),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 1_700_000_000_000,
        };
        let ev = NewEvent {
            kind: "m.room.create".into(),
            content: json!({"room_version": version.as_str()}),
            state_key: Some(String::new()),
            redacts: None,
        };
        build_pdu(&ev, &ctx, key).unwrap()
    }

    #[test]
    fn event_id_formats_follow_room_version() {
        let k = key();
        let v1 = create(RoomVersionId::V1, &k);
        assert!(v1.event_id.as_str().ends_with(":example.org"));
        let v3 = create(RoomVersionId::V3, &k);
        assert!(
            v3.event_id.as_str().contains('+')
                || v3.event_id.as_str().contains('/')
                || !v3.event_id.as_str().contains(':')
        );
        let v12 = create(RoomVersionId::V12, &k);
        assert!(!v12.event_id.as_str().contains(':'));
        assert!(
            v12.pdu.room_id.is_none(),
            "v12 create events carry no room_id"
        );
    }

    #[test]
    fn signature_and_hash_verify() {
        let k = key();
        let rules = room_version::rules(&RoomVersionId::V11).unwrap();
        let ctx = RoomContext {
            room_id: Some(ruma::room_id!("!r:example.org")),
            rules: &rules,
            sender: user_id!("@alice:example.org"),
            origin: ruma::server_name!("example.org"),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 1,
        };
        let ev = NewEvent {
            kind: "m.room.message".into(),
            content: json!({"body": "hello"}),
            state_key: None,
            redacts: None,
        };
        let built = build_pdu(&ev, &ctx, &k).unwrap();
        let mut obj = built.stored.clone();
        obj.remove("event_id");
        let mut keys = ruma::signatures::PublicKeyMap::new();
        let mut set = ruma::signatures::PublicKeySet::new();
        set.insert(k.key_id(), Base64::parse(k.public_key_b64()).unwrap());
        keys.insert("example.org".into(), set);
        let verified = verify_event(&keys, &obj, &rules).unwrap();
        assert_eq!(verified, ruma::signatures::Verified::All);

        // Tampering with the content breaks the content hash but not the signature.
        obj.insert(
            "content".into(),
            to_canonical_value(json!({"body": "forged"})).unwrap(),
        );
        assert_eq!(
            verify_event(&keys, &obj, &rules).unwrap(),
            ruma::signatures::Verified::Signatures
        );
    }

    #[test]
    fn countersigned_invite_verifies_for_both_servers() {
        let (a, b) = (key(), key());
        let rules = room_version::rules(&RoomVersionId::V11).unwrap();
        let ctx = RoomContext {
            room_id: Some(ruma::room_id!("!r:a.example")),
            rules: &rules,
            sender: user_id!("@alice:a.example"),
            origin: ruma::server_name!("a.example"),
            prev_events: vec![],
            auth_events: vec![],
            depth: 3,
            origin_server_ts: 1,
        };
        let ev = NewEvent {
            kind: "m.room.member".into(),
            content: json!({"membership": "invite"}),
            state_key: Some("@bob:b.example".into()),
            redacts: None,
        };
        let built = build_pdu(&ev, &ctx, &a).unwrap();
        let mut obj = built.stored.clone();
        obj.remove("event_id");
        let signed = countersign(obj.clone(), &rules, ruma::server_name!("b.example"), &b).unwrap();
        let mut keys = ruma::signatures::PublicKeyMap::new();
        for (name, k) in [("a.example", &a), ("b.example", &b)] {
            let mut set = ruma::signatures::PublicKeySet::new();
            set.insert(k.key_id(), Base64::parse(k.public_key_b64()).unwrap());
            keys.insert(name.into(), set);
        }
        assert_eq!(
            verify_event(&keys, &signed, &rules).unwrap(),
            ruma::signatures::Verified::All
        );
        let mut without_a = signed.clone();
        if let Some(CanonicalJsonValue::Object(sigs)) = without_a.get_mut("signatures") {
            sigs.remove("a.example");
        }
        assert!(verify_event(&keys, &without_a, &rules).is_err());
        // Everything but the signatures is untouched, so the event id stays the same.
        assert_eq!(
            reference_hash(&signed, &rules).unwrap(),
            reference_hash(&obj, &rules).unwrap()
        );
    }

    #[test]
    fn oversized_event_is_refused() {
        let k = key();
        let rules = room_version::rules(&RoomVersionId::V11).unwrap();
        let ctx = RoomContext {
            room_id: Some(ruma::room_id!("!r:example.org")),
            rules: &rules,
            sender: user_id!("@alice:example.org"),
            origin: ruma::server_name!("example.org"),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts: 1,
        };
        let ev = NewEvent {
            kind: "m.room.message".into(),
            content: json!({"body": "x".repeat(70_000)}),
            state_key: None,
            redacts: None,
        };
        assert!(matches!(
            build_pdu(&ev, &ctx, &k),
            Err(CoreError::TooLarge(_))
        ));
    }
}
