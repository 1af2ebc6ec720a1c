//! `reduce` through the real binary: a multi-line stack trace read from
//! stdin becomes one event, and the open group is flushed at EOF.

mod common;
use common::*;

#[test]
fn a_stack_trace_on_stdin_becomes_one_event_per_exception() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin, codec: text}\ntransforms:\n  traces:\n    type: reduce\n    inputs: [in]\n    starts_when: '.message | test(\"^\\\\s\") | not'\n    expire_after: 1m\n    merge: {message: concat_newline}\nsinks:\n  out: {type: stdout, inputs: [traces]}\n",
    );
    let input = "java.lang.IllegalStateException: boom\n  at a.B.c(B.java:10)\n  at a.D.e(D.java:20)\nCaused by: java.io.IOException\n  at f.G.h(G.java:30)\nok\n";
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(input),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "java.lang.IllegalStateException: boom\n  at a.B.c(B.java:10)\n  at a.D.e(D.java:20)",
            "Caused by: java.io.IOException\n  at f.G.h(G.java:30)",
            "ok",
        ]
    );
}
