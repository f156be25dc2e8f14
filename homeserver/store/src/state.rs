//! Room state snapshots stored as deltas.
//!
//! A snapshot is a map `short state key → short event id`. Each new snapshot is stored as the
//! change against its parent; every [`FULL_EVERY`] links a full copy bounds the walk. So a room
//! with thousands of members costs one small record per state change, not a full copy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use crate::{be_u64, schema, Batch, Kv, StoreError, Table};

pub type StateMap = BTreeMap<u64, u64>;

/// Longest chain of deltas before a full snapshot is written.
pub const FULL_EVERY: u32 = 64;
/// Bound on cached materialised snapshots.
const CACHE_MAX: usize = 512;

struct Delta {
    parent: Option<u64>,
    depth: u32,
    added: Vec<(u64, u64)>,
    removed: Vec<u64>,
}

impl Delta {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(21 + self.added.len() * 16 + self.removed.len() * 8);
        v.extend_from_slice(&self.parent.unwrap_or(0).to_be_bytes());
        v.push(u8::from(self.parent.is_some()));
        v.extend_from_slice(&self.depth.to_be_bytes());
        v.extend_from_slice(&(self.added.len() as u32).to_be_bytes());
        for (k, e) in &self.added {
            v.extend_from_slice(&k.to_be_bytes());
            v.extend_from_slice(&e.to_be_bytes());
        }
        v.extend_from_slice(&(self.removed.len() as u32).to_be_bytes());
        for k in &self.removed {
            v.extend_from_slice(&k.to_be_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt {
            table: Table::StateSnapshot,
            why: "short record".into(),
        };
        let u32_at = |i: usize| -> Result<u32, StoreError> {
            b.get(i..i + 4)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(bad)
        };
        let u64_at =
            |i: usize| -> Result<u64, StoreError> { b.get(i..i + 8).map(be_u64).ok_or_else(bad) };
        let parent = u64_at(0)?;
        let has_parent = *b.get(8).ok_or_else(bad)? == 1;
        let depth = u32_at(9)?;
        let n = u32_at(13)? as usize;
        let mut i = 17;
        let mut added = Vec::with_capacity(n);
        for _ in 0..n {
            added.push((u64_at(i)?, u64_at(i + 8)?));
            i += 16;
        }
        let m = u32_at(i)? as usize;
        i += 4;
        let mut removed = Vec::with_capacity(m);
        for _ in 0..m {
            removed.push(u64_at(i)?);
            i += 8;
        }
        Ok(Delta {
            parent: has_parent.then_some(parent),
            depth,
            added,
            removed,
        })
    }
}

#[derive(Clone)]
pub struct StateStore {
    kv: Kv,
    cache: Arc<Mutex<HashMap<u64, Arc<StateMap>>>>,
}

impl StateStore {
    pub fn new(kv: Kv) -> Self {
        Self {
            kv,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn load(&self, hash: u64) -> Result<Delta, StoreError> {
        schema::STATEHASH__DELTA
            .get_with(&self.kv, hash, Delta::decode)?
            .ok_or_else(|| StoreError::Corrupt {
                table: Table::StateSnapshot,
                why: format!("missing {hash}"),
            })
    }

    /// The whole snapshot.
    pub fn full(&self, hash: u64) -> Result<Arc<StateMap>, StoreError> {
        if let Some(hit) = self
            .cache
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .get(&hash)
        {
            return Ok(hit.clone());
        }
        let mut chain = Vec::new();
        let mut cur = Some(hash);
        let mut base: Option<Arc<StateMap>> = None;
        while let Some(h) = cur {
            if h != hash {
                if let Some(hit) = self.cache.lock().map_err(|_| StoreError::Poisoned)?.get(&h) {
                    base = Some(hit.clone());
                    break;
                }
            }
            let d = self.load(h)?;
            cur = d.parent;
            chain.push(d);
        }
        let mut map = base.map(|b| (*b).clone()).unwrap_or_default();
        for d in chain.iter().rev() {
            for k in &d.removed {
                map.remove(k);
            }
            map.extend(d.added.iter().copied());
        }
        let map = Arc::new(map);
        let mut cache = self.cache.lock().map_err(|_| StoreError::Poisoned)?;
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, map.clone());
        Ok(map)
    }

    /// One entry, without materialising the snapshot.
    pub fn get(&self, hash: u64, key: u64) -> Result<Option<u64>, StoreError> {
        if let Some(hit) = self
            .cache
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .get(&hash)
        {
            return Ok(hit.get(&key).copied());
        }
        let mut cur = Some(hash);
        while let Some(h) = cur {
            let d = self.load(h)?;
            if let Some((_, e)) = d.added.iter().find(|(k, _)| *k == key) {
                return Ok(Some(*e));
            }
            if d.removed.contains(&key) {
                return Ok(None);
            }
            cur = d.parent;
        }
        Ok(None)
    }

    /// Depth of a snapshot in its delta chain.
    pub fn depth(&self, hash: u64) -> Result<u32, StoreError> {
        Ok(self.load(hash)?.depth)
    }

    /// Write the snapshot `parent + changes` into `batch`; returns its hash and chain depth.
    /// `full_after` gives the whole resulting map when a full snapshot is due; it is the caller's
    /// because the parent may itself still be in the same unapplied batch.
    pub fn derive(
        &self,
        parent: Option<(u64, u32)>,
        changes: &[(u64, u64)],
        removed: &[u64],
        full_after: impl FnOnce() -> StateMap,
        batch: &mut Batch,
    ) -> Result<(u64, u32), StoreError> {
        let hash = self.kv.unique_id()?;
        let delta = match parent {
            Some((p, depth)) if depth + 1 < FULL_EVERY => Delta {
                parent: Some(p),
                depth: depth + 1,
                added: changes.to_vec(),
                removed: removed.to_vec(),
            },
            _ => Delta {
                parent: None,
                depth: 0,
                added: full_after().into_iter().collect(),
                removed: vec![],
            },
        };
        schema::STATEHASH__DELTA.put(batch, hash, &delta.encode())?;
        Ok((hash, delta.depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_materialise_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Kv::open(dir.path()).unwrap();
        let st = StateStore::new(kv.clone());
        let mut hash = None;
        let mut expect = StateMap::new();
        let mut hashes = vec![];
        for i in 0..200u64 {
            let mut b = Batch::default();
            let key = i % 150;
            let mut after = expect.clone();
            after.insert(key, 1000 + i);
            let h = st
                .derive(hash, &[(key, 1000 + i)], &[], || after.clone(), &mut b)
                .unwrap();
            kv.apply(b).unwrap();
            expect = after;
            hash = Some(h);
            hashes.push((h.0, expect.clone()));
        }
        // A fresh store (cold cache) reads every snapshot right.
        let cold = StateStore::new(kv.clone());
        for (h, want) in hashes.iter().step_by(17) {
            assert_eq!(&*cold.full(*h).unwrap(), want);
            assert_eq!(cold.get(*h, 3).unwrap(), want.get(&3).copied());
        }
        // Chains are bounded: no record chain longer than FULL_EVERY.
        let last = hashes.last().unwrap().0;
        let mut depth = 0;
        let mut cur = Some(last);
        while let Some(h) = cur {
            cur = cold.load(h).unwrap().parent;
            depth += 1;
        }
        assert!(depth <= FULL_EVERY as usize);
        // Removal works.
        let mut b = Batch::default();
        let mut after = expect.clone();
        after.remove(&3);
        let (h, _) = st.derive(hash, &[], &[3], || after, &mut b).unwrap();
        kv.apply(b).unwrap();
        assert_eq!(st.get(h, 3).unwrap(), None);
    }
}
