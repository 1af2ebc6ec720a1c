//! The `socket` sink through the real binary, the test being its server:
//! a TCP listener that closes mid-run and comes back on the same port gets
//! every event exactly once, over a second connection (the sink retried
//! while it was down); UDP gets one datagram per event.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ids_file(s: &Scratch, n: u64) -> std::path::PathBuf {
    let data: String = (0..n).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    s.write("in.ndjson", &data)
}

/// Reads lines from `conn` into `ids` until EOF; after `close_after`
/// lines, closes its side first (a graceful close: FIN, then it reads on
/// until the sink's own FIN).
fn read_ids(conn: TcpStream, ids: &Mutex<Vec<u64>>, close_after: Option<usize>) {
    let writer = conn.try_clone().unwrap();
    let mut closed = false;
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        let mut ids = ids.lock().unwrap();
        ids.push(v["i"].as_u64().unwrap());
        if !closed && close_after.is_some_and(|n| ids.len() >= n) {
            closed = true;
            let _ = writer.shutdown(Shutdown::Write);
        }
    }
}

#[test]
fn a_tcp_server_closed_and_reopened_mid_run_gets_every_event_once_over_a_new_connection() {
    const N: u64 = 20_000;
    let s = Scratch::new();
    let input = ids_file(&s, N);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let server = {
        let (ids, connections) = (ids.clone(), connections.clone());
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            // The listener goes away with the first connection's close:
            // connects are refused until it is back.
            drop(listener);
            read_ids(conn, &ids, Some(5_000));
            std::thread::sleep(Duration::from_secs(1));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (conn, _) = listener.accept().unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            read_ids(conn, &ids, None);
        })
    };
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: '{}', rate_limit: {{rate: 5000, per: 1s, burst: 500}}}}\nsinks:\n  out:\n    type: socket\n    inputs: [in]\n    mode: tcp\n    address: '127.0.0.1:{port}'\n    retry: {{attempts: 100, initial_backoff: 50ms, max_backoff: 500ms}}\n",
            input.display()
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    assert_eq!(
        d.wait(Duration::from_secs(120)),
        Some(0),
        "{}",
        d.log_text()
    );
    server.join().unwrap();
    let ids = ids.lock().unwrap().clone();
    let want: Vec<u64> = (0..N).collect();
    assert_ids(&ids, &want, "events the server got, in order");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let log = d.log_text();
    assert!(log.contains("closed the connection"), "{log}");
    assert!(log.contains("reconnected to 127.0.0.1:"), "{log}");
}

#[test]
fn udp_gets_one_datagram_per_event() {
    const N: u64 = 500;
    let s = Scratch::new();
    let input = ids_file(&s, N);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let port = udp.local_addr().unwrap().port();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: '{}', rate_limit: {{rate: 2000, per: 1s, burst: 100}}}}\nsinks:\n  out: {{type: socket, inputs: [in], mode: udp, address: '127.0.0.1:{port}'}}\n",
            input.display()
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut ids = Vec::new();
    let mut buf = [0u8; 2048];
    while (ids.len() as u64) < N {
        let n = udp.recv(&mut buf).expect("a datagram within 30s");
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).expect("one JSON event");
        ids.push(v["i"].as_u64().unwrap());
    }
    assert_eq!(d.wait(Duration::from_secs(60)), Some(0));
    ids.sort_unstable();
    assert_ids(&ids, &(0..N).collect::<Vec<_>>(), "datagrams");
}
