//! Every table, declared once with its key parts and value codec. A name reads `KEY_VALUE`:
//! `USER_DEVICE__DEVICE` maps a user and device to the device record. The numbered [`Table`]
//! under each is its on-disk prefix and never changes.
//!
//! Values in [`Json`] are serde records whose type the owning service names where it reads
//! them; the others have a fixed layout.

use crate::{
    codec::{Bytes, Json, PduJson, Raw, Str, U64List, Unit, U32, U64, U8},
    map::Map,
    Table,
};

/// Server-wide settings and counters (`count`, `schema_version`, the signing key, migration
/// marks), by name.
pub const META: Map<Bytes, Raw> = Map::new(Table::Meta);

// Rooms, events and state.
/// Event id → short event id.
pub const EVENTID__SHORT: Map<Str, U64> = Map::new(Table::EventIdShort);
/// Short event id → event id.
pub const SHORT__EVENTID: Map<U64, Str> = Map::new(Table::ShortEventId);
/// Event type, state key → short state key.
pub const TYPE_STATEKEY__SHORT: Map<(Str, Str), U64> = Map::new(Table::StateKeyShort);
/// Short state key → event type, state key.
pub const SHORT__TYPE_STATEKEY: Map<U64, (Str, Str)> = Map::new(Table::ShortStateKey);
/// Room id → short room id.
pub const ROOMID__SHORT: Map<Str, U64> = Map::new(Table::RoomIdShort);
/// Short room id → room id.
pub const SHORT__ROOMID: Map<U64, Str> = Map::new(Table::ShortRoomId);
/// Short event id → the stored PDU.
pub const EVENT__PDU: Map<U64, PduJson> = Map::new(Table::Pdu);
/// Short room id, stream position → short event id: the room's timeline.
pub const ROOM_COUNT__EVENT: Map<(U64, U64), U64> = Map::new(Table::Timeline);
/// Short event id → short room id, stream position.
pub const EVENT__ROOM_COUNT: Map<U64, (U64, U64)> = Map::new(Table::EventPosition);
/// Snapshot hash → state delta (its layout is [`crate::state`]'s).
pub const STATEHASH__DELTA: Map<U64, Raw> = Map::new(Table::StateSnapshot);
/// Short event id → state snapshot before it, state snapshot of the room right after it.
pub const EVENT__STATE_BEFORE_AFTER: Map<U64, (U64, U64)> = Map::new(Table::EventState);
/// Short room id → current state snapshot hash, its delta depth.
pub const ROOM__STATEHASH_DEPTH: Map<U64, (U64, U32)> = Map::new(Table::RoomState);
/// Short room id, short event id → (): the room's forward extremities.
pub const ROOM_EVENT__EXTREMITY: Map<(U64, U64), Unit> = Map::new(Table::Extremity);
/// Short room id → room metadata record.
pub const ROOM__META: Map<U64, Json> = Map::new(Table::RoomMeta);
/// Short event id → device id, transaction id of the local send that created it.
pub const EVENT__DEVICE_TXN: Map<U64, (Str, Str)> = Map::new(Table::EventTxn);
/// User, device, transaction id → event id (empty for a to-device send).
pub const USER_DEVICE_TXN__EVENTID: Map<(Str, Str, Str), Str> = Map::new(Table::TxnId);
/// Short event id → (): soft-failed on receipt (stored with its state, never shown).
pub const EVENT__SOFT_FAILED: Map<U64, Unit> = Map::new(Table::SoftFailed);
/// Short event id → (): the far end of a gap, stored with another server's word on its state.
pub const EVENT__GAP_POINT: Map<U64, Unit> = Map::new(Table::GapPoint);
/// Short room id, backfill sequence (larger is older) → short event id.
pub const ROOM_SEQ__HISTORY_EVENT: Map<(U64, U64), U64> = Map::new(Table::History);
/// Short event id → its backfill sequence.
pub const EVENT__HISTORY_SEQ: Map<U64, U64> = Map::new(Table::HistoryEvent);
/// Stream position → short event id: every timeline event in stream order across rooms.
pub const COUNT__EVENT: Map<U64, U64> = Map::new(Table::EventStream);
/// Stream position → short event ids fetched by backfill, for the search indexer.
pub const COUNT__BACKFILLED_EVENTS: Map<U64, U64List> = Map::new(Table::SearchBackfill);

// Membership.
/// User id, room id → the user's membership record.
pub const USER_ROOM__MEMBERSHIP: Map<(Str, Str), Json> = Map::new(Table::UserRoom);
/// Short room id, user id → membership (`join`, `invite`, ...).
pub const ROOM_USER__MEMBERSHIP: Map<(U64, Str), Str> = Map::new(Table::RoomMember);
/// Short room id, stream position, user id → membership: who changed membership when.
pub const ROOM_COUNT_USER__MEMBERSHIP: Map<(U64, U64, Str), Str> =
    Map::new(Table::RoomMemberChange);
/// User id, room id → the stripped state another server sent with an invite or knock.
pub const USER_ROOM__STRIPPED_STATE: Map<(Str, Str), Json> = Map::new(Table::StrippedState);

// Relations, threads and edits.
/// Short room id, parent event id, stream position → short id of an event relating to it.
pub const ROOM_PARENT_COUNT__RELATION: Map<(U64, Str, U64), U64> = Map::new(Table::Relation);
/// Short room id, stream position of the thread's latest event → thread root's short id.
pub const ROOM_COUNT__THREAD_ROOT: Map<(U64, U64), U64> = Map::new(Table::ThreadActivity);
/// Thread root → latest reply's stream position, latest reply's short id, reply count.
pub const ROOT__THREAD_LATEST: Map<U64, (U64, U64, U64)> = Map::new(Table::ThreadLatest);
/// Thread root, user id → (): the user replied in the thread.
pub const ROOT_USER__PARTICIPANT: Map<(U64, Str), Unit> = Map::new(Table::ThreadParticipant);
/// Short event id → short id of its latest valid edit.
pub const EVENT__LATEST_EDIT: Map<U64, U64> = Map::new(Table::LatestEdit);
/// Short event id, stream position → short id of an event that references it.
pub const EVENT_COUNT__REFERENCE: Map<(U64, U64), U64> = Map::new(Table::Reference);

// Accounts and devices.
/// User id → account record.
pub const USER__ACCOUNT: Map<Str, Json> = Map::new(Table::User);
/// Access token hash → session.
pub const TOKEN__SESSION: Map<Bytes, Json> = Map::new(Table::AccessToken);
/// Refresh token hash → session.
pub const REFRESH_TOKEN__SESSION: Map<Bytes, Json> = Map::new(Table::RefreshToken);
/// OpenID token hash → the user it vouches for and its expiry.
pub const OPENID_TOKEN__GRANT: Map<Bytes, Json> = Map::new(Table::OpenId);
/// User id, device id → device record.
pub const USER_DEVICE__DEVICE: Map<(Str, Str), Json> = Map::new(Table::Device);
/// User id, device id → when and from where the device last made a request.
pub const USER_DEVICE__LAST_SEEN: Map<(Str, Str), Json> = Map::new(Table::DeviceSeen);
/// User id, room id (empty: global), event type → account data.
pub const USER_ROOM_TYPE__ACCOUNT_DATA: Map<(Str, Str, Str), Json> = Map::new(Table::AccountData);
/// User id, filter id → filter.
pub const USER_FILTERID__FILTER: Map<(Str, Str), Json> = Map::new(Table::Filter);
/// User id → presence record.
pub const USER__PRESENCE: Map<Str, Json> = Map::new(Table::Presence);
/// Report id → report, for server admins.
pub const REPORTID__REPORT: Map<U64, Json> = Map::new(Table::Report);

// Directory.
/// Room alias → room id.
pub const ALIAS__ROOMID: Map<Str, Str> = Map::new(Table::Alias);
/// Room id, alias → user id of whoever created the alias.
pub const ROOM_ALIAS__CREATOR: Map<(Str, Str), Str> = Map::new(Table::RoomAlias);
/// Room id → (): published in the room directory.
pub const ROOMID__PUBLISHED: Map<Str, Unit> = Map::new(Table::PublicRoom);
/// Appservice id, network id, room id → (): in that network's directory.
pub const APPSERVICE_NETWORK_ROOM__PUBLISHED: Map<(Str, Str, Str), Unit> =
    Map::new(Table::NetworkRoom);

// Ephemeral data.
/// Short room id, user id, receipt type, thread id → receipt.
pub const ROOM_USER_TYPE_THREAD__RECEIPT: Map<(U64, Str, Str, Str), Json> =
    Map::new(Table::Receipt);

// Federation.
/// Server name → its known signing keys.
pub const SERVER__KEYS: Map<Str, Json> = Map::new(Table::ServerKeys);
/// Destination, stream position → short id of a PDU still to send there.
pub const DEST_COUNT__PDU: Map<(Str, U64), U64> = Map::new(Table::Outbox);
/// Destination, stream position, sequence → an EDU that must not be lost.
pub const DEST_COUNT_SEQ__EDU: Map<(Str, U64, U32), Json> = Map::new(Table::OutboxEdu);

// Media.
/// Origin server, media id → media record.
pub const ORIGIN_MEDIA__RECORD: Map<(Str, Str), Json> = Map::new(Table::Media);
/// Origin server, media id, width, height, method → thumbnail record.
pub const ORIGIN_MEDIA_SIZE_METHOD__THUMBNAIL: Map<(Str, Str, U32, U32, Str), Json> =
    Map::new(Table::MediaThumbnail);
/// User id, media id → expiry (ms) of an id reserved and not yet uploaded.
pub const USER_MEDIA__PENDING_EXPIRY: Map<(Str, Str), U64> = Map::new(Table::MediaPending);
/// User id → bytes of media they uploaded.
pub const USER__MEDIA_BYTES: Map<Str, U64> = Map::new(Table::MediaUsage);

// Push.
/// User id, short room id, stream position → highlight flag, thread root (empty: main
/// timeline): a notification not read yet.
pub const USER_ROOM_COUNT__UNREAD: Map<(Str, U64, U64), (U8, Str)> = Map::new(Table::PushUnread);
/// User id, stream position → notification.
pub const USER_COUNT__NOTIFICATION: Map<(Str, U64), Json> = Map::new(Table::PushNotification);
/// User id, app id, pushkey → pusher.
pub const USER_APP_PUSHKEY__PUSHER: Map<(Str, Str, Str), Json> = Map::new(Table::Pusher);
/// User id, app id, pushkey → stream position of the last notification delivered.
pub const USER_APP_PUSHKEY__DELIVERED: Map<(Str, Str, Str), U64> = Map::new(Table::PusherProgress);

// End-to-end encryption.
/// User id, device id → the device's signed identity keys.
pub const USER_DEVICE__KEYS: Map<(Str, Str), Json> = Map::new(Table::DeviceKeys);
/// User id, device id, algorithm, key id → one-time key.
pub const USER_DEVICE_ALG_KEYID__ONE_TIME_KEY: Map<(Str, Str, Str, Str), Json> =
    Map::new(Table::OneTimeKey);
/// User id, device id, algorithm, upload sequence, key id → (): the order one-time keys are
/// handed out in.
pub const USER_DEVICE_ALG_SEQ_KEYID__QUEUED: Map<(Str, Str, Str, U64, Str), Unit> =
    Map::new(Table::OneTimeKeyQueue);
/// User id, device id, algorithm → fallback key.
pub const USER_DEVICE_ALG__FALLBACK_KEY: Map<(Str, Str, Str), Json> = Map::new(Table::FallbackKey);
/// User id, device id, stream position → to-device message.
pub const USER_DEVICE_COUNT__TO_DEVICE: Map<(Str, Str, U64), Json> = Map::new(Table::ToDevice);
/// Stream position → user id whose device list changed then.
pub const COUNT__DEVICE_LIST_USER: Map<U64, Str> = Map::new(Table::DeviceListStream);
/// User id → stream position of the user's latest device list change.
pub const USER__DEVICE_LIST_COUNT: Map<Str, U64> = Map::new(Table::DeviceListLatest);
/// Remote user id → their devices and cross-signing keys as last fetched.
pub const USER__REMOTE_DEVICES: Map<Str, Json> = Map::new(Table::RemoteDevices);
/// User id, usage → cross-signing key.
pub const USER_USAGE__CROSS_SIGNING_KEY: Map<(Str, Str), Json> = Map::new(Table::CrossSigningKey);
/// Signer, target user, key id → the signer's signatures on the target's master key.
pub const SIGNER_TARGET_KEYID__SIGNATURES: Map<(Str, Str, Str), Json> =
    Map::new(Table::CrossSignature);
/// User id, version → key backup version.
pub const USER_VERSION__BACKUP: Map<(Str, U64), Json> = Map::new(Table::BackupVersion);
/// User id, version, room id, session id → backed-up session key.
pub const USER_VERSION_ROOM_SESSION__BACKUP_KEY: Map<(Str, U64, Str, Str), Json> =
    Map::new(Table::BackupKey);

// Application services.
/// Appservice id → its sender's progress.
pub const APPSERVICE__SENDER_STATE: Map<Str, Json> = Map::new(Table::AppserviceState);
/// Appservice id, stream position, sequence → a to-device message for one of its users.
pub const APPSERVICE_COUNT_SEQ__TO_DEVICE: Map<(Str, U64, U32), Json> =
    Map::new(Table::AppserviceToDevice);
