//! Running users' push rules on a room event (ruma's rule engine, with the room's member count,
//! the user's display name and the room's power levels as context).

use ruma::{
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
    OwnedUserId, RoomId, UInt,
};
use serde_json::Value;

use super::PushError;
use crate::{service::rooms::RoomAudience, service::Services};

/// What one user's rules decided about one event that notifies them.
#[derive(Debug, Clone)]
pub struct Notified {
    pub user: OwnedUserId,
    pub actions: Vec<Action>,
    pub highlight: bool,
}

/// The thread an event belongs to: its root's event id, or `None` for the main timeline.
pub fn thread_of(stored: &Value) -> Option<&str> {
    let rel = stored.get("content")?.get("m.relates_to")?;
    (rel.get("rel_type")?.as_str()? == "m.thread")
        .then(|| rel.get("event_id")?.as_str())
        .flatten()
}

/// Everyone local whom `stored` notifies, with their actions: the room's local joined members
/// (from the `members` the writer already read), plus the target of an invite. The sender is
/// never notified of their own event. `state_hash` is the room state the event is judged
/// against (members' names, power levels).
pub async fn evaluate(
    app: &Services,
    room_id: &RoomId,
    members: &RoomAudience,
    state_hash: u64,
    rules: &ruma::room_version_rules::RoomVersionRules,
    stored: &Value,
) -> Result<Vec<Notified>, PushError> {
    let sender = stored.get("sender").and_then(Value::as_str).unwrap_or("");
    let mut audience: Vec<OwnedUserId> = members
        .local_joined
        .iter()
        .filter(|u| u.as_str() != sender)
        .cloned()
        .collect();
    if stored["type"] == "m.room.member" && stored["content"]["membership"] == "invite" {
        if let Some(target) = stored["state_key"]
            .as_str()
            .and_then(|k| OwnedUserId::try_from(k).ok())
            .filter(|u| app.is_local(u) && u.as_str() != sender)
        {
            audience.push(target);
        }
    }
    if audience.is_empty() {
        return Ok(vec![]);
    }
    let raw: Raw<Value> = Raw::from_json(
        serde_json::value::to_raw_value(stored)
            .map_err(|e| PushError::Internal(format!("JSON serialization: {e}")))?,
    );
    // Flattened once for every member (ruma's `get_actions` would flatten per call).
    let event = FlattenedJson::from_raw(&raw);
    let power: PushConditionPowerLevelsCtx = app.power_levels(state_hash, rules)?.into();
    let mut out = vec![];
    for user in audience {
        let mine = app.user_push.get(app, &user)?;
        // Nobody is notified of the events of someone they ignore.
        if mine.ignored.contains(sender) {
            continue;
        }
        let name = app
            .rooms
            .state_json(state_hash, "m.room.member", user.as_str())?
            .and_then(|m| m["content"]["displayname"].as_str().map(str::to_owned))
            .unwrap_or_else(|| user.localpart().to_owned());
        let ctx = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::try_from(members.joined).unwrap_or(UInt::MAX),
            user.clone(),
            name,
        )
        .with_power_levels(power.clone());
        let mut actions: &[Action] = &[];
        for rule in &mine.rules {
            if rule.applies(&event, &ctx).await {
                actions = rule.actions();
                break;
            }
        }
        if !actions.iter().any(Action::should_notify) {
            continue;
        }
        out.push(Notified {
            highlight: actions.iter().any(Action::is_highlight),
            actions: actions.to_vec(),
            user,
        });
    }
    Ok(out)
}

/// The tweaks of a notification's actions, as the push gateway wants them (a tweak without a
/// value, which is how `highlight` is written, means `true`).
pub fn tweaks(actions: &[Action]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for a in actions {
        if let Action::SetTweak(t) = a {
            if let Ok(o) = serde_json::to_value(t) {
                if let Some(k) = o["set_tweak"].as_str() {
                    out.insert(
                        k.to_owned(),
                        o.get("value").cloned().unwrap_or(Value::Bool(true)),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thread_roots_are_read_from_the_relation() {
        let ev =
            json!({"content": {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}});
        assert_eq!(thread_of(&ev), Some("$root"));
        let reply = json!({"content": {"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}});
        assert_eq!(thread_of(&reply), None);
        assert_eq!(thread_of(&json!({"content": {"m.relates_to": 1}})), None);
    }

    #[test]
    fn tweaks_are_flattened() {
        let actions: Vec<Action> = serde_json::from_value(json!([
            "notify",
            {"set_tweak": "sound", "value": "default"},
            {"set_tweak": "highlight"}
        ]))
        .unwrap();
        let t = tweaks(&actions);
        assert_eq!(t["sound"], "default");
        assert_eq!(t["highlight"], true);
    }
}
