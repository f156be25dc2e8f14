//! Who the user directory may show beyond a searcher's room-mates (spec v1.15): members of rooms
//! that anyone may join (`public` join rule) or read (`world_readable`), and of rooms published
//! in the room directory. Finding them walks every room, so the set is kept and shared by all
//! searches until a change that can alter it (a membership, a join rule, a history visibility,
//! a publication) marks it stale; one search walks at a time.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use ruma::OwnedUserId;

use super::{directory::DirectoryError, rooms::RoomsError, Services};

/// Why the publicly visible users could not be found: reading the rooms or the directory.
#[derive(Debug, thiserror::Error)]
pub enum UserDirectoryError {
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

#[derive(Default)]
pub struct PublicUsers {
    cached: Mutex<Option<Arc<BTreeSet<OwnedUserId>>>>,
    stale: AtomicBool,
}

impl PublicUsers {
    /// A room changed (members, join rules, visibility, publication).
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether an event can change the set once written (mark it stale after the write, or
    /// a search in between would cache the set without it).
    pub fn changed_by(pdu: &plexus_core::pdu::Pdu) -> bool {
        use ruma::events::TimelineEventType as T;
        pdu.state_key.is_some()
            && matches!(
                pdu.kind,
                T::RoomMember | T::RoomJoinRules | T::RoomHistoryVisibility
            )
    }
}

impl Services {
    /// Users joined to a public, world-readable or published room.
    pub fn publicly_visible_users(&self) -> Result<Arc<BTreeSet<OwnedUserId>>, UserDirectoryError> {
        // Held across the walk: searches that find the set stale wait for one walk instead
        // of each starting their own.
        let mut cached = self
            .public_users
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(users) = cached.as_ref() {
            if !self.public_users.stale.load(Ordering::Relaxed) {
                return Ok(users.clone());
            }
        }
        self.public_users.stale.store(false, Ordering::Relaxed);
        let users = Arc::new(self.walk_public_rooms()?);
        *cached = Some(users.clone());
        Ok(users)
    }

    fn walk_public_rooms(&self) -> Result<BTreeSet<OwnedUserId>, UserDirectoryError> {
        let mut users = BTreeSet::new();
        for item in self.rooms.all_rooms() {
            let (room_id, short) = item?;
            let published = match ruma::RoomId::parse(&room_id) {
                Ok(id) => self.directory.is_published(&id)?,
                Err(_) => false,
            };
            let open = published || {
                let hash = self.rooms.current_state(short)?.map(|s| s.0).unwrap_or(0);
                let join_rule = self
                    .rooms
                    .state_json(hash, "m.room.join_rules", "")?
                    .and_then(|e| e["content"]["join_rule"].as_str().map(str::to_owned));
                join_rule.as_deref() == Some("public")
                    || self.rooms.history_visibility(hash)? == "world_readable"
            };
            if open {
                users.extend(
                    self.rooms
                        .room_members(short)?
                        .into_iter()
                        .filter(|(_, m)| m == "join")
                        .map(|(u, _)| u),
                );
            }
        }
        Ok(users)
    }
}
