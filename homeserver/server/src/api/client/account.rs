//! Registration, login, logout, whoami, refresh, password change, deactivation.

use plexus_core::signing::random_alnum;
use ruma::{
    api::client::{
        account::{
            change_password, check_registration_token_validity, deactivate,
            get_username_availability,
            register::{self, LoginType as RegisterType, RegistrationKind},
            whoami, ThirdPartyIdRemovalStatus,
        },
        session::{
            get_login_types::{
                self,
                v3::{ApplicationServiceLoginType, LoginType, PasswordLoginType},
            },
            login::{self, v3::LoginInfo},
            logout, logout_all, refresh_token,
        },
        uiaa::AuthData,
    },
    OwnedUserId, UserId,
};
use serde_json::Value;

use plexus_core::appservice::Kind;

use crate::{
    config::RegistrationPolicy,
    error::{ApiError, ApiResult},
    http::{extract::AppserviceCaller, ruma::Ruma},
    service::accounts::{Accounts, IssuedTokens, PASSWORD_FLOW},
    service::{ratelimit::Action, App, Services},
};

/// User-interactive auth data as the UIA state machine reads it.
pub(super) fn uia_json(auth: Option<&AuthData>) -> ApiResult<Option<Value>> {
    auth.map(serde_json::to_value)
        .transpose()
        .map_err(|e| ApiError::BadJson(format!("auth: {e}")))
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

fn expires(t: &IssuedTokens) -> Option<std::time::Duration> {
    t.expires_in_ms.map(std::time::Duration::from_millis)
}

pub async fn register(
    app: App,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    let (caller, body) = (req.caller, req.body);
    if caller.reg.is_none() {
        app.limiter.check(Action::RegisterIp, &req.ip.to_string())?;
    }
    match &body.kind {
        RegistrationKind::User => {}
        RegistrationKind::Guest => return Err(ApiError::GuestAccessForbidden),
        k => return Err(ApiError::InvalidParam(format!("unknown kind {k}"))),
    }
    let user_id = if body.login_type == Some(RegisterType::ApplicationService) {
        register_for_appservice(&app, caller, &body).await?
    } else {
        register_user(&app, &body).await?
    };
    let mut res = register::v3::Response::new(user_id.clone());
    if body.inhibit_login {
        return Ok(res);
    }
    let (device_id, t) = app.accounts.issue_device(
        &user_id,
        body.device_id.as_deref().map(|d| d.as_str()),
        body.initial_device_display_name,
        body.refresh_token,
    )?;
    app.store.flush().await?;
    res.expires_in = expires(&t);
    res.access_token = Some(t.access_token);
    res.refresh_token = t.refresh_token;
    res.device_id = Some(device_id);
    Ok(res)
}

/// Registration by a person: the server's policy and user-interactive auth decide.
async fn register_user(app: &App, body: &register::v3::Request) -> ApiResult<OwnedUserId> {
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
    if app.accounts.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    if let Some(p) = &body.password {
        Accounts::password_policy(p)?;
    }
    app.uia(uia_json(body.auth.as_ref())?, flows, None).await?;
    app.accounts
        .create_user(&user_id, body.password.as_deref(), false)
        .await?;
    app.store.flush().await?;
    tracing::info!(user = %user_id, "registered");
    Ok(user_id)
}

/// Registration by an appservice (its `as_token`): any user in its namespace, no password,
/// whatever the server's registration policy.
async fn register_for_appservice(
    app: &App,
    caller: AppserviceCaller,
    body: &register::v3::Request,
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
    if app.accounts.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    app.accounts.create_user(&user_id, None, false).await?;
    app.store.flush().await?;
    tracing::info!(user = %user_id, appservice = %reg.id, "registered by appservice");
    Ok(user_id)
}

pub async fn available(
    app: App,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    let user_id = validate_localpart(&app, &req.body.username)?;
    app.appservices
        .check_exclusive(Kind::User, user_id.as_str(), None)?;
    if app.accounts.user(&user_id)?.is_some() {
        return Err(ApiError::UserInUse("User ID already taken".into()));
    }
    Ok(get_username_availability::v3::Response::new(true))
}

pub async fn login_flows(
    _: App,
    _: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::ApplicationService(ApplicationServiceLoginType::new()),
    ]))
}

pub async fn login(app: App, req: Ruma<login::v3::Request>) -> ApiResult<login::v3::Response> {
    let body = req.body;
    if let LoginInfo::ApplicationService(_) = &body.login_info {
        return login_for_appservice(&app, req.caller, body).await;
    }
    app.limiter.check(Action::LoginIp, &req.ip.to_string())?;
    if !matches!(body.login_info, LoginInfo::Password(_)) {
        return Err(ApiError::Unknown(format!(
            "Unknown login type {}",
            body.login_info.login_type()
        )));
    }
    let creds = Value::Object(body.login_info.data().into_owned());
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
            if let Ok(id) = app.accounts.parse_user_name(name) {
                if let Some(rec) = app.accounts.user(&id)? {
                    let pw = creds
                        .get("password")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if rec.deactivated && Accounts::check_password(&rec, pw) {
                        return Err(ApiError::UserDeactivated);
                    }
                }
            }
            return Err(ApiError::Forbidden("Invalid username or password".into()));
        }
    };
    logged_in(&app, &user_id, body).await
}

/// A device and tokens for a user who has proved who they are.
async fn logged_in(
    app: &App,
    user_id: &UserId,
    body: login::v3::Request,
) -> ApiResult<login::v3::Response> {
    let (device_id, t) = app.accounts.issue_device(
        user_id,
        body.device_id.as_deref().map(|d| d.as_str()),
        body.initial_device_display_name,
        body.refresh_token,
    )?;
    app.store.flush().await?;
    let mut res = login::v3::Response::new(user_id.to_owned(), t.access_token.clone(), device_id);
    // Deprecated, but clients from before r0.4 read it.
    #[allow(deprecated)]
    {
        res.home_server = Some(app.server_name().to_owned());
    }
    res.expires_in = expires(&t);
    res.refresh_token = t.refresh_token;
    Ok(res)
}

/// `m.login.application_service`: a device for a user in the appservice's namespace (how an
/// appservice gets devices of its own to run E2EE with).
async fn login_for_appservice(
    app: &App,
    caller: AppserviceCaller,
    body: login::v3::Request,
) -> ApiResult<login::v3::Response> {
    let reg = caller.require()?;
    let data = body.login_info.data();
    let name = data
        .get("identifier")
        .and_then(|i| i.get("user"))
        .or_else(|| data.get("user"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::MissingParam("identifier.user is required".into()))?;
    let user_id = app.accounts.parse_user_name(name)?;
    if !reg.may_act_as(user_id.as_str(), app.server_name().as_str()) {
        return Err(ApiError::Forbidden(
            "User is not in the application service's namespace".into(),
        ));
    }
    if app.accounts.user(&user_id)?.is_none_or(|r| r.deactivated) {
        return Err(ApiError::Forbidden(
            "Application service has not registered this user".into(),
        ));
    }
    drop(data);
    logged_in(app, &user_id, body).await
}

pub async fn logout(app: App, req: Ruma<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    let s = req.caller;
    app.delete_devices(&s.user_id, &[s.device()?.to_string()])
        .await?;
    Ok(logout::v3::Response::new())
}

pub async fn logout_all(
    app: App,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    let s = req.caller;
    app.delete_all_devices(&s.user_id).await?;
    Ok(logout_all::v3::Response::new())
}

pub async fn refresh(
    app: App,
    req: Ruma<refresh_token::v3::Request>,
) -> ApiResult<refresh_token::v3::Response> {
    let t = app.accounts.refresh(&req.body.refresh_token)?;
    app.store.flush().await?;
    let mut res = refresh_token::v3::Response::new(t.access_token.clone());
    res.expires_in_ms = expires(&t);
    res.refresh_token = t.refresh_token;
    Ok(res)
}

pub async fn whoami(_: App, req: Ruma<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let s = req.caller;
    let mut res = whoami::v3::Response::new(s.user_id, false);
    // An appservice acting without a device has none to report.
    res.device_id = s.device_id;
    Ok(res)
}

pub async fn password(
    app: App,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    let s = req.caller.ok_or(ApiError::MissingToken)?;
    let body = req.body;
    app.uia(
        uia_json(body.auth.as_ref())?,
        PASSWORD_FLOW,
        Some(s.user_id.clone()),
    )
    .await?;
    Accounts::password_policy(&body.new_password)?;
    let mut rec = app
        .accounts
        .user(&s.user_id)?
        .ok_or_else(|| ApiError::Forbidden("unknown user".into()))?;
    let new_password = body.new_password.clone();
    rec.password_hash = Some(
        crate::service::accounts::blocking(move || Accounts::hash_password(&new_password))
            .await??,
    );
    app.accounts.save_user(&s.user_id, &rec)?;
    if body.logout_devices {
        let others: Vec<String> = app
            .accounts
            .devices(&s.user_id)?
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| Some(d.as_str()) != s.device_id.as_deref().map(|d| d.as_str()))
            .collect();
        app.delete_devices(&s.user_id, &others).await?;
    }
    app.store.flush().await?;
    Ok(change_password::v3::Response::new())
}

pub async fn deactivate(
    app: App,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let s = req.caller.ok_or(ApiError::MissingToken)?;
    app.uia(
        uia_json(req.body.auth.as_ref())?,
        PASSWORD_FLOW,
        Some(s.user_id.clone()),
    )
    .await?;
    // Leave every room first, so the account's memberships end while it can still act.
    for (room_id, m) in app.rooms.user_rooms(&s.user_id)? {
        if m.membership == "join" || m.membership == "invite" || m.membership == "knock" {
            let ev = plexus_core::builder::NewEvent {
                kind: "m.room.member".into(),
                content: serde_json::json!({ "membership": "leave" }),
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
        .accounts
        .user(&s.user_id)?
        .ok_or_else(|| ApiError::Forbidden("unknown user".into()))?;
    rec.deactivated = true;
    rec.displayname = None;
    rec.avatar_url = None;
    app.accounts.save_user(&s.user_id, &rec)?;
    app.delete_all_devices(&s.user_id).await?;
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// Lets a client check a registration token before asking for the rest of the form. Limited
/// like registration itself, so it is no faster a way to guess tokens.
pub async fn registration_token_validity(
    app: App,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    app.limiter.check(Action::RegisterIp, &req.ip.to_string())?;
    if app.settings.registration != RegistrationPolicy::Token {
        return Err(ApiError::Forbidden(
            "This server does not use registration tokens".into(),
        ));
    }
    let valid = app.settings.registration_tokens.contains(&req.body.token);
    Ok(check_registration_token_validity::v1::Response::new(valid))
}
