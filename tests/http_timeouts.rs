//! HTTP stages are limited even without a stage `timeout` (SPEC §10): a
//! service that accepts connections and never answers fails each request
//! after `request_timeout` (error type `timeout`), so the stage moves on
//! instead of stalling until shutdown.

mod common;

use common::{Scratch, bin, validate_lines};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A service that accepts every connection, reads nothing and never
/// answers; the connections are kept open for the test's lifetime.
fn silent_service() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    address
}

/// Runs `flowgate run FILE` to its end, failing the test if that takes
/// longer than `limit` (the bug made it run until killed).
fn run_to_end(file: &std::path::Path, limit: Duration) -> (i32, String) {
    let mut child = Command::new(bin())
        .args(["run", file.to_str().unwrap(), "--metrics-address", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowgate");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "flowgate still running after {limit:?}: the request was never limited\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_service_that_never_answers_fails_the_sink_request_after_request_timeout() {
    let s = Scratch::new();
    let address = silent_service();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  g: {{type: generator, count: 3, events: [{{n: 1}}]}}\nsinks:\n  ship: {{type: http, inputs: [g], url: 'http://{address}/in', request_timeout: 300ms, on_error: route}}\n  dead: {{type: file, inputs: [ship.errors], path: '$DIR/dead.ndjson'}}\n"
        ),
    );
    let (code, log) = run_to_end(&file, Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    let dead = s.read_lines("dead.ndjson");
    assert_eq!(dead.len(), 3, "every event is routed: {dead:?}");
    for e in &dead {
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("timed out") || message.contains("timeout"),
            "{message}"
        );
    }
}

#[test]
fn a_service_that_never_answers_fails_the_transform_call_after_request_timeout() {
    let s = Scratch::new();
    let address = silent_service();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  g: {{type: generator, count: 2, events: [{{n: 1}}]}}\ntransforms:\n  ask: {{type: http, inputs: [g], url: 'http://{address}/q', request_timeout: 300ms, on_error: route}}\nsinks:\n  ok: {{type: file, inputs: [ask], path: '$DIR/ok.ndjson'}}\n  dead: {{type: file, inputs: [ask.errors], path: '$DIR/dead.ndjson'}}\n"
        ),
    );
    let (code, log) = run_to_end(&file, Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    assert!(s.read_lines("ok.ndjson").is_empty());
    let dead = s.read_lines("dead.ndjson");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter().all(|e| e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out") || m.contains("timeout"))),
        "{dead:?}"
    );
}

#[test]
fn zero_request_timeouts_are_refused() {
    // The sink's and the transform's (whose programs are fine: the
    // settings are checked on their own).
    let (code, lines) = validate_lines(
        "sources:\n  g: {type: generator, count: 1, events: [{n: 1}]}\ntransforms:\n  enrich: {type: http, inputs: [g], url: 'http://127.0.0.1:9/{{ .n }}', request_timeout: 0s, connect_timeout: 0s}\nsinks:\n  ship: {type: http, inputs: [enrich], url: 'http://127.0.0.1:9/in', request_timeout: 0s}\n",
    );
    assert_eq!(code, Some(78));
    assert_eq!(
        lines,
        [
            "F:4:90: component 'enrich': request_timeout: must be longer than 0s",
            "F:4:111: component 'enrich': connect_timeout: must be longer than 0s",
            "F:6:87: component 'ship': request_timeout: must be longer than 0s",
            "F: 3 problem(s)",
        ]
    );
}
