//! Services shared by every router: accounts, rooms, the sync notifier.

pub mod account_data;
pub mod accounts;
pub mod aggregations;
pub mod appservices;
pub mod directory;
pub mod e2ee;
pub mod ephemeral;
pub mod federation;
pub mod filters;
pub mod media;
pub mod notify;
pub mod openid;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod reports;
pub mod restricted;
pub mod rooms;
pub mod search;
pub mod server_keys;
pub mod single_flight;
pub mod spaces;
pub mod user_directory;
pub mod writer;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use plexus_core::signing::ServerKey;
use plexus_store::{schema, Store, StoreError};
use ruma::OwnedRoomId;

use crate::config::Settings;

pub type App = Arc<Services>;

/// Why the server could not open: its data dir, store or signing key, or a service's setup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Federation(#[from] federation::FederationError),
    #[error(transparent)]
    Media(#[from] plexus_media::MediaError),
    #[error(transparent)]
    Appservices(#[from] appservices::AppserviceError),
    #[error(transparent)]
    Search(#[from] plexus_search::SearchError),
    /// The data dir or the signing key could not be made or read.
    #[error("internal error: {0}")]
    Internal(String),
}

/// JSON the server holds that would not serialize.
#[derive(Debug, thiserror::Error)]
#[error("JSON serialization: {0}")]
pub struct SerializeError(serde_json::Error);

pub struct Services {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub account_data: account_data::AccountData,
    pub accounts: accounts::Accounts,
    pub directory: directory::Directory,
    pub filters: filters::Filters,
    pub media_records: media::MediaRecords,
    pub openid: openid::OpenId,
    pub reports: reports::Reports,
    pub rooms: rooms::Rooms,
    pub server_keys: server_keys::ServerKeys,
    pub key: ServerKey,
    pub notifier: notify::Notifier,
    pub long_polls: notify::LongPolls,
    /// Set when the server is stopping: long-polls answer at once instead of holding shutdown.
    pub stopping: tokio::sync::watch::Sender<bool>,
    pub typing: ephemeral::Typing,
    pub receipts: ephemeral::Receipts,
    pub presence: presence::Presence,
    /// `None` when federation is switched off: then nothing is ever sent to other servers.
    pub federation: Option<Arc<crate::service::federation::Federation>>,
    pub media: media::Repo,
    pub pushers: crate::service::push::gateway::Pushers,
    pub pusher_records: push::pushers::PusherRecords,
    pub user_push: crate::service::push::user_cache::UserPushCache,
    pub e2ee: e2ee::E2ee,
    pub appservices: appservices::Appservices,
    pub search: crate::service::search::Search,
    /// Memory that request bodies in flight may hold, shared by both listeners.
    pub bodies: crate::http::body::BodyBudget,
    pub limiter: ratelimit::Limiter,
    pub public_users: user_directory::PublicUsers,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
}

const META_SIGNING_KEY: &[u8] = b"signing_key";

impl Services {
    pub fn open(settings: Settings) -> Result<App, StartError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
            StartError::Internal(format!(
                "cannot create {}: {e}",
                settings.data_dir.display()
            ))
        })?;
        // A data dir made by an older version (or by hand) may be open to others: close it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // A data dir owned by someone else (a volume mounted for a group) stays as it is.
            if let Err(e) =
                std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))
            {
                tracing::warn!(dir = %settings.data_dir.display(), error = %e, "cannot make the data dir private");
            }
        }
        let store = Arc::new(Store::open(&settings.data_dir.join("db"))?);
        let key = match &settings.signing_key_path {
            Some(p) => load_or_create_key_file(p)?,
            None => load_or_create_key(&store)?,
        };
        let federation = match &settings.federation {
            Some(f) => Some(Arc::new(crate::service::federation::Federation::new(
                f.clone(),
            )?)),
            None => None,
        };
        let media = media::Repo::open(&settings.data_dir.join("media"))?;
        let appservices = appservices::Appservices::new(settings.appservices.clone())?;
        let search = crate::service::search::Search::open(&settings.data_dir.join("search"))?;
        let limiter = ratelimit::Limiter::new(settings.rate_limits.clone());
        let rooms = rooms::Rooms::new(store.clone(), settings.server_name.clone());
        let accounts = accounts::Accounts::new(store.clone(), &settings);
        let app = Arc::new(Self {
            federation,
            media,
            settings,
            account_data: account_data::AccountData::new(store.clone()),
            pusher_records: push::pushers::PusherRecords::new(store.clone()),
            accounts,
            directory: directory::Directory::new(store.clone()),
            e2ee: e2ee::E2ee::new(store.clone()),
            filters: filters::Filters::new(store.clone()),
            media_records: media::MediaRecords::new(store.clone()),
            openid: openid::OpenId::new(store.clone()),
            presence: presence::Presence::new(store.clone()),
            receipts: ephemeral::Receipts::new(store.clone()),
            reports: reports::Reports::new(store.clone()),
            rooms,
            server_keys: server_keys::ServerKeys::new(store.clone()),
            store,
            key,
            notifier: notify::Notifier::default(),
            long_polls: Default::default(),
            stopping: tokio::sync::watch::channel(false).0,
            typing: ephemeral::Typing::default(),
            pushers: Default::default(),
            user_push: Default::default(),
            appservices,
            search,
            bodies: Default::default(),
            limiter,
            public_users: Default::default(),
            room_locks: Mutex::new(HashMap::new()),
        });
        // After the migrations: a store upgraded on a nearly full disk still comes up (and
        // refuses writes), rather than failing to start.
        app.store
            .kv
            .set_disk_reserve(app.settings.min_free_disk_bytes);
        Ok(app)
    }

    /// Federation, or an error saying it is off.
    pub fn fed(
        &self,
    ) -> Result<
        &Arc<crate::service::federation::Federation>,
        crate::service::federation::client::FedError,
    > {
        self.federation.as_ref().ok_or_else(|| {
            crate::service::federation::client::FedError::Refused(
                "other servers".into(),
                "federation is disabled on this server".into(),
            )
        })
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.settings.server_name
    }

    pub fn is_local(&self, user_id: &ruma::UserId) -> bool {
        user_id.server_name() == self.server_name()
    }

    /// The append lock of a room: one writer builds on the room's extremities at a time.
    pub fn room_lock(&self, room_id: &ruma::RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(room_id.to_owned()).or_default().clone()
    }
}

/// A signing key kept in a file of its own (operators back it up and rotate it there).
fn load_or_create_key_file(path: &std::path::Path) -> Result<ServerKey, StartError> {
    let bad = |e: &dyn std::fmt::Display| {
        StartError::Internal(format!("signing key {}: {e}", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (version, doc) = text
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad(&"malformed"))?;
            ServerKey::from_stored(version, doc).map_err(|e| bad(&e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ServerKey::generate().map_err(|e| bad(&e))?;
            let (version, doc) = key.to_stored();
            std::fs::write(path, format!("{version} {doc}\n")).map_err(|e| bad(&e))?;
            Ok(key)
        }
        Err(e) => Err(bad(&e)),
    }
}

/// The server signing key is generated on first start and kept in the store.
fn load_or_create_key(store: &Store) -> Result<ServerKey, StartError> {
    if let Some(raw) = schema::META.get::<Vec<u8>>(&store.kv, META_SIGNING_KEY)? {
        let text = String::from_utf8_lossy(&raw);
        let (version, doc) = text
            .split_once(' ')
            .ok_or_else(|| StartError::Internal("stored signing key is malformed".into()))?;
        return ServerKey::from_stored(version, doc)
            .map_err(|e| StartError::Internal(e.to_string()));
    }
    let key = ServerKey::generate().map_err(|e| StartError::Internal(e.to_string()))?;
    let (version, doc) = key.to_stored();
    let mut b = plexus_store::Batch::default();
    schema::META.put(
        &mut b,
        META_SIGNING_KEY,
        format!("{version} {doc}").as_bytes(),
    )?;
    store.commit(b)?;
    store.kv.flush_blocking()?;
    Ok(key)
}

/// JSON the server holds, as the raw JSON ruma's types carry (events in responses, an event
/// for push rule evaluation).
pub fn raw_value(
    v: &impl serde::Serialize,
) -> Result<Box<serde_json::value::RawValue>, SerializeError> {
    serde_json::value::to_raw_value(v).map_err(SerializeError)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
