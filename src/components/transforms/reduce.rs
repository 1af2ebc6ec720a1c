//! `reduce`: merges consecutive events of a group into one (SPEC §12), e.g.
//! the lines of a stack trace. A group ends on `ends_when`, before a
//! `starts_when` event, after `expire_after` without events, at
//! `max_events`, when `max_groups` pushes it out, or when the pipeline stops.

use super::aggregate_fns::{Acc, Kind};
use crate::components::stateful::{Stateful, StatefulOutput, hash_value};
use crate::components::{Transform, TransformOutput};
use crate::config::duration::ConfigDuration;
use crate::core::{Acks, Batch, Event, Failed, Map, Str, Value};
use crate::expr::Program;
use crate::telemetry::DiscardReason;
use indexmap::IndexMap;
use lru::LruCache;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// How a field's values are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Strings joined with a space (other values as JSON).
    Concat,
    /// Strings joined with a newline (a stack trace's lines).
    ConcatNewline,
    /// Every value, in order, in an array.
    Array,
    /// Sum of the numbers.
    Sum,
    /// Smallest number.
    Min,
    /// Largest number.
    Max,
    /// The first value.
    First,
    /// The last value.
    Last,
}

fn default_expire_after() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_max_events() -> usize {
    1000
}

fn default_max_groups() -> usize {
    10_000
}

/// Merges consecutive events of a group into one event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReduceConfig {
    /// Output field -> jq expression; events with equal values are merged together, and the
    /// merged event's field is set to the group's value. Absent: one group.
    #[serde(default)]
    pub group_by: IndexMap<String, String>,
    /// jq condition: an event for which it is true ends its group (and is part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_when: Option<String>,
    /// jq condition: an event for which it is true starts a new group (the open one ends first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_when: Option<String>,
    /// A group with no new event for this long ends. Default 30s.
    #[serde(default = "default_expire_after")]
    pub expire_after: ConfigDuration,
    /// A group ends once it has merged this many events. Default 1000.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Open groups kept at most; past it the least recently updated one ends early (counted
    /// in `flowgate_state_evictions_total`). Default 10000.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Field -> how its values merge: `concat`, `concat_newline`, `array`, `sum`, `min`, `max`,
    /// `first`, `last`. Other fields: numbers are summed, anything else keeps the last value.
    #[serde(default)]
    pub merge: IndexMap<String, Merge>,
}

impl ReduceConfig {
    pub fn check_settings(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.ends_when.is_some() && self.starts_when.is_some() {
            problems.push((
                vec!["starts_when"],
                "give ends_when or starts_when, not both".to_string(),
            ));
        }
        if self.expire_after.0 < Duration::from_millis(1) {
            problems.push((vec!["expire_after"], "must be at least 1ms".to_string()));
        }
        for (key, n) in [
            ("max_events", self.max_events),
            ("max_groups", self.max_groups),
        ] {
            if n == 0 {
                problems.push((vec![key], "must be at least 1".to_string()));
            }
        }
        problems
    }

    pub fn build(&self) -> Result<Reduce, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let group: Vec<Option<Program>> = self
            .group_by
            .iter()
            .map(|(f, code)| super::compile(code, &["group_by", f], &mut problems))
            .collect();
        let ends = self
            .ends_when
            .as_deref()
            .map(|c| super::compile(c, &["ends_when"], &mut problems));
        let starts = self
            .starts_when
            .as_deref()
            .map(|c| super::compile(c, &["starts_when"], &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Reduce {
            spec: Arc::new(Spec {
                group: group.into_iter().flatten().collect(),
                group_fields: self
                    .group_by
                    .keys()
                    .map(|k| Str::from(k.as_str()))
                    .collect(),
                ends: ends.flatten(),
                starts: starts.flatten(),
                expire_ms: self.expire_after.0.as_millis() as i64,
                max_events: self.max_events.max(1),
                max_groups: self.max_groups.max(1),
                merge: self
                    .merge
                    .iter()
                    .map(|(k, m)| (Str::from(k.as_str()), *m))
                    .collect(),
            }),
        })
    }
}

struct Spec {
    group: Vec<Program>,
    group_fields: Vec<Str>,
    ends: Option<Program>,
    starts: Option<Program>,
    expire_ms: i64,
    max_events: usize,
    max_groups: usize,
    merge: Vec<(Str, Merge)>,
}

pub struct Reduce {
    spec: Arc<Spec>,
}

impl Transform for Reduce {
    /// Only reached when a `flowgate test` fault wraps the stage.
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        crate::components::stateful::refuse_faults(batch, out);
    }

    fn stateful(&self) -> Option<Box<dyn Stateful>> {
        Some(Box::new(Reducing {
            spec: self.spec.clone(),
            // Bounded by `max_groups`, checked before each insert.
            groups: LruCache::unbounded(),
            scratch: Key(Vec::new()),
            batch: 0,
        }))
    }
}

/// Group values, compared as JSON and hashed structurally.
#[derive(PartialEq, Clone)]
struct Key(Vec<Value>);

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for v in &self.0 {
            hash_value(v, h);
        }
    }
}

enum Field {
    Acc(Acc),
    Joined(String, &'static str),
    Array(Vec<Value>),
}

impl Field {
    fn new(merge: Option<Merge>, first: &Value) -> Self {
        let acc = |k| Field::Acc(Acc::new(k));
        match merge {
            Some(Merge::Concat) => Field::Joined(String::new(), " "),
            Some(Merge::ConcatNewline) => Field::Joined(String::new(), "\n"),
            Some(Merge::Array) => Field::Array(Vec::new()),
            Some(Merge::Sum) => acc(Kind::Sum),
            Some(Merge::Min) => acc(Kind::Min),
            Some(Merge::Max) => acc(Kind::Max),
            Some(Merge::First) => acc(Kind::First),
            Some(Merge::Last) => acc(Kind::Last),
            None if matches!(first, Value::Number(_)) => acc(Kind::Sum),
            None => acc(Kind::Last),
        }
    }

    fn add(&mut self, v: Value, seq: u64) {
        match self {
            Field::Acc(a) => {
                a.add(Some(&v), seq);
            }
            Field::Joined(s, sep) => {
                if !s.is_empty() {
                    s.push_str(sep);
                }
                match v {
                    Value::String(t) => s.push_str(&t),
                    other => s.push_str(&other.to_string()),
                }
            }
            Field::Array(a) => a.push(v),
        }
    }

    fn finish(self) -> Value {
        match self {
            Field::Acc(a) => a.finish(0.0),
            Field::Joined(s, _) => Value::String(s.into()),
            Field::Array(a) => Value::Array(a),
        }
    }
}

struct Group {
    fields: Vec<(Str, Field)>,
    events: usize,
    last_seen: i64,
    acks: Acks,
    batch: u64,
}

impl Group {
    fn output(self) -> (Value, Acks) {
        let mut m = Map::with_capacity(self.fields.len());
        for (k, f) in self.fields {
            m.insert(k, f.finish());
        }
        (Value::Object(m), self.acks)
    }
}

pub struct Reducing {
    spec: Arc<Spec>,
    groups: LruCache<Key, Group>,
    scratch: Key,
    batch: u64,
}

impl Reducing {
    /// Hands on a group that ended, its `group_by` fields set to the
    /// group's values (so a numeric key is not summed).
    fn emit(spec: &Spec, out: &mut StatefulOutput, key: &Key, group: Group) {
        let (mut event, acks) = group.output();
        if let Some(m) = event.as_object_mut() {
            for (field, v) in spec.group_fields.iter().zip(&key.0) {
                m.insert(field.clone(), v.clone());
            }
        }
        let (batch, all) = &mut out.ports[0];
        batch.push(event);
        all.merge(acks);
    }

    fn end(&mut self, out: &mut StatefulOutput) {
        if let Some(g) = self.groups.pop(&self.scratch) {
            Self::emit(&self.spec, out, &self.scratch, g);
        }
    }

    /// Whether `p` holds for `event`; `Err` names the key.
    fn test(p: &Option<Program>, key: &str, event: &Event) -> Result<bool, String> {
        match p {
            Some(p) => p.test(event).map_err(|e| format!("{key}: {e}")),
            None => Ok(false),
        }
    }

    fn add(
        &mut self,
        event: Event,
        acks: &Acks,
        now_ms: i64,
        out: &mut StatefulOutput,
    ) -> Result<(), (Event, String)> {
        let spec = self.spec.clone();
        self.scratch.0.clear();
        for p in &spec.group {
            match p.first(&event) {
                Ok(v) => self.scratch.0.push(v.unwrap_or_default()),
                Err(e) => return Err((event, format!("group_by: {e}"))),
            }
        }
        let starts = Self::test(&spec.starts, "starts_when", &event);
        let ends = Self::test(&spec.ends, "ends_when", &event);
        let (starts, ends) = match (starts, ends) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(m), _) | (_, Err(m)) => return Err((event, m)),
        };
        if starts {
            self.end(out);
        }
        if !self.groups.contains(&self.scratch) {
            if self.groups.len() >= spec.max_groups
                && let Some((k, g)) = self.groups.pop_lru()
            {
                out.evictions += 1;
                Self::emit(&spec, out, &k, g);
            }
            let group = Group {
                fields: Vec::new(),
                events: 0,
                last_seen: now_ms,
                acks: Acks::none(),
                batch: 0,
            };
            self.groups.put(self.scratch.clone(), group);
        }
        let batch = self.batch;
        let g = self.groups.get_mut(&self.scratch).expect("inserted above");
        if g.batch != batch {
            g.batch = batch;
            g.acks.merge(acks.clone());
        }
        g.events += 1;
        g.last_seen = now_ms;
        let seq = g.events as u64;
        let Value::Object(map) = event else {
            unreachable!("events are objects")
        };
        for (k, v) in map {
            let merge = spec.merge.iter().find(|(f, _)| *f == k).map(|(_, m)| *m);
            match g.fields.iter_mut().find(|(f, _)| *f == k) {
                Some((_, f)) => f.add(v, seq),
                None => {
                    let mut f = Field::new(merge, &v);
                    f.add(v, seq);
                    g.fields.push((k, f));
                }
            }
        }
        if ends || g.events >= spec.max_events {
            self.end(out);
        }
        Ok(())
    }
}

impl Stateful for Reducing {
    fn process(&mut self, batch: Batch, acks: &Acks, now_ms: i64, out: &mut StatefulOutput) {
        self.advance(now_ms, out);
        self.batch += 1;
        for event in batch {
            if let Err((event, message)) = self.add(event, acks, now_ms, out) {
                out.failed.push(Failed::new(event, message, "program"));
            }
        }
    }

    fn next_deadline(&self) -> Option<i64> {
        self.groups
            .peek_lru()
            .map(|(_, g)| g.last_seen + self.spec.expire_ms)
    }

    fn advance(&mut self, now_ms: i64, out: &mut StatefulOutput) {
        // The least recently updated group expires first.
        while self
            .groups
            .peek_lru()
            .is_some_and(|(_, g)| g.last_seen + self.spec.expire_ms <= now_ms)
        {
            if let Some((k, g)) = self.groups.pop_lru() {
                Self::emit(&self.spec, out, &k, g);
            }
        }
    }

    fn flush(&mut self, out: &mut StatefulOutput) {
        while let Some((k, g)) = self.groups.pop_lru() {
            Self::emit(&self.spec, out, &k, g);
        }
    }

    fn entries(&self) -> usize {
        self.groups.len()
    }

    fn unread(&self, _port: usize) -> DiscardReason {
        DiscardReason::Unmatched
    }
}

#[cfg(test)]
#[path = "reduce_tests.rs"]
mod tests;
