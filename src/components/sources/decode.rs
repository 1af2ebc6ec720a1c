//! Decoding received bytes into an event, shared by the sources: a line
//! (`stdin`, `file`), a message (`nats`) or a request body (`http_server`)
//! must be one JSON object, and each source words the refusal for what
//! it received. A line or message over `max_line_bytes` is refused
//! without being decoded (SPEC §10).

use super::Codec;
use super::split::SAMPLE_BYTES;
use crate::core::{Event, Failed, Map, Sampled, Value, message_event};

/// `max_line_bytes` when not configured: 1 MiB.
pub fn default_max_line_bytes() -> usize {
    1 << 20
}

/// The problem with a configured `max_line_bytes`, if any.
pub fn check_max_line_bytes(max: usize) -> Vec<(Vec<&'static str>, String)> {
    if max == 0 {
        vec![(vec!["max_line_bytes"], "must be at least 1".to_string())]
    } else {
        Vec::new()
    }
}

/// The `decode` failure for a line or message of `len` bytes, over `max`,
/// that starts with `start`: its event is empty (the input is not kept),
/// and its first [`SAMPLE_BYTES`] are the sample.
pub fn too_long(start: &[u8], len: u64, max: usize, what: &str) -> Sampled {
    let mut start = &start[..start.len().min(SAMPLE_BYTES)];
    // A character cut at the end of the sample is left out, not replaced.
    if let Err(e) = std::str::from_utf8(start)
        && e.error_len().is_none()
    {
        start = &start[..e.valid_up_to()];
    }
    Sampled {
        failed: Failed::new(
            Value::Object(Map::new()),
            format!("{what} is {len} bytes, over max_line_bytes ({max})"),
            "decode",
        ),
        sample: Some(String::from_utf8_lossy(start).into_owned()),
    }
}

/// As [`event`], refusing `bytes` longer than `max` undecoded.
pub fn event_within(bytes: &[u8], codec: Codec, what: &str, max: usize) -> Result<Event, Sampled> {
    if bytes.len() > max {
        return Err(too_long(bytes, bytes.len() as u64, max, what));
    }
    event(bytes, codec, what).map_err(Sampled::from)
}

/// Why bytes are not an event.
#[derive(Debug)]
pub enum NotAnEvent {
    /// Valid JSON, but not an object; kept whole, since an array can still
    /// be a list of events to a caller that accepts one.
    NotAnObject(Value),
    /// Not JSON at all.
    Invalid(serde_json::Error),
}

impl NotAnEvent {
    /// The refusal, worded for `what` (e.g. "line", "message"):
    /// "line is a JSON array, not an object", "line is not valid JSON: ...".
    pub fn describe(&self, what: &str) -> String {
        match self {
            Self::NotAnObject(v) => format!(
                "{what} is a JSON {}, not an object",
                crate::expr::value::type_name(v)
            ),
            Self::Invalid(e) => format!("{what} is not valid JSON: {e}"),
        }
    }
}

/// `bytes` as one JSON object.
pub fn json_object(bytes: &[u8]) -> Result<Event, NotAnEvent> {
    match crate::core::from_json(bytes) {
        Ok(event @ Value::Object(_)) => Ok(event),
        Ok(other) => Err(NotAnEvent::NotAnObject(other)),
        Err(e) => Err(NotAnEvent::Invalid(e)),
    }
}

/// One line or message under `codec`. A refused one is a `decode` failure
/// holding the raw text as `{"message": ...}`, so `on_error: route` keeps
/// what was received.
pub fn event(bytes: &[u8], codec: Codec, what: &str) -> Result<Event, Failed> {
    let raw = || message_event(&String::from_utf8_lossy(bytes));
    match codec {
        Codec::Text => Ok(raw()),
        Codec::Json => {
            json_object(bytes).map_err(|why| Failed::new(raw(), why.describe(what), "decode"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    #[test]
    fn json_objects_pass_and_the_rest_is_refused_in_the_callers_words() {
        assert_eq!(
            event(b"{\"a\":1}", Codec::Json, "line").unwrap(),
            ev!({"a": 1})
        );
        let f = event(b"[1]", Codec::Json, "message").unwrap_err();
        assert_eq!(f.message, "message is a JSON array, not an object");
        assert_eq!((f.error_type, f.event), ("decode", ev!({"message": "[1]"})));
        let f = event(b"nope", Codec::Json, "line").unwrap_err();
        assert_eq!(f.message.split(':').next(), Some("line is not valid JSON"));
        assert_eq!(f.event, ev!({"message": "nope"}));
        assert_eq!(
            event(b"{\"a\":1}", Codec::Text, "line").unwrap(),
            ev!({"message": "{\"a\":1}"})
        );
        assert!(matches!(
            json_object(b"[{}]"),
            Err(NotAnEvent::NotAnObject(Value::Array(items))) if items.len() == 1
        ));
    }

    #[test]
    fn input_over_the_limit_is_refused_undecoded_with_its_first_kib() {
        let long = [b"{\"a\":\"".as_slice(), &[b'x'; 5000], b"\"}"].concat();
        assert_eq!(
            event_within(&long, Codec::Json, "message", 5008).unwrap(),
            ev!({"a": "x".repeat(5000)})
        );
        let s = event_within(&long, Codec::Text, "message", 5007).unwrap_err();
        assert_eq!(
            s.failed.message,
            "message is 5008 bytes, over max_line_bytes (5007)"
        );
        assert_eq!((s.failed.error_type, s.failed.event), ("decode", ev!({})));
        let sample = s.sample.unwrap();
        assert_eq!(sample.len(), SAMPLE_BYTES);
        assert_eq!(sample.as_bytes(), &long[..SAMPLE_BYTES]);
        // "é" is two bytes: the one cut at 1 KiB is left out.
        let accents = format!("a{}", "é".repeat(600));
        let s = too_long(accents.as_bytes(), 1201, 10, "line");
        assert_eq!(s.sample.unwrap(), format!("a{}", "é".repeat(511)));
        assert_eq!(too_long(b"ab", 2, 1, "line").sample.unwrap(), "ab");
    }
}
