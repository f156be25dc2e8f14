//! Server-side key backups (`/room_keys/...`): versions with opaque auth data, session keys per
//! room, a count and an etag that changes whenever the keys do.

use std::collections::BTreeMap;

use ruma::{
    api::client::backup::{
        add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version, BackupAlgorithm, KeyBackupData, RoomKeyBackup,
    },
    serde::Raw,
    OwnedRoomId, RoomId, UInt, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::{raw_json, Ruma},
    service::{e2ee::backup::BackupVersion, App},
};

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// A version as ruma's responses hold it (`algorithm`, whose JSON carries `auth_data` too;
/// `count`, `etag`, `version`).
type VersionInfo = (Raw<BackupAlgorithm>, UInt, String, String);

fn version_info(n: u64, v: &BackupVersion) -> ApiResult<VersionInfo> {
    let algorithm = raw_json(&json!({ "algorithm": v.algorithm, "auth_data": v.auth_data }))?;
    Ok((
        algorithm,
        UInt::new_saturating(v.count),
        v.etag.to_string(),
        n.to_string(),
    ))
}

#[derive(Deserialize)]
struct VersionBody {
    algorithm: String,
    auth_data: Value,
    version: Option<String>,
}

/// A version's request body: ruma leaves it as raw JSON.
fn version_body(raw: &Raw<BackupAlgorithm>) -> ApiResult<VersionBody> {
    raw.deserialize_as_unchecked()
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

fn check_algorithm(body: &VersionBody) -> ApiResult<()> {
    if body.algorithm != ALGORITHM {
        return Err(ApiError::InvalidParam(format!(
            "unsupported backup algorithm {:?}",
            body.algorithm
        )));
    }
    if !body.auth_data.is_object() {
        return Err(ApiError::BadJson("auth_data must be an object".into()));
    }
    Ok(())
}

/// `POST /room_keys/version`.
pub async fn create_version(
    app: App,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let s = req.caller;
    let body = version_body(&req.body.algorithm)?;
    check_algorithm(&body)?;
    let n = app
        .e2ee
        .create_backup_version(&s.user_id, body.algorithm, body.auth_data)
        .await?;
    app.store.flush().await?;
    Ok(create_backup_version::v3::Response::new(n.to_string()))
}

/// `GET /room_keys/version`: the current backup.
pub async fn current_version(
    app: App,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let s = req.caller;
    match app.e2ee.current_backup(&s.user_id)? {
        Some((n, v)) => {
            let (algorithm, count, etag, version) = version_info(n, &v)?;
            Ok(get_latest_backup_info::v3::Response::new(
                algorithm, count, etag, version,
            ))
        }
        None => Err(ApiError::NotFound("No current backup version".into())),
    }
}

/// `GET /room_keys/version/{version}`.
pub async fn get_version_info(
    app: App,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<get_backup_info::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (n, v) = app.e2ee.backup_version(&s.user_id, &b.version)?;
    let (algorithm, count, etag, version) = version_info(n, &v)?;
    Ok(get_backup_info::v3::Response::new(
        algorithm, count, etag, version,
    ))
}

/// `PUT /room_keys/version/{version}`: new auth data for the same algorithm.
pub async fn update_version(
    app: App,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let body = version_body(&b.algorithm)?;
    let version = b.version;
    let _guard = app.e2ee.backup_lock.lock().await;
    let (n, mut rec) = app.e2ee.backup_version(&s.user_id, &version)?;
    if body.version.as_deref().is_some_and(|v| v != version) {
        return Err(ApiError::InvalidParam(
            "version in the body does not match the path".into(),
        ));
    }
    if body.algorithm != rec.algorithm {
        return Err(ApiError::InvalidParam("Algorithm does not match".into()));
    }
    check_algorithm(&body)?;
    rec.auth_data = body.auth_data;
    app.e2ee.save_backup_version(&s.user_id, n, &rec)?;
    app.store.flush().await?;
    Ok(update_backup_version::v3::Response::new())
}

/// `DELETE /room_keys/version/{version}`: the backup and every key in it.
pub async fn delete_version(
    app: App,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    let (s, version) = (req.caller, req.body.version);
    app.e2ee.delete_backup_version(&s.user_id, &version).await?;
    app.store.flush().await?;
    Ok(delete_backup_version::v3::Response::new())
}

/// A session's key data as ruma hands it over, as the JSON it is stored as.
fn key_value(raw: &Raw<KeyBackupData>) -> ApiResult<Value> {
    raw.deserialize_as_unchecked()
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

/// A session's key data has the fields that decide which of two copies is kept.
fn check_key_data(k: &Value) -> ApiResult<()> {
    let ok = k["first_message_index"].is_u64()
        && k["forwarded_count"].is_u64()
        && k["is_verified"].is_boolean()
        && k["session_data"].is_object();
    if !ok {
        return Err(ApiError::BadJson(
            "key data needs first_message_index, forwarded_count, is_verified and session_data"
                .into(),
        ));
    }
    Ok(())
}

/// A version's etag and count, as the responses that change keys answer them.
fn etag_count((etag, count): (u64, u64)) -> (String, UInt) {
    (etag.to_string(), UInt::new_saturating(count))
}

/// Store `{room: {session: key}}` in the current version; answers its etag and count.
async fn put_sessions(
    app: &App,
    user: &UserId,
    version: &str,
    rooms: Vec<(OwnedRoomId, Vec<(String, Value)>)>,
) -> ApiResult<(String, UInt)> {
    for (_, sessions) in &rooms {
        for (_, k) in sessions {
            check_key_data(k)?;
        }
    }
    let written = app.e2ee.put_backup_keys(user, version, rooms).await?;
    app.store.flush().await?;
    Ok(etag_count(written))
}

/// A room's sessions as ruma's requests and responses hold them.
type Sessions = BTreeMap<String, Raw<KeyBackupData>>;

fn sessions_of(sessions: &Sessions) -> ApiResult<Vec<(String, Value)>> {
    sessions
        .iter()
        .map(|(s, k)| Ok((s.clone(), key_value(k)?)))
        .collect()
}

/// `PUT /room_keys/keys`.
pub async fn put_all(
    app: App,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let rooms = b
        .rooms
        .iter()
        .map(|(r, backup)| Ok((r.clone(), sessions_of(&backup.sessions)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    let (etag, count) = put_sessions(&app, &s.user_id, &b.version, rooms).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

/// `PUT /room_keys/keys/{roomId}`.
pub async fn put_room(
    app: App,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let sessions = sessions_of(&b.sessions)?;
    let rooms = vec![(b.room_id, sessions)];
    let (etag, count) = put_sessions(&app, &s.user_id, &b.version, rooms).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`.
pub async fn put_session(
    app: App,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let key = key_value(&b.session_data)?;
    let rooms = vec![(b.room_id, vec![(b.session_id, key)])];
    let (etag, count) = put_sessions(&app, &s.user_id, &b.version, rooms).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

/// Stored sessions of a version (all rooms', or one room's), by room, as ruma holds them.
fn read_sessions(
    app: &App,
    user: &UserId,
    n: u64,
    room: Option<&RoomId>,
) -> ApiResult<BTreeMap<String, Sessions>> {
    let mut rooms: BTreeMap<String, Sessions> = BTreeMap::new();
    for (r, sessions) in app.e2ee.backup_keys(user, n, room)? {
        let entry = rooms.entry(r).or_default();
        for (s, key) in sessions {
            entry.insert(s, raw_json(&key)?);
        }
    }
    Ok(rooms)
}

/// `GET /room_keys/keys`.
pub async fn get_all(
    app: App,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (n, _) = app.e2ee.backup_version(&s.user_id, &b.version)?;
    let mut rooms = BTreeMap::new();
    for (r, sessions) in read_sessions(&app, &s.user_id, n, None)? {
        let room = OwnedRoomId::try_from(r.as_str())
            .map_err(|e| ApiError::Internal(format!("stored room id {r:?}: {e}")))?;
        rooms.insert(room, RoomKeyBackup::new(sessions));
    }
    Ok(get_backup_keys::v3::Response::new(rooms))
}

/// `GET /room_keys/keys/{roomId}`.
pub async fn get_room(
    app: App,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (n, _) = app.e2ee.backup_version(&s.user_id, &b.version)?;
    let sessions = read_sessions(&app, &s.user_id, n, Some(&*b.room_id))?
        .remove(b.room_id.as_str())
        .unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`.
pub async fn get_session(
    app: App,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (n, _) = app.e2ee.backup_version(&s.user_id, &b.version)?;
    let key = app
        .e2ee
        .backup_key(&s.user_id, n, &b.room_id, &b.session_id)?
        .ok_or_else(|| ApiError::NotFound("No room key found".into()))?;
    let key_data = raw_json(&key)?;
    Ok(get_backup_keys_for_session::v3::Response::new(key_data))
}

/// Delete keys from a version (which need not be current); answers the new etag and count.
async fn delete_keys(
    app: &App,
    user: &UserId,
    version: &str,
    room: Option<&str>,
    session: Option<&str>,
) -> ApiResult<(String, UInt)> {
    let written = app
        .e2ee
        .delete_backup_keys(user, version, room, session)
        .await?;
    app.store.flush().await?;
    Ok(etag_count(written))
}

/// `DELETE /room_keys/keys`.
pub async fn delete_all(
    app: App,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (etag, count) = delete_keys(&app, &s.user_id, &b.version, None, None).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

/// `DELETE /room_keys/keys/{roomId}`.
pub async fn delete_room(
    app: App,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let room = Some(b.room_id.as_str());
    let (etag, count) = delete_keys(&app, &s.user_id, &b.version, room, None).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`.
pub async fn delete_session(
    app: App,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (room, session) = (Some(b.room_id.as_str()), Some(b.session_id.as_str()));
    let (etag, count) = delete_keys(&app, &s.user_id, &b.version, room, session).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        etag, count,
    ))
}
