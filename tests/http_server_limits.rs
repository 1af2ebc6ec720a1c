//! The `http_server` source's limits (SPEC §10) through the real binary:
//! a request whose head or body does not arrive within `request_timeout`
//! is answered 408 and closed while other clients are served; the time
//! the pipeline takes to acknowledge is not counted; `max_connections`
//! bounds the daemon's descriptors however many clients connect; zero
//! limits are refused.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts a pipeline `web` (an `http_server` with `options`) -> file
/// `out.ndjson`; returns the daemon and the source's port.
fn start(s: &Scratch, options: &str, sink_options: &str) -> (Daemon, u16) {
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  web: {{type: http_server, address: '127.0.0.1:{port}', {options}}}\nsinks:\n  out: {{type: file, inputs: [web], path: $DIR/out.ndjson{sink_options}}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    (d, port)
}

/// A client that sends `text` and then nothing.
fn stalled(port: u16, text: &str) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(text.as_bytes()).unwrap();
    c
}

/// Everything the server sends until it closes the connection.
fn answer(mut c: TcpStream) -> String {
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("the server closes the connection");
    text(&got)
}

#[test]
fn requests_whose_head_or_body_does_not_arrive_in_time_get_408_while_others_are_served() {
    let s = Scratch::new();
    let (d, port) = start(&s, "request_timeout: 1s", "");
    let head = "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let no_body = [stalled(port, head), stalled(port, head)];
    let part_body = stalled(port, &format!("{head}{{\"n\":"));
    let part_head = stalled(port, "POST / HTTP/1.1\r\nhost: x\r\n");
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(
        post(&url, "{\"n\":1}\n{\"n\":2}\n", None),
        (200, "{\"accepted\":2}\n".to_string())
    );
    assert!(eventually(Duration::from_secs(20), || {
        s.read_lines("out.ndjson").len() == 2
    }));
    let started = Instant::now();
    for c in no_body.into_iter().chain([part_body, part_head]) {
        let got = answer(c);
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        assert!(got.to_lowercase().contains("connection: close"), "{got}");
        assert!(
            got.contains("did not arrive within request_timeout"),
            "{got}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let timeouts = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_errors_total",
            &[("component", "web"), ("error_type", "timeout")],
        )
    };
    assert!(
        eventually(Duration::from_secs(10), || timeouts(&d) == Some(4.0)),
        "{:?}",
        timeouts(&d)
    );
    // The server still takes requests, and the 408s accepted nothing.
    assert_eq!(post(&url, "{\"n\":3}", None).0, 200);
    assert!(eventually(Duration::from_secs(20), || {
        s.read_lines("out.ndjson").len() == 3
    }));
}

#[test]
fn waiting_for_acknowledgements_does_not_count_against_request_timeout() {
    let s = Scratch::new();
    // 20 events at 10/s: the 200 comes about 2s after the body arrived.
    let (_d, port) = start(
        &s,
        "request_timeout: 1s, acknowledgements: true",
        ", rate_limit: {rate: 10, burst: 1}",
    );
    let body: String = (0..20).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let started = Instant::now();
    let (code, text) = post(&format!("http://127.0.0.1:{port}/"), &body, None);
    assert_eq!(code, 200, "{text}");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the sink was not slow"
    );
    assert_eq!(s.read_lines("out.ndjson").len(), 20);
}

/// The daemon's open descriptors.
fn open_fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[test]
fn max_connections_bounds_the_descriptors_of_silent_clients_until_request_timeout_closes_them() {
    let s = Scratch::new();
    // 300 clients, 50 at a time, each closed 800ms after its accept.
    let (d, port) = start(&s, "max_connections: 50, request_timeout: 800ms", "");
    // A first request: the sink's file is open before the count.
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(post(&url, "{\"n\":1}", None).0, 200);
    assert!(eventually(Duration::from_secs(20), || {
        s.read_lines("out.ndjson").len() == 1
    }));
    let baseline = open_fds(&d);
    let mut open: Vec<TcpStream> = (0..300)
        .map(|_| {
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect();
    let (mut peak, mut answered) = (0, 0);
    let all_closed = eventually(Duration::from_secs(60), || {
        peak = peak.max(open_fds(&d));
        open.retain_mut(|c| {
            let mut buf = [0; 64];
            match c.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Ok(0) | Err(_) => false,
                Ok(_) => {
                    answered += 1;
                    false
                }
            }
        });
        open.is_empty()
    });
    assert!(all_closed, "{} clients still open", open.len());
    assert_eq!(answered, 0, "a client that asked nothing got an answer");
    assert!(
        peak <= baseline + 50 + 10,
        "{peak} descriptors open, {baseline} before the clients"
    );
    assert_eq!(post(&url, "{\"n\":2}", None).0, 200);
    assert!(eventually(Duration::from_secs(20), || {
        s.read_lines("out.ndjson").len() == 2
    }));
}

#[test]
fn zero_max_connections_and_request_timeout_are_refused() {
    let (code, lines) = validate_lines(
        "sources:\n  web: {type: http_server, address: '127.0.0.1:8080', max_connections: 0, request_timeout: 0s}\nsinks:\n  o: {type: blackhole, inputs: [web]}\n",
    );
    assert_eq!(code, Some(78));
    assert_eq!(
        lines,
        [
            "F:2:72: component 'web': max_connections: must be at least 1",
            "F:2:92: component 'web': request_timeout: must be longer than 0s",
            "F: 2 problem(s)",
        ]
    );
}

#[test]
fn bodies_over_max_body_bytes_get_413_and_the_connection_closes() {
    // request_timeout is long: a declared length over the limit must be
    // answered at once, not when the body fails to arrive.
    let s = Scratch::new();
    let (d, port) = start(&s, "max_body_bytes: 1000, request_timeout: 60s", "");
    let started = std::time::Instant::now();
    let c = stalled(
        port,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n",
    );
    let got = answer(c);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered only after {:?}",
        started.elapsed()
    );
    // Chunked, so the size is found while reading: a keep-alive client must
    // still be told the connection will not carry another request.
    let mut c = stalled(
        port,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = format!("{:x}\r\n{}\r\n", 100_000, "x".repeat(100_000));
    let _ = c.write_all(chunk.as_bytes());
    let got = answer(c);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    // And the server still serves.
    let (code, _) = post(&format!("http://127.0.0.1:{port}/"), "{\"n\":1}", None);
    assert_eq!(code, 200, "{}", d.log_text());
}
