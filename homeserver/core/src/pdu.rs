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
    #[serde(default)]
    pub redacts: Option<OwnedEventId>,
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
        if pdu.redacts.is_none() && pdu.kind == TimelineEventType::RoomRedaction {
            // v11 moved `redacts` into the content; one accessor serves both.
            #[derive(Deserialize)]
            struct C {
                redacts: Option<OwnedEventId>,
            }
            if let Ok(c) = serde_json::from_str::<C>(pdu.content.get()) {
                pdu.redacts = c.redacts;
            }
        }
        Ok(pdu)
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
    fn redacts_read_from_content_in_v11() {
        let json = br#"{"event_id":"$a","room_id":"!r:x","sender":"@u:x","origin_server_ts":1,
            "type":"m.room.redaction","content":{"redacts":"$t"},"depth":2,
            "prev_events":[],"auth_events":[]}"#;
        let pdu = Pdu::from_json(json).unwrap();
        assert_eq!(pdu.redacts.unwrap().as_str(), "$t");
    }
}
