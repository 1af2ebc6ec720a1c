//! An `http_server` request body: one JSON object, a JSON array of
//! objects, or NDJSON with lines over `max_line_bytes` set apart. Refusals
//! are expected; a panic, or an answer that breaks the rules below, is a
//! finding.
//!
//! Input: 2 bytes of `max_line_bytes` (1..=65536), then the body.

#![no_main]

use flowgate::components::sources::http_server::decode;
use flowgate::components::sources::split::SAMPLE_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (max, body) = match data {
        [a, b, body @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) + 1, body),
        _ => return,
    };
    match decode(body, max) {
        Ok((events, too_long)) => {
            assert!(
                events.iter().all(|e| e.is_object()),
                "every event is an object"
            );
            for t in &too_long {
                assert_eq!(t.failed.error_type, "decode");
                let sample = t.sample.as_deref().expect("a sample");
                // The body is UTF-8, so the sample is its first KiB at most.
                assert!(sample.len() <= SAMPLE_BYTES, "{}", sample.len());
                let _ = t.failed.message.to_string();
            }
            // Events come back out as JSON, as sinks write them.
            for e in &events {
                let _ = serde_json::to_vec(e).unwrap();
            }
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
