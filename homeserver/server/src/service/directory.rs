//! The room directory: local room aliases, the rooms published in this server's directory
//! and in appservice networks' directories, and the public room listing that both the client
//! API and federation answer with. [`Directory`] is the one owner of those tables.

use std::{collections::BTreeSet, sync::Arc};

use plexus_store::{schema, Batch, First, Store, StoreError};
use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{rooms::RoomsError, App};

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("room alias {0} already exists")]
    AliasTaken(String),
    #[error("stored room id {0:?} is not a room id")]
    Corrupt(String),
    #[error("unknown third_party_instance_id {0}")]
    UnknownNetwork(String),
    /// 400: a listing request's `limit` or `since` that does not parse.
    #[error("{0}")]
    InvalidParam(String),
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}

pub struct Directory {
    store: Arc<Store>,
}

impl Directory {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// The room a local alias points to.
    pub fn room_of_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<OwnedRoomId>, DirectoryError> {
        let room: Option<String> = schema::ALIAS__ROOMID.get(&self.store.kv, alias.as_str())?;
        room.map(|r| OwnedRoomId::try_from(r.as_str()).map_err(|_| DirectoryError::Corrupt(r)))
            .transpose()
    }

    /// Point `alias` at `room`, made by `creator`. Two concurrent claims of one alias: one wins,
    /// the other gets `AliasTaken`. Not yet durable: the caller flushes.
    pub fn create_alias(
        &self,
        alias: &RoomAliasId,
        room: &RoomId,
        creator: &UserId,
    ) -> Result<(), DirectoryError> {
        let kv = &self.store.kv;
        let stored =
            schema::ALIAS__ROOMID.insert_if_absent(kv, alias.as_str(), &room.to_string())?;
        if stored != room.as_str()
            || schema::ROOM_ALIAS__CREATOR.contains(kv, (room.as_str(), alias.as_str()))?
        {
            return Err(DirectoryError::AliasTaken(alias.to_string()));
        }
        let mut b = Batch::default();
        schema::ROOM_ALIAS__CREATOR.put(
            &mut b,
            (room.as_str(), alias.as_str()),
            creator.as_str(),
        )?;
        Ok(self.store.commit(b)?)
    }

    /// Who made a room's alias.
    pub fn alias_creator(
        &self,
        room: &RoomId,
        alias: &RoomAliasId,
    ) -> Result<Option<String>, DirectoryError> {
        Ok(schema::ROOM_ALIAS__CREATOR.get(&self.store.kv, (room.as_str(), alias.as_str()))?)
    }

    pub fn delete_alias(&self, room: &RoomId, alias: &RoomAliasId) -> Result<(), DirectoryError> {
        let mut b = Batch::default();
        schema::ALIAS__ROOMID.delete(&mut b, alias.as_str());
        schema::ROOM_ALIAS__CREATOR.delete(&mut b, (room.as_str(), alias.as_str()));
        Ok(self.store.commit(b)?)
    }

    /// A room's local aliases and who made each.
    pub fn room_aliases(&self, room: &RoomId) -> Result<Vec<(String, String)>, DirectoryError> {
        schema::ROOM_ALIAS__CREATOR
            .prefix::<First<1>, String>(&self.store.kv, (room.as_str(),))
            .map(|r| Ok(r.map(|((_, alias), creator)| (alias, creator))?))
            .collect()
    }

    pub fn is_published(&self, room: &RoomId) -> Result<bool, DirectoryError> {
        Ok(schema::ROOMID__PUBLISHED.contains(&self.store.kv, room.as_str())?)
    }

    /// Publish the room in this server's directory, or take it out.
    pub fn set_published(&self, room: &RoomId, published: bool) -> Result<(), DirectoryError> {
        let mut b = Batch::default();
        Self::stage_published(&mut b, room, published)?;
        Ok(self.store.commit(b)?)
    }

    /// List the room in an appservice network's directory, or take it out.
    pub fn set_network_listing(
        &self,
        appservice: &str,
        network: &str,
        room: &RoomId,
        listed: bool,
    ) -> Result<(), DirectoryError> {
        let key = (appservice, network, room.as_str());
        let mut b = Batch::default();
        match listed {
            true => schema::APPSERVICE_NETWORK_ROOM__PUBLISHED.put(&mut b, key, &())?,
            false => schema::APPSERVICE_NETWORK_ROOM__PUBLISHED.delete(&mut b, key),
        }
        Ok(self.store.commit(b)?)
    }

    /// An alias row, in a batch that also creates or upgrades the room.
    pub fn stage_alias(
        b: &mut Batch,
        alias: &str,
        room: &RoomId,
        creator: &str,
    ) -> Result<(), StoreError> {
        schema::ALIAS__ROOMID.put(b, alias, room.as_str())?;
        schema::ROOM_ALIAS__CREATOR.put(b, (room.as_str(), alias), creator)
    }

    /// A room's record of an alias that now points elsewhere, removed in `b`.
    pub fn stage_alias_moved(b: &mut Batch, from: &RoomId, alias: &str) {
        schema::ROOM_ALIAS__CREATOR.delete(b, (from.as_str(), alias));
    }

    pub fn stage_published(
        b: &mut Batch,
        room: &RoomId,
        published: bool,
    ) -> Result<(), StoreError> {
        match published {
            true => schema::ROOMID__PUBLISHED.put(b, room.as_str(), &()),
            false => {
                schema::ROOMID__PUBLISHED.delete(b, room.as_str());
                Ok(())
            }
        }
    }

    /// Room ids listed in a directory.
    pub fn listed_rooms(&self, network: &Network) -> Result<BTreeSet<String>, DirectoryError> {
        let kv = &self.store.kv;
        let mut out = BTreeSet::new();
        if matches!(network, Network::Main | Network::All) {
            for item in schema::ROOMID__PUBLISHED.iter::<()>(kv) {
                out.insert(item?.0);
            }
        }
        let networks = schema::APPSERVICE_NETWORK_ROOM__PUBLISHED;
        let rows: Box<dyn Iterator<Item = _>> = match network {
            Network::Main => return Ok(out),
            Network::All => Box::new(networks.iter::<()>(kv)),
            Network::Instance(i) => {
                let Some((service, net)) = i.split_once('|') else {
                    return Err(DirectoryError::UnknownNetwork(i.clone()));
                };
                Box::new(networks.prefix::<First<2>, ()>(kv, (service, net)))
            }
        };
        for item in rows {
            let ((_, _, room), ()) = item?;
            out.insert(room);
        }
        Ok(out)
    }
}

/// One room as the public directory shows it: the room summary without the fields the
/// directory's chunk does not have.
fn summary(app: &App, room_id: &ruma::RoomId) -> Result<Option<Value>, RoomsError> {
    let Some(room) = app.rooms.room(room_id)? else {
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
pub fn parse_limit(limit: Option<&str>) -> Result<Option<usize>, DirectoryError> {
    limit
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                DirectoryError::InvalidParam("limit must be a non-negative integer".into())
            })
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
) -> Result<Value, DirectoryError> {
    let offset = match since {
        None => 0,
        Some(t) => t
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| DirectoryError::InvalidParam(format!("invalid since token {t}")))?,
    };
    let term = filter
        .generic_search_term
        .as_deref()
        .map(str::to_lowercase)
        .filter(|t| !t.is_empty());
    let mut rooms = vec![];
    for room in app.directory.listed_rooms(network)? {
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
