//! A jq program against an event: `Program::compile`, then `outputs`,
//! `map` and `test`, as `map`, `filter` and `route` run it. Compile and
//! evaluation errors are expected; a panic is a finding.
//!
//! Input: the program, a NUL byte, then the event as JSON (an object; any
//! other text stands for a fixed sample event).
//!
//! Skipped for now: programs that name a generator or construct that can
//! run without bound (`range`, `repeat`, `recurse`, `while`, `until`,
//! `limit`, `infinite`, `def`, ... see `UNBOUNDED`). They hang the
//! interpreter until it can be interrupted (issue #10, in progress);
//! widen this once evaluation stops at its timeout.

#![no_main]

use flowgate::core::Value;
use flowgate::expr::Program;
use libfuzzer_sys::fuzz_target;

/// Names in a program that can make its evaluation run without bound.
const UNBOUNDED: &[&str] = &[
    "range", "repeat", "recurse", "while", "until", "limit", "infinite", "def",
];

const SAMPLE: &str = r#"{"status":503,"path":"/checkout","ms":2400.5,"msg":"upstream timeout","tags":["a","b"],"user":{"id":7,"name":"ann","roles":[null,true]}}"#;

fuzz_target!(|data: &[u8]| {
    let (program, event) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(program) = std::str::from_utf8(program) else {
        return;
    };
    if UNBOUNDED.iter().any(|name| program.contains(name)) {
        return;
    }
    let event = match serde_json::from_slice::<Value>(event) {
        Ok(event @ Value::Object(_)) => event,
        _ => serde_json::from_str(SAMPLE).unwrap(),
    };
    let Ok(p) = Program::compile(program) else {
        return;
    };
    let _ = p.test(&event);
    let mut out = Vec::new();
    if let Err((e, back)) = p.outputs(event.clone(), &mut out) {
        let _ = (e.to_string(), back);
    }
    for v in &out {
        let _ = serde_json::to_vec(v).unwrap();
    }
    let mut events = Vec::new();
    match p.map(event, &mut events) {
        Ok(()) => assert!(events.iter().all(|e| e.is_object())),
        Err((e, _)) => {
            let _ = e.to_string();
        }
    }
});
