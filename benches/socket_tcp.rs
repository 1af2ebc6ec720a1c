//! `socket` (tcp) -> blackhole throughput through the real binary, with
//! Rust senders: `cargo bench --bench socket_tcp` (release build).
//! `SOCKET_BENCH_CONNECTIONS` (default 4) clients each send
//! `SOCKET_BENCH_LINES` (default 500,000) NDJSON lines of ~140 bytes; the
//! clock runs from the first byte sent until the blackhole has counted
//! every event (polled on /metrics every 10ms).

#[path = "../tests/common/mod.rs"]
mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let connections = env_or("SOCKET_BENCH_CONNECTIONS", 4);
    let lines = env_or("SOCKET_BENCH_LINES", 500_000);
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "bench.yaml",
        &format!(
            "sources:\n  tcp: {{type: socket, mode: tcp, address: '127.0.0.1:{port}'}}\nsinks:\n  out: {{type: blackhole, inputs: [tcp]}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    wait_listening(port);
    // Prepared before the clock starts: the senders only write.
    let payloads: Vec<Vec<u8>> = (0..connections)
        .map(|c| {
            (0..lines)
                .map(|i| {
                    format!("{{\"host\":\"web-{c}\",\"status\":200,\"i\":{i},\"path\":\"/api/v1/orders\",\"latency_ms\":12,\"msg\":\"request served\"}}\n")
                })
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let total = connections * lines;
    let start = Instant::now();
    let senders: Vec<_> = payloads
        .into_iter()
        .map(|data| {
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.write_all(&data).unwrap();
            })
        })
        .collect();
    let done = eventually(Duration::from_secs(600), || {
        let m = d.metrics();
        metric(&m, "flowgate_events_in_total", &[("component", "out")]) == Some(total as f64)
    });
    let elapsed = start.elapsed();
    for s in senders {
        s.join().unwrap();
    }
    assert!(done, "the blackhole did not count {total} events");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_default();
    println!(
        "socket tcp -> blackhole: {total} events ({:.0} MB) over {connections} connections in {:.2}s: {:.0} events/s, peak RSS {rss} KiB",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}
