//! Registration, login, logout, whoami, refresh, password change, deactivation.

use axum::{extract::State, Json};
use plexus_core::signing::random_alnum;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use plexus_core::appservice::Kind;

use crate::{
    config::RegistrationPolicy,
    error::{ApiError, ApiResult},
    http::extract::{AppserviceToken, Auth, Body, ClientIp, Query},
    service::accounts::PASSWORD_FLOW,
    service::{ratelimit::Action, App, Services},
};

#[derive(Deserialize)]
pub struct RegisterQuery {
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    auth: Option<Value>,
    /// `m.login.application_service`: an appservice registers a user in its namespace.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Localparts per the spec's user identifier grammar (historical characters are not accepted for
/// new accounts).
fn validate_localpart(svc: &Services, localpart: &str) -> ApiResult<OwnedUserId> {
    if !plexus_core::appservice::valid_localpart(localpart) {
        return Err(ApiError::InvalidUsername(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'".into(),
        ));
    }
    let id = UserId::parse_with_server_name(localpart, svc.server_name())
        .map_err(|e| ApiError::InvalidUsername(e.to_string()))?;
    if id.as_str().len() > 255 {
        return Err(ApiError::InvalidUsername("User ID is too long".into()));
    }
    Ok(id)
}

/// Issue a device and tokens and answer as `/login` and `/register` both do.
async fn log_in(
    svc: &App,
    user_id: &UserId,
    device_id: Option<&str>,
    display_name: Option<String>,
    refreshable: bool,
) -> ApiResult<Json<Value>> {
    let (device_id, t) = svc
        .issue_device(user_id, device_id, display_name, refreshable)
        .await?;
    let mut v = json!({
        "user_id": user_id,
        "access_token": t.access_token,
        "device_id": device_id,
        "home_server": svc.server_name(),
    });
    if let Some(r) = t.refresh_token {
        v["refresh_token"] = json!(r);
    }
    if let Some(e) = t.expires_in_ms {
        v["expires_in_ms"] = json!(e);
    }
    Ok(Json(v))
}

pub async fn register(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    caller: AppserviceToken,
    Query(q): Query<RegisterQuery>,
    Body(body): Body<RegisterBody>,
) -> ApiResult<Json<Value>> {
    if caller.reg.is_none() {
        app.limiter.check(Action::RegisterIp, &ip.to_string())?;
    }
    if q.kind.as_deref() == Some("guest") {
        return Err(ApiError::GuestAccessForbidden);
    }
    if let Some(k) = q.kind.as_deref().filter(|k| *k != "user") {
        return Err(ApiError::InvalidParam(format!("unknown kind {k}")));
    }
    let user_id = if body.kind.as_deref() == Some("m.login.application_service") {
        register_for_appservice(&app, caller, &body).await?
    } else {
        register_user(&app, &body).await?
    };
    if body.inhibit_login {
        return Ok(Json(
            json!({ "user_id": user_id, "home_server": app.server_name() }),
        ));
    }
    log_in(
        &app,
        &user_id,
        body.device_id.as_deref(),
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await
}

/// Registration by a person: the server's policy and user-interactive auth decide.
async fn register_user(app: &App, body: &RegisterBody) -> ApiResult<OwnedUserId> {
    let flows: &'static [&'static [&'static str]] = match app.settings.registration {
        RegistrationPolicy::Disabled => {
            return Err(ApiError::Forbidden("Registration has been disabled".into()))
        }
        RegistrationPolicy::Open => &[&["m.login.dummy"]],
        RegistrationPolicy::Token => &[&["m.login.registration_token"]],
    };
    let user_id = match &body.username {
        Some(u) => validate_localpart(app, &u.to_lowercase())?,
        None => validate_localpart(app, &random_alnum(12).to_lowercase())?,
    };
    app.appservices
        .check_exclusive(Kind::User, user_id.as_str(), None)?;
    if app.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    if let Some(p) = &body.password {
        Services::password_policy(p)?;
    }
    app.uia(body.auth.clone(), flows, None).await?;
    app.create_user(&user_id, body.password.as_deref(), false)
        .await?;
    tracing::info!(user = %user_id, "registered");
    Ok(user_id)
}

/// Registration by an appservice (its `as_token`): any user in its namespace, no password,
/// whatever the server's registration policy.
async fn register_for_appservice(
    app: &App,
    caller: AppserviceToken,
    body: &RegisterBody,
) -> ApiResult<OwnedUserId> {
    let reg = caller.require()?;
    let name = body
        .username
        .as_deref()
        .ok_or_else(|| ApiError::MissingParam("username is required".into()))?;
    let user_id = validate_localpart(app, &name.to_lowercase())?;
    if !reg.may_act_as(user_id.as_str(), app.server_name().as_str()) {
        return Err(ApiError::Exclusive(
            "User ID is not in the application service's namespace".into(),
        ));
    }
    if app.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    app.create_user(&user_id, None, false).await?;
    tracing::info!(user = %user_id, appservice = %reg.id, "registered by appservice");
    Ok(user_id)
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

pub async fn available(
    State(app): State<App>,
    Query(q): Query<AvailableQuery>,
) -> ApiResult<Json<Value>> {
    let user_id = validate_localpart(&app, &q.username)?;
    app.appservices
        .check_exclusive(Kind::User, user_id.as_str(), None)?;
    if app.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    Ok(Json(json!({ "available": true })))
}

pub async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [
        { "type": "m.login.password" },
        { "type": "m.login.application_service" },
    ] }))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

pub async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    caller: AppserviceToken,
    Body(body): Body<LoginBody>,
) -> ApiResult<Json<Value>> {
    if body.kind == "m.login.application_service" {
        return login_for_appservice(&app, caller, body).await;
    }
    app.limiter.check(Action::LoginIp, &ip.to_string())?;
    if body.kind != "m.login.password" {
        return Err(ApiError::Unknown(format!(
            "Unknown login type {}",
            body.kind
        )));
    }
    let creds = Value::Object(body.rest.clone());
    let check = {
        let (app, creds) = (app.clone(), creds.clone());
        crate::service::accounts::blocking(move || app.password_login(&creds)).await??
    };
    let user_id = match check {
        Some(u) => u,
        None => {
            // A deactivated account with the right password gets its own error code.
            let name = creds
                .get("identifier")
                .and_then(|i| i.get("user"))
                .or_else(|| creds.get("user"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Ok(id) = app.parse_user_name(name) {
                if let Some(rec) = app.user(&id)? {
                    let pw = creds
                        .get("password")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if rec.deactivated && Services::check_password(&rec, pw) {
                        return Err(ApiError::UserDeactivated);
                    }
                }
            }
            return Err(ApiError::Forbidden("Invalid username or password".into()));
        }
    };
    log_in(
        &app,
        &user_id,
        body.device_id.as_deref(),
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await
}

/// `m.login.application_service`: a device for a user in the appservice's namespace (how an
/// appservice gets devices of its own to run E2EE with).
async fn login_for_appservice(
    app: &App,
    caller: AppserviceToken,
    body: LoginBody,
) -> ApiResult<Json<Value>> {
    let reg = caller.require()?;
    let name = body
        .rest
        .get("identifier")
        .and_then(|i| i.get("user"))
        .or_else(|| body.rest.get("user"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::MissingParam("identifier.user is required".into()))?;
    let user_id = app.parse_user_name(name)?;
    if !reg.may_act_as(user_id.as_str(), app.server_name().as_str()) {
        return Err(ApiError::Forbidden(
            "User is not in the application service's namespace".into(),
        ));
    }
    if app.user(&user_id)?.is_none_or(|r| r.deactivated) {
        return Err(ApiError::Forbidden(
            "Application service has not registered this user".into(),
        ));
    }
    log_in(
        app,
        &user_id,
        body.device_id.as_deref(),
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await
}

pub async fn logout(State(app): State<App>, Auth(s): Auth) -> ApiResult<Json<Value>> {
    app.delete_devices(&s.user_id, &[s.device()?.to_string()])
        .await?;
    Ok(Json(json!({})))
}

pub async fn logout_all(State(app): State<App>, Auth(s): Auth) -> ApiResult<Json<Value>> {
    let all: Vec<String> = app
        .devices(&s.user_id)?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    app.delete_devices(&s.user_id, &all).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(app): State<App>,
    Body(body): Body<RefreshBody>,
) -> ApiResult<Json<Value>> {
    let t = app.refresh(&body.refresh_token).await?;
    Ok(Json(json!({
        "access_token": t.access_token,
        "refresh_token": t.refresh_token,
        "expires_in_ms": t.expires_in_ms,
    })))
}

pub async fn whoami(Auth(s): Auth) -> Json<Value> {
    let mut v = json!({ "user_id": s.user_id, "is_guest": false });
    // An appservice acting without a device has none to report.
    if let Some(d) = &s.device_id {
        v["device_id"] = json!(d);
    }
    Json(v)
}

#[derive(Deserialize)]
pub struct PasswordBody {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<Value>,
}

fn yes() -> bool {
    true
}

pub async fn password(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<PasswordBody>,
) -> ApiResult<Json<Value>> {
    app.uia(body.auth.clone(), PASSWORD_FLOW, Some(s.user_id.clone()))
        .await?;
    Services::password_policy(&body.new_password)?;
    let mut rec = app
        .user(&s.user_id)?
        .ok_or_else(|| ApiError::Forbidden("unknown user".into()))?;
    let new_password = body.new_password.clone();
    rec.password_hash = Some(
        crate::service::accounts::blocking(move || Services::hash_password(&new_password))
            .await??,
    );
    app.save_user(&s.user_id, &rec)?;
    if body.logout_devices {
        let others: Vec<String> = app
            .devices(&s.user_id)?
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| Some(d.as_str()) != s.device_id.as_deref().map(|d| d.as_str()))
            .collect();
        app.delete_devices(&s.user_id, &others).await?;
    }
    app.store.flush().await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeactivateBody {
    auth: Option<Value>,
}

pub async fn deactivate(
    State(app): State<App>,
    Auth(s): Auth,
    Body(body): Body<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    app.uia(body.auth.clone(), PASSWORD_FLOW, Some(s.user_id.clone()))
        .await?;
    // Leave every room first, so the account's memberships end while it can still act.
    for (room_id, m) in app.user_rooms(&s.user_id)? {
        if m.membership == "join" || m.membership == "invite" || m.membership == "knock" {
            let ev = plexus_core::builder::NewEvent {
                kind: "m.room.member".into(),
                content: json!({ "membership": "leave" }),
                state_key: Some(s.user_id.to_string()),
                redacts: None,
            };
            if let Err(e) =
                crate::service::writer::send_one(&app, &room_id, &s.user_id, ev, None).await
            {
                tracing::warn!(room = %room_id, error = %e, "could not leave room on deactivation");
            }
        }
    }
    let mut rec = app
        .user(&s.user_id)?
        .ok_or_else(|| ApiError::Forbidden("unknown user".into()))?;
    rec.deactivated = true;
    rec.displayname = None;
    rec.avatar_url = None;
    app.save_user(&s.user_id, &rec)?;
    let all: Vec<String> = app
        .devices(&s.user_id)?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    app.delete_devices(&s.user_id, &all).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

#[derive(Deserialize)]
pub struct TokenValidityQuery {
    token: String,
}

/// Lets a client check a registration token before asking for the rest of the form. Limited
/// like registration itself, so it is no faster a way to guess tokens.
pub async fn registration_token_validity(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Query(q): Query<TokenValidityQuery>,
) -> ApiResult<Json<Value>> {
    app.limiter.check(Action::RegisterIp, &ip.to_string())?;
    if app.settings.registration != RegistrationPolicy::Token {
        return Err(ApiError::Forbidden(
            "This server does not use registration tokens".into(),
        ));
    }
    let valid = app.settings.registration_tokens.contains(&q.token);
    Ok(Json(json!({ "valid": valid })))
}
