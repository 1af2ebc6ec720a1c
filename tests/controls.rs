//! Stage controls driven by YAML through the real binary: rate limits
//! (wait, drop, per key), retries, timeouts and the circuit breaker against
//! a sink that fails and recovers. Time-based checks use generous ratios.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

fn value(d: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&d.metrics(), name, labels).unwrap_or(0.0)
}

#[test]
fn a_rate_limited_source_emits_at_the_configured_rate() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g:\n    type: generator\n    events: [{a: 1}]\n    rate_limit: {rate: 200, per: 1s, burst: 20}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    let (t0, n0) = (
        Instant::now(),
        value(&d, "flowgate_events_out_total", &[("component", "g")]),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (t1, n1) = (
        Instant::now(),
        value(&d, "flowgate_events_out_total", &[("component", "g")]),
    );
    let rate = (n1 - n0) / (t1 - t0).as_secs_f64();
    assert!(
        (120.0..=280.0).contains(&rate),
        "expected ~200 events/s, measured {rate:.0}"
    );
    assert!(
        value(
            &d,
            "flowgate_rate_limit_delay_seconds_total",
            &[("component", "g")]
        ) > 0.5
    );
}

#[test]
fn drop_mode_discards_beyond_the_burst_and_per_key_limits_are_separate() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  all:\n    type: filter\n    inputs: [in]\n    condition: 'true'\n    rate_limit: {rate: 1, per: 1m, burst: 100, when_limited: drop}\n  per_user:\n    type: filter\n    inputs: [in]\n    condition: 'true'\n    rate_limit: {rate: 1, per: 1m, burst: 5, key: '.user', when_limited: drop}\nsinks:\n  a: {type: file, inputs: [all], path: $DIR/all.ndjson}\n  u: {type: file, inputs: [per_user], path: $DIR/user.ndjson}\n",
    );
    let input: String = (0..1000)
        .map(|i| format!("{{\"i\":{i},\"user\":\"u{}\"}}\n", i % 3))
        .collect();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all = s.read_lines("all.ndjson");
    assert_eq!(
        all.len(),
        100,
        "the burst passes, the rest is over the limit"
    );
    assert_eq!(all[99]["i"], 99, "the first events are the ones kept");
    let per_user = s.read_lines("user.ndjson");
    assert_eq!(per_user.len(), 15, "5 per key for 3 keys");
    for u in ["u0", "u1", "u2"] {
        assert_eq!(per_user.iter().filter(|e| e["user"] == u).count(), 5);
    }
}

#[test]
fn breaker_opens_on_a_failing_sink_rejects_and_closes_after_recovery() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("target")).unwrap();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: $DIR/target\n    retry: {attempts: 2, initial_backoff: 10ms, max_backoff: 20ms}\n    circuit_breaker: {consecutive_failures: 2, open_for: 1s}\n    on_error: route\n  dlq: {type: file, inputs: [out.errors], path: $DIR/dlq.ndjson}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let state = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_circuit_breaker_state",
            &[("component", "out")],
        )
    };
    // The pipeline starts right after the endpoints do.
    assert!(eventually(LONG, || state(&d) == Some(0.0)));
    writeln!(stdin, "{{\"n\":1}}").unwrap();
    stdin.flush().unwrap();
    assert!(
        eventually(LONG, || state(&d) == Some(1.0)),
        "breaker did not open: {}",
        d.metrics()
    );
    assert_eq!(
        value(&d, "flowgate_retries_total", &[("component", "out")]),
        1.0
    );
    assert_eq!(
        value(
            &d,
            "flowgate_circuit_breaker_transitions_total",
            &[("component", "out"), ("to", "open")]
        ),
        1.0
    );
    // While open, events are rejected without calling the sink.
    writeln!(stdin, "{{\"n\":2}}").unwrap();
    stdin.flush().unwrap();
    assert!(eventually(LONG, || value(
        &d,
        "flowgate_errors_total",
        &[("component", "out"), ("error_type", "breaker_open")]
    ) == 1.0));
    assert_eq!(
        value(
            &d,
            "flowgate_errors_total",
            &[("component", "out"), ("error_type", "io")]
        ),
        1.0,
        "no call while open"
    );
    // The destination recovers; after open_for a trial call closes the breaker.
    std::fs::remove_dir(s.path("target")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    writeln!(stdin, "{{\"n\":3}}").unwrap();
    stdin.flush().unwrap();
    assert!(
        eventually(LONG, || state(&d) == Some(0.0)),
        "breaker did not close: {}",
        d.metrics()
    );
    assert_eq!(
        value(
            &d,
            "flowgate_circuit_breaker_transitions_total",
            &[("component", "out"), ("to", "half_open")]
        ),
        1.0
    );
    drop(stdin);
    assert_eq!(d.wait(LONG), Some(0));
    assert_eq!(
        std::fs::read_to_string(s.path("target")).unwrap(),
        "{\"n\":3}\n"
    );
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0]["n"], 1);
    assert_eq!(dlq[0]["error"]["attempts"], 2);
    assert!(
        dlq[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("target")
    );
    assert_eq!(dlq[1]["n"], 2);
    assert_eq!(dlq[1]["error"]["message"], "circuit breaker is open");
}

#[test]
fn a_blocked_write_times_out_and_is_retried() {
    let s = Scratch::new();
    // stdout is a pipe nobody reads: writes stall, so each attempt times out.
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{msg: 'a line long enough to fill the pipe buffer soon'}]}\nsinks:\n  out:\n    type: stdout\n    inputs: [g]\n    timeout: 200ms\n    retry: {attempts: 3, initial_backoff: 10ms, max_backoff: 10ms}\n    on_error: route\n  dlq: {type: file, inputs: [out.errors], path: $DIR/dlq.ndjson}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::piped());
    assert!(
        eventually(LONG, || value(
            &d,
            "flowgate_errors_total",
            &[("component", "out"), ("error_type", "timeout")]
        ) >= 3.0),
        "{}",
        d.metrics()
    );
    assert!(value(&d, "flowgate_retries_total", &[("component", "out")]) >= 2.0);
    assert!(eventually(LONG, || s
        .read_lines("dlq.ndjson")
        .first()
        .is_some_and(|e| e["error"]["attempts"] == 3)));
    let first = &s.read_lines("dlq.ndjson")[0];
    assert!(
        first["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 200ms"),
        "{first}"
    );
}

#[test]
fn invalid_controls_are_config_errors() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{a: 1}], rate_limit: {rate: 0}}\nsinks:\n  o:\n    type: blackhole\n    inputs: [g]\n    retry: {attempts: 0}\n    circuit_breaker: {open_for: 5s}\n    timeout: 5\n",
    );
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(":2:61: component 'g': rate_limit.rate must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains(":9:14: component 'o': timeout: duration 5 needs a unit"),
        "{err}"
    );
}

#[test]
fn cpu_stages_with_timeout_and_retry_process_every_event() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  m:\n    type: map\n    inputs: [in]\n    program: '.x = .i * 2'\n    workers: 2\n    timeout: 5s\n    retry: {attempts: 2}\n    circuit_breaker: {failure_rate: 0.5, min_calls: 5}\nsinks:\n  out: {type: file, inputs: [m], path: $DIR/out.ndjson, timeout: 5s}\n",
    );
    let input: String = (0..5000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = s.read_lines("out.ndjson");
    assert_eq!(lines.len(), 5000);
    assert!(lines.iter().enumerate().all(|(i, e)| e["x"] == 2 * i));
}

#[test]
fn a_slow_key_does_not_hold_back_the_other_keys() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  fair:\n    type: filter\n    inputs: [in]\n    condition: 'true'\n    rate_limit: {rate: 10, per: 1s, burst: 1, key: '.k'}\nsinks:\n  out: {type: file, inputs: [fair], path: $DIR/out.ndjson}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let mut input = String::new();
    for i in 0..15 {
        input.push_str(&format!("{{\"k\":\"hot\",\"i\":{i}}}\n"));
    }
    for i in 0..20 {
        input.push_str(&format!("{{\"k\":\"cold{i}\",\"i\":{i}}}\n"));
    }
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let written = |d: &Daemon| value(d, "flowgate_events_out_total", &[("component", "out")]);
    assert!(eventually(LONG, || written(&d) >= 21.0), "{}", d.metrics());
    let early = s.read_lines("out.ndjson");
    let cold = early.iter().filter(|e| e["k"] != "hot").count();
    let hot = early.iter().filter(|e| e["k"] == "hot").count();
    assert_eq!(cold, 20, "the other keys pass while 'hot' waits");
    assert!(hot < 10, "'hot' trickles at 10/s: {hot}");
    // On SIGTERM the parked events of 'hot' still drain, in order.
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let all = s.read_lines("out.ndjson");
    let hot: Vec<u64> = all
        .iter()
        .filter(|e| e["k"] == "hot")
        .map(|e| e["i"].as_u64().unwrap())
        .collect();
    assert_eq!(hot, (0..15).collect::<Vec<_>>());
    assert_eq!(all.len(), 35);
    drop(stdin);
}
