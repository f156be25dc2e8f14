//! The client-server API.

mod account;
mod account_data;
mod devices;
pub mod directory;
mod discovery;
pub mod filter;
pub mod membership;
mod messages;
mod openid;
mod presence;
mod profile;
pub mod push_rules;
mod receipts;
mod relations;
mod reports;
mod room_create;
mod room_events;
mod search;
mod spaces;
pub mod sync;
mod tags;
mod threads;
mod threepid;
mod upgrade;
mod user_directory;
mod voip;

use axum::{
    routing::{get, post, put},
    Router,
};

use crate::{
    api::{appservice, e2ee},
    http::ruma::RumaRoutes,
    service::App,
};

pub fn router() -> Router<App> {
    let v3 = Router::new()
        .route(
            "/account/3pid/email/requestToken",
            post(threepid::request_token),
        )
        .route(
            "/account/3pid/msisdn/requestToken",
            post(threepid::request_token),
        )
        .route("/voip/turnServer", get(voip::turn_server))
        // profile fields (ruma's set_profile_field refuses a null that clears one)
        .route(
            "/profile/{user_id}/{field}",
            get(profile::get_field)
                .put(profile::set_field)
                .delete(profile::delete_field),
        )
        // rooms
        .route("/createRoom", post(room_create::create_room))
        .route("/rooms/{room_id}/invite", post(membership::invite))
        .route("/rooms/{room_id}/upgrade", post(upgrade::upgrade))
        .route(
            "/rooms/{room_id}/joined_members",
            get(room_events::joined_members),
        )
        .route(
            "/rooms/{room_id}/context/{event_id}",
            get(messages::context),
        )
        // filters, account data, sync
        .route("/user/{user_id}/filter", post(filter::create))
        .route("/user/{user_id}/filter/{filter_id}", get(filter::get))
        .route("/sync", get(sync::sync))
        .route("/search", post(search::search))
        // end-to-end encryption (ruma's types would drop the unstable fallback key field, and
        // leave out the empty `failures` and key maps these answer)
        .route("/keys/upload", post(e2ee::device_keys::upload))
        .route("/keys/query", post(e2ee::query::query))
        .route("/keys/claim", post(e2ee::query::claim))
        .route(
            "/keys/signatures/upload",
            post(e2ee::cross_signing::upload_signatures),
        )
        // push rules (ruma lists only `/pushrules/`; ruma's set_pushrule and set_pusher are
        // stricter than the spec)
        .route("/pushers/set", post(crate::api::push::pushers::set))
        .route(
            "/pushrules/global/{kind}/{rule_id}",
            get(push_rules::get_rule)
                .put(push_rules::put_rule)
                .delete(push_rules::delete_rule),
        )
        .route(
            "/publicRooms",
            get(directory::public_rooms).post(directory::search_public_rooms),
        )
        .route(
            "/thirdparty/protocols",
            get(appservice::client::all_protocols),
        )
        .route(
            "/thirdparty/protocol/{protocol}",
            get(appservice::client::one_protocol),
        )
        .route(
            "/thirdparty/location/{protocol}",
            get(appservice::client::location_by_protocol),
        )
        .route(
            "/thirdparty/user/{protocol}",
            get(appservice::client::user_by_protocol),
        )
        .route(
            "/thirdparty/location",
            get(appservice::client::location_by_alias),
        )
        .route("/thirdparty/user", get(appservice::client::user_by_id))
        // typing, receipts, read markers, tags
        .route("/rooms/{room_id}/typing/{user_id}", put(receipts::typing));

    let v1 = Router::new()
        // ruma's RoomSummary leaves out a public join_rule
        .route("/rooms/{room_id}/hierarchy", get(spaces::hierarchy))
        .route("/room_summary/{room}", get(spaces::room_summary));

    // Endpoints ruma defines, each at the paths its metadata lists.
    let mut typed = Router::new()
        .ruma(account::register)
        .ruma(account::available)
        .ruma(account::login_flows)
        .ruma(account::login)
        .ruma(account::logout)
        .ruma(account::logout_all)
        .ruma(account::refresh)
        .ruma(account::whoami)
        .ruma(account::password)
        .ruma(account::deactivate)
        .ruma(account::registration_token_validity)
        .ruma(devices::list)
        .ruma(devices::get)
        .ruma(devices::update)
        .ruma(devices::delete)
        .ruma(devices::delete_many)
        .ruma(account_data::get_global)
        .ruma(account_data::put_global)
        .ruma(account_data::get_room)
        .ruma(account_data::put_room)
        .ruma(tags::list)
        .ruma(tags::put)
        .ruma(tags::delete)
        .ruma(discovery::versions)
        .ruma(discovery::well_known)
        .ruma(discovery::capabilities)
        .ruma(threepid::list)
        .ruma(openid::request_token)
        .ruma(presence::get)
        .ruma(presence::set)
        .ruma(reports::report_event)
        .ruma(reports::report_room)
        .ruma(reports::report_user)
        .ruma(receipts::receipt)
        .ruma(receipts::read_markers)
        .ruma(user_directory::search)
        .ruma(profile::get_profile)
        .ruma(relations::all)
        .ruma(relations::by_rel_type)
        .ruma(relations::by_rel_and_event_type)
        .ruma(threads::list)
        .ruma(membership::join_by_id_or_alias)
        .ruma(membership::join)
        .ruma(membership::knock)
        .ruma(membership::leave)
        .ruma(membership::forget)
        .ruma(membership::kick)
        .ruma(membership::ban)
        .ruma(membership::unban)
        .ruma(membership::joined_rooms)
        .ruma(room_events::all_state)
        .ruma(room_events::get_state)
        .ruma(room_events::put_state)
        .ruma(room_events::send)
        .ruma(room_events::redact)
        .ruma(room_events::event)
        .ruma(room_events::members)
        .ruma(messages::messages)
        .ruma(messages::timestamp_to_event)
        .ruma(directory::create)
        .ruma(directory::get)
        .ruma(directory::delete)
        .ruma(directory::room_aliases)
        .ruma(directory::get_visibility)
        .ruma(directory::set_visibility)
        .ruma(appservice::client::set_network_visibility)
        .ruma(appservice::client::ping)
        .ruma(e2ee::device_lists::changes)
        .ruma(e2ee::cross_signing::upload)
        .ruma(e2ee::backup::create_version)
        .ruma(e2ee::backup::current_version)
        .ruma(e2ee::backup::get_version_info)
        .ruma(e2ee::backup::update_version)
        .ruma(e2ee::backup::delete_version)
        .ruma(e2ee::backup::get_all)
        .ruma(e2ee::backup::put_all)
        .ruma(e2ee::backup::delete_all)
        .ruma(e2ee::backup::get_room)
        .ruma(e2ee::backup::put_room)
        .ruma(e2ee::backup::delete_room)
        .ruma(e2ee::backup::get_session)
        .ruma(e2ee::backup::put_session)
        .ruma(e2ee::backup::delete_session)
        .ruma(e2ee::to_device::send)
        .ruma(push_rules::get_all)
        .ruma(push_rules::get_global)
        .ruma(push_rules::get_enabled)
        .ruma(push_rules::put_enabled)
        .ruma(push_rules::get_actions)
        .ruma(push_rules::put_actions)
        .ruma(crate::api::push::pushers::get)
        .ruma(crate::api::push::notifications::get);

    // An empty state key: ruma's state paths end in `{state_key}`, a segment axum never
    // matches empty, so `.../state/{event_type}` and `.../state/{event_type}/` (sent by many
    // clients) are routed too; ruma's parser reads two path arguments as the empty key.
    for v in ["v3", "r0"] {
        let base = format!("/_matrix/client/{v}/rooms/{{room_id}}/state/{{event_type}}");
        for p in [format!("{base}/"), base] {
            typed = typed
                .ruma_at(&p, room_events::get_state)
                .ruma_at(&p, room_events::put_state);
        }
        // ruma lists only `/pushrules/`; clients also ask without the slash.
        typed = typed.ruma_at(
            &format!("/_matrix/client/{v}/pushrules"),
            push_rules::get_all,
        );
    }

    typed
        .nest("/_matrix/client/v1", v1)
        // MSC3266's unstable room summary paths (Cinny and other matrix-js-sdk clients call
        // the first; the second is the MSC's later form).
        .route(
            "/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary",
            get(spaces::room_summary_unstable),
        )
        .route(
            "/_matrix/client/unstable/im.nheko.summary/summary/{room}",
            get(spaces::room_summary_unstable),
        )
        // r0 is the pre-v1.1 name of v3; older clients still call it.
        .nest("/_matrix/client/v3", v3.clone())
        .nest("/_matrix/client/r0", v3)
}
