//! The `socket` source through the real binary, the test being its
//! clients: backpressure reaches TCP senders through the kernel (their
//! writes block while the sink is held) and nothing is lost; lines over
//! `max_line_bytes`, silent clients and connections over
//! `max_connections` are counted while the source keeps serving; UDP and
//! unix sockets deliver, and UDP datagrams that find no room downstream
//! are discarded as `buffer_full`.

mod common;
use axum::extract::State;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP endpoint that holds every request until the gate opens, then
/// keeps the ids (`c * 1_000_000 + i`) of the NDJSON lines it was sent.
struct HeldSink {
    gate: tokio::sync::watch::Sender<bool>,
    ids: Mutex<Vec<u64>>,
}

async fn held_post(State(s): State<Arc<HeldSink>>, body: String) -> &'static str {
    let mut gate = s.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let mut ids = s.ids.lock().unwrap();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("NDJSON");
        ids.push(v["c"].as_u64().unwrap() * 1_000_000 + v["i"].as_u64().unwrap());
    }
    "ok"
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// One client: its progress as the test sees it.
#[derive(Default)]
struct Client {
    sent: AtomicU64,
    blocked: AtomicBool,
    done: AtomicBool,
}

const CLIENTS: u64 = 20;
const LINES: u64 = 10_000;

#[test]
fn a_held_sink_blocks_tcp_senders_through_the_kernel_and_loses_nothing() {
    let (gate, _) = tokio::sync::watch::channel(false);
    let held = Arc::new(HeldSink {
        gate,
        ids: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(held_post))
        .with_state(held.clone());
    let sink_address = serve_on_thread(app);
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  tcp: {{type: socket, mode: tcp, address: '127.0.0.1:{port}', receive_buffer_bytes: 65536}}\nsinks:\n  out: {{type: http, inputs: [tcp], url: 'http://{sink_address}/', request_timeout: 10m}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    let idle_rss = status_kib(d.child.id(), "VmRSS:");
    let pad = "x".repeat(180);
    let clients: Vec<Arc<Client>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let threads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            let data: String = (0..LINES)
                .map(|i| format!("{{\"c\":{c},\"i\":{i},\"pad\":\"{pad}\"}}\n"))
                .collect();
            std::thread::spawn(move || {
                let conn = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                // Fixed kernel buffers on both ends (no autotuning): what
                // the kernel can hold is far below what is sent.
                conn.set_send_buffer_size(65536).unwrap();
                conn.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                    .unwrap();
                let mut conn: TcpStream = conn.into();
                conn.set_nonblocking(true).unwrap();
                let mut at = 0;
                let bytes = data.as_bytes();
                while at < bytes.len() {
                    match conn.write(&bytes[at..]) {
                        Ok(n) => {
                            at += n;
                            client.sent.fetch_add(n as u64, Ordering::Relaxed);
                            client.blocked.store(false, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            client.blocked.store(true, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("client {c}: {e}"),
                    }
                }
                client.done.store(true, Ordering::Relaxed);
                conn.set_nonblocking(false).unwrap();
                let _ = conn.shutdown(std::net::Shutdown::Write);
                // Wait for the server to close: everything was read.
                let _ = conn.read(&mut [0u8; 1]);
            })
        })
        .collect();
    let total = CLIENTS * LINES;
    let data_bytes: u64 = (0..CLIENTS)
        .map(|c| {
            (0..LINES)
                .map(|i| format!("{{\"c\":{c},\"i\":{i},\"pad\":\"{pad}\"}}\n").len() as u64)
                .sum::<u64>()
        })
        .sum();
    // While the sink is held, every sender's socket fills: its writes
    // would block. None gets all its data through.
    let all_blocked = eventually(Duration::from_secs(60), || {
        clients
            .iter()
            .all(|c| c.blocked.load(Ordering::Relaxed) && !c.done.load(Ordering::Relaxed))
    });
    let sent: u64 = clients.iter().map(|c| c.sent.load(Ordering::Relaxed)).sum();
    assert!(
        all_blocked,
        "blocked: {:?}, sent {sent} of {data_bytes} bytes",
        clients
            .iter()
            .map(|c| c.blocked.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    assert!(sent < data_bytes, "the kernel took everything: {sent}");
    let held_rss = status_kib(d.child.id(), "VmRSS:");
    held.gate.send_replace(true);
    for t in threads {
        t.join().unwrap();
    }
    let arrived = eventually(Duration::from_secs(120), || {
        held.ids.lock().unwrap().len() as u64 >= total
    });
    let mut ids = held.ids.lock().unwrap().clone();
    assert!(arrived, "{} of {total} lines arrived", ids.len());
    ids.sort_unstable();
    let want: Vec<u64> = (0..CLIENTS)
        .flat_map(|c| (0..LINES).map(move |i| c * 1_000_000 + i))
        .collect();
    assert_ids(&ids, &want, "lines the sink got");
    let hwm = status_kib(d.child.id(), "VmHWM:");
    // The data is 41 MB; the pipeline holds 1000 events and a request,
    // each connection one read (measured: 8 MiB over idle while held,
    // 17 MiB at the peak).
    assert!(
        hwm < idle_rss + 32 * 1024,
        "peak RSS {hwm} KiB, {idle_rss} KiB idle, {held_rss} KiB while held"
    );
    let m = d.metrics();
    assert_eq!(
        metric(&m, "flowgate_events_in_total", &[("component", "tcp")]),
        Some(total as f64)
    );
    eprintln!(
        "peak RSS {hwm} KiB, {idle_rss} KiB idle, {held_rss} KiB while held; clients had sent {sent} of {data_bytes} bytes when all were blocked"
    );
}

/// Starts `socket` source `src` with `options` -> file `out.ndjson`.
fn start(s: &Scratch, options: &str) -> Daemon {
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  src: {{type: socket, {options}}}\nsinks:\n  out: {{type: file, inputs: [src], path: $DIR/out.ndjson}}\n"
        ),
    );
    Daemon::start(&file, &[], Stdio::null())
}

fn errors(d: &Daemon, error_type: &str) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_errors_total",
        &[("component", "src"), ("error_type", error_type)],
    )
    .unwrap_or(0.0)
}

#[test]
fn long_lines_and_silent_clients_are_counted_and_the_source_keeps_serving() {
    let s = Scratch::new();
    let port = free_port();
    let d = start(
        &s,
        &format!("mode: tcp, address: '127.0.0.1:{port}', max_line_bytes: 1000, idle_timeout: 1s"),
    );
    wait_listening(port);
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let long = format!("{{\"long\":\"{}\"}}\n", "y".repeat(200_000));
    c.write_all(format!("{{\"n\":1}}\n{long}{{\"n\":2}}\r\n").as_bytes())
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        s.read_lines("out.ndjson").len() == 2
    }));
    assert_eq!(
        s.read_lines("out.ndjson"),
        vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 2})]
    );
    assert!(eventually(Duration::from_secs(10), || errors(&d, "decode") == 1.0));
    // The silent client is closed by the server: its read ends.
    let got = silent.read(&mut [0u8; 16]);
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    assert!(eventually(Duration::from_secs(10), || errors(
        &d, "timeout"
    ) >= 1.0));
    // A client after all that gets through.
    let mut after = TcpStream::connect(("127.0.0.1", port)).unwrap();
    after.write_all(b"{\"n\":3}\n").unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        s.read_lines("out.ndjson").len() == 3
    }));
}

#[test]
fn connections_over_max_connections_are_closed_and_counted_and_later_clients_served() {
    let s = Scratch::new();
    let port = free_port();
    let d = start(
        &s,
        &format!("mode: tcp, address: '127.0.0.1:{port}', max_connections: 100"),
    );
    // No probe connection (it could hold a permit until the server sees
    // it close): the first held connection is the one that gets through.
    let mut first = None;
    assert!(eventually(Duration::from_secs(30), || {
        first = TcpStream::connect(("127.0.0.1", port)).ok();
        first.is_some()
    }));
    let base = || errors(&d, "connection_limit");
    let mut held = vec![first.unwrap()];
    for _ in 1..100 {
        held.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    for (i, c) in held.iter_mut().enumerate() {
        c.write_all(format!("{{\"held\":{i}}}\n").as_bytes())
            .unwrap();
    }
    // Every held connection is being served once its line arrived.
    assert!(
        eventually(Duration::from_secs(30), || {
            s.read_lines("out.ndjson").len() == 100
        }),
        "{} lines; connection_limit errors {}; log:\n{}",
        s.read_lines("out.ndjson").len(),
        base(),
        d.log_text()
    );
    assert_eq!(base(), 0.0);
    let mut over = Vec::new();
    for _ in 0..900 {
        over.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    assert!(
        eventually(Duration::from_secs(30), || base() == 900.0),
        "connection_limit errors: {}",
        base()
    );
    for mut c in over {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let got = c.read(&mut [0u8; 1]);
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "closed by the server: {got:?}"
        );
    }
    drop(held);
    // Once the held connections are gone, a new client is served.
    let mut k = 0;
    assert!(eventually(Duration::from_secs(30), || {
        k += 1;
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.write_all(format!("{{\"after\":{k}}}\n").as_bytes());
        }
        s.read_lines("out.ndjson")
            .iter()
            .any(|e| e.get("after").is_some())
    }));
}

#[test]
fn udp_datagrams_and_unix_connections_deliver_their_lines() {
    let s = Scratch::new();
    let port = free_port();
    let d = start(
        &s,
        &format!("mode: udp, address: '127.0.0.1:{port}', codec: text"),
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // The source is up once a probe datagram comes out.
    assert!(eventually(Duration::from_secs(30), || {
        udp.send_to(b"probe", ("127.0.0.1", port)).unwrap();
        !s.read_lines("out.ndjson").is_empty()
    }));
    for i in 0..200 {
        // Two lines in one datagram.
        udp.send_to(format!("a{i}\nb{i}\n").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    // Probes sent after the first one may still arrive: set them apart.
    let received = || -> Vec<String> {
        s.read_lines("out.ndjson")
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .filter(|m| m != "probe")
            .collect()
    };
    assert!(eventually(Duration::from_secs(30), || received().len() == 400));
    let mut got = received();
    got.sort();
    let mut want: Vec<String> = (0..200)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    want.sort();
    assert_eq!(got, want);
    let all = s.read_lines("out.ndjson").len();
    assert!(eventually(Duration::from_secs(10), || metric(
        &d.metrics(),
        "flowgate_events_in_total",
        &[("component", "src")]
    ) == Some(
        all as f64
    )));
    drop(d);

    let s = Scratch::new();
    let path = s.path("in.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let _d = start(
        &s,
        &format!(
            "mode: unix, path: '{}', framing: octet_counting",
            path.display()
        ),
    );
    let mut c = None;
    assert!(eventually(Duration::from_secs(30), || {
        c = std::os::unix::net::UnixStream::connect(&path).ok();
        c.is_some()
    }));
    let mut c = c.unwrap();
    let frame = "{\"multi\":\n\"line\"}";
    c.write_all(format!("{} {frame}7 {{\"n\":2}}", frame.len()).as_bytes())
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || {
        s.read_lines("out.ndjson").len() == 2
    }));
    assert_eq!(
        s.read_lines("out.ndjson"),
        vec![
            serde_json::json!({"multi": "line"}),
            serde_json::json!({"n": 2})
        ]
    );
}

#[test]
fn udp_datagrams_that_find_no_room_are_discarded_as_buffer_full_and_counted() {
    let (gate, _) = tokio::sync::watch::channel(false);
    let held = Arc::new(HeldSink {
        gate,
        ids: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::post(held_post))
        .with_state(held.clone());
    let sink_address = serve_on_thread(app);
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  src: {{type: socket, mode: udp, address: '127.0.0.1:{port}'}}\nsinks:\n  out: {{type: http, inputs: [src], url: 'http://{sink_address}/', request_timeout: 10m, buffer: {{size: 100}}, batch: {{max_events: 50}}}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let count = |name: &str, labels: &[(&str, &str)]| {
        let mut l = vec![("component", "src")];
        l.extend_from_slice(labels);
        metric(&d.metrics(), name, &l).unwrap_or(0.0)
    };
    let discarded = || {
        count(
            "flowgate_events_discarded_total",
            &[("reason", "buffer_full")],
        )
    };
    // While the sink is held, datagrams keep coming: past what the
    // buffer and the sink's batch hold, they are discarded, not queued.
    let mut i = 0;
    assert!(
        eventually(Duration::from_secs(60), || {
            for _ in 0..50 {
                let line = format!("{{\"c\":0,\"i\":{i}}}");
                udp.send_to(line.as_bytes(), ("127.0.0.1", port)).unwrap();
                i += 1;
            }
            discarded() >= 500.0
        }),
        "discarded {}",
        discarded()
    );
    held.gate.send_replace(true);
    // Once drained, what came in was delivered or discarded.
    assert!(eventually(Duration::from_secs(60), || {
        let received = held.ids.lock().unwrap().len() as f64;
        received > 0.0
            && received + discarded() == count("flowgate_events_in_total", &[])
            && metric(
                &d.metrics(),
                "flowgate_buffer_events",
                &[("component", "out")],
            ) == Some(0.0)
    }));
    let ids = held.ids.lock().unwrap().clone();
    assert!(
        ids.len() <= 200,
        "{} delivered: at most the buffer and a held batch or two",
        ids.len()
    );
}
