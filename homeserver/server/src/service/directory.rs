//! The public room directory: which rooms are listed (this server's, or an appservice
//! network's), and the listing both the client API and federation answer with.

use plexus_store::{schema, First};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::App;
use crate::error::{ApiError, ApiResult};

/// One room as the public directory shows it: the room summary without the fields the
/// directory's chunk does not have.
fn summary(app: &App, room_id: &ruma::RoomId) -> ApiResult<Option<Value>> {
    let Some(room) = app.room(room_id)? else {
        return Ok(None);
    };
    let mut v = app.room_summary(&room)?;
    if let Some(o) = v.as_object_mut() {
        for extra in ["room_version", "encryption", "allowed_room_ids"] {
            o.remove(extra);
        }
    }
    Ok(Some(v))
}

/// Which room directory: the server's own, one appservice network's (`appservice|network`, as
/// `/thirdparty/protocols` names its instances), or all of them.
#[derive(Clone, Debug, Default)]
pub enum Network {
    #[default]
    Main,
    All,
    Instance(String),
}

impl Network {
    pub fn of(instance: Option<&str>, all: bool) -> Network {
        match instance {
            Some(i) => Network::Instance(i.to_owned()),
            None if all => Network::All,
            None => Network::Main,
        }
    }

    /// Room ids in this directory.
    fn rooms(&self, app: &App) -> ApiResult<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        if matches!(self, Network::Main | Network::All) {
            for item in schema::ROOMID__PUBLISHED.iter::<()>(&app.store.kv) {
                out.insert(item?.0);
            }
        }
        let networks = schema::APPSERVICE_NETWORK_ROOM__PUBLISHED;
        let kv = &app.store.kv;
        let rows: Box<dyn Iterator<Item = _>> = match self {
            Network::Main => return Ok(out),
            Network::All => Box::new(networks.iter::<()>(kv)),
            Network::Instance(i) => {
                let Some((service, network)) = i.split_once('|') else {
                    return Err(ApiError::InvalidParam(format!(
                        "unknown third_party_instance_id {i}"
                    )));
                };
                Box::new(networks.prefix::<First<2>, ()>(kv, (service, network)))
            }
        };
        for item in rows {
            let ((_, _, room), ()) = item?;
            out.insert(room);
        }
        Ok(out)
    }
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<String>,
    pub since: Option<String>,
    pub third_party_instance_id: Option<String>,
    pub include_all_networks: Option<String>,
    pub server: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
pub struct PublicRoomsFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    generic_search_term: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    pub limit: Option<usize>,
    pub since: Option<String>,
    pub server: Option<String>,
    #[serde(default)]
    pub filter: PublicRoomsFilter,
    pub third_party_instance_id: Option<String>,
    #[serde(default)]
    pub include_all_networks: bool,
}

/// The `limit` query parameter of `publicRooms`.
pub fn parse_limit(limit: Option<&str>) -> ApiResult<Option<usize>> {
    limit
        .map(|l| {
            l.parse::<usize>()
                .map_err(|_| ApiError::InvalidParam("limit must be a non-negative integer".into()))
        })
        .transpose()
}

/// Rooms published in this server's directory, largest first, paged by offset tokens.
pub fn list_public(
    app: &App,
    limit: Option<usize>,
    since: Option<&str>,
    filter: &PublicRoomsFilter,
    network: &Network,
) -> ApiResult<Value> {
    let offset = match since {
        None => 0,
        Some(t) => t
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::InvalidParam(format!("invalid since token {t}")))?,
    };
    let term = filter
        .generic_search_term
        .as_deref()
        .map(str::to_lowercase)
        .filter(|t| !t.is_empty());
    let mut rooms = vec![];
    for room in network.rooms(app)? {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(room) else {
            continue;
        };
        let Some(v) = summary(app, &room_id)? else {
            continue;
        };
        if let Some(t) = &term {
            let hay = ["name", "topic", "canonical_alias"]
                .iter()
                .filter_map(|f| v[*f].as_str())
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            if !hay.contains(t.as_str()) && room_id.as_str() != t {
                continue;
            }
        }
        if let Some(types) = &filter.room_types {
            let room_type = v["room_type"].as_str().map(str::to_owned);
            if !types.contains(&room_type) {
                continue;
            }
        }
        rooms.push(v);
    }
    rooms.sort_by(|a, b| {
        b["num_joined_members"]
            .as_u64()
            .cmp(&a["num_joined_members"].as_u64())
            .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    let total = rooms.len();
    let limit = limit
        .unwrap_or(total.max(1))
        .clamp(1, app.settings.max_page);
    let chunk: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
    let mut out = json!({ "chunk": chunk, "total_room_count_estimate": total });
    if offset + limit < total {
        out["next_batch"] = json!(format!("o{}", offset + limit));
    }
    if offset > 0 {
        out["prev_batch"] = json!(format!("o{}", offset.saturating_sub(limit)));
    }
    Ok(out)
}
