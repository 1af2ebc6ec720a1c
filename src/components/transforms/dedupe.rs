//! `dedupe`: drops repeats of a key seen within `ttl` (SPEC §12), keeping
//! at most `max_keys` keys in memory.

use crate::components::stateful::{Stateful, StatefulOutput, hash_value};
use crate::components::{Transform, TransformOutput};
use crate::config::duration::ConfigDuration;
use crate::core::{Acks, Batch, Failed, Value};
use crate::expr::Program;
use crate::telemetry::DiscardReason;
use lru::LruCache;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

fn default_max_keys() -> usize {
    100_000
}

/// Drops an event whose `key` was seen within `ttl` (counted as discarded, reason `duplicate`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// jq expression whose value (any JSON) identifies an event, e.g. `.id` or `[.host, .seq]`.
    /// An event without it (null) is an error of the stage (`on_error`).
    pub key: String,
    /// How long a key is remembered after it was first seen, e.g. `10m`; a repeat after it
    /// passes, and is remembered anew. Absent: until `max_keys` pushes the key out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<ConfigDuration>,
    /// Keys remembered at most; past it the key first seen longest ago is forgotten (counted
    /// in `flowgate_state_evictions_total`). Default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl DedupeConfig {
    pub fn check_settings(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.max_keys == 0 {
            problems.push((vec!["max_keys"], "must be at least 1".to_string()));
        }
        if self.ttl.as_ref().is_some_and(|t| t.0.is_zero()) {
            problems.push((vec!["ttl"], "must be longer than 0s".to_string()));
        }
        problems
    }

    pub fn build(&self) -> Result<Dedupe, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let key = super::compile(&self.key, &["key"], &mut problems);
        match key {
            Some(key) if problems.is_empty() => Ok(Dedupe {
                key: Arc::new(key),
                ttl_ms: self.ttl.as_ref().map(|t| t.0.as_millis() as i64),
                max_keys: self.max_keys.max(1),
            }),
            _ => Err(problems),
        }
    }
}

pub struct Dedupe {
    key: Arc<Program>,
    ttl_ms: Option<i64>,
    max_keys: usize,
}

impl Transform for Dedupe {
    /// Only reached when a `flowgate test` fault wraps the stage.
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        crate::components::stateful::refuse_faults(batch, out);
    }

    fn stateful(&self) -> Option<Box<dyn Stateful>> {
        Some(Box::new(Deduping {
            key: self.key.clone(),
            ttl_ms: self.ttl_ms,
            max_keys: self.max_keys,
            // Bounded by `max_keys`, checked before each insert.
            seen: LruCache::unbounded(),
        }))
    }
}

/// A key value, compared as JSON and hashed structurally.
#[derive(PartialEq)]
struct Key(Value);

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_value(&self.0, h)
    }
}

pub struct Deduping {
    key: Arc<Program>,
    ttl_ms: Option<i64>,
    max_keys: usize,
    /// Key -> when it was first seen; least recent first seen at the back.
    seen: LruCache<Key, i64>,
}

impl Stateful for Deduping {
    fn process(&mut self, batch: Batch, _acks: &Acks, now_ms: i64, out: &mut StatefulOutput) {
        // Keys first seen longest ago expire first: forget the expired ones.
        if let Some(ttl) = self.ttl_ms {
            while self
                .seen
                .peek_lru()
                .is_some_and(|(_, &at)| now_ms - at >= ttl)
            {
                self.seen.pop_lru();
            }
        }
        let kept = &mut out.ports[0].0;
        let mut duplicates = 0;
        for event in batch {
            let key = match self.key.first(&event) {
                Ok(Some(v)) if !v.is_null() => Key(v),
                Ok(_) => {
                    out.failed.push(Failed::new(
                        event,
                        "the dedupe key is missing (null)",
                        "program",
                    ));
                    continue;
                }
                Err(e) => {
                    out.failed
                        .push(Failed::new(event, e.to_string(), "program"));
                    continue;
                }
            };
            let fresh = |at: &i64| self.ttl_ms.is_some_and(|ttl| now_ms - *at >= ttl);
            match self.seen.peek(&key) {
                Some(at) if !fresh(at) => duplicates += 1,
                _ => {
                    if self.seen.len() >= self.max_keys && !self.seen.contains(&key) {
                        self.seen.pop_lru();
                        out.evictions += 1;
                    }
                    self.seen.put(key, now_ms);
                    kept.push(event);
                }
            }
        }
        if duplicates > 0 {
            out.discarded.push((DiscardReason::Duplicate, duplicates));
        }
    }

    fn next_deadline(&self) -> Option<i64> {
        None
    }

    fn advance(&mut self, _now_ms: i64, _out: &mut StatefulOutput) {}

    fn flush(&mut self, _out: &mut StatefulOutput) {
        self.seen.clear();
    }

    fn entries(&self) -> usize {
        self.seen.len()
    }

    fn unread(&self, _port: usize) -> DiscardReason {
        DiscardReason::Unmatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    fn dedupe(yaml: &str) -> Box<dyn Stateful> {
        let c: DedupeConfig = serde_yaml::from_str(yaml).unwrap();
        assert!(c.check_settings().is_empty());
        c.build().unwrap().stateful().unwrap()
    }

    fn feed(d: &mut Box<dyn Stateful>, ids: &[i64], now: i64) -> (Vec<i64>, usize, u64) {
        let mut out = StatefulOutput::with_ports(1);
        d.process(
            ids.iter().map(|i| ev!({"id": i})).collect(),
            &Acks::none(),
            now,
            &mut out,
        );
        let kept = out.ports[0]
            .0
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        let dups = out.discarded.iter().map(|(_, n)| n).sum();
        (kept, dups, out.evictions)
    }

    #[test]
    fn repeats_within_the_ttl_are_dropped_and_after_it_pass() {
        let mut d = dedupe("{key: .id, ttl: 10s}");
        assert_eq!(feed(&mut d, &[1, 2, 1, 3, 2], 0), (vec![1, 2, 3], 2, 0));
        assert_eq!(feed(&mut d, &[1, 4], 9_999), (vec![4], 1, 0));
        // 1, 2 and 3 were first seen at 0: forgotten at 10s; 4 is not.
        assert_eq!(feed(&mut d, &[1, 4], 10_000), (vec![1], 1, 0));
        assert_eq!(d.entries(), 2);
    }

    #[test]
    fn max_keys_forgets_the_key_seen_longest_ago() {
        let mut d = dedupe("{key: .id, max_keys: 3}");
        assert_eq!(feed(&mut d, &[1, 2, 3, 4], 0), (vec![1, 2, 3, 4], 0, 1));
        assert_eq!(d.entries(), 3);
        // 1 was forgotten; 2, 3, 4 are remembered.
        assert_eq!(feed(&mut d, &[2, 3, 4, 1], 0), (vec![1], 3, 1));
    }

    #[test]
    fn keys_are_compared_as_json() {
        let mut d = dedupe("{key: '[.a, .b]'}");
        let mut out = StatefulOutput::with_ports(1);
        let events = vec![
            ev!({"a": 1, "b": "x"}),
            ev!({"a": 1, "b": "x", "c": 2}),
            ev!({"a": "1", "b": "x"}),
            ev!({"b": 1}),
        ];
        d.process(events, &Acks::none(), 0, &mut out);
        assert_eq!(
            out.ports[0].0.len(),
            3,
            "1 and \"1\" differ; [null, 1] is a key"
        );
        let mut out = StatefulOutput::with_ports(1);
        d.process(vec![ev!({"x": 1})], &Acks::none(), 0, &mut out);
        assert_eq!(out.ports[0].0.len(), 1, "[null, null] is a key too");
        let mut d = dedupe("{key: .id}");
        let mut out = StatefulOutput::with_ports(1);
        d.process(vec![ev!({"x": 1})], &Acks::none(), 0, &mut out);
        assert_eq!(out.failed.len(), 1, "a missing key is an error");
    }
}
