//! Restricted joins (room versions 8 and later): whether a user may join a `restricted` or
//! `knock_restricted` room through their membership of one of its allowed rooms, and which local
//! member vouches for the join (`join_authorised_via_users_server`).

use plexus_core::{room_version, CoreError};
use ruma::{OwnedUserId, RoomId, UserId};

use super::{
    rooms::{RoomRef, RoomsError},
    spaces::allowed_room_ids,
    Services,
};

/// Why a restricted join is refused or cannot be decided here.
#[derive(Debug, thiserror::Error)]
pub enum RestrictedJoinError {
    #[error(transparent)]
    Rooms(#[from] RoomsError),
    #[error(transparent)]
    Core(#[from] CoreError),
    /// 403: the user is in none of the allowed rooms.
    #[error("You are not a member of any room whose members may join this one")]
    NotAllowed,
    /// `M_UNABLE_TO_GRANT_JOIN`: this server is in none of the allowed rooms.
    #[error("this server is in none of the rooms that grant access, so cannot grant the join")]
    UnableToGrant,
    /// `M_UNABLE_TO_AUTHORISE_JOIN`: no local member may invite.
    #[error("no user on this server may authorise the join")]
    UnableToAuthorise,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinAuthorisation {
    /// The room is not restricted, or the user is already invited or joined: a plain join.
    NotNeeded,
    /// This local member, who may invite, authorises the join.
    Via(OwnedUserId),
}

impl Services {
    /// Decide a join of `user` to a room this server is in, from its current state.
    /// Errors: `M_FORBIDDEN` when the user is in none of the allowed rooms,
    /// `M_UNABLE_TO_GRANT_JOIN` when this server is in none of them (so cannot tell), and
    /// `M_UNABLE_TO_AUTHORISE_JOIN` when no local member may invite.
    pub fn authorise_join(
        &self,
        room: &RoomRef,
        user: &UserId,
    ) -> Result<JoinAuthorisation, RestrictedJoinError> {
        let rules = room_version::rules(&room.meta.version)?;
        if !rules.authorization.restricted_join_rule {
            return Ok(JoinAuthorisation::NotNeeded);
        }
        let hash = self
            .rooms
            .current_state(room.short)?
            .map(|s| s.0)
            .unwrap_or(0);
        let Some(join_rules) = self.rooms.state_json(hash, "m.room.join_rules", "")? else {
            return Ok(JoinAuthorisation::NotNeeded);
        };
        let content = &join_rules["content"];
        let rule = content["join_rule"].as_str().unwrap_or_default();
        let restricted = rule == "restricted"
            || (rule == "knock_restricted" && rules.authorization.knock_restricted_join_rule);
        if !restricted {
            return Ok(JoinAuthorisation::NotNeeded);
        }
        let current = self
            .rooms
            .state_json(hash, "m.room.member", user.as_str())?
            .and_then(|m| m["content"]["membership"].as_str().map(str::to_owned));
        if matches!(current.as_deref(), Some("join" | "invite")) {
            return Ok(JoinAuthorisation::NotNeeded);
        }

        let mut resident_in_any = false;
        let mut allowed = false;
        for id in allowed_room_ids(content) {
            let Ok(id) = RoomId::parse(&id) else { continue };
            if self.rooms.resident_room(&id)?.is_none() {
                continue;
            }
            resident_in_any = true;
            if self.rooms.is_joined(user, &id)? {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Err(if resident_in_any {
                RestrictedJoinError::NotAllowed
            } else {
                RestrictedJoinError::UnableToGrant
            });
        }
        self.local_inviter(room, hash, &rules)?
            .map(JoinAuthorisation::Via)
            .ok_or(RestrictedJoinError::UnableToAuthorise)
    }

    /// A local joined member with the power to invite.
    fn local_inviter(
        &self,
        room: &RoomRef,
        hash: u64,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<Option<OwnedUserId>, RoomsError> {
        let power = self.power_levels(hash, rules)?;
        let mut members = self.rooms.room_members(room.short)?;
        members.sort();
        Ok(members
            .into_iter()
            .find(|(u, m)| m == "join" && self.is_local(u) && power.user_can_invite(u))
            .map(|(u, _)| u))
    }
}
