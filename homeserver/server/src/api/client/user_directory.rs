//! User directory search: users who share a room with the searcher, and members of public,
//! world-readable and published rooms (spec v1.15), matched on user id and display name.

use ruma::{
    api::client::user_directory::search_users::{self, v3::User},
    OwnedMxcUri,
};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::Ruma,
    service::App,
};

/// A remote user's name and avatar as their member event in a room they are joined to here
/// says (their server's profile is not asked on every search).
fn remote_profile(app: &App, user: &ruma::UserId) -> ApiResult<(Option<String>, Option<String>)> {
    for (room_id, m) in app.rooms.user_rooms(user)? {
        if m.membership != "join" {
            continue;
        }
        let Some(room) = app.rooms.room(&room_id)? else {
            continue;
        };
        let hash = app
            .rooms
            .current_state(room.short)?
            .map(|s| s.0)
            .unwrap_or(0);
        if let Some(ev) = app.rooms.state_json(hash, "m.room.member", user.as_str())? {
            let field = |k: &str| ev["content"][k].as_str().map(str::to_owned);
            return Ok((field("displayname"), field("avatar_url")));
        }
    }
    Ok((None, None))
}

pub async fn search(
    app: App,
    req: Ruma<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(usize::MAX)
        .min(app.settings.max_page);
    let term = body.search_term.trim().to_lowercase();
    if term.is_empty() {
        return Err(ApiError::InvalidParam(
            "search_term must not be empty".into(),
        ));
    }
    let mut hits = vec![];
    // Everyone the searcher may find: room-mates, then members of public rooms (shared by
    // all searches, so not copied).
    let mates = app.presence_audience(&s.user_id)?;
    let public = app.publicly_visible_users()?;
    let others = public.iter().filter(|u| !mates.contains(*u));
    for user in mates.iter().chain(others) {
        let (name, avatar) = if app.is_local(user) {
            let rec = app.accounts.user(user)?;
            if rec.as_ref().is_some_and(|r| r.deactivated) {
                continue;
            }
            (
                rec.as_ref().and_then(|r| r.displayname.clone()),
                rec.as_ref().and_then(|r| r.avatar_url.clone()),
            )
        } else {
            remote_profile(&app, user)?
        };
        let id_match = user.as_str().to_lowercase().contains(&term);
        let name_match = name
            .as_ref()
            .is_some_and(|n| n.to_lowercase().contains(&term));
        if !(id_match || name_match) {
            continue;
        }
        // Prefix matches first, then alphabetical.
        let prefix = user.localpart().to_lowercase().starts_with(&term)
            || name
                .as_ref()
                .is_some_and(|n| n.to_lowercase().starts_with(&term));
        hits.push((!prefix, user.clone(), name, avatar));
    }
    hits.sort();
    let limited = hits.len() > limit;
    let results: Vec<User> = hits
        .into_iter()
        .take(limit)
        .map(|(_, user, name, avatar)| {
            let mut u = User::new(user);
            u.display_name = name;
            u.avatar_url = avatar.map(OwnedMxcUri::from);
            u
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited))
}
