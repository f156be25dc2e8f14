//! The server-server API: keys, signed requests, inbound transactions and joins, the outbound
//! per-destination sender, and joining rooms that live on other servers.

pub mod acl;
pub mod backfill;
pub mod client;
pub mod edu;
pub mod events;
pub mod hierarchy;
pub mod ingest;
pub mod invite;
pub mod join;
pub mod keys;
pub mod media;
pub mod query;
pub mod resolve;
pub mod send;
pub mod sender;
#[cfg(test)]
mod state_graphs;
pub mod tls;
pub mod visibility;
pub mod x_matrix;

use axum::{
    routing::{get, post, put},
    Router,
};

use crate::{config::FederationSettings, error::ApiError, http::ruma::RumaRoutes, service::App};

/// Outbound federation state, present only when federation is switched on.
pub struct Federation {
    pub settings: FederationSettings,
    pub http: reqwest::Client,
    pub resolver: resolve::Resolver,
    pub keys: keys::KeyCache,
    pub sender: sender::Sender,
}

impl Federation {
    pub fn new(settings: FederationSettings) -> Result<Self, ApiError> {
        let resolver = resolve::Resolver::default();
        Ok(Self {
            http: client::http_client(
                settings.verify_tls,
                settings.allow_loopback,
                resolver.targets.clone(),
            )?,
            settings,
            resolver,
            keys: keys::KeyCache::default(),
            sender: sender::Sender::default(),
        })
    }
}

/// Routes of the federation listener.
pub fn router() -> Router<App> {
    // Full paths, not nested routers: the X-Matrix signature covers the request URI as sent.
    const V1: &str = "/_matrix/federation/v1";
    const V2: &str = "/_matrix/federation/v2";
    Router::new()
        .ruma(query::version)
        .ruma(query::profile)
        .ruma(query::directory)
        .ruma(query::openid_userinfo)
        .route(&format!("{V1}/send/{{txn}}"), put(send::transaction))
        .route(
            &format!("{V1}/make_join/{{room}}/{{user}}"),
            get(join::make_join),
        )
        .route(
            &format!("{V1}/make_leave/{{room}}/{{user}}"),
            get(join::make_leave),
        )
        .route(
            &format!("{V1}/make_knock/{{room}}/{{user}}"),
            get(join::make_knock),
        )
        .route(
            &format!("{V1}/send_knock/{{room}}/{{event}}"),
            put(join::send_knock),
        )
        .ruma(events::event)
        .ruma(events::state)
        .ruma(events::state_ids)
        .ruma(events::event_auth)
        .ruma(events::backfill)
        .ruma(events::get_missing_events)
        .route(
            &format!("{V1}/hierarchy/{{room}}"),
            get(hierarchy::hierarchy),
        )
        .route(
            &format!("{V1}/publicRooms"),
            get(query::public_rooms).post(query::search_public_rooms),
        )
        .route(
            &format!("{V1}/user/devices/{{user}}"),
            get(crate::e2ee::federation::user_devices),
        )
        .route(
            &format!("{V1}/user/keys/query"),
            post(crate::e2ee::federation::user_keys_query),
        )
        .ruma(crate::e2ee::federation::user_keys_claim)
        .route(
            &format!("{V2}/send_join/{{room}}/{{event}}"),
            put(join::send_join),
        )
        .route(
            &format!("{V2}/send_leave/{{room}}/{{event}}"),
            put(join::send_leave),
        )
        .route(
            &format!("{V2}/invite/{{room}}/{{event}}"),
            put(invite::invite),
        )
        .route(
            &format!("{V1}/media/download/{{media_id}}"),
            get(media::download),
        )
        .route(
            &format!("{V1}/media/thumbnail/{{media_id}}"),
            get(media::thumbnail),
        )
        .ruma(keys::server_keys)
        .route("/_matrix/key/v2/query", post(keys::query))
        .ruma(keys::query_one)
}
