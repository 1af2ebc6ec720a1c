//! The interface of stateful transforms (`aggregate`, SPEC §12) and what
//! they share: event times, RFC 3339 bounds, hashing of JSON values.
//!
//! A stateful transform is driven by one task (`stage::stateful`): it sees
//! every batch with its acknowledgements and may keep clones of them in
//! its state until the output made from those events is handed on, so a
//! source's checkpoint never moves past events still inside an open window.
//! Time is passed in, never read: the driver's clock follows tokio time, so
//! windows close under `tokio::time::pause()` in tests.

use crate::core::{Acks, Batch, Failed, Value};
use crate::telemetry::DiscardReason;
use std::hash::{Hash, Hasher};

/// A transform that keeps state across batches.
/// What a stateful transform's `Transform::process` does: it is reached
/// only when a `flowgate test` fault wraps the stage, which cannot drive
/// state, so every event fails with a message that says so.
pub fn refuse_faults(batch: Batch, out: &mut super::TransformOutput) {
    out.failed.extend(batch.into_iter().map(|e| {
        Failed::new(
            e,
            "faults cannot be injected into a stateful transform",
            "fault",
        )
    }));
}

pub trait Stateful: Send + 'static {
    /// Takes one batch at processing time `now_ms` (milliseconds since the
    /// Unix epoch). `acks` are the batch's: keep a clone for what stays in
    /// the state.
    fn process(&mut self, batch: Batch, acks: &Acks, now_ms: i64, out: &mut StatefulOutput);
    /// The processing time at which `advance` has something to emit.
    fn next_deadline(&self) -> Option<i64>;
    /// Processing time has reached `now_ms`.
    fn advance(&mut self, now_ms: i64, out: &mut StatefulOutput);
    /// The input has ended (a clean stop, the end of a `flowgate test`
    /// input): emit everything held.
    fn flush(&mut self, out: &mut StatefulOutput);
    /// Open entries (groups, windows, keys), for `flowgate_state_entries`.
    fn entries(&self) -> usize;
    /// Why events sent to port `port` count as discarded when nothing reads it.
    fn unread(&self, port: usize) -> DiscardReason;
}

/// What a stateful transform hands on after one call. `ports[i]` is the
/// i-th entry of `TransformKind::ports`, with the acknowledgements of the
/// events it was made from.
#[derive(Debug, Default)]
pub struct StatefulOutput {
    pub ports: Vec<(Batch, Acks)>,
    /// Events the stage failed on (they follow `on_error` with the acks of
    /// the batch they came in).
    pub failed: Vec<Failed>,
    pub discarded: Vec<(DiscardReason, usize)>,
    /// Entries emitted early or forgotten to stay within the configured bound.
    pub evictions: u64,
    /// Values an aggregation skipped (missing or of the wrong type).
    pub skipped: usize,
}

impl StatefulOutput {
    pub fn with_ports(n: usize) -> Self {
        Self {
            ports: (0..n).map(|_| (Vec::new(), Acks::none())).collect(),
            ..Self::default()
        }
    }

    /// Whether there is anything to hand on.
    pub fn is_empty(&self) -> bool {
        self.ports.iter().all(|(b, _)| b.is_empty())
            && self.failed.is_empty()
            && self.discarded.is_empty()
            && self.evictions == 0
            && self.skipped == 0
    }
}

/// Below this magnitude an epoch number is seconds, above it milliseconds
/// (1e11 s is the year 5138; 1e11 ms is 1973).
const SECONDS_BELOW: f64 = 1e11;

/// An event time in milliseconds since the epoch: an RFC 3339 string, or
/// a number of seconds or milliseconds since the epoch.
pub fn event_time_ms(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|e| format!("time '{s}' is not an RFC 3339 timestamp: {e}")),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() {
                return Err(format!("time {n} is not a finite number"));
            }
            let ms = if f.abs() < SECONDS_BELOW {
                f * 1000.0
            } else {
                f
            };
            Ok(ms.floor() as i64)
        }
        Value::Null => Err("time is missing (null)".into()),
        other => Err(format!(
            "time must be an RFC 3339 string or epoch seconds/milliseconds, not {other}"
        )),
    }
}

/// RFC 3339 in UTC, with milliseconds only when there are some.
pub fn rfc3339(ms: i64) -> Value {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => Value::String(t.to_string().into()),
        Err(_) => Value::Number(ms.into()),
    }
}

/// Hashes a JSON value structurally (equal values, equal hashes; a string
/// and a number with the same text differ).
pub fn hash_value<H: Hasher>(v: &Value, h: &mut H) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Value::Number(n) => {
            2u8.hash(h);
            // 1 and 1.0 are equal in jq; hash them alike.
            match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => (i as f64).to_bits().hash(h),
                (None, Some(f)) => f.to_bits().hash(h),
                _ => n.to_string().hash(h),
            }
        }
        Value::String(s) => {
            3u8.hash(h);
            s.as_str().hash(h);
        }
        Value::Array(a) => {
            4u8.hash(h);
            a.len().hash(h);
            for x in a {
                hash_value(x, h);
            }
        }
        Value::Object(m) => {
            5u8.hash(h);
            m.len().hash(h);
            for (k, x) in m.iter() {
                k.as_str().hash(h);
                hash_value(x, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    #[test]
    fn event_times_in_every_accepted_form() {
        let t = 1_764_237_600_000; // 2025-11-27T10:00:00Z
        assert_eq!(event_time_ms(&ev!("2025-11-27T10:00:00Z")), Ok(t));
        assert_eq!(event_time_ms(&ev!("2025-11-27T11:00:00+01:00")), Ok(t));
        assert_eq!(event_time_ms(&ev!(1_764_237_600)), Ok(t));
        assert_eq!(event_time_ms(&ev!(1_764_237_600.5)), Ok(t + 500));
        assert_eq!(event_time_ms(&ev!(1_764_237_600_000u64)), Ok(t));
        assert!(event_time_ms(&ev!("yesterday")).is_err());
        assert!(event_time_ms(&ev!(null)).is_err());
        assert!(event_time_ms(&ev!([1])).is_err());
        assert_eq!(rfc3339(t), ev!("2025-11-27T10:00:00Z"));
        assert_eq!(rfc3339(t + 250), ev!("2025-11-27T10:00:00.25Z"));
    }
}
