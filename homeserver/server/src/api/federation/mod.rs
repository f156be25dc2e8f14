//! The server-server API's endpoints: keys, events, inbound transactions, joins and invites,
//! the space hierarchy, queries and media. The machinery behind them (the inbound pipeline,
//! the outbound sender, remote joins) is in `crate::service::federation`.

pub mod events;
pub mod hierarchy;
pub mod invite;
pub mod join;
pub mod keys;
pub mod media;
pub mod query;
pub mod send;

use axum::{
    routing::{get, post, put},
    Router,
};

use crate::{http::ruma::RumaRoutes, service::App};

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
        .ruma(send::transaction)
        .ruma(join::make_join)
        .ruma(join::make_leave)
        .ruma(join::make_knock)
        .ruma(join::send_knock)
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
            get(crate::api::e2ee::federation::user_devices),
        )
        .ruma(crate::api::e2ee::federation::user_keys_query)
        .ruma(crate::api::e2ee::federation::user_keys_claim)
        .route(
            &format!("{V2}/send_join/{{room}}/{{event}}"),
            put(join::send_join),
        )
        .ruma(join::send_leave)
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
