//! Server-side key backups (`/room_keys/...`): versions with opaque auth data, session keys per
//! room, a count and an etag that changes whenever the keys do.

use std::collections::BTreeMap;

use plexus_store::{schema, Batch, First};
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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    error::{ApiError, ApiResult},
    http::ruma::{raw_json, Ruma},
    service::{App, Services},
};

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

#[derive(Clone, Serialize, Deserialize)]
struct Version {
    algorithm: String,
    auth_data: Value,
    etag: u64,
    count: u64,
    #[serde(default)]
    deleted: bool,
}

/// Write a version record with the rest of `b`, durably.
async fn save_version(
    app: &App,
    user: &UserId,
    n: u64,
    rec: &Version,
    mut b: Batch,
) -> ApiResult<()> {
    schema::USER_VERSION__BACKUP.put(&mut b, (user.as_str(), n), rec)?;
    app.store.commit(b)?;
    app.store.flush().await?;
    Ok(())
}

/// Versions are numbers here; anything else names no backup.
fn parse_version(v: &str) -> Option<u64> {
    v.parse().ok()
}

/// The newest version ever created (deleted or not), and the newest live one.
fn latest(app: &Services, user: &UserId) -> ApiResult<(u64, Option<(u64, Version)>)> {
    let mut newest = 0;
    let mut live = None;
    for item in schema::USER_VERSION__BACKUP
        .prefix::<First<1>, Version>(&app.store.kv, (user.as_str(),))
        .rev()
    {
        let ((_, n), rec) = item?;
        newest = newest.max(n);
        if !rec.deleted {
            live = Some((n, rec));
            break;
        }
    }
    Ok((newest, live))
}

fn get_version(app: &Services, user: &UserId, v: &str) -> ApiResult<(u64, Version)> {
    let not_found = || ApiError::NotFound("Unknown backup version".into());
    let n = parse_version(v).ok_or_else(not_found)?;
    let rec: Version = schema::USER_VERSION__BACKUP
        .get(&app.store.kv, (user.as_str(), n))?
        .ok_or_else(not_found)?;
    if rec.deleted {
        return Err(not_found());
    }
    Ok((n, rec))
}

/// A version as ruma's responses hold it (`algorithm`, whose JSON carries `auth_data` too;
/// `count`, `etag`, `version`).
type VersionInfo = (Raw<BackupAlgorithm>, UInt, String, String);

fn version_info(n: u64, v: &Version) -> ApiResult<VersionInfo> {
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
    let _guard = app.e2ee.backup_lock.lock().await;
    let (newest, _) = latest(&app, &s.user_id)?;
    let n = newest + 1;
    let rec = Version {
        algorithm: body.algorithm,
        auth_data: body.auth_data,
        etag: 0,
        count: 0,
        deleted: false,
    };
    save_version(&app, &s.user_id, n, &rec, Batch::default()).await?;
    Ok(create_backup_version::v3::Response::new(n.to_string()))
}

/// `GET /room_keys/version`: the current backup.
pub async fn current_version(
    app: App,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let s = req.caller;
    match latest(&app, &s.user_id)?.1 {
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
    let (n, v) = get_version(&app, &s.user_id, &b.version)?;
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
    let (n, mut rec) = get_version(&app, &s.user_id, &version)?;
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
    save_version(&app, &s.user_id, n, &rec, Batch::default()).await?;
    Ok(update_backup_version::v3::Response::new())
}

/// `DELETE /room_keys/version/{version}`: the backup and every key in it.
pub async fn delete_version(
    app: App,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    let (s, version) = (req.caller, req.body.version);
    let _guard = app.e2ee.backup_lock.lock().await;
    let (n, mut rec) = get_version(&app, &s.user_id, &version)?;
    let mut b = Batch::default();
    delete_sessions(&app, &s.user_id, n, None, None, &mut b)?;
    rec.deleted = true;
    rec.count = 0;
    save_version(&app, &s.user_id, n, &rec, b).await?;
    Ok(delete_backup_version::v3::Response::new())
}

/// Delete stored sessions of a version (all, one room's, or one); answers how many.
fn delete_sessions(
    app: &Services,
    user: &UserId,
    n: u64,
    room: Option<&str>,
    session: Option<&str>,
    b: &mut Batch,
) -> ApiResult<u64> {
    let keys = schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY;
    let kv = &app.store.kv;
    let user = user.as_str();
    if let (Some(r), Some(s)) = (room, session) {
        let there = keys.contains(kv, (user, n, r, s))?;
        if there {
            keys.delete(b, (user, n, r, s));
        }
        return Ok(u64::from(there));
    }
    type Rows = Vec<((String, u64, String, String), serde::de::IgnoredAny)>;
    let rows: Rows = match room {
        Some(r) => keys
            .prefix::<First<3>, _>(kv, (user, n, r))
            .collect::<Result<_, _>>()?,
        None => keys
            .prefix::<First<2>, _>(kv, (user, n))
            .collect::<Result<_, _>>()?,
    };
    for ((_, _, r, s), _) in &rows {
        keys.delete(b, (user, n, r, s));
    }
    Ok(rows.len() as u64)
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

/// Whether `new` should replace `old`: verified beats unverified, then the lower first
/// message index, then the lower forwarded count.
fn better(new: &Value, old: &Value) -> bool {
    let key = |k: &Value| {
        (
            !k["is_verified"].as_bool().unwrap_or(false),
            k["first_message_index"].as_u64().unwrap_or(u64::MAX),
            k["forwarded_count"].as_u64().unwrap_or(u64::MAX),
        )
    };
    key(new) < key(old)
}

/// A version's etag and count, as the responses that change keys answer them.
fn etag_count(rec: &Version) -> (String, UInt) {
    (rec.etag.to_string(), UInt::new_saturating(rec.count))
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
    let _guard = app.e2ee.backup_lock.lock().await;
    let (_, live) = latest(app, user)?;
    let Some((current, mut rec)) = live else {
        return Err(ApiError::NotFound("No current backup version".into()));
    };
    if parse_version(version) != Some(current) {
        return Err(ApiError::WrongRoomKeysVersion {
            current: Some(current.to_string()),
        });
    }
    let mut b = Batch::default();
    let mut changed = false;
    for (room, sessions) in rooms {
        for (session, k) in sessions {
            let row = (user.as_str(), current, room.as_str(), session.as_str());
            let old: Option<Value> =
                schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY.get(&app.store.kv, row)?;
            let keep = match old {
                Some(old) => better(&k, &old),
                None => {
                    rec.count += 1;
                    true
                }
            };
            if keep {
                schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY.put(&mut b, row, &k)?;
                changed = true;
            }
        }
    }
    if changed {
        rec.etag += 1;
        save_version(app, user, current, &rec, b).await?;
    }
    Ok(etag_count(&rec))
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

/// Stored sessions of a version (all rooms', or one room's), by room.
fn read_sessions(
    app: &Services,
    user: &UserId,
    n: u64,
    room: Option<&RoomId>,
) -> ApiResult<BTreeMap<String, Sessions>> {
    let keys = schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY;
    let kv = &app.store.kv;
    let user = user.as_str();
    let rows: Box<dyn Iterator<Item = _>> = match room {
        Some(r) => Box::new(keys.prefix::<First<3>, Value>(kv, (user, n, r.as_str()))),
        None => Box::new(keys.prefix::<First<2>, Value>(kv, (user, n))),
    };
    let mut rooms: BTreeMap<String, Sessions> = BTreeMap::new();
    for item in rows {
        let ((_, _, r, s), key) = item?;
        rooms.entry(r).or_default().insert(s, raw_json(&key)?);
    }
    Ok(rooms)
}

/// `GET /room_keys/keys`.
pub async fn get_all(
    app: App,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let (s, b) = (req.caller, req.body);
    let (n, _) = get_version(&app, &s.user_id, &b.version)?;
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
    let (n, _) = get_version(&app, &s.user_id, &b.version)?;
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
    let (n, _) = get_version(&app, &s.user_id, &b.version)?;
    let row = (
        s.user_id.as_str(),
        n,
        b.room_id.as_str(),
        b.session_id.as_str(),
    );
    let key = schema::USER_VERSION_ROOM_SESSION__BACKUP_KEY
        .get::<Value>(&app.store.kv, row)?
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
    let _guard = app.e2ee.backup_lock.lock().await;
    let (n, mut rec) = get_version(app, user, version)?;
    let mut b = Batch::default();
    let removed = delete_sessions(app, user, n, room, session, &mut b)?;
    if removed > 0 {
        rec.count = rec.count.saturating_sub(removed);
        rec.etag += 1;
        save_version(app, user, n, &rec, b).await?;
    }
    Ok(etag_count(&rec))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_copies_win() {
        let k = |v: bool, i: u64, f: u64| json!({"is_verified": v, "first_message_index": i, "forwarded_count": f});
        assert!(better(&k(true, 9, 9), &k(false, 0, 0)));
        assert!(!better(&k(false, 0, 0), &k(true, 9, 9)));
        assert!(better(&k(false, 1, 9), &k(false, 2, 0)));
        assert!(better(&k(false, 1, 0), &k(false, 1, 1)));
        assert!(!better(&k(false, 1, 1), &k(false, 1, 1)));
    }
}
