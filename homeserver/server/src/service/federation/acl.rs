//! Server ACLs (`m.room.server_acl`): a denied server may not read from or write to a room
//! through us, whatever its members' memberships say.

use ruma::{events::room::server_acl::RoomServerAclEventContent, ServerName};
use serde_json::Value;

use super::FederationError;
use crate::service::Services;

/// The room's ACL as the spec reads it: `allow` and `deny` default to empty lists and
/// `allow_ip_literals` to true when missing or not a boolean.
fn parse(content: &Value) -> RoomServerAclEventContent {
    let list = |k: &str| -> Vec<String> {
        content
            .get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let ip = content
        .get("allow_ip_literals")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    RoomServerAclEventContent::new(ip, list("allow"), list("deny"))
}

/// Whether the room's current ACL lets `server` take part (no ACL: everyone may).
pub fn allowed(
    app: &Services,
    short_room: u64,
    server: &ServerName,
) -> Result<bool, FederationError> {
    let Some((hash, _)) = app.rooms.current_state(short_room)? else {
        return Ok(true);
    };
    Ok(match app.rooms.state_json(hash, "m.room.server_acl", "")? {
        Some(ev) => parse(ev.get("content").unwrap_or(&Value::Null)).is_allowed(server),
        None => true,
    })
}

/// 403 `M_FORBIDDEN` for a server the room's ACL denies.
pub fn ensure(app: &Services, short_room: u64, server: &ServerName) -> Result<(), FederationError> {
    if allowed(app, short_room, server)? {
        Ok(())
    } else {
        Err(FederationError::Forbidden(format!(
            "{server} is denied by the room's server ACL"
        )))
    }
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use serde_json::json;

    use super::parse;

    #[test]
    fn spec_order_and_defaults() {
        let acl = parse(&json!({"allow": ["*"], "deny": ["*.evil.example"]}));
        assert!(acl.is_allowed(server_name!("good.example:8448")));
        assert!(!acl.is_allowed(server_name!("very.evil.example")));
        assert!(!acl.is_allowed(server_name!("a.EVIL.example:1234")));
        assert!(
            acl.is_allowed(server_name!("127.0.0.1:8448")),
            "IP literals allowed by default"
        );
        let strict = parse(&json!({"allow": ["*"], "allow_ip_literals": false}));
        assert!(!strict.is_allowed(server_name!("127.0.0.1:8448")));
        assert!(!strict.is_allowed(server_name!("[::1]:8448")));
        let odd = parse(&json!({"allow": ["*"], "allow_ip_literals": "no"}));
        assert!(
            odd.is_allowed(server_name!("10.0.0.1")),
            "non-boolean means true"
        );
        assert!(
            !parse(&json!({})).is_allowed(server_name!("any.example")),
            "no allow list denies all"
        );
        let only = parse(&json!({"allow": ["*.friends.example", "friends.example"]}));
        assert!(only.is_allowed(server_name!("friends.example")));
        assert!(only.is_allowed(server_name!("x.friends.example")));
        assert!(!only.is_allowed(server_name!("stranger.example")));
    }
}
