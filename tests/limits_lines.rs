//! `max_line_bytes` through the real binary (SPEC §10): a line over the
//! limit is one `decode` error of its source, routed with the first 1 KiB
//! of the line in `.error.sample`, and the lines around it are read as
//! usual — for `stdin`, `file` (once and followed), `http_server` NDJSON
//! and `nats` messages.

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// `{"i":N}` lines for `range`.
fn lines(range: std::ops::Range<u64>) -> String {
    range.map(|i| format!("{{\"i\":{i}}}\n")).collect()
}

fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["i"].as_u64().unwrap()).collect()
}

/// The one routed event of a line over the limit: `.error` only, with the
/// line's first 1 KiB as the sample.
fn assert_one_too_long(dlq: &[Value], component: &str, message: &str, sample: &str) {
    assert_eq!(dlq.len(), 1, "one routed event: {dlq:?}");
    assert_eq!(
        dlq[0],
        json!({"error": {
            "message": message,
            "component": component,
            "attempts": 1,
            "sample": sample,
        }})
    );
}

fn stdin_pipeline(s: &Scratch, limit: &str) -> String {
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: stdin{limit}, on_error: route}}\nsinks:\n  out: {{type: file, inputs: [in], path: $DIR/out.ndjson}}\n  dlq: {{type: file, inputs: [in.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    file.to_str().unwrap().to_string()
}

#[test]
fn a_50_mb_line_on_stdin_is_one_routed_decode_error_and_the_lines_around_it_pass() {
    let s = Scratch::new();
    let file = stdin_pipeline(&s, ", max_line_bytes: 1000");
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(50 * 1024 * 1024));
    // A line of exactly the limit passes, with or without '\r'.
    let at_limit = format!("{{\"i\":1000,\"p\":\"{}\"}}", "y".repeat(1000 - 17));
    assert_eq!(at_limit.len(), 1000);
    let input = format!(
        "{}{long}\n{at_limit}\r\n{}",
        lines(0..500),
        lines(500..1000)
    );
    let out = run(&["run", &file, "--metrics-address", "off"], Some(&input));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut want: Vec<u64> = (0..500).collect();
    want.push(1000);
    want.extend(500..1000);
    assert_ids(&ids(&s.read_lines("out.ndjson")), &want, "the other lines");
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "in",
        &format!("line is {} bytes, over max_line_bytes (1000)", long.len()),
        &long[..1024],
    );
}

#[test]
fn the_default_limit_is_one_mib() {
    let s = Scratch::new();
    let file = stdin_pipeline(&s, "");
    let line = |i: u64, len: usize| {
        let head = format!("{{\"i\":{i},\"p\":\"");
        format!("{head}{}\"}}", "z".repeat(len - head.len() - 2))
    };
    let (at, over) = (line(1, 1 << 20), line(2, (1 << 20) + 1));
    let input = format!("{at}\n{over}\n{{\"i\":3}}");
    let out = run(&["run", &file, "--metrics-address", "off"], Some(&input));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&s.read_lines("out.ndjson")), vec![1, 3]);
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "in",
        "line is 1048577 bytes, over max_line_bytes (1048576)",
        &over[..1024],
    );
}

#[test]
fn a_file_read_once_sets_a_long_line_apart_even_at_its_end() {
    let s = Scratch::new();
    let tail = "w".repeat(5000);
    s.write("in.log", &format!("{}{tail}", lines(0..3)));
    let file = s.write(
        "p.yaml",
        "sources:\n  f: {type: file, path: $DIR/in.log, codec: text, max_line_bytes: 4096, on_error: route}\nsinks:\n  out: {type: file, inputs: [f], path: $DIR/out.ndjson}\n  dlq: {type: file, inputs: [f.errors], path: $DIR/dlq.ndjson}\n",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(s.read_lines("out.ndjson").len(), 3);
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "f",
        "line is 5000 bytes, over max_line_bytes (4096)",
        &tail[..1024],
    );
}

/// The checkpoint counts the discarded bytes: after a restart the followed
/// file resumes after the long line, and nothing is read twice.
#[test]
fn a_followed_file_skips_a_long_line_and_resumes_after_it_on_restart() {
    let s = Scratch::new();
    let append = |text: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.path("app.log"))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    };
    let long = "v".repeat(3 * 1024 * 1024);
    append(&format!("{}{long}\n{}", lines(0..10), lines(10..20)));
    let file = s.write(
        "p.yaml",
        "name: tailer\nsources:\n  logs: {type: file, path: $DIR/app.log, follow: true, poll_interval: 20ms, max_line_bytes: 2000, on_error: route}\nsinks:\n  out: {type: file, inputs: [logs], path: $DIR/out.ndjson}\n  dlq: {type: file, inputs: [logs.errors], path: $DIR/dlq.ndjson}\n",
    );
    let state = s.path("state");
    let start = || {
        Daemon::start(
            &file,
            &["--data-dir", state.to_str().unwrap()],
            Stdio::null(),
        )
    };
    let out_len = || s.read_lines("out.ndjson").len();
    let mut d = start();
    assert!(eventually(LONG, || out_len() == 20), "{}", d.log_text());
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    append(&lines(20..30));
    let mut d = start();
    assert!(eventually(LONG, || out_len() >= 30), "{}", d.log_text());
    std::thread::sleep(Duration::from_millis(200));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    assert_ids(
        &ids(&s.read_lines("out.ndjson")),
        &(0..30).collect::<Vec<_>>(),
        "every line once",
    );
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "logs",
        "line is 3145728 bytes, over max_line_bytes (2000)",
        &long[..1024],
    );
}

#[test]
fn an_ndjson_line_over_the_limit_is_routed_and_the_rest_of_the_body_accepted() {
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', max_line_bytes: 100, on_error: route}}\nsinks:\n  out: {{type: file, inputs: [web], path: $DIR/out.ndjson}}\n  dlq: {{type: file, inputs: [web.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    let body = format!("{{\"i\":0}}\n{long}\n{{\"i\":1}}\n");
    assert_eq!(
        post(&format!("http://127.0.0.1:{port}/"), &body, None),
        (200, "{\"accepted\":2}\n".to_string())
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    assert_eq!(ids(&s.read_lines("out.ndjson")), vec![0, 1]);
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "web",
        "line 2 is 5010 bytes, over max_line_bytes (100)",
        &long[..1024],
    );
}

/// A NATS message is one line: one over the limit is routed undecoded (and
/// acknowledged once the dead-letter sink wrote it); the others pass.
/// Skipped without a `nats-server` on PATH.
#[test]
fn a_nats_message_over_the_limit_is_routed_and_the_others_pass() {
    let s = Scratch::new();
    let port = free_port();
    let Ok(server) = std::process::Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(s.path("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("skipped: no nats-server on PATH");
        return;
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    wait_listening(port);
    let url = format!("nats://127.0.0.1:{port}");
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    s.write("in.ndjson", &format!("{{\"i\":0}}\n{long}\n{{\"i\":1}}\n"));
    let publisher = s.write(
        "publisher.yaml",
        &format!(
            "name: publisher\nsources:\n  in: {{type: file, path: $DIR/in.ndjson}}\nsinks:\n  bus: {{type: nats, inputs: [in], url: '{url}', subject: lim.in, stream: LIM}}\n"
        ),
    );
    let out = run(
        &[
            "run",
            publisher.to_str().unwrap(),
            "--metrics-address",
            "off",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "name: consumer\nsources:\n  bus: {{type: nats, url: '{url}', stream: LIM, subject: lim.in, durable: lim, max_line_bytes: 100, on_error: route}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n  dlq: {{type: file, inputs: [bus.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(
        eventually(LONG, || s.read_lines("out.ndjson").len() == 2
            && s.read_lines("dlq.ndjson").len() == 1),
        "{}",
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    assert_eq!(ids(&s.read_lines("out.ndjson")), vec![0, 1]);
    assert_one_too_long(
        &s.read_lines("dlq.ndjson"),
        "bus",
        "message is 5010 bytes, over max_line_bytes (100)",
        &long[..1024],
    );
}

#[test]
fn a_zero_limit_is_a_config_error() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin, max_line_bytes: 0}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    );
    let out = run(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains("component 'in': max_line_bytes: must be at least 1"),
        "{err}"
    );
}
