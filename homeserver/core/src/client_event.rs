//! The client-server format of a stored PDU.

use serde_json::{Map, Value};

/// Fields of a PDU that clients see; everything else (hashes, signatures, auth and prev events,
/// depth, origin) is federation-only.
const CLIENT_FIELDS: [&str; 7] = [
    "content",
    "event_id",
    "origin_server_ts",
    "room_id",
    "sender",
    "state_key",
    "type",
];

/// Turn a stored PDU into a client event. `room_id` is set explicitly because v12 create events
/// carry none; `include_room_id` is false inside `/sync` room sections; `redacts_in_content` is
/// the room version's `content_field_redacts` (v11+).
pub fn to_client_event(
    stored: &Value,
    room_id: &str,
    now_ms: u64,
    include_room_id: bool,
    redacts_in_content: bool,
) -> Value {
    let mut out = Map::new();
    for f in CLIENT_FIELDS {
        if let Some(v) = stored.get(f) {
            out.insert(f.to_owned(), v.clone());
        }
    }
    if include_room_id {
        out.insert("room_id".into(), Value::String(room_id.to_owned()));
    } else {
        out.remove("room_id");
    }
    // Room v11 moved `redacts` into `content`; clients written before it (matrix-nio's
    // `RedactionEvent`, for one) read the top-level key, so it is given there too, as Synapse
    // does. It is taken from where the room version puts it: a top-level key in a v11 event
    // (or a content key before v11) is not what the server redacted.
    if stored.get("type").and_then(Value::as_str) == Some("m.room.redaction") {
        let redacts = match redacts_in_content {
            true => stored.get("content").and_then(|c| c.get("redacts")),
            false => stored.get("redacts"),
        };
        if let Some(r) = redacts.filter(|r| r.is_string()) {
            out.insert("redacts".into(), r.clone());
        }
    }
    let mut unsigned = stored
        .get("unsigned")
        .and_then(|u| u.as_object())
        .cloned()
        .unwrap_or_default();
    if let Some(ts) = stored.get("origin_server_ts").and_then(Value::as_u64) {
        unsigned.insert("age".into(), Value::from(now_ms.saturating_sub(ts)));
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}

/// A topic's plain text (spec v1.15): `topic`, or else the `text/plain` entry of the rich
/// `m.topic` block (an entry without a mimetype is plain text). `None`: no topic, which an
/// empty one also is.
pub fn plain_topic(content: &Value) -> Option<&str> {
    let nonempty = |t: &&str| !t.trim().is_empty();
    let plain = content
        .get("topic")
        .and_then(Value::as_str)
        .filter(nonempty);
    plain
        .or_else(|| {
            content
                .get("m.topic")
                .and_then(|t| t.get("m.text"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| t.get("mimetype").is_none_or(|m| m == "text/plain"))
                .and_then(|t| t.get("body"))
                .and_then(Value::as_str)
        })
        .filter(nonempty)
}

/// Stripped state for invites and knocks: only type, state_key, sender and content.
pub fn to_stripped(stored: &Value) -> Value {
    let mut out = Map::new();
    for f in ["content", "sender", "state_key", "type"] {
        if let Some(v) = stored.get(f) {
            out.insert(f.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hides_federation_fields_and_adds_age() {
        let stored = json!({"event_id": "$e", "type": "m.room.message", "content": {"body": "x"},
            "sender": "@a:x", "origin_server_ts": 1000, "depth": 3, "hashes": {}, "signatures": {},
            "auth_events": [], "prev_events": [], "origin": "x"});
        let ev = to_client_event(&stored, "!r:x", 1500, true, false);
        assert_eq!(ev["room_id"], "!r:x");
        assert_eq!(ev["unsigned"]["age"], 500);
        assert!(ev.get("depth").is_none() && ev.get("hashes").is_none());
        let ev = to_client_event(&stored, "!r:x", 1500, false, false);
        assert!(ev.get("room_id").is_none());
    }

    #[test]
    fn a_rich_topic_reads_as_its_plain_text() {
        assert_eq!(plain_topic(&json!({"topic": "plain"})), Some("plain"));
        let rich = json!({"m.topic": {"m.text": [
            {"mimetype": "text/html", "body": "<b>bold</b>"},
            {"body": "bold"}]}});
        assert_eq!(plain_topic(&rich), Some("bold"));
        assert_eq!(plain_topic(&json!({"topic": " "})), None);
        assert_eq!(plain_topic(&json!({"m.topic": {"m.text": []}})), None);
    }

    #[test]
    fn redactions_carry_redacts_at_the_top_level_from_where_their_version_puts_it() {
        let v11 = json!({"event_id": "$r", "type": "m.room.redaction", "sender": "@a:x",
            "origin_server_ts": 1, "content": {"redacts": "$target", "reason": "spam"}});
        let ev = to_client_event(&v11, "!r:x", 2, false, true);
        assert_eq!(ev["redacts"], "$target");
        assert_eq!(ev["content"]["redacts"], "$target");
        let v10 = json!({"event_id": "$r", "type": "m.room.redaction", "sender": "@a:x",
            "origin_server_ts": 1, "redacts": "$old", "content": {}});
        assert_eq!(
            to_client_event(&v10, "!r:x", 2, false, false)["redacts"],
            "$old"
        );
        // A hostile event with both: only the room version's place counts.
        let both = json!({"type": "m.room.redaction", "redacts": "$victim",
            "content": {"redacts": "$own"}});
        assert_eq!(
            to_client_event(&both, "!r:x", 2, false, true)["redacts"],
            "$own"
        );
        assert_eq!(
            to_client_event(&both, "!r:x", 2, false, false)["redacts"],
            "$victim"
        );
        let top_only = json!({"type": "m.room.redaction", "redacts": "$victim", "content": {}});
        assert!(to_client_event(&top_only, "!r:x", 2, false, true)
            .get("redacts")
            .is_none());
        // Only redactions, and only a string.
        let other = json!({"type": "m.room.message", "content": {"redacts": "$x"}});
        assert!(to_client_event(&other, "!r:x", 2, false, true)
            .get("redacts")
            .is_none());
        let odd = json!({"type": "m.room.redaction", "content": {"redacts": 5}});
        assert!(to_client_event(&odd, "!r:x", 2, false, true)
            .get("redacts")
            .is_none());
    }
}
