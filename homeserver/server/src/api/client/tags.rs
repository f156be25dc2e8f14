//! Room tags, kept in the room's `m.tag` account data as the spec lays out.

use ruma::{
    api::client::tag::{create_tag, delete_tag, get_tags},
    events::tag::Tags,
    RoomId, UserId,
};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::App,
};

fn current(app: &App, user: &UserId, room: &RoomId) -> ApiResult<Map<String, Value>> {
    Ok(app
        .account_data
        .get(user, room.as_str(), "m.tag")?
        .and_then(|v| v.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

async fn save(app: &App, user: &UserId, room: &RoomId, tags: Map<String, Value>) -> ApiResult<()> {
    Ok(app
        .set_account_data(user, room.as_str(), "m.tag", &json!({ "tags": tags }))
        .await?)
}

pub async fn list(app: App, req: Ruma<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    let (s, body) = (req.caller, req.body);
    s.require_self(body.user_id.as_str())?;
    let tags = current(&app, &s.user_id, &body.room_id)?;
    let tags: Tags = serde_json::from_value(Value::Object(tags))
        .map_err(|e| ApiError::Internal(format!("stored tags: {e}")))?;
    Ok(get_tags::v3::Response::new(tags))
}

pub async fn put(
    app: App,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    let (s, body) = (req.caller, req.body);
    s.require_self(body.user_id.as_str())?;
    if body.tag.is_empty() || body.tag.len() > 255 {
        return Err(ApiError::InvalidParam("tag must be 1 to 255 bytes".into()));
    }
    let mut tags = current(&app, &s.user_id, &body.room_id)?;
    let info = serde_json::to_value(&body.tag_info)
        .map_err(|e| ApiError::Internal(format!("tag: {e}")))?;
    tags.insert(body.tag, info);
    save(&app, &s.user_id, &body.room_id, tags).await?;
    Ok(create_tag::v3::Response::new())
}

pub async fn delete(
    app: App,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let (s, body) = (req.caller, req.body);
    s.require_self(body.user_id.as_str())?;
    let mut tags = current(&app, &s.user_id, &body.room_id)?;
    if tags.remove(&body.tag).is_some() {
        save(&app, &s.user_id, &body.room_id, tags).await?;
    }
    Ok(delete_tag::v3::Response::new())
}
