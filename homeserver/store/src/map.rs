//! A table with its codecs: [`Map<K, V>`] reads and writes typed keys and values, so no code
//! outside this crate builds key bytes or picks a value format.

use std::marker::PhantomData;

use crate::{
    codec::{Decode, Encode, Key, Prefix, U64},
    Batch, Kv, StoreError, Table,
};

/// A table whose keys are `K` and whose values are stored with codec `V`.
pub struct Map<K, V> {
    table: Table,
    _codecs: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Map<K, V> {}

/// One decoded row.
pub type Row<K, T> = (<K as Key>::Owned, T);

impl<K: Key, V> Map<K, V> {
    pub const fn new(table: Table) -> Self {
        Self {
            table,
            _codecs: PhantomData,
        }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            why: why.to_owned(),
        }
    }

    fn value<T>(&self, raw: &[u8]) -> Result<T, StoreError>
    where
        V: Decode<T>,
    {
        V::decode(raw).map_err(|why| self.corrupt(why))
    }

    /// A raw value read in place by `f`, without copying it out first: for layouts this
    /// crate decodes itself on a hot path (a state lookup walks a chain of deltas).
    pub(crate) fn get_with<T>(
        &self,
        kv: &Kv,
        key: K::Ref<'_>,
        f: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        kv.get(self.table, &K::encode(key))?
            .map(|raw| f(&raw))
            .transpose()
    }

    fn row<T>(&self, (k, v): (Vec<u8>, Vec<u8>)) -> Result<Row<K, T>, StoreError>
    where
        V: Decode<T>,
    {
        let key = K::decode(&k).map_err(|why| self.corrupt(why))?;
        Ok((key, self.value(&v)?))
    }

    pub fn get<T>(&self, kv: &Kv, key: K::Ref<'_>) -> Result<Option<T>, StoreError>
    where
        V: Decode<T>,
    {
        kv.get(self.table, &K::encode(key))?
            .map(|raw| self.value(&raw))
            .transpose()
    }

    pub fn contains(&self, kv: &Kv, key: K::Ref<'_>) -> Result<bool, StoreError> {
        kv.contains(self.table, &K::encode(key))
    }

    pub fn put<T: ?Sized>(
        &self,
        batch: &mut Batch,
        key: K::Ref<'_>,
        value: &T,
    ) -> Result<(), StoreError>
    where
        V: Encode<T>,
    {
        batch.put(self.table, &K::encode(key), &V::encode(value)?);
        Ok(())
    }

    pub fn delete(&self, batch: &mut Batch, key: K::Ref<'_>) {
        batch.delete(self.table, &K::encode(key));
    }

    /// Store `value` unless the key holds one; answers what is stored afterwards.
    pub fn insert_if_absent<T>(&self, kv: &Kv, key: K::Ref<'_>, value: &T) -> Result<T, StoreError>
    where
        V: Encode<T> + Decode<T>,
    {
        let bytes = V::encode(value)?;
        match kv.insert_if_absent(self.table, &K::encode(key), &bytes)? {
            None => self.value(&bytes),
            Some(found) => self.value(&found),
        }
    }

    /// Store `value` unless the key holds one; answers whether this call stored it.
    pub fn insert_new<T: ?Sized>(
        &self,
        kv: &Kv,
        key: K::Ref<'_>,
        value: &T,
    ) -> Result<bool, StoreError>
    where
        V: Encode<T>,
    {
        Ok(kv
            .insert_if_absent(self.table, &K::encode(key), &V::encode(value)?)?
            .is_none())
    }

    /// Remove a key and answer its value, atomically (single-use tokens).
    pub fn take<T>(&self, kv: &Kv, key: K::Ref<'_>) -> Result<Option<T>, StoreError>
    where
        V: Decode<T>,
    {
        kv.take(self.table, &K::encode(key))?
            .map(|raw| self.value(&raw))
            .transpose()
    }

    /// Every row, in key order.
    pub fn iter<'a, T: 'a>(
        &'a self,
        kv: &'a Kv,
    ) -> impl DoubleEndedIterator<Item = Result<Row<K, T>, StoreError>> + 'a
    where
        V: Decode<T>,
    {
        self.rows(kv, Vec::new())
    }

    /// The rows whose key begins with the first parts `prefix` (see [`crate::codec::First`]).
    pub fn prefix<'a, P: Prefix<K>, T: 'a>(
        &'a self,
        kv: &'a Kv,
        prefix: P::Ref<'_>,
    ) -> impl DoubleEndedIterator<Item = Result<Row<K, T>, StoreError>> + 'a
    where
        V: Decode<T>,
    {
        self.rows(kv, P::encode(prefix))
    }

    /// [`Map::prefix`] with the values left as stored bytes, for a reader that must get past a
    /// value it cannot decode (and remove it) rather than stop at it.
    pub fn prefix_raw<'a, P: Prefix<K>>(
        &'a self,
        kv: &'a Kv,
        prefix: P::Ref<'_>,
    ) -> impl DoubleEndedIterator<Item = Result<(K::Owned, Vec<u8>), StoreError>> + 'a {
        kv.scan_prefix(self.table, &P::encode(prefix))
            .map(move |r| {
                let (k, v) = r?;
                Ok((K::decode(&k).map_err(|why| self.corrupt(why))?, v))
            })
    }

    fn rows<'a, T: 'a>(
        &'a self,
        kv: &'a Kv,
        prefix: Vec<u8>,
    ) -> impl DoubleEndedIterator<Item = Result<Row<K, T>, StoreError>> + 'a
    where
        V: Decode<T>,
    {
        kv.scan_prefix(self.table, &prefix)
            .map(move |r| self.row(r?))
    }

    /// How many rows have a key beginning with the first parts `prefix` (nothing is decoded).
    pub fn count_prefix<P: Prefix<K>>(
        &self,
        kv: &Kv,
        prefix: P::Ref<'_>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for row in kv.scan_prefix(self.table, &P::encode(prefix)) {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// Delete, in `batch`, every row whose key begins with the first parts `prefix`.
    pub fn delete_prefix<P: Prefix<K>>(
        &self,
        kv: &Kv,
        batch: &mut Batch,
        prefix: P::Ref<'_>,
    ) -> Result<(), StoreError> {
        for row in kv.scan_prefix(self.table, &P::encode(prefix)) {
            let (k, _) = row?;
            batch.delete(self.table, &k);
        }
        Ok(())
    }

    /// The rows with keys in `[from, to)`, in key order.
    pub fn range<'a, T: 'a>(
        &'a self,
        kv: &'a Kv,
        from: K::Ref<'_>,
        to: K::Ref<'_>,
    ) -> impl DoubleEndedIterator<Item = Result<Row<K, T>, StoreError>> + 'a
    where
        V: Decode<T>,
    {
        kv.range(self.table, &K::encode(from), &K::encode(to))
            .map(move |r| self.row(r?))
    }
}

impl<V> Map<U64, V> {
    /// Rows keyed by stream position in `(after, upto]`: what a consumer that has handled
    /// everything up to `after` reads next.
    pub fn stream<'a, T: 'a>(
        &'a self,
        kv: &'a Kv,
        after: u64,
        upto: u64,
    ) -> impl DoubleEndedIterator<Item = Result<Row<U64, T>, StoreError>> + 'a
    where
        V: Decode<T>,
    {
        self.range(kv, after.saturating_add(1), upto.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        codec::{Json, Str, Unit, U64},
        First, Kv,
    };

    use super::*;

    const DEVICES: Map<(Str, Str), Json> = Map::new(Table::Device);
    const TIMELINE: Map<(U64, U64), U64> = Map::new(Table::Timeline);
    const PUBLIC: Map<Str, Unit> = Map::new(Table::PublicRoom);

    #[test]
    fn typed_rows_round_trip_on_the_memory_engine() {
        let kv = Kv::memory();
        let mut b = Batch::default();
        DEVICES
            .put(
                &mut b,
                ("@a:x", "D1"),
                &serde_json::json!({"name": "phone"}),
            )
            .unwrap();
        DEVICES
            .put(&mut b, ("@a:x", "D2"), &serde_json::json!({}))
            .unwrap();
        // A NUL in a device id cannot reach into another user's rows.
        DEVICES
            .put(&mut b, ("@a", "x\0D3"), &serde_json::json!({}))
            .unwrap();
        for n in 1..=5u64 {
            TIMELINE.put(&mut b, (7, n), &(100 + n)).unwrap();
        }
        PUBLIC.put(&mut b, "!r:x", &()).unwrap();
        kv.apply(b).unwrap();

        let d: Option<serde_json::Value> = DEVICES.get(&kv, ("@a:x", "D1")).unwrap();
        assert_eq!(d.unwrap()["name"], "phone");
        let mine: Vec<(String, String)> = DEVICES
            .prefix::<First<1>, serde_json::Value>(&kv, ("@a:x",))
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(
            mine,
            vec![("@a:x".into(), "D1".into()), ("@a:x".into(), "D2".into())]
        );
        let other: Vec<(String, String)> = DEVICES
            .prefix::<First<1>, serde_json::Value>(&kv, ("@a",))
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(other, vec![("@a".into(), "x\0D3".into())]);

        let page: Vec<((u64, u64), u64)> = TIMELINE
            .range(&kv, (7, 2), (7, 5))
            .rev()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(page, vec![((7, 4), 104), ((7, 3), 103), ((7, 2), 102)]);
        assert!(PUBLIC.contains(&kv, "!r:x").unwrap());
        assert!(!PUBLIC.contains(&kv, "!r").unwrap());
    }

    #[test]
    fn a_record_of_the_wrong_shape_is_corrupt_not_a_panic() {
        let kv = Kv::memory();
        let mut b = Batch::default();
        b.put(Table::Timeline, b"short", b"1");
        kv.apply(b).unwrap();
        let rows: Vec<_> = TIMELINE.iter::<u64>(&kv).collect();
        assert!(matches!(rows[0], Err(StoreError::Corrupt { .. })));
    }
}
