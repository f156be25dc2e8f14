//! A persisted PDU as the server works with it.
//!
//! The stored form is the federation PDU (canonical JSON, hashes and signatures) with `event_id`
//! always present, so one parse serves auth, sync and federation alike.

use ruma::{
    events::TimelineEventType, state_res::Event, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue as RawJsonValue;

use crate::CoreError;

#[derive(Clone, Debug, Deserialize)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// Absent only on the `m.room.create` event of v12+ rooms.
    #[serde(default)]
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(deserialize_with = "event_refs")]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(deserialize_with = "event_refs")]
    pub auth_events: Vec<OwnedEventId>,
    pub depth: UInt,
    /// The top-level `redacts` (where room versions before 11 put it). With
    /// `redacts_content`, read through [`Pdu::redacted_event`]: a hostile event may carry both.
    #[serde(default)]
    redacts: Option<OwnedEventId>,
    /// A redaction's `content.redacts` (where v11 moved it).
    #[serde(skip)]
    redacts_content: Option<OwnedEventId>,
    #[serde(default)]
    pub hashes: Option<EventHashes>,
    #[serde(skip)]
    pub rejected: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EventHashes {
    pub sha256: String,
}

/// Event references are plain ids from v3 on, `[id, {hashes}]` pairs in v1 and v2.
fn event_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(OwnedEventId),
        Pair(OwnedEventId, serde::de::IgnoredAny),
    }
    let refs = Vec::<Ref>::deserialize(d)?;
    Ok(refs
        .into_iter()
        .map(|r| match r {
            Ref::Id(id) | Ref::Pair(id, _) => id,
        })
        .collect())
}

impl Pdu {
    pub fn from_json(json: &[u8]) -> Result<Self, CoreError> {
        let mut pdu: Pdu =
            serde_json::from_slice(json).map_err(|e| CoreError::BadPdu(e.to_string()))?;
        if pdu.kind == TimelineEventType::RoomRedaction {
            #[derive(Deserialize)]
            struct C {
                redacts: Option<OwnedEventId>,
            }
            pdu.redacts_content = serde_json::from_str::<C>(pdu.content.get())
                .ok()
                .and_then(|c| c.redacts);
        } else {
            pdu.redacts = None;
        }
        Ok(pdu)
    }

    /// The event a redaction redacts, from where the room version puts it: the content from
    /// v11 on, the top level before. A key in the other place means nothing.
    pub fn redacted_event(&self, content_field_redacts: bool) -> Option<&OwnedEventId> {
        match content_field_redacts {
            true => self.redacts_content.as_ref(),
            false => self.redacts.as_ref(),
        }
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The content parsed as loosely typed JSON.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// `content.membership` of a member event.
    pub fn membership(&self) -> Option<String> {
        if self.kind != TimelineEventType::RoomMember {
            return None;
        }
        self.content_value()
            .get("membership")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    }
}

impl Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    /// For the auth rules, which read it only in room versions 1 and 2 (the domain check):
    /// the top-level key, where those versions put it.
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_pair_references() {
        let json = br#"{"event_id":"$a:x","room_id":"!r:x","sender":"@u:x","origin_server_ts":1,
            "type":"m.room.message","content":{"body":"hi"},"depth":2,
            "prev_events":[["$p:x",{"sha256":"abc"}]],"auth_events":["$q:x"]}"#;
        let pdu = Pdu::from_json(json).unwrap();
        assert_eq!(pdu.prev_events[0].as_str(), "$p:x");
        assert_eq!(pdu.auth_events[0].as_str(), "$q:x");
        assert!(!pdu.is_state());
    }

    #[test]
    fn a_redaction_redacts_where_its_room_version_says() {
        let both = br#"{"event_id":"$r","room_id":"!r:x","sender":"@a:x","origin_server_ts":1,
            "type":"m.room.redaction","content":{"redacts":"$own"},"redacts":"$victim","depth":2,
            "prev_events":[],"auth_events":[]}"#;
        let pdu = Pdu::from_json(both).unwrap();
        assert_eq!(pdu.redacted_event(true).map(|e| e.as_str()), Some("$own"));
        assert_eq!(
            pdu.redacted_event(false).map(|e| e.as_str()),
            Some("$victim")
        );
        let message = br#"{"event_id":"$m","room_id":"!r:x","sender":"@a:x","origin_server_ts":1,
            "type":"m.room.message","content":{"redacts":"$x"},"redacts":"$y","depth":2,
            "prev_events":[],"auth_events":[]}"#;
        let pdu = Pdu::from_json(message).unwrap();
        assert_eq!(pdu.redacted_event(true), None);
        assert_eq!(pdu.redacted_event(false), None);
    }

    #[test]
    fn redacts_read_from_content_in_v11() {
        let json = br#"{"event_id":"$a","room_id":"!r:x","sender":"@u:x","origin_server_ts":1,
            "type":"m.room.redaction","content":{"redacts":"$t"},"depth":2,
            "prev_events":[],"auth_events":[]}"#;
        let pdu = Pdu::from_json(json).unwrap();
        assert_eq!(pdu.redacted_event(true).unwrap().as_str(), "$t");
        assert_eq!(pdu.redacted_event(false), None);
    }
}
