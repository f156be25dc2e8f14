//! `/versions`, `.well-known/matrix/client` and `/capabilities`.

use std::collections::BTreeMap;

use ruma::{
    api::client::discovery::{
        discover_homeserver::{self, HomeserverInfo},
        get_capabilities::{
            self,
            v3::{Capabilities, RoomVersionStability},
        },
        get_supported_versions,
    },
    RoomVersionId,
};

use crate::{error::ApiResult, http::ruma::Ruma, service::App};

/// Spec versions whose client-server API Plexus implements for the endpoints it serves. From
/// v1.15 the spec offers OAuth 2.0 as an alternative to its legacy authentication; a server
/// may serve either, and Plexus serves the legacy one (`auth_metadata` answers 404).
pub async fn versions(
    _: App,
    _: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let versions = [
        "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
        "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
    ];
    Ok(get_supported_versions::Response::new(
        versions.iter().map(|v| v.to_string()).collect(),
    ))
}

pub async fn well_known(
    app: App,
    _: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    let base = format!("http://{}", app.settings.client_listen);
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        base,
    )))
}

pub async fn capabilities(
    _: App,
    _: Ruma<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    let mut caps = Capabilities::new();
    caps.room_versions.default =
        RoomVersionId::try_from(plexus_core::room_version::DEFAULT_ROOM_VERSION.as_str())
            .unwrap_or(RoomVersionId::V12);
    caps.room_versions.available = plexus_core::room_version::SUPPORTED
        .iter()
        .filter_map(|v| RoomVersionId::try_from(v.to_string()).ok())
        .map(|v| (v, RoomVersionStability::Stable))
        .collect::<BTreeMap<_, _>>();
    caps.change_password.enabled = true;
    caps.thirdparty_id_changes.enabled = false;
    caps.get_login_token.enabled = false;
    Ok(get_capabilities::v3::Response::new(caps))
}
