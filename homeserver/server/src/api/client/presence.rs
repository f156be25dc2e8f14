//! `/presence/{userId}/status`.

use std::time::Duration;

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::App,
};
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

pub fn check_state(p: &str) -> ApiResult<()> {
    match p {
        "online" | "offline" | "unavailable" => Ok(()),
        _ => Err(ApiError::BadJson(
            "presence must be online, offline or unavailable".into(),
        )),
    }
}

pub async fn set(
    app: App,
    req: Ruma<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let (s, body) = (req.caller, req.body);
    s.require_self(body.user_id.as_str())?;
    let presence = body.presence.as_str();
    check_state(presence)?;
    if body.status_msg.as_ref().is_some_and(|m| m.len() > 1024) {
        return Err(ApiError::BadJson(
            "status_msg must be a string of at most 1024 bytes".into(),
        ));
    }
    app.update_presence(
        &body.user_id,
        presence,
        Some(body.status_msg),
        presence != "offline",
    )
    .await?;
    Ok(set_presence::v3::Response::new())
}

pub async fn get(
    app: App,
    req: Ruma<get_presence::v3::Request>,
) -> ApiResult<get_presence::v3::Response> {
    let (s, user) = (req.caller, req.body.user_id);
    // Users of other servers have no account here; what their servers told us is kept as
    // for anyone else, and shown to those who share a room with them.
    if app.is_local(&user) && app.accounts.user(&user)?.is_none() {
        return Err(ApiError::NotFound("Unknown user".into()));
    }
    if user != s.user_id && !app.presence_audience(&s.user_id)?.contains(&user) {
        return Err(ApiError::Forbidden(
            "You do not share a room with this user".into(),
        ));
    }
    let Some(rec) = app.presence.get(&user)? else {
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let c = rec.content();
    let presence = PresenceState::from(c["presence"].as_str().unwrap_or("offline"));
    let mut res = get_presence::v3::Response::new(presence);
    res.status_msg = c["status_msg"].as_str().map(str::to_owned);
    res.currently_active = c["currently_active"].as_bool();
    res.last_active_ago = c["last_active_ago"].as_u64().map(Duration::from_millis);
    Ok(res)
}
