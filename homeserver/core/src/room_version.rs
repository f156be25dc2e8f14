//! Which room versions Plexus creates and joins, and their rules.

use ruma::{room_version_rules::RoomVersionRules, RoomVersionId};

use crate::CoreError;

/// New rooms default to v12, as the spec recommends.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V12;

/// Every stable room version this server can create and take part in.
pub const SUPPORTED: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The rules of a supported room version.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, CoreError> {
    if !SUPPORTED.contains(version) {
        return Err(CoreError::UnsupportedRoomVersion(version.to_string()));
    }
    version
        .rules()
        .ok_or_else(|| CoreError::UnsupportedRoomVersion(version.to_string()))
}

pub fn is_supported(version: &RoomVersionId) -> bool {
    SUPPORTED.contains(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_has_rules() {
        for v in SUPPORTED {
            assert!(rules(&v).is_ok(), "{v}");
        }
        assert!(rules(&RoomVersionId::try_from("999").unwrap()).is_err());
    }

    #[test]
    fn v12_uses_create_event_id_as_room_id() {
        let r = rules(&RoomVersionId::V12).unwrap();
        assert!(r.authorization.room_create_event_id_as_room_id);
        assert!(r.authorization.explicitly_privilege_room_creators);
        let r11 = rules(&RoomVersionId::V11).unwrap();
        assert!(!r11.authorization.room_create_event_id_as_room_id);
    }
}
