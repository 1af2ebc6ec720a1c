//! An insertion-ordered object: a vector of entries with linear lookup.
//! Events have a handful of keys, where comparing a few short strings beats
//! hashing; `get` compares lengths before bytes.
//!
//! Building a whole object key by key (decoding, `collect`) would make that
//! scan quadratic in the number of keys: a 200,000-key JSON object took
//! minutes. `Builder` scans while the object is small and switches to a
//! temporary hash index of key -> position past `LINEAR_KEYS`, so building
//! any object costs time linear in its size. The index is dropped once the
//! object is built; lookups afterwards scan as before.

use super::{Str, Value};
use std::collections::hash_map::{Entry, HashMap};

/// Up to this many keys, a builder finds duplicates by scanning (no
/// hashing for the objects events are made of); past it, by a hash index.
const LINEAR_KEYS: usize = 32;

#[derive(Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<(Str, Value)>,
}

impl Map {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(k, _)| k.len() == key.len() && k.as_str() == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).map(move |i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Replaces the value of an existing key in place (keeping its position)
    /// or appends a new key, like jq.
    pub fn insert(&mut self, key: Str, value: Value) -> Option<Value> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value at `key`, inserting `default()` at the end when missing.
    pub fn entry_or_insert_with(
        &mut self,
        key: &str,
        default: impl FnOnce() -> Value,
    ) -> &mut Value {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.entries.push((key.into(), default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`, keeping the order of the others (jq's `del`).
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Str> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

impl IntoIterator for Map {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Builds a `Map` one entry at a time in time linear in its entries: a
/// duplicate key replaces the earlier value at the earlier key's position
/// (what `jq -c` prints for `{"a":1,"b":2,"a":3}` is `{"a":3,"b":2}`).
pub(crate) struct Builder {
    map: Map,
    /// Key -> position in `map`, built once `map` has `LINEAR_KEYS` keys.
    /// std's SipHash with a random seed: keys come from input, and a
    /// hostile client must not be able to choose colliding ones.
    index: Option<HashMap<Str, usize>>,
}

impl Builder {
    #[inline]
    pub(crate) fn new(map: Map) -> Self {
        Self { map, index: None }
    }

    /// Adds `key`, or replaces its value in place when already there.
    /// Inlined: this runs once per key of every decoded event, and the
    /// small-object scan is the hot path (a call per key cost 5 % of job B).
    #[inline(always)]
    pub(crate) fn insert(&mut self, key: Str, value: Value) {
        if self.index.is_none() && self.map.entries.len() < LINEAR_KEYS {
            match self.map.position(&key) {
                Some(i) => self.map.entries[i].1 = value,
                None => self.map.entries.push((key, value)),
            }
            return;
        }
        self.insert_indexed(key, value);
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

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_insertion_order_replaces_in_place_and_removes_in_order() {
        let mut m = Map::new();
        for k in ["a", "b", "c"] {
            m.insert(k.into(), Value::Null);
        }
        m.insert("a".into(), Value::Bool(true));
        assert_eq!(
            m.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.get("a"), Some(&Value::Bool(true)));
        m.remove("b");
        assert_eq!(m.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }

    fn keys(m: &Map) -> Vec<&str> {
        m.keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn builders_keep_the_first_place_and_the_last_value_on_both_sides_of_the_switch() {
        for n in [3, LINEAR_KEYS - 1, LINEAR_KEYS, LINEAR_KEYS + 1, 200] {
            let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
            let mut b = Builder::new(Map::new());
            for (i, k) in names.iter().enumerate() {
                b.insert(k.as_str().into(), Value::from(i));
            }
            // Every key again, last first: each replaces in place.
            for (i, k) in names.iter().enumerate().rev() {
                b.insert(k.as_str().into(), Value::from(i + 1000));
            }
            b.insert("new".into(), Value::Null);
            let m = b.finish();
            assert_eq!(m.len(), n + 1, "{n}");
            assert_eq!(
                keys(&m)[..n],
                names.iter().map(String::as_str).collect::<Vec<_>>()
            );
            assert_eq!(keys(&m)[n], "new");
            assert!(
                names
                    .iter()
                    .enumerate()
                    .all(|(i, k)| m.get(k) == Some(&Value::from(i + 1000)))
            );
        }
    }

    #[test]
    fn collect_and_extend_replace_in_place() {
        let mut m: Map = (0..100)
            .map(|i| (Str::from(format!("k{}", i % 40)), Value::from(i)))
            .collect();
        assert_eq!(m.len(), 40);
        assert_eq!(m.get("k0"), Some(&Value::from(80)));
        assert_eq!(keys(&m)[..2], ["k0", "k1"]);
        m.extend([("k1".into(), Value::Null), ("z".into(), Value::Bool(true))]);
        assert_eq!(m.len(), 41);
        assert_eq!((keys(&m)[1], keys(&m)[40]), ("k1", "z"));
        assert_eq!(m.get("k1"), Some(&Value::Null));
    }
}
