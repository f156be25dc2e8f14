//! Profiles: displayname and avatar_url, propagated to every joined room as a member event.

use axum::{extract::State, Json};
use plexus_core::builder::NewEvent;
use ruma::{api::client::profile::get_profile, OwnedUserId, UserId};
use serde_json::{json, Map, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, JsonObject, Path},
        ruma::Ruma,
    },
    service::{writer, App},
};

fn parse_user(s: &str) -> ApiResult<OwnedUserId> {
    UserId::parse(s).map_err(|e| ApiError::InvalidParam(format!("invalid user id: {e}")))
}

/// A user's profile: ours from the store, anyone else's from their server (`query/profile`).
async fn profile_of(app: &App, user: &UserId) -> ApiResult<Map<String, Value>> {
    if !app.is_local(user) {
        let Some(fed) = &app.federation else {
            return Err(ApiError::NotFound(
                "Profile not found (federation is not enabled)".into(),
            ));
        };
        let path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            crate::service::federation::sender::enc(user.as_str())
        );
        let v = fed
            .request(
                app,
                user.server_name(),
                http::Method::GET,
                &path,
                None,
                true,
            )
            .await?;
        let mut m = Map::new();
        for f in ["displayname", "avatar_url"] {
            if let Some(s) = v.get(f).filter(|s| s.is_string()) {
                m.insert(f.into(), s.clone());
            }
        }
        return Ok(m);
    }
    let rec = match app.accounts.user(user)? {
        // An unknown user in an appservice's namespace may be one it makes on demand.
        None if app.ask_appservices_for_user(user).await => app.accounts.user(user)?,
        found => found,
    };
    let rec = rec
        .filter(|r| !r.deactivated || r.displayname.is_some())
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    let mut m = Map::new();
    if let Some(d) = rec.displayname {
        m.insert("displayname".into(), json!(d));
    }
    if let Some(a) = rec.avatar_url {
        m.insert("avatar_url".into(), json!(a));
    }
    Ok(m)
}

pub async fn get_profile(
    app: App,
    req: Ruma<get_profile::v3::Request>,
) -> ApiResult<get_profile::v3::Response> {
    Ok(profile_of(&app, &req.body.user_id)
        .await?
        .into_iter()
        .collect())
}

fn check_field(field: &str) -> ApiResult<()> {
    match field {
        "displayname" | "avatar_url" => Ok(()),
        _ => Err(ApiError::Unrecognized),
    }
}

/// Hand-typed, as its path's PUT is.
pub async fn get_field(
    State(app): State<App>,
    Path((user, field)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_field(&field)?;
    let user = parse_user(&user)?;
    let p = profile_of(&app, &user).await?;
    match p.get(&field) {
        Some(v) => Ok(Json(json!({ field: v }))),
        None => Err(ApiError::NotFound(format!("{field} not set"))),
    }
}

/// Hand-typed: ruma's `set_profile_field` refuses `{"displayname": null}`, which clears it.
pub async fn set_field(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, field)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    check_field(&field)?;
    let user = parse_user(&user)?;
    if user != s.user_id {
        return Err(ApiError::Forbidden(
            "Cannot set another user's profile".into(),
        ));
    }
    let value = match body.get(&field) {
        Some(Value::String(v)) => Some(v.clone()),
        Some(Value::Null) | None => None,
        Some(_) => return Err(ApiError::BadJson(format!("{field} must be a string"))),
    };
    update(&app, &s.user_id, &user, &field, value).await
}

/// Hand-typed, as its path's PUT is.
pub async fn delete_field(
    State(app): State<App>,
    Auth(s): Auth,
    Path((user, field)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_field(&field)?;
    let user = parse_user(&user)?;
    update(&app, &s.user_id, &user, &field, None).await
}

/// Store the new value and propagate it as a member event to every joined room.
async fn update(
    app: &App,
    caller: &UserId,
    user: &UserId,
    field: &str,
    value: Option<String>,
) -> ApiResult<Json<Value>> {
    if user != caller {
        return Err(ApiError::Forbidden(
            "Cannot set another user's profile".into(),
        ));
    }
    if value.as_ref().is_some_and(|v| v.len() > 1024) {
        return Err(ApiError::InvalidParam(format!("{field} too long")));
    }
    let mut rec = app
        .accounts
        .user(user)?
        .ok_or_else(|| ApiError::NotFound("Profile not found".into()))?;
    match field {
        "displayname" => rec.displayname = value,
        _ => rec.avatar_url = value,
    }
    app.accounts.save_user(user, &rec)?;
    app.store.flush().await?;
    // Propagate to joined rooms; a room that refuses (e.g. power levels) keeps the old profile.
    for (room_id, m) in app.rooms.user_rooms(user)? {
        if m.membership != "join" {
            continue;
        }
        let content = writer::member_content(app, user, "join")?;
        let ev = NewEvent {
            kind: "m.room.member".into(),
            content,
            state_key: Some(user.to_string()),
            redacts: None,
        };
        if let Err(e) = writer::send_one(app, &room_id, user, ev, None).await {
            tracing::warn!(room = %room_id, error = %e, "profile update not propagated");
        }
    }
    Ok(Json(json!({})))
}
