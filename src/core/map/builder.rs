//! Building a `Map` key by key in time linear in its keys (see the
//! module above for why).

use super::{Map, Str, Value};
use std::collections::hash_map::{Entry, HashMap};

/// Up to this many keys, a builder finds duplicates by scanning (no
/// hashing for the objects events are made of); past it, by a hash index.
pub(super) const LINEAR_KEYS: usize = 32;

/// Builds a `Map` one entry at a time in time linear in its entries: a
/// duplicate key replaces the earlier value at the earlier key's position
/// (what `jq -c` prints for `{"a":1,"b":2,"a":3}` is `{"a":3,"b":2}`).
pub(crate) struct Builder {
    map: Map,
    /// Key -> position in `map`, built once `map` has `LINEAR_KEYS` keys.
    /// std's SipHash with a random seed: keys come from input, and a
    /// hostile client must not be able to choose colliding ones.
    index: Option<HashMap<Str, usize>>,
    /// One bit per key seen (by length and end bytes): a key whose bit is
    /// clear is new and needs no scan. Duplicates are rare in events, so
    /// most keys skip the scan that was ~10 % of decoding.
    seen: u64,
}

/// A key's bit in `Builder::seen`.
#[inline(always)]
fn key_bit(key: &[u8]) -> u64 {
    let (first, last) = match key {
        [] => (0, 0),
        [f, .., l] => (*f, *l),
        [f] => (*f, *f),
    };
    let mix = (key.len() as u32).wrapping_mul(0x9E37) ^ (first as u32) << 3 ^ (last as u32) << 7;
    1 << ((mix ^ mix >> 6) & 63)
}

fn seen_bits(map: &Map) -> u64 {
    map.entries
        .iter()
        .fold(0, |m, (k, _)| m | key_bit(k.as_bytes()))
}

impl Builder {
    #[inline]
    pub(crate) fn new(map: Map) -> Self {
        Self {
            seen: seen_bits(&map),
            map,
            index: None,
        }
    }

    /// Adds `key`, or replaces its value in place when already there.
    /// Inlined: this runs once per key of every decoded event, and the
    /// small-object scan is the hot path (a call per key cost 5 % of job B).
    #[inline(always)]
    pub(crate) fn insert(&mut self, key: Str, value: Value) {
        if self.index.is_none() && self.map.entries.len() < LINEAR_KEYS {
            let bit = key_bit(key.as_bytes());
            if self.seen & bit == 0 {
                self.seen |= bit;
                self.map.entries.push((key, value));
                return;
            }
            match self.map.position(&key) {
                Some(i) => self.map.entries[i].1 = value,
                None => self.map.entries.push((key, value)),
            }
            return;
        }
        self.insert_indexed(key, value);
    }

    /// Adds `key`, known to differ from every key added so far (the
    /// decoder's keys of the last event, matched in order). The seen mask
    /// is left behind: call [`Self::resume`] before the next `insert`.
    #[inline(always)]
    pub(crate) fn push_new(&mut self, key: Str, value: Value) {
        if self.index.is_none() && self.map.entries.len() < LINEAR_KEYS {
            self.map.entries.push((key, value));
        } else {
            self.insert_indexed(key, value);
        }
    }

    /// Brings the seen mask up to date after [`Self::push_new`].
    pub(crate) fn resume(&mut self) {
        self.seen = seen_bits(&self.map);
    }

    /// Objects past `LINEAR_KEYS` keys: through the index.
    #[cold]
    #[inline(never)]
    fn insert_indexed(&mut self, key: Str, value: Value) {
        let entries = &mut self.map.entries;
        let index = self.index.get_or_insert_with(|| {
            entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect()
        });
        match index.entry(key) {
            Entry::Occupied(at) => entries[*at.get()].1 = value,
            Entry::Vacant(at) => {
                entries.push((at.key().clone(), value));
                at.insert(entries.len() - 1);
            }
        }
    }

    #[inline]
    pub(crate) fn finish(self) -> Map {
        self.map
    }
}

impl FromIterator<(Str, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Str, Value)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut b = Builder::new(Map::with_capacity(iter.size_hint().0.min(1024)));
        for (k, v) in iter {
            b.insert(k, v);
        }
        b.finish()
    }
}

impl Extend<(Str, Value)> for Map {
    fn extend<I: IntoIterator<Item = (Str, Value)>>(&mut self, iter: I) {
        let mut b = Builder::new(std::mem::take(self));
        for (k, v) in iter {
            b.insert(k, v);
        }
        *self = b.finish();
    }
}
