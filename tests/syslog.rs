//! The `syslog` source through the real binary: a corpus of real RFC 5424
//! and RFC 3164 lines (the RFCs' examples, rsyslog's and journald's
//! forwarding formats, Cisco-style tags, a line without PRI) decodes to
//! the fields SPEC §14 names — over TCP with newline framing, over TCP
//! with octet counting, and over UDP. A message that is neither format is
//! a `decode` error routed with the line.
//!
//! `tests/data/syslog/expected.ndjson` holds the event of each line of
//! `messages.txt`; an RFC 3164 date has no year, so its expected
//! timestamp is written `YYYY-...` and the test fills in the year the
//! source is documented to pick (at most a day ahead of now).

mod common;
use chrono::{Datelike, TimeZone, Utc};
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

fn corpus() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("tests/data/syslog/messages.txt")).unwrap();
    text.lines().map(String::from).collect()
}

/// The year an RFC 3164 `MM-DDTHH:MM:SS` received now gets.
fn year_for(rest: &str) -> i32 {
    let num = |r: std::ops::Range<usize>| rest[r].parse::<u32>().unwrap();
    let now = Utc::now();
    let t = Utc
        .with_ymd_and_hms(
            now.year(),
            num(0..2),
            num(3..5),
            num(6..8),
            num(9..11),
            num(12..14),
        )
        .unwrap();
    if t > now + chrono::Duration::days(1) {
        now.year() - 1
    } else {
        now.year()
    }
}

fn expected() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo().join("tests/data/syslog/expected.ndjson")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(rest) = v["timestamp"]
                .as_str()
                .and_then(|t| t.strip_prefix("YYYY-"))
            {
                v["timestamp"] = format!("{}-{rest}", year_for(rest)).into();
            }
            v
        })
        .collect()
}

fn start(s: &Scratch, mode: &str, port: u16) -> Daemon {
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  logs: {{type: syslog, mode: {mode}, address: '127.0.0.1:{port}', on_error: route}}\nsinks:\n  out: {{type: file, inputs: [logs], path: $DIR/out.ndjson}}\n  bad: {{type: file, inputs: [logs.errors], path: $DIR/bad.ndjson}}\n"
        ),
    );
    Daemon::start(&file, &[], Stdio::null())
}

fn assert_events(got: &[serde_json::Value], want: &[serde_json::Value], lines: &[String]) {
    assert_eq!(got.len(), want.len());
    for ((g, w), line) in got.iter().zip(want).zip(lines) {
        assert_eq!(g, w, "for the line {line:?}");
    }
}

#[test]
fn the_corpus_over_tcp_with_newline_then_octet_counted_framing() {
    let (lines, want) = (corpus(), expected());
    assert_eq!(lines.len(), want.len(), "one expected event per line");
    let s = Scratch::new();
    let port = free_port();
    let d = start(&s, "tcp", port);
    wait_listening(port);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for line in &lines {
        c.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    let n = lines.len();
    assert!(eventually(Duration::from_secs(30), || s
        .read_lines("out.ndjson")
        .len()
        == n));
    assert_events(&s.read_lines("out.ndjson"), &want, &lines);
    // Octet-counted: the frames hold no newline, and one holds two lines.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let multi = "<14>1 2026-11-30T08:13:00Z host app - - - first line\nsecond line";
    for line in lines.iter().map(String::as_str).chain([multi]) {
        c.write_all(format!("{} {line}", line.len()).as_bytes())
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(30), || s
        .read_lines("out.ndjson")
        .len()
        == 2 * n + 1));
    let out = s.read_lines("out.ndjson");
    assert_events(&out[n..2 * n], &want, &lines);
    assert_eq!(
        out[2 * n],
        serde_json::json!({"facility": "user", "severity": "info", "timestamp": "2026-11-30T08:13:00Z",
            "hostname": "host", "appname": "app", "message": "first line\nsecond line"})
    );
    // Neither format: a decode error, routed with the line.
    let bad = "this is not syslog";
    c.write_all(format!("{} {bad}", bad.len()).as_bytes())
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || s
        .read_lines("bad.ndjson")
        .len()
        == 1));
    let bad = &s.read_lines("bad.ndjson")[0];
    assert_eq!(bad["message"], "this is not syslog");
    assert_eq!(
        bad["error"]["message"],
        "message is neither RFC 5424 nor RFC 3164 syslog"
    );
    let m = d.metrics();
    assert_eq!(
        metric(
            &m,
            "flowgate_errors_total",
            &[("component", "logs"), ("error_type", "decode")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "flowgate_events_in_total", &[("component", "logs")]),
        Some((2 * n + 2) as f64)
    );
}

#[test]
fn the_corpus_over_udp_one_message_per_datagram() {
    let (lines, want) = (corpus(), expected());
    let s = Scratch::new();
    let port = free_port();
    let _d = start(&s, "udp", port);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let probe = "<13>1 2026-11-30T08:00:00Z probe - - - -";
    assert!(eventually(Duration::from_secs(30), || {
        udp.send_to(probe.as_bytes(), ("127.0.0.1", port)).unwrap();
        !s.read_lines("out.ndjson").is_empty()
    }));
    // Probes sent after the first one may still arrive: set them apart.
    let received = || -> Vec<serde_json::Value> {
        s.read_lines("out.ndjson")
            .into_iter()
            .filter(|e| e["hostname"] != "probe")
            .collect()
    };
    for line in &lines {
        // Senders often end a datagram with a newline; it is not part of the message.
        udp.send_to(format!("{line}\n").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    let n = lines.len();
    assert!(eventually(Duration::from_secs(30), || received().len() == n));
    assert_events(&received(), &want, &lines);
}
