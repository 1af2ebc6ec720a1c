//! `sample`: keeps one event in `rate` (SPEC §12), by arrival or by a
//! hash of a key, always keeping the events `exclude` matches.

use crate::components::stateful::{Stateful, StatefulOutput, hash_value};
use crate::components::{Transform, TransformOutput};
use crate::core::{Acks, Batch, Failed};
use crate::expr::Program;
use crate::telemetry::DiscardReason;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::hash::Hasher;
use std::sync::Arc;

/// Keeps one event in `rate`; the others are discarded (reason `sampled`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Keep one event in this many (1 keeps all).
    pub rate: u64,
    /// jq expression: with it, an event is kept when a hash of this value falls in the kept
    /// 1/rate, so all or none of a key's events are kept (the same in every run and process).
    /// Absent: the 1st, (rate+1)th, ... event is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// jq condition: events for which it is true are always kept (and not counted for `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
}

impl SampleConfig {
    pub fn check_settings(&self) -> Vec<(Vec<&'static str>, String)> {
        if self.rate == 0 {
            return vec![(
                vec!["rate"],
                "must be at least 1 (1 keeps every event)".to_string(),
            )];
        }
        Vec::new()
    }

    pub fn build(&self) -> Result<Sample, Vec<super::ProgramProblem>> {
        let mut problems = Vec::new();
        let key = self
            .key
            .as_deref()
            .map(|k| super::compile(k, &["key"], &mut problems));
        let exclude = self
            .exclude
            .as_deref()
            .map(|c| super::compile(c, &["exclude"], &mut problems));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Sample {
            rate: self.rate.max(1),
            key: key.flatten().map(Arc::new),
            exclude: exclude.flatten().map(Arc::new),
        })
    }
}

pub struct Sample {
    rate: u64,
    key: Option<Arc<Program>>,
    exclude: Option<Arc<Program>>,
}

impl Transform for Sample {
    /// Only reached when a `flowgate test` fault wraps the stage.
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        crate::components::stateful::refuse_faults(batch, out);
    }

    fn stateful(&self) -> Option<Box<dyn Stateful>> {
        Some(Box::new(Sampling {
            rate: self.rate,
            key: self.key.clone(),
            exclude: self.exclude.clone(),
            counter: 0,
        }))
    }
}

pub struct Sampling {
    rate: u64,
    key: Option<Arc<Program>>,
    exclude: Option<Arc<Program>>,
    /// Events counted for `rate` so far (without `key`).
    counter: u64,
}

impl Sampling {
    /// Whether `event` is kept; `Err` for a program that failed on it.
    fn keep(&mut self, event: &crate::core::Event) -> Result<bool, String> {
        if let Some(exclude) = &self.exclude
            && exclude.test(event).map_err(|e| format!("exclude: {e}"))?
        {
            return Ok(true);
        }
        match &self.key {
            Some(key) => {
                let v = key.first(event).map_err(|e| format!("key: {e}"))?;
                // SipHash with fixed keys: the same choice in every process.
                let mut h = std::hash::DefaultHasher::new();
                hash_value(&v.unwrap_or_default(), &mut h);
                Ok(h.finish().is_multiple_of(self.rate))
            }
            None => {
                self.counter += 1;
                Ok((self.counter - 1).is_multiple_of(self.rate))
            }
        }
    }
}

impl Stateful for Sampling {
    fn process(&mut self, batch: Batch, _acks: &Acks, _now_ms: i64, out: &mut StatefulOutput) {
        let mut sampled = 0;
        for event in batch {
            match self.keep(&event) {
                Ok(true) => out.ports[0].0.push(event),
                Ok(false) => sampled += 1,
                Err(message) => out.failed.push(Failed::new(event, message, "program")),
            }
        }
        if sampled > 0 {
            out.discarded.push((DiscardReason::Sampled, sampled));
        }
    }

    fn next_deadline(&self) -> Option<i64> {
        None
    }

    fn advance(&mut self, _now_ms: i64, _out: &mut StatefulOutput) {}

    fn flush(&mut self, _out: &mut StatefulOutput) {}

    fn entries(&self) -> usize {
        0
    }

    fn unread(&self, _port: usize) -> DiscardReason {
        DiscardReason::Unmatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    fn sample(yaml: &str, events: Vec<crate::core::Event>) -> (Vec<crate::core::Event>, usize) {
        let c: SampleConfig = serde_yaml::from_str(yaml).unwrap();
        assert!(c.check_settings().is_empty());
        let mut s = c.build().unwrap().stateful().unwrap();
        let mut out = StatefulOutput::with_ports(1);
        s.process(events, &Acks::none(), 0, &mut out);
        let sampled = out.discarded.iter().map(|(_, n)| n).sum();
        (std::mem::take(&mut out.ports[0].0), sampled)
    }

    #[test]
    fn one_in_n_by_arrival_with_exclusions_always_kept() {
        let events = (0..10)
            .map(|i| ev!({"i": i, "level": if i == 3 { "error" } else { "debug" }}))
            .collect();
        let (kept, sampled) = sample("{rate: 4, exclude: '.level == \"error\"'}", events);
        let ids: Vec<i64> = kept.iter().map(|e| e["i"].as_i64().unwrap()).collect();
        // 3 is excluded from sampling; of the other nine, the 1st, 5th and 9th.
        assert_eq!(ids, vec![0, 3, 5, 9]);
        assert_eq!(sampled, 6);
    }

    #[test]
    fn by_key_all_or_none_of_a_keys_events_near_the_rate() {
        let events: Vec<_> = (0..20_000)
            .map(|i| ev!({"user": i % 1000, "n": i}))
            .collect();
        let (kept, sampled) = sample("{rate: 10, key: .user}", events);
        assert_eq!(kept.len() + sampled, 20_000);
        let users: std::collections::BTreeSet<i64> =
            kept.iter().map(|e| e["user"].as_i64().unwrap()).collect();
        assert_eq!(kept.len(), users.len() * 20, "every event of a kept user");
        assert!(
            (70..=130).contains(&users.len()),
            "{} of 1000 users kept",
            users.len()
        );
    }
}
