//! Room summaries and spaces: what a room looks like from outside (the public directory, the
//! space hierarchy, the federation `/hierarchy`), who may see it, and a space's children in
//! the spec's order.

use ruma::{RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::{
    rooms::{RoomRef, RoomsError},
    Services,
};

/// Who is looking at a room: a local user, another server on behalf of its users, or
/// anyone at all (no access token).
#[derive(Clone, Copy)]
pub enum Viewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
    Anyone,
}

impl Services {
    /// A room's public summary (the directory's chunk fields, plus `room_version`,
    /// `encryption` and, for restricted rooms, `allowed_room_ids`) from current state.
    pub fn room_summary(&self, room: &RoomRef) -> Result<Value, RoomsError> {
        let hash = self
            .rooms
            .current_state(room.short)?
            .map(|h| h.0)
            .unwrap_or(0);
        let content = |kind: &str| -> Result<Value, RoomsError> {
            Ok(self
                .rooms
                .state_json(hash, kind, "")?
                .map(|e| e["content"].clone())
                .unwrap_or(Value::Null))
        };
        let joined = self
            .rooms
            .room_members(room.short)?
            .iter()
            .filter(|(_, m)| m == "join")
            .count();
        let join_rules = content("m.room.join_rules")?;
        let join_rule = join_rules["join_rule"].as_str().unwrap_or("invite");
        let mut v = json!({
            "room_id": room.meta.room_id,
            "num_joined_members": joined,
            "world_readable": content("m.room.history_visibility")?["history_visibility"] == "world_readable",
            "guest_can_join": content("m.room.guest_access")?["guest_access"] == "can_join",
            "join_rule": join_rule,
            "room_version": room.meta.version,
        });
        if let Some(topic) = plexus_core::client_event::plain_topic(&content("m.room.topic")?) {
            v["topic"] = json!(topic);
        }
        for (field, kind, key) in [
            ("name", "m.room.name", "name"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("avatar_url", "m.room.avatar", "url"),
            ("room_type", "m.room.create", "type"),
            ("encryption", "m.room.encryption", "algorithm"),
        ] {
            // An empty name is none, as an empty topic is.
            if let Some(x) = content(kind)?
                .get(key)
                .filter(|x| x.as_str().is_some_and(|s| !s.is_empty()))
            {
                v[field] = x.clone();
            }
        }
        if matches!(join_rule, "restricted" | "knock_restricted") {
            v["allowed_room_ids"] = json!(allowed_room_ids(&join_rules));
        }
        Ok(v)
    }

    /// The room's `m.space.child` events that name a `via`, as stripped state with
    /// `origin_server_ts`, in the spec's order; none for a room that is not a space.
    pub fn children_state(&self, room: &RoomRef) -> Result<Vec<Value>, RoomsError> {
        let hash = self
            .rooms
            .current_state(room.short)?
            .map(|h| h.0)
            .unwrap_or(0);
        let is_space = self
            .rooms
            .state_json(hash, "m.room.create", "")?
            .is_some_and(|c| c["content"]["type"] == "m.space");
        if !is_space {
            return Ok(vec![]);
        }
        // The child state keys this server knows of, looked up in the room's state: far
        // fewer than the state entries of a space with many members.
        let state = self.rooms.state_map(hash)?;
        let mut out = vec![];
        for item in self.rooms.state_keys_of_type("m.space.child") {
            let short = item?;
            let Some(ev) = state.get(&short) else {
                continue;
            };
            let Some(e) = self.rooms.pdu_json(*ev)? else {
                continue;
            };
            if e["content"]["via"].as_array().is_none_or(|v| v.is_empty()) {
                continue;
            }
            out.push(json!({
                "type": "m.space.child",
                "state_key": e["state_key"],
                "content": e["content"],
                "sender": e["sender"],
                "origin_server_ts": e["origin_server_ts"],
            }));
        }
        sort_children(&mut out);
        Ok(out)
    }

    /// Whether `viewer` may see the room in a hierarchy (spec: members, invitees, anyone for
    /// public, knockable or world-readable rooms, and members of a restricted room's allowed
    /// rooms). A server stands for its users: it counts as a member when one of them is.
    pub fn may_preview(
        &self,
        room_id: &RoomId,
        summary: &Value,
        viewer: Viewer,
    ) -> Result<bool, RoomsError> {
        if summary["world_readable"] == true {
            return Ok(true);
        }
        let rule = summary["join_rule"].as_str().unwrap_or("invite");
        if matches!(rule, "public" | "knock" | "knock_restricted") {
            return Ok(true);
        }
        let member_of = |room_id: &RoomId, invited_too: bool| -> Result<bool, RoomsError> {
            Ok(match viewer {
                Viewer::User(u) => self.rooms.membership(u, room_id)?.is_some_and(|m| {
                    m.membership == "join" || (invited_too && m.membership == "invite")
                }),
                Viewer::Server(s) => match self.rooms.room(room_id)? {
                    Some(r) => self.rooms.room_servers(r.short)?.iter().any(|x| x == s),
                    None => false,
                },
                Viewer::Anyone => false,
            })
        };
        if member_of(room_id, true)? {
            return Ok(true);
        }
        if rule == "restricted" {
            for id in summary["allowed_room_ids"].as_array().into_iter().flatten() {
                if let Some(id) = id.as_str().and_then(|s| RoomId::parse(s).ok()) {
                    if member_of(&id, false)? {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// Rooms whose members may join a restricted room, from its join rules.
pub fn allowed_room_ids(join_rules: &Value) -> Vec<String> {
    join_rules["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "m.room_membership")
        .filter_map(|a| a["room_id"].as_str().map(str::to_owned))
        .collect()
}

/// The spec's order of a space's children: those with a valid `order` first, by `order`,
/// then by `origin_server_ts`, then by room id.
pub fn sort_children(children: &mut [Value]) {
    fn order(c: &Value) -> Option<&str> {
        c["content"]["order"]
            .as_str()
            .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
    }
    children.sort_by(|a, b| {
        let key = |c: &Value| {
            (
                order(c).is_none(),
                order(c).map(str::to_owned),
                c["origin_server_ts"].as_u64().unwrap_or(0),
                c["state_key"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_follow_the_spec_order() {
        let c = |id: &str, order: Option<&str>, ts: u64| json!({"state_key": id, "origin_server_ts": ts, "content": {"via": ["x"], "order": order}});
        let mut v = vec![
            c("!d", None, 1),
            c("!c", Some("b"), 9),
            c("!a", None, 1),
            c("!b", Some("a"), 9),
            c("!e", Some("\u{7f}bad"), 0),
        ];
        sort_children(&mut v);
        let ids: Vec<&str> = v.iter().map(|c| c["state_key"].as_str().unwrap()).collect();
        assert_eq!(ids, ["!b", "!c", "!e", "!a", "!d"]);
    }
}
