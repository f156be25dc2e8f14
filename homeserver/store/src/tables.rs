/// Tables of the keyspace. The discriminant is the key prefix: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    Meta = 0,
    /// event id → short event id
    EventIdShort = 1,
    /// short event id → event id
    ShortEventId = 2,
    /// `type \0 state_key` → short state key
    StateKeyShort = 3,
    /// short state key → `type \0 state_key`
    ShortStateKey = 4,
    /// room id → short room id
    RoomIdShort = 5,
    /// short room id → room id
    ShortRoomId = 6,
    /// short event id → stored PDU JSON
    Pdu = 7,
    /// short room id ‖ count → short event id
    Timeline = 8,
    /// short event id → short room id ‖ count
    EventPosition = 9,
    /// short state hash → state delta
    StateSnapshot = 10,
    /// short event id → state hash before ‖ state hash after
    EventState = 11,
    /// short room id → current state hash
    RoomState = 12,
    /// short room id ‖ short event id → (forward extremity)
    Extremity = 13,
    /// user id → account JSON
    User = 14,
    /// access token → session JSON
    AccessToken = 15,
    /// user id \0 device id → device JSON
    Device = 16,
    /// user \0 device \0 txn id → event id
    TxnId = 17,
    /// user id \0 room id → membership JSON
    UserRoom = 18,
    /// short room id ‖ user id → membership
    RoomMember = 19,
    /// user \0 room (or empty) \0 type → account data JSON
    AccountData = 20,
    /// user \0 filter id → filter JSON
    Filter = 21,
    /// room alias → room id
    Alias = 22,
    /// short room id → room metadata JSON
    RoomMeta = 23,
    /// refresh token → session JSON
    RefreshToken = 24,
    /// room id → () for rooms published in the directory
    PublicRoom = 25,
    /// short event id → device id \0 txn id of the local send that created it
    EventTxn = 26,
    /// short room id ‖ user id \0 receipt type \0 thread id → receipt JSON
    Receipt = 27,
    /// user id → presence JSON
    Presence = 28,
    /// room id \0 alias → user id of whoever created the alias
    RoomAlias = 29,
    /// OpenID access token → `{user_id, expires_at}`
    OpenId = 30,
    /// report id (unique id, big-endian) → report JSON, for server admins
    Report = 31,
    /// parent event id \0 count → short event id of an event relating to it
    Relation = 32,
    /// server name → its known signing keys and latest key response JSON
    ServerKeys = 33,
    /// destination \0 count → short event id of a PDU still to send there
    Outbox = 34,
    /// user id \0 room id → `{event_id, events}`: the stripped state another server sent with
    /// an invite (or answered to a knock) for a room this server is not in
    StrippedState = 35,
    /// short room id, seq (big-endian; larger is older) → short event id of an event from
    /// before the room's timeline here, fetched by backfill
    History = 36,
    /// short event id → its History seq (big-endian), so an event is placed in history once
    HistoryEvent = 37,
    /// origin server \0 media id → media record JSON (content digest, type, filename; for a
    /// reserved id not yet uploaded, who reserved it and until when)
    Media = 38,
    /// origin server \0 media id \0 width, height (big-endian u32), method → thumbnail JSON
    MediaThumbnail = 39,
    /// user id \0 media id → expiry (big-endian ms) of an id reserved and not yet uploaded
    MediaPending = 40,
    /// user id \0 short room id, count (big-endian) → highlight flag byte, then the thread
    /// root's event id (empty: main timeline): a notification the user has not read yet
    PushUnread = 41,
    /// user id \0 count (big-endian) → notification JSON (room, short event id, actions, ts)
    PushNotification = 42,
    /// user id \0 app id \0 pushkey → pusher JSON
    Pusher = 43,
    /// user id \0 app id \0 pushkey → count (big-endian) of the last notification delivered
    PusherProgress = 44,
    /// short room id, count of the thread's latest event (big-endian) → root's short event id;
    /// rows whose count is no longer the thread's latest are stale and skipped
    ThreadActivity = 45,
    /// root's short event id → latest reply's count, latest reply's short id, reply count
    /// (each big-endian u64)
    ThreadLatest = 46,
    /// root's short event id ‖ user id → (): the user replied in the thread
    ThreadParticipant = 47,
    /// short event id → short id of its latest valid `m.replace` edit
    LatestEdit = 48,
    /// short event id, count (big-endian) → short id of an event that `m.reference`s it
    Reference = 49,
    /// user id \0 device id → the device's signed identity keys, with signatures added later
    DeviceKeys = 50,
    /// user id \0 device id \0 algorithm \0 key id → one-time key JSON, claimed at most once
    OneTimeKey = 51,
    /// user id \0 device id \0 algorithm → `{key_id, key, used}`: the device's fallback key
    FallbackKey = 52,
    /// user id \0 device id \0 count (big-endian) → to-device message JSON, kept until the
    /// device syncs past it
    ToDevice = 53,
    /// count (big-endian) → user id whose device list (or cross-signing keys) changed then;
    /// one row per user, the latest
    DeviceListStream = 54,
    /// user id → count (big-endian) of the user's latest device list change: the stream id
    /// (and next `prev_id`) of a local user's `m.device_list_update` EDUs
    DeviceListLatest = 55,
    /// remote user id → their devices and cross-signing keys as last fetched, kept current by
    /// their server's EDUs while a local user shares a room with them
    RemoteDevices = 56,
    /// user id \0 usage (`master`, `self_signing`, `user_signing`) → cross-signing key JSON
    CrossSigningKey = 57,
    /// signer \0 target user \0 key id → signatures one user made on another user's master
    /// key, shown only to the signer
    CrossSignature = 58,
    /// user id \0 version (big-endian) → key backup version JSON (deleted ones stay, so a
    /// version number is never reused)
    BackupVersion = 59,
    /// user id \0 version (big-endian) ‖ room id \0 session id → backed-up session key JSON
    BackupKey = 60,
    /// destination \0 count (big-endian) ‖ seq (big-endian u32) → an EDU that must not be lost
    /// (to-device messages, device list updates), sent like the PDU outbox
    OutboxEdu = 61,
    /// short room id ‖ count (big-endian) ‖ user id → membership: who changed membership when,
    /// so a sync can tell which device lists it must report as changed or left
    RoomMemberChange = 62,
    /// count (big-endian) → short event id: every event placed in a room timeline, in stream
    /// order across rooms, for the consumers that follow the write path (appservice senders)
    EventStream = 63,
    /// appservice id → its sender's progress JSON: stream position delivered up to, next
    /// transaction id, and the transaction in flight (resent as is after a restart)
    AppserviceState = 64,
    /// appservice id \0 count (big-endian) ‖ seq (big-endian u32) → a to-device message for
    /// one of its users' devices, delivered in a transaction (MSC2409) instead of a sync
    AppserviceToDevice = 65,
    /// appservice id \0 network id \0 room id → (): a room in that network's directory
    NetworkRoom = 66,
    /// count (big-endian) → short event ids (8 bytes each): events fetched by backfill, which
    /// have no place on the event stream, for the search indexer to follow
    SearchBackfill = 67,
    /// user id → bytes of media they uploaded (big-endian u64), for the per-user quota
    MediaUsage = 68,
    /// short event id → (): an event from another server soft-failed on receipt (stored with
    /// its state, never shown or built upon)
    SoftFailed = 69,
    /// short event id → (): the far end of a gap, stored with the state another server gave
    /// us for it (only that server's word)
    GapPoint = 70,
    /// user id \0 device id → JSON `{ts, ip}`: when and from where the device last made a
    /// request (written at most once a minute per device)
    DeviceSeen = 71,
    /// user id \0 device id \0 algorithm \0 upload sequence (big-endian) ‖ key id → (): the
    /// order one-time keys are handed out in, oldest upload first (spec v1.13)
    OneTimeKeyQueue = 72,
}
