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

mod builder;

use super::{Str, Value};
pub(crate) use builder::Builder;
use std::sync::atomic::{AtomicU32, Ordering};

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
        let key = key.as_bytes();
        self.entries
            .iter()
            .position(|(k, _)| same_key(k.as_bytes(), key))
    }

    /// `position`, trying the slot `hint` remembers first and remembering
    /// where the key was found.
    #[inline(always)]
    fn position_hinted(&self, key: &str, hint: &Slot) -> Option<usize> {
        let at = hint.0.load(Ordering::Relaxed) as usize;
        if let Some((k, _)) = self.entries.get(at)
            && same_key(k.as_bytes(), key.as_bytes())
        {
            return Some(at);
        }
        let found = self.position(key);
        if let Some(i) = found {
            // Written only when the slot moves: a stream whose events share
            // their key order reads the hint and never writes it.
            hint.0.store(i as u32, Ordering::Relaxed);
        }
        found
    }

    /// `get`, looking where `hint` remembers first (see [`Slot`]).
    #[inline]
    pub fn get_hinted(&self, key: &str, hint: &Slot) -> Option<&Value> {
        self.position_hinted(key, hint).map(|i| &self.entries[i].1)
    }

    /// `get_mut`, looking where `hint` remembers first. Always inlined:
    /// the native steps call it per event (a call was ~18 instructions of
    /// the integer update loop's ~125, before that loop kept its hint in a
    /// local and checked it with [`Map::value_at_mut`]).
    #[inline(always)]
    pub fn get_mut_hinted(&mut self, key: &str, hint: &Slot) -> Option<&mut Value> {
        let at = hint.0.load(Ordering::Relaxed) as usize;
        // The hit path on its own, so its second index repeats the first
        // (and its bounds check folds away).
        if self
            .entries
            .get(at)
            .is_some_and(|(k, _)| same_key(k.as_bytes(), key.as_bytes()))
        {
            return self.entries.get_mut(at).map(|(_, v)| v);
        }
        self.position_hinted(key, hint)
            .map(move |i| &mut self.entries[i].1)
    }

    /// The value at position `at` if its key is `key`: the hint check of a
    /// loop over a batch that keeps the hint in a local rather than
    /// loading the shared [`Slot`] per event.
    #[inline(always)]
    pub fn value_at_mut(&mut self, at: usize, key: &str) -> Option<&mut Value> {
        match self.entries.get_mut(at) {
            Some((k, v)) if same_key(k.as_bytes(), key.as_bytes()) => Some(v),
            _ => None,
        }
    }

    /// `insert`, looking where `hint` remembers first.
    #[inline]
    pub fn insert_hinted(&mut self, key: &Str, value: Value, hint: &Slot) -> Option<Value> {
        match self.position_hinted(key, hint) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                hint.0.store(self.entries.len() as u32, Ordering::Relaxed);
                self.entries.push((key.clone(), value));
                None
            }
        }
    }

    /// Appends `key`, which the caller has just looked for and not found
    /// (no second scan), remembering its slot in `hint`.
    #[inline]
    pub fn push_absent_hinted(&mut self, key: &Str, value: Value, hint: &Slot) {
        debug_assert!(self.position(key).is_none(), "{key} is already present");
        hint.0.store(self.entries.len() as u32, Ordering::Relaxed);
        self.entries.push((key.clone(), value));
    }

    /// `entry_or_insert_with`, looking where `hint` remembers first.
    pub fn entry_or_insert_with_hinted(
        &mut self,
        key: &str,
        hint: &Slot,
        default: impl FnOnce() -> Value,
    ) -> &mut Value {
        let i = match self.position_hinted(key, hint) {
            Some(i) => i,
            None => {
                self.entries.push((key.into(), default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    /// `remove`, looking where `hint` remembers first.
    pub fn remove_hinted(&mut self, key: &str, hint: &Slot) -> Option<Value> {
        self.position_hinted(key, hint)
            .map(|i| self.entries.remove(i).1)
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

/// Where a program's field was last found in an event. Events of one
/// stream share their key order, so a lookup that tries the remembered
/// slot first costs one comparison instead of a scan of the keys before
/// it (a chain of sixteen `.hops = ...` maps spent a fifth of its time
/// scanning). Shared by the threads running a program: a stale or racing
/// hint only costs the scan, never a wrong answer.
#[derive(Default)]
pub struct Slot(AtomicU32);

impl Slot {
    /// The remembered position, for a loop's local copy (see [`Map::value_at_mut`]).
    pub fn position(&self) -> usize {
        self.0.load(Ordering::Relaxed) as usize
    }
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        Self(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.0.load(Ordering::Relaxed))
    }
}

/// Key equality for the short keys events have, without a call to
/// `memcmp`: lengths first, then at most two overlapping word loads.
#[inline(always)]
pub(super) fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

impl IntoIterator for Map {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::builder::LINEAR_KEYS;
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
    fn keys_compare_equal_exactly_when_their_bytes_do() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "acc",
            "abd",
            "host",
            "hops",
            "path",
            "abcdefg",
            "abcdefh",
            "bbcdefg",
            "latency_ms",
            "latency_mz",
            "user_id_x",
            "0123456789abcdef",
            "0123456789abcdeg",
            "1123456789abcdef",
            "0123456789abcdef0",
            "0123456789abcdef1",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_key(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn hinted_lookups_find_keys_wherever_they_moved() {
        let hint = Slot::default();
        let mut m: Map = ["ts", "host", "status", "path"]
            .iter()
            .enumerate()
            .map(|(i, k)| (Str::from(*k), Value::from(i)))
            .collect();
        assert_eq!(m.get_hinted("status", &hint), Some(&Value::from(2)));
        assert_eq!(hint.0.load(Ordering::Relaxed), 2);
        m.remove("ts");
        // The remembered slot now holds "path": the lookup scans and moves it.
        assert_eq!(m.get_hinted("status", &hint), Some(&Value::from(2)));
        assert_eq!(hint.0.load(Ordering::Relaxed), 1);
        assert_eq!(m.get_hinted("nope", &hint), None);
        let other = Slot::default();
        assert_eq!(
            m.insert_hinted(&Str::from("hops"), Value::Null, &other),
            None
        );
        assert_eq!(other.0.load(Ordering::Relaxed), 3);
        assert_eq!(
            m.insert_hinted(&Str::from("hops"), Value::Bool(true), &other),
            Some(Value::Null)
        );
        *m.get_mut_hinted("hops", &other).unwrap() = Value::from(7);
        assert_eq!(m.remove_hinted("hops", &other), Some(Value::from(7)));
        assert_eq!(keys(&m), ["host", "status", "path"]);
        let hint = Slot(AtomicU32::new(u32::MAX));
        assert_eq!(m.get_hinted("path", &hint), Some(&Value::from(3)));
    }

    // Keys whose `seen` bits collide, and duplicates among them, against
    // a plain scan: the bit only ever skips the scan for keys not seen.
    #[test]
    fn the_seen_bits_never_hide_a_duplicate() {
        let names: Vec<String> = (0..40).map(|i| format!("k{}", i % 23)).collect();
        let mut expected: Vec<(String, usize)> = Vec::new();
        for (i, k) in names.iter().enumerate() {
            match expected.iter_mut().find(|(e, _)| e == k) {
                Some(e) => e.1 = i,
                None => expected.push((k.clone(), i)),
            }
        }
        let built: Map = names
            .iter()
            .enumerate()
            .map(|(i, k)| (Str::from(k.as_str()), Value::from(i)))
            .collect();
        let got: Vec<(String, usize)> = built
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_u64().unwrap() as usize))
            .collect();
        assert_eq!(got, expected);
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
