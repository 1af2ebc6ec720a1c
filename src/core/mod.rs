//! What every layer shares and nothing else: the event value, batches,
//! acknowledgements, stage errors and failed events, and locks that
//! survive a poisoning panic.
//!
//! An event is a JSON object held in flowgate's own `Value`: objects are
//! vectors of (key, value) in insertion order (the order `jq -c` prints),
//! looked up by a linear scan, and short strings and keys live inline
//! (`CompactString`). Events are small objects read a few fields at a time,
//! so this parses about twice as fast as `serde_json::Value` with an
//! `IndexMap`, which hashes every key with SipHash (README "Performance").

pub mod ack;
mod error;
mod failed;
mod json_fast;
mod map;
mod serde_impl;
pub mod sync;
mod value;

pub use ack::{AckedChunks, Acks, Delivery};
pub use compact_str::CompactString as Str;
pub use error::{CallError, ComponentError};
pub use failed::{Failed, Sampled};
pub use map::{Map, Slot};
pub use serde_impl::{MAX_NESTING, encoded_len, from_json};
pub use serde_json::Number;
pub use value::Value;

/// One event. Invariant: always a `Value::Object`.
pub type Event = Value;

/// Events travel between stages in batches; a batch is the unit of queueing,
/// metrics updates and worker dispatch.
pub type Batch = Vec<Event>;

/// Largest batch a source emits. Vector uses chunks of up to 1,000 events;
/// larger batches add latency without measurable throughput gains.
pub const MAX_BATCH: usize = 1000;

/// Adds `.error = {message, component, attempts}` to a failed event (SPEC §2,
/// `on_error: route`), and `.error.sample` when there is one (the start of
/// a line too long to keep, SPEC §10). A non-object value is wrapped as
/// `{"message": value}`.
pub fn with_error(
    event: Event,
    message: &str,
    component: &str,
    attempts: u32,
    sample: Option<&str>,
) -> Event {
    let mut map = match event {
        Value::Object(map) => map,
        other => {
            let mut map = Map::with_capacity(2);
            map.insert("message".into(), other);
            map
        }
    };
    let mut error = Map::with_capacity(4);
    error.insert("message".into(), Value::String(message.into()));
    error.insert("component".into(), Value::String(component.into()));
    error.insert("attempts".into(), Value::Number(attempts.into()));
    if let Some(sample) = sample {
        error.insert("sample".into(), Value::String(sample.into()));
    }
    map.insert("error".into(), Value::Object(error));
    Value::Object(map)
}

/// The event for a line a source could not decode: `{"message": line}`.
pub fn message_event(line: &str) -> Event {
    let mut m = Map::with_capacity(1);
    m.insert("message".into(), Value::String(line.into()));
    Value::Object(m)
}

/// Builds an event `Value` from JSON syntax (tests and examples).
#[macro_export]
macro_rules! ev {
    ($($json:tt)+) => {
        $crate::core::Value::from(serde_json::json!($($json)+))
    };
}
