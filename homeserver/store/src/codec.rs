//! How keys and values become bytes.
//!
//! A key is a tuple of parts. Text parts are UTF-8 and end with a `0x00` separator unless they
//! come last; a NUL inside text is stored as `0xFF`, a byte UTF-8 never uses, so no data can
//! contain a separator and two different keys never share bytes. Text without a NUL encodes
//! exactly as it did before keys were typed, so existing stores read unchanged. Numbers are
//! big-endian and fixed-width, so they sort numerically and need no separator.

use crate::StoreError;

/// Why bytes did not decode as the declared codec.
pub type DecodeError = &'static str;

/// One part of a key (or of a fixed-layout value).
pub trait Part {
    /// What callers pass in.
    type Ref<'a>: Copy;
    /// What decoding gives back.
    type Owned;
    /// Append `v`; `last` parts need no terminator.
    fn put(v: Self::Ref<'_>, out: &mut Vec<u8>, last: bool);
    /// Read one part from the front of `b`, returning the rest.
    fn take(b: &[u8], last: bool) -> Result<(Self::Owned, &[u8]), DecodeError>;
}

/// UTF-8 text (ids, names, event types).
pub struct Str;
/// A big-endian `u64` (short ids, stream positions).
pub struct U64;
/// A big-endian `u32`.
pub struct U32;
/// One byte.
pub struct U8;
/// Opaque bytes (token hashes, meta names); only as the last part.
pub struct Bytes;

/// The byte a NUL inside text is stored as.
const NUL_STORED: u8 = 0xFF;

impl Part for Str {
    type Ref<'a> = &'a str;
    type Owned = String;
    fn put(v: &str, out: &mut Vec<u8>, last: bool) {
        let start = out.len();
        out.extend_from_slice(v.as_bytes());
        if v.as_bytes().contains(&0) {
            for c in &mut out[start..] {
                if *c == 0 {
                    *c = NUL_STORED;
                }
            }
        }
        if !last {
            out.push(0);
        }
    }
    fn take(b: &[u8], last: bool) -> Result<(String, &[u8]), DecodeError> {
        let (text, rest) = if last {
            (b, &b[b.len()..])
        } else {
            let end = b
                .iter()
                .position(|c| *c == 0)
                .ok_or("text part without its end")?;
            (&b[..end], &b[end + 1..])
        };
        let mut bytes = text.to_vec();
        if bytes.contains(&NUL_STORED) {
            for c in &mut bytes {
                if *c == NUL_STORED {
                    *c = 0;
                }
            }
        }
        let s = String::from_utf8(bytes).map_err(|_| "text part is not UTF-8")?;
        Ok((s, rest))
    }
}

macro_rules! fixed_part {
    ($name:ty, $t:ty, $n:expr) => {
        impl Part for $name {
            type Ref<'a> = $t;
            type Owned = $t;
            fn put(v: $t, out: &mut Vec<u8>, _last: bool) {
                out.extend_from_slice(&v.to_be_bytes());
            }
            fn take(b: &[u8], _last: bool) -> Result<($t, &[u8]), DecodeError> {
                let head = b.get(..$n).ok_or("number part cut short")?;
                let arr: [u8; $n] = head.try_into().map_err(|_| "number part cut short")?;
                Ok((<$t>::from_be_bytes(arr), &b[$n..]))
            }
        }
    };
}
fixed_part!(U64, u64, 8);
fixed_part!(U32, u32, 4);
fixed_part!(U8, u8, 1);

impl Part for Bytes {
    type Ref<'a> = &'a [u8];
    type Owned = Vec<u8>;
    fn put(v: &[u8], out: &mut Vec<u8>, _last: bool) {
        out.extend_from_slice(v);
    }
    fn take(b: &[u8], last: bool) -> Result<(Vec<u8>, &[u8]), DecodeError> {
        if !last {
            return Err("opaque bytes can only be the last part");
        }
        Ok((b.to_vec(), &b[b.len()..]))
    }
}

/// A whole key: one part, or a tuple of parts.
pub trait Key {
    type Ref<'a>;
    type Owned;
    fn encode(k: Self::Ref<'_>) -> Vec<u8>;
    fn decode(b: &[u8]) -> Result<Self::Owned, DecodeError>;
}

macro_rules! single_key {
    ($($p:ty),*) => {$(
        impl Key for $p {
            type Ref<'a> = <$p as Part>::Ref<'a>;
            type Owned = <$p as Part>::Owned;
            fn encode(k: Self::Ref<'_>) -> Vec<u8> {
                let mut out = Vec::new();
                <$p>::put(k, &mut out, true);
                out
            }
            fn decode(b: &[u8]) -> Result<Self::Owned, DecodeError> {
                let (v, rest) = <$p>::take(b, true)?;
                if !rest.is_empty() {
                    return Err("bytes after the key");
                }
                Ok(v)
            }
        }
    )*};
}
single_key!(Str, U64, U32, U8, Bytes);

macro_rules! tuple_key {
    ($($p:ident $v:ident),+ ; $lp:ident $lv:ident) => {
        impl<$($p: Part,)+ $lp: Part> Key for ($($p,)+ $lp) {
            type Ref<'a> = ($($p::Ref<'a>,)+ $lp::Ref<'a>);
            type Owned = ($($p::Owned,)+ $lp::Owned);
            fn encode(($($v,)+ $lv): Self::Ref<'_>) -> Vec<u8> {
                let mut out = Vec::new();
                $($p::put($v, &mut out, false);)+
                $lp::put($lv, &mut out, true);
                out
            }
            fn decode(b: &[u8]) -> Result<Self::Owned, DecodeError> {
                let rest = b;
                $(let ($v, rest) = $p::take(rest, false)?;)+
                let ($lv, rest) = $lp::take(rest, true)?;
                if !rest.is_empty() {
                    return Err("bytes after the key");
                }
                Ok(($($v,)+ $lv))
            }
        }
    };
}
tuple_key!(A a; B b);
tuple_key!(A a, B b; C c);
tuple_key!(A a, B b, C c; D d);
tuple_key!(A a, B b, C c, D d; E e);

/// The first parts of a key, for prefix scans: `P` parts taken from a longer key `K`.
pub trait Prefix<K> {
    type Ref<'a>;
    fn encode(p: Self::Ref<'_>) -> Vec<u8>;
}

/// The first N parts of a key.
pub struct First<const N: usize>;

macro_rules! prefix {
    ($n:literal; ($($k:ident),+) ; $($p:ident $v:ident),+) => {
        impl<$($k: Part),+> Prefix<($($k,)+)> for First<$n> {
            type Ref<'a> = ($($p::Ref<'a>,)+);
            fn encode(($($v,)+): Self::Ref<'_>) -> Vec<u8> {
                let mut out = Vec::new();
                $($p::put($v, &mut out, false);)+
                out
            }
        }
    };
}
prefix!(1; (A, B); A a);
prefix!(1; (A, B, C); A a);
prefix!(2; (A, B, C); A a, B b);
prefix!(1; (A, B, C, D); A a);
prefix!(2; (A, B, C, D); A a, B b);
prefix!(3; (A, B, C, D); A a, B b, C c);
prefix!(1; (A, B, C, D, E); A a);
prefix!(2; (A, B, C, D, E); A a, B b);
prefix!(3; (A, B, C, D, E); A a, B b, C c);
prefix!(4; (A, B, C, D, E); A a, B b, C c, D d);

/// How a value of type `T` is written.
pub trait Encode<T: ?Sized> {
    fn encode(v: &T) -> Result<Vec<u8>, StoreError>;
}

/// How a stored value reads back as a `T`.
pub trait Decode<T> {
    fn decode(b: &[u8]) -> Result<T, DecodeError>;
}

/// A serde type as JSON: the records of accounts, devices, events, keys...
pub struct Json;
/// An empty value: the key is the fact (a set).
pub struct Unit;
/// Bytes with a layout of their own (state deltas, meta values).
pub struct Raw;
/// A list of big-endian `u64`s.
pub struct U64List;

impl<T: serde::Serialize + ?Sized> Encode<T> for Json {
    fn encode(v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))
    }
}

impl<T: serde::de::DeserializeOwned> Decode<T> for Json {
    fn decode(b: &[u8]) -> Result<T, DecodeError> {
        serde_json::from_slice(b).map_err(|_| "not the JSON record expected")
    }
}

impl Encode<()> for Unit {
    fn encode(_: &()) -> Result<Vec<u8>, StoreError> {
        Ok(Vec::new())
    }
}

impl Decode<()> for Unit {
    fn decode(_: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Encode<[u8]> for Raw {
    fn encode(v: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(v.to_vec())
    }
}

impl Encode<Vec<u8>> for Raw {
    fn encode(v: &Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(v.clone())
    }
}

impl Encode<str> for Str {
    fn encode(v: &str) -> Result<Vec<u8>, StoreError> {
        Ok(<Str as Key>::encode(v))
    }
}

/// A PDU as JSON: written from its JSON form, read back as JSON or straight into a
/// [`plexus_core::pdu::Pdu`].
pub struct PduJson;

impl<T: serde::Serialize + ?Sized> Encode<T> for PduJson {
    fn encode(v: &T) -> Result<Vec<u8>, StoreError> {
        <Json as Encode<T>>::encode(v)
    }
}

impl Decode<serde_json::Value> for PduJson {
    fn decode(b: &[u8]) -> Result<serde_json::Value, DecodeError> {
        <Json as Decode<serde_json::Value>>::decode(b)
    }
}

/// The JSON bytes, for a reader that wants only part of the event.
impl Decode<Vec<u8>> for PduJson {
    fn decode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(b.to_vec())
    }
}

impl Decode<plexus_core::pdu::Pdu> for PduJson {
    fn decode(b: &[u8]) -> Result<plexus_core::pdu::Pdu, DecodeError> {
        plexus_core::pdu::Pdu::from_json(b).map_err(|_| "not a PDU")
    }
}

impl Decode<Vec<u8>> for Raw {
    fn decode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(b.to_vec())
    }
}

impl Encode<Vec<u64>> for U64List {
    fn encode(v: &Vec<u64>) -> Result<Vec<u8>, StoreError> {
        Ok(v.iter().flat_map(|n| n.to_be_bytes()).collect())
    }
}

impl Decode<Vec<u64>> for U64List {
    fn decode(b: &[u8]) -> Result<Vec<u64>, DecodeError> {
        if !b.len().is_multiple_of(8) {
            return Err("a list of numbers cut short");
        }
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_be_bytes(a)
            })
            .collect())
    }
}

/// Key codecs double as value codecs for values with a fixed layout (a short id, a pair of
/// snapshot hashes, type and state key).
macro_rules! key_as_value {
    ($($k:ty),*) => {$(
        impl Encode<<$k as Key>::Owned> for $k {
            fn encode(v: &<$k as Key>::Owned) -> Result<Vec<u8>, StoreError> {
                Ok(key_as_value!(@enc $k, v))
            }
        }
        impl Decode<<$k as Key>::Owned> for $k {
            fn decode(b: &[u8]) -> Result<<$k as Key>::Owned, DecodeError> {
                <$k as Key>::decode(b)
            }
        }
    )*};
    (@enc $k:ty, $v:ident) => { <$k as Key>::encode(ToRef::to_ref($v)) };
}

/// Borrow an owned key as the form [`Key::encode`] takes.
trait ToRef<'a, R> {
    fn to_ref(&'a self) -> R;
}
impl<'a> ToRef<'a, &'a str> for String {
    fn to_ref(&'a self) -> &'a str {
        self
    }
}
impl<'a> ToRef<'a, u64> for u64 {
    fn to_ref(&'a self) -> u64 {
        *self
    }
}
impl<'a> ToRef<'a, (u64, u64)> for (u64, u64) {
    fn to_ref(&'a self) -> (u64, u64) {
        *self
    }
}
impl<'a> ToRef<'a, (u64, u32)> for (u64, u32) {
    fn to_ref(&'a self) -> (u64, u32) {
        *self
    }
}
impl<'a> ToRef<'a, (u64, u64, u64)> for (u64, u64, u64) {
    fn to_ref(&'a self) -> (u64, u64, u64) {
        *self
    }
}
impl<'a> ToRef<'a, (&'a str, &'a str)> for (String, String) {
    fn to_ref(&'a self) -> (&'a str, &'a str) {
        (&self.0, &self.1)
    }
}
impl<'a> ToRef<'a, (u8, &'a str)> for (u8, String) {
    fn to_ref(&'a self) -> (u8, &'a str) {
        (self.0, &self.1)
    }
}

key_as_value!(
    Str,
    U64,
    (U64, U64),
    (U64, U32),
    (U64, U64, U64),
    (Str, Str),
    (U8, Str)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_keep_their_old_bytes_and_cannot_hold_a_separator() {
        // What key2/key3 wrote before keys were typed.
        assert_eq!(
            <(Str, Str) as Key>::encode(("@a:x", "DEV")),
            b"@a:x\0DEV".to_vec()
        );
        let mut old = 7u64.to_be_bytes().to_vec();
        old.extend_from_slice(b"@a:x");
        assert_eq!(<(U64, Str) as Key>::encode((7, "@a:x")), old);
        // A NUL in data cannot forge a second part.
        let forged = <(Str, Str) as Key>::encode(("a\0b", "c"));
        let honest = <(Str, Str) as Key>::encode(("a", "b\0c"));
        assert_ne!(forged, honest);
        assert_eq!(
            <(Str, Str) as Key>::decode(&forged).unwrap(),
            ("a\0b".to_owned(), "c".to_owned())
        );
        assert_eq!(
            <(Str, Str) as Key>::decode(&honest).unwrap(),
            ("a".to_owned(), "b\0c".to_owned())
        );
        assert_eq!(
            forged.iter().filter(|b| **b == 0).count(),
            1,
            "one separator"
        );
    }

    #[test]
    fn tuples_round_trip_and_prefixes_match_their_keys() {
        let k = <(Str, U64, Str, Str)>::encode(("@u:x", 3, "!r:x", "sess"));
        assert_eq!(
            <(Str, U64, Str, Str)>::decode(&k).unwrap(),
            ("@u:x".into(), 3, "!r:x".into(), "sess".into())
        );
        let p = <First<2> as Prefix<(Str, U64, Str, Str)>>::encode(("@u:x", 3));
        assert!(k.starts_with(&p));
        // A prefix on a text part ends at its separator: "@u" is not a prefix of "@u:x".
        let p = <First<1> as Prefix<(Str, U64, Str, Str)>>::encode(("@u",));
        assert!(!k.starts_with(&p));
        assert!(<(U64, U64) as Key>::decode(&[0; 15]).is_err());
        assert!(<(U64, Str) as Key>::decode(&[0; 8]).is_ok());
    }

    #[test]
    fn fixed_values_round_trip() {
        let v = <(U64, U32) as Encode<(u64, u32)>>::encode(&(9, 4)).unwrap();
        assert_eq!(v.len(), 12);
        assert_eq!(
            <(U64, U32) as Decode<(u64, u32)>>::decode(&v).unwrap(),
            (9, 4)
        );
        let l = <U64List as Encode<Vec<u64>>>::encode(&vec![1, 2]).unwrap();
        assert_eq!(
            <U64List as Decode<Vec<u64>>>::decode(&l).unwrap(),
            vec![1, 2]
        );
        let s = <(U8, Str) as Encode<(u8, String)>>::encode(&(1, "$root".into())).unwrap();
        assert_eq!(s, b"\x01$root".to_vec());
    }
}
