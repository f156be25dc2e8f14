//! Our invites of users of other servers: the invitee's server countersigns them
//! (`PUT /_matrix/federation/v2/invite` there) before they are committed here.

use ruma::{canonical_json::redact, EventId, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::{
    ingest,
    sender::{enc, federation_form},
    FederationError,
};
use crate::service::{writer::RoomWriter, Services};

/// Have the invitee's server countersign an invite appended to `w` (not yet committed), and
/// take its signature onto the event. A refusal there is the invite's refusal.
pub async fn countersigned_invite(
    app: &Services,
    w: &mut RoomWriter<'_>,
    event_id: &EventId,
    target: &UserId,
) -> Result<(), FederationError> {
    let fed = app.fed()?;
    let room_id = w
        .room_id
        .clone()
        .ok_or_else(|| FederationError::Internal("room without id".into()))?;
    let room = app.rooms.room_or_404(&room_id)?;
    let ours = w
        .pending_event(event_id)
        .map(federation_form)
        .ok_or_else(|| FederationError::Internal("invite not appended".into()))?;
    let sender = ours
        .get("sender")
        .and_then(Value::as_str)
        .and_then(|s| OwnedUserId::try_from(s).ok());
    let state: Vec<Value> = app
        .rooms
        .stripped_state_events(room.short, sender.as_deref())?
        .iter()
        .map(federation_form)
        .collect();
    let server = target.server_name();
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        enc(room_id.as_str()),
        enc(event_id.as_str())
    );
    let body = json!({
        "room_version": room.meta.version,
        "event": ours,
        "invite_room_state": state,
    });
    let resp = fed
        .request(app, server, http::Method::PUT, &path, Some(body), true)
        .await?;
    let theirs = resp.get("event").filter(|e| e.is_object()).ok_or_else(|| {
        FederationError::BadGateway(format!("{server} answered the invite without it"))
    })?;

    // Only their signature may differ from what we sent.
    let strip = |v: &Value| {
        let mut v = federation_form(v);
        if let Some(o) = v.as_object_mut() {
            o.remove("signatures");
        }
        v
    };
    if strip(theirs) != strip(&ours) {
        return Err(FederationError::BadGateway(format!(
            "{server} changed the invite it signed"
        )));
    }
    let sigs = theirs
        .get("signatures")
        .and_then(|s| s.get(server.as_str()))
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
        .cloned()
        .ok_or_else(|| FederationError::BadGateway(format!("{server} did not sign the invite")))?;
    let ids: Vec<String> = sigs
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let keys = fed.keys.verify_keys(app, server, &ids, None).await?;
    let mut obj =
        ingest::canonical_object(&federation_form(theirs)).map_err(FederationError::BadGateway)?;
    if let Some(ruma::CanonicalJsonValue::Object(all)) = obj.get_mut("signatures") {
        all.retain(|s, _| s == server.as_str());
    }
    let redacted = redact(obj, &w.rules.redaction, None)
        .map_err(|e| FederationError::BadGateway(e.to_string()))?;
    ruma::signatures::verify_json(&keys, &redacted).map_err(|e| {
        FederationError::BadGateway(format!(
            "{server}'s signature on the invite is invalid: {e}"
        ))
    })?;
    w.add_signatures(event_id, server.as_str(), sigs);
    Ok(())
}
