//! The event and batch types every layer shares.
//!
//! An event is a JSON object. It is kept as a `serde_json::Value` (with
//! `preserve_order`, so keys keep the order `jq` would print them in) behind
//! this small API so the representation can change without touching stages.

/// One event. Invariant: always a `Value::Object`.
pub type Event = serde_json::Value;

/// Events travel between stages in batches; a batch is the unit of queueing,
/// metrics updates and worker dispatch.
pub type Batch = Vec<Event>;

/// Largest batch a source emits. Vector uses chunks of up to 1,000 events;
/// larger batches add latency without measurable throughput gains.
pub const MAX_BATCH: usize = 1000;

/// Adds `.error = {message, component, attempts}` to a failed event (SPEC §2,
/// `on_error: route`). A non-object value is wrapped as `{"message": value}`.
pub fn with_error(event: Event, message: &str, component: &str, attempts: u32) -> Event {
    let mut map = match event {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("message".into(), other);
            map
        }
    };
    map.insert(
        "error".into(),
        serde_json::json!({"message": message, "component": component, "attempts": attempts}),
    );
    serde_json::Value::Object(map)
}
