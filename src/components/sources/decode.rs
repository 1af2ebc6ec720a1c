//! Decoding received bytes into an event, shared by the sources: a line
//! (`stdin`, `file`), a message (`nats`) or a request body (`http_server`)
//! must be one JSON object, and each source words the refusal for what
//! it received.

use super::Codec;
use crate::core::{Event, Failed, Value, message_event};

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
    match serde_json::from_slice::<Value>(bytes) {
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
}
