//! `aggregate`: windowed aggregations per group (SPEC §12): tumbling,
//! hopping and session windows over processing or event time, one output
//! event per (group, window), late events to `<name>.late`.

use super::aggregate_fns::{Acc, AggFn, AggregationConfig, Kind};
use super::aggregate_state::{Entry, WindowState, Windows};
use crate::components::stateful::{Stateful, StatefulOutput, event_time_ms, rfc3339};
use crate::components::{Transform, TransformOutput};
use crate::config::duration::ConfigDuration;
use crate::core::{Acks, Batch, Failed, Map, Value};
use crate::expr::Program;
use crate::telemetry::DiscardReason;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The shape of the windows.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// Back-to-back windows of `size`, aligned to the Unix epoch (a 1m window starts on the minute).
    Tumbling {
        /// Length of each window, e.g. `1m`.
        size: ConfigDuration,
    },
    /// Windows of `size` starting every `every` (an event falls in size/every windows, at most 1000).
    Hopping {
        /// Length of each window, e.g. `5m`.
        size: ConfigDuration,
        /// Time between window starts, e.g. `1m`; at most `size`.
        every: ConfigDuration,
    },
    /// Per group, a window that lasts while events keep coming less than `gap` apart.
    Session {
        /// Inactivity that ends a session, e.g. `30s`.
        gap: ConfigDuration,
    },
}

fn default_max_groups() -> usize {
    100_000
}

/// Aggregates events per group and time window: one output event per (group, window) with
/// the group fields, `window_start`, `window_end` (RFC 3339) and the aggregations.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Output field -> jq expression, e.g. `{host: '.host', status: '.status'}`; one output per
    /// distinct combination. A missing value groups as null. Absent: one group.
    #[serde(default)]
    pub group_by: IndexMap<String, String>,
    /// `{type: tumbling, size}`, `{type: hopping, size, every}` or `{type: session, gap}`.
    pub window: WindowConfig,
    /// jq expression for the event time: an RFC 3339 string, or epoch seconds or milliseconds
    /// (numbers below 1e11 are seconds). An event without a valid time is an error of the stage
    /// (`on_error`, error type `time`). Absent: processing time (windows close by the clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// With `time`: a window is emitted once the latest event time seen passes its end plus
    /// this; events for windows already emitted are late (`<name>.late` if read, else discarded
    /// with reason `late`). Default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<ConfigDuration>,
    /// Open (group, window) pairs kept at most; past it the one that would close first is
    /// emitted early (counted in `flowgate_state_evictions_total`). Default 100000.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Output field -> aggregation: `count`, `{sum: EXPR}`, `{min: EXPR}`, `{max: EXPR}`,
    /// `{avg: EXPR}`, `{percentile: EXPR, p: 0.99}`, `{count_distinct: EXPR}`, `{first: EXPR}`,
    /// `{last: EXPR}`.
    pub aggregations: IndexMap<String, AggregationConfig>,
}

fn ms(d: &ConfigDuration) -> i64 {
    i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Windows one event may fall in (hopping `size / every`): each costs an
/// entry and an update per event.
const MAX_HOPS: u128 = 1000;

/// Names the aggregate's outputs already use.
const RESERVED: [&str; 2] = ["window_start", "window_end"];

impl AggregateConfig {
    fn windows(&self) -> Windows {
        match &self.window {
            WindowConfig::Tumbling { size } => Windows::Tumbling { size: ms(size) },
            WindowConfig::Hopping { size, every } => Windows::Hopping {
                size: ms(size),
                every: ms(every),
            },
            WindowConfig::Session { gap } => Windows::Session { gap: ms(gap) },
        }
    }

    /// Problems with settings other than programs, as (key path, message).
    pub fn check_settings(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        let positive = |d: &ConfigDuration| d.0 >= Duration::from_millis(1);
        match &self.window {
            WindowConfig::Tumbling { size } if !positive(size) => problems.push((
                vec!["window", "size"],
                "size must be at least 1ms".to_string(),
            )),
            WindowConfig::Hopping { size, every }
                if !positive(size) || !positive(every) || every.0 > size.0 =>
            {
                problems.push((
                    vec!["window", "every"],
                    "hopping windows need 1ms <= every <= size".to_string(),
                ))
            }
            WindowConfig::Hopping { size, every }
                if size.0.as_millis().div_ceil(every.0.as_millis()) > MAX_HOPS =>
            {
                problems.push((
                    vec!["window", "every"],
                    format!("an event would fall in more than {MAX_HOPS} windows: make every at least size / {MAX_HOPS}"),
                ))
            }
            WindowConfig::Session { gap } if !positive(gap) => problems.push((
                vec!["window", "gap"],
                "gap must be at least 1ms".to_string(),
            )),
            _ => {}
        }
        if self.allowed_lateness.is_some() && self.time.is_none() {
            problems.push((
                vec!["allowed_lateness"],
                "needs `time` (event time): under processing time no event is late".to_string(),
            ));
        }
        if self.max_groups == 0 {
            problems.push((
                vec!["max_groups"],
                "max_groups must be at least 1".to_string(),
            ));
        }
        if self.aggregations.is_empty() {
            problems.push((
                vec!["aggregations"],
                "needs at least one aggregation, e.g. `requests: count`".to_string(),
            ));
        }
        for (field, agg) in &self.aggregations {
            if let Err(message) = agg.parts() {
                problems.push((
                    vec!["aggregations"],
                    format!("aggregation '{field}' {message}"),
                ));
            }
        }
        let fields = self.group_by.keys().chain(self.aggregations.keys());
        let mut seen = std::collections::HashSet::new();
        for f in fields {
            if RESERVED.contains(&f.as_str()) {
                problems.push((
                    vec!["aggregations"],
                    format!("output field '{f}' is the window's own: pick another name"),
                ));
            } else if !seen.insert(f) {
                problems.push((
                    vec!["aggregations"],
                    format!("output field '{f}' is used twice (in group_by and aggregations)"),
                ));
            }
        }
        problems
    }

    pub fn build(&self) -> Result<Aggregate, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let group: Vec<(String, Option<Program>)> = self
            .group_by
            .iter()
            .map(|(f, code)| {
                (
                    f.clone(),
                    super::compile(code, &["group_by", f], &mut problems),
                )
            })
            .collect();
        let time = self
            .time
            .as_deref()
            .map(|code| super::compile(code, &["time"], &mut problems));
        let mut fns = Vec::new();
        for (field, agg) in &self.aggregations {
            // Entries that name no single function are reported by `check_settings`.
            let Ok((kind, code, p)) = agg.parts() else {
                continue;
            };
            let program = code.map(|c| super::compile(c, &["aggregations", field], &mut problems));
            fns.push(AggFn {
                field: field.clone(),
                kind,
                program: program.flatten(),
                p,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Aggregate {
            spec: Arc::new(Spec {
                group: group
                    .into_iter()
                    .map(|(f, p)| (f, p.expect("compiled")))
                    .collect(),
                time: time.map(|p| p.expect("compiled")),
                fns,
                windows: self.windows(),
                lateness: self.allowed_lateness.as_ref().map_or(0, ms),
                max_groups: self.max_groups,
            }),
        })
    }
}

/// The compiled configuration, shared by the built transform and its state.
struct Spec {
    group: Vec<(String, Program)>,
    time: Option<Program>,
    fns: Vec<AggFn>,
    windows: Windows,
    lateness: i64,
    max_groups: usize,
}

pub struct Aggregate {
    spec: Arc<Spec>,
}

impl Aggregate {
    /// A fresh state machine (also for tests, which drive it directly).
    pub fn start(&self) -> Aggregating {
        let s = &self.spec;
        Aggregating {
            state: WindowState::new(s.windows, s.lateness, s.max_groups),
            spec: s.clone(),
            group: Vec::with_capacity(s.group.len()),
            values: Vec::with_capacity(s.fns.len()),
            closed: Vec::new(),
            seq: 0,
        }
    }
}

impl Transform for Aggregate {
    /// Only reached when a `flowgate test` fault wraps the stage (the
    /// wrapper is stateless): the events fail rather than pass unaggregated.
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        crate::components::stateful::refuse_faults(batch, out);
    }

    fn stateful(&self) -> Option<Box<dyn Stateful>> {
        Some(Box::new(self.start()))
    }
}

/// A running aggregate: its open windows and scratch space reused per event.
pub struct Aggregating {
    spec: Arc<Spec>,
    state: WindowState,
    group: Vec<Value>,
    values: Vec<Option<Value>>,
    closed: Vec<Entry>,
    /// Arrival order, for `first` and `last` across merged sessions.
    seq: u64,
}

impl Aggregating {
    /// The output event of a closed entry.
    fn output(spec: &Spec, e: Entry) -> Value {
        let mut m = Map::with_capacity(spec.group.len() + 2 + spec.fns.len());
        for ((field, _), v) in spec.group.iter().zip(e.group) {
            m.insert(field.as_str().into(), v);
        }
        m.insert("window_start".into(), rfc3339(e.start));
        m.insert("window_end".into(), rfc3339(e.end));
        for (f, acc) in spec.fns.iter().zip(e.accs) {
            m.insert(f.field.as_str().into(), acc.finish(f.p));
        }
        Value::Object(m)
    }

    /// Hands on the closed entries: their events on port 0, with the
    /// acknowledgements of everything they were made from.
    fn emit_closed(&mut self, out: &mut StatefulOutput) {
        if self.closed.is_empty() {
            return;
        }
        let (batch, acks) = &mut out.ports[0];
        for mut e in self.closed.drain(..) {
            acks.merge(std::mem::take(&mut e.acks));
            batch.push(Self::output(&self.spec, e));
        }
    }

    fn add_event(
        &mut self,
        spec: &Spec,
        event: Value,
        t: i64,
        acks: &Acks,
        out: &mut StatefulOutput,
    ) {
        self.group.clear();
        for (_, p) in &spec.group {
            match p.first(&event) {
                Ok(v) => self.group.push(v.unwrap_or(Value::Null)),
                Err(e) => {
                    out.failed
                        .push(Failed::new(event, format!("group_by: {e}"), "program"));
                    return;
                }
            }
        }
        self.values.clear();
        for f in &spec.fns {
            let v = match &f.program {
                None => None,
                Some(p) => p.first(&event).ok().flatten(),
            };
            self.values.push(v);
        }
        self.seq += 1;
        let (seq, values) = (self.seq, &self.values);
        let mut skipped = 0;
        let hash = self.state.group_hash(&self.group);
        let evicted_before = self.closed.len();
        self.state.add(
            (&self.group, hash),
            t,
            acks,
            &mut self.closed,
            |accs, first| {
                for ((acc, v), f) in accs.iter_mut().zip(values).zip(&spec.fns) {
                    let ok = acc.add(v.as_ref(), seq);
                    if first && !ok && f.kind != Kind::Count {
                        skipped += 1;
                    }
                }
            },
            || spec.fns.iter().map(|f| Acc::new(f.kind)).collect(),
        );
        out.evictions += (self.closed.len() - evicted_before) as u64;
        out.skipped += skipped;
    }
}

impl Stateful for Aggregating {
    fn process(&mut self, batch: Batch, acks: &Acks, now_ms: i64, out: &mut StatefulOutput) {
        self.state.begin_batch();
        let mut late = Vec::new();
        let spec = self.spec.clone();
        for event in batch {
            let t = match &spec.time {
                None => now_ms,
                Some(p) => match p
                    .first(&event)
                    .map_err(|e| e.to_string())
                    .and_then(|v| event_time_ms(&v.unwrap_or(Value::Null)))
                {
                    Ok(t) => t,
                    Err(message) => {
                        out.failed.push(Failed::new(event, message, "time"));
                        continue;
                    }
                },
            };
            if self.state.is_late(t) {
                late.push(event);
                continue;
            }
            // Evicted entries are emitted after this batch with the rest.
            self.add_event(&spec, event, t, acks, out);
            self.state.observe(t);
        }
        if spec.time.is_none() {
            self.state.observe(now_ms);
        }
        self.state.close_due(&mut self.closed);
        self.emit_closed(out);
        if !late.is_empty() {
            out.ports[1] = (late, acks.clone());
        }
    }

    fn next_deadline(&self) -> Option<i64> {
        // Under event time only events move the clock.
        self.spec
            .time
            .is_none()
            .then(|| self.state.next_close())
            .flatten()
    }

    fn advance(&mut self, now_ms: i64, out: &mut StatefulOutput) {
        if self.spec.time.is_none() {
            self.state.observe(now_ms);
            self.state.close_due(&mut self.closed);
            self.emit_closed(out);
        }
    }

    fn flush(&mut self, out: &mut StatefulOutput) {
        self.state.drain(&mut self.closed);
        self.emit_closed(out);
    }

    fn entries(&self) -> usize {
        self.state.len()
    }

    fn unread(&self, port: usize) -> DiscardReason {
        if port == 1 {
            DiscardReason::Late
        } else {
            DiscardReason::Unmatched
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
