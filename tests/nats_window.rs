//! The nats sink's window of outstanding JetStream acknowledgements
//! (`max_in_flight`) against a server that goes away while publishes are
//! outstanding and stays away until writes have failed for want of their
//! acknowledgements: the stage retries them with the same `Nats-Msg-Id`s,
//! and once the server is back every event is stored — none lost, none
//! twice (the client also sends what it buffered while disconnected).
//!
//! This test restarts its server, so it starts its own `nats-server`
//! (Debian's, on PATH; `.ci/run` installs it) on a free port rather than
//! the shared `FLOWGATE_TEST_NATS_URL` one; in CI a missing server fails.

mod common;
use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

/// A nats-server with JetStream storing in `dir`, stopped on drop.
struct Server(Child);

impl Server {
    fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_listening(port);
        Server(child)
    }

    /// SIGTERM (JetStream writes out what it stored), then waits for exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.0.wait().expect("nats-server exits");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_restart_with_publishes_outstanding_loses_nothing() {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide nats-server on PATH (.ci/run installs it)"
        );
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let s = Scratch::new();
    let port = free_port();
    let store = s.path("js");
    let server = Server::start(port, &store);
    let url = format!("nats://127.0.0.1:{port}");
    let total: u64 = 100_000;
    let input: String = (0..total).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(s.path("input.ndjson"), input).unwrap();
    // Two writers share a window of 300: publishes are outstanding at
    // any moment of the run, whenever the server goes away.
    let publisher = s.write(
        "publisher.yaml",
        &format!(
            "name: publisher\nsources:\n  logs: {{type: file, path: $DIR/input.ndjson, follow: true}}\nsinks:\n  bus: {{type: nats, inputs: [logs], url: '{url}', subject: restart.events, stream: RESTART, max_in_flight: 300, workers: 2, retry: {{attempts: 1000, initial_backoff: 50ms, max_backoff: 500ms}}}}\n"
        ),
    );
    let state = s.path("state");
    let mut d = Daemon::start(
        &publisher,
        &["--data-dir", state.to_str().unwrap()],
        Stdio::null(),
    );
    let acknowledged = |d: &Daemon, outcome| {
        metric(
            &d.metrics(),
            "flowgate_acknowledged_events_total",
            &[("component", "logs"), ("outcome", outcome)],
        )
        .unwrap_or(0.0) as u64
    };
    assert!(eventually(LONG, || acknowledged(&d, "delivered") >= 5_000));
    server.stop();
    let stopped_at = acknowledged(&d, "delivered");
    assert!(
        stopped_at < total,
        "the server stopped mid-run ({stopped_at} of {total} published)"
    );
    // The server stays away until a write has failed for want of its
    // acknowledgements (5 s) and been retried.
    let retried = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_retries_total",
            &[("component", "bus")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(LONG, || retried(&d) > 0.0),
        "writes fail while the server is away and are retried"
    );
    let _server = Server::start(port, &store);
    assert!(
        eventually(LONG, || acknowledged(&d, "delivered") >= total),
        "every event published once the server is back: {} of {total}",
        acknowledged(&d, "delivered")
    );
    assert_eq!(acknowledged(&d, "failed"), 0, "no batch gave up");
    let retried = retried(&d);
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));

    // What the stream holds, read back by a consumer pipeline.
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "name: consumer\nsources:\n  bus: {{type: nats, url: '{url}', stream: RESTART, subject: restart.events, durable: check}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n"
        ),
    );
    let mut c = Daemon::start(
        &consumer,
        &["--data-dir", s.path("cstate").to_str().unwrap()],
        Stdio::null(),
    );
    let read = || -> Vec<u64> {
        s.read_lines("out.ndjson")
            .iter()
            .map(|e| e["i"].as_u64().unwrap())
            .collect()
    };
    assert!(
        eventually(LONG, || read().len() >= total as usize),
        "the stream holds every event: {} of {total}",
        read().len()
    );
    let delivered = || {
        metric(
            &c.metrics(),
            "flowgate_acknowledged_events_total",
            &[("component", "bus"), ("outcome", "delivered")],
        )
        .unwrap_or(0.0) as u64
    };
    assert!(eventually(LONG, || delivered() >= total));
    c.signal("TERM");
    assert_eq!(c.wait(LONG), Some(0));
    let got = read();
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), total as usize, "no event lost");
    assert_eq!(
        got.len(),
        total as usize,
        "retried batches were stored once (JetStream dropped the copies by Nats-Msg-Id)"
    );
    eprintln!(
        "server stopped after {stopped_at} of {total} events; {retried} writes retried; stream holds each event once"
    );
}

#[test]
fn an_empty_window_is_refused_with_its_position() {
    let (code, lines) = validate_lines(
        "sources:\n  g: {type: generator, count: 1, events: [{a: 1}]}\nsinks:\n  bus:\n    type: nats\n    inputs: [g]\n    url: 'nats://127.0.0.1:4222'\n    subject: events\n    max_in_flight: 0\n",
    );
    assert_eq!(code, Some(78), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("component 'bus'")
            && l.contains("max_in_flight")
            && l.contains("must be at least 1")),
        "{lines:?}"
    );
}
