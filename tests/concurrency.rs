//! Concurrency of the `http` sink against a local test service that counts
//! the requests it has in flight: `workers: adaptive` settles near the
//! service's capacity, a fixed `workers: N` keeps exactly N writes in
//! flight, and `validate` rejects `adaptive` where there is no service.

mod common;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// An ingest service: takes NDJSON POSTs, records every event's `id`, and
/// answers 200 after a latency that depends only on how many requests are
/// in flight when the request arrives. Waiting is a timer, not a thread,
/// so the service never queues: whatever latency the client sees is the
/// one `latency` chose (plus scheduling), at any concurrency.
struct Ingest {
    latency: fn(usize) -> Duration,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Set by the test: from then on `late_peak` follows the peak too.
    late: AtomicBool,
    late_peak: AtomicUsize,
    ids: Mutex<Vec<u64>>,
}

async fn ingest(State(s): State<Arc<Ingest>>, body: String) -> StatusCode {
    let n = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(n, Ordering::SeqCst);
    if s.late.load(Ordering::SeqCst) {
        s.late_peak.fetch_max(n, Ordering::SeqCst);
    }
    tokio::time::sleep((s.latency)(n)).await;
    let ids: Vec<u64> = body
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("NDJSON line");
            v["id"].as_u64().expect("every event has a numeric id")
        })
        .collect();
    s.ids.lock().unwrap().extend(ids);
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    StatusCode::OK
}

impl Ingest {
    fn delivered(&self) -> usize {
        self.ids.lock().unwrap().len()
    }

    /// The ids received, sorted.
    fn sorted_ids(&self) -> Vec<u64> {
        let mut ids = self.ids.lock().unwrap().clone();
        ids.sort_unstable();
        ids
    }
}

/// Serves the ingest service on 127.0.0.1:0 from its own runtime thread;
/// returns its address and its state.
fn start_ingest(latency: fn(usize) -> Duration) -> (String, Arc<Ingest>) {
    let service = Arc::new(Ingest {
        latency,
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        late: AtomicBool::new(false),
        late_peak: AtomicUsize::new(0),
        ids: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/ingest", post(ingest))
        .with_state(service.clone());
    (serve_on_thread(app), service)
}

/// `GET /metrics`, or None once the daemon is gone (it exits when a
/// finite source is done, possibly between two samples).
fn try_metrics(address: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Capacity of the service in test 1: requests in flight it serves at the
/// base latency.
const C: usize = 8;
const BASE: Duration = Duration::from_millis(20);

/// Flat at `BASE` up to `C` requests in flight, then quadratic: 4x at
/// C+1, 9x at C+2. A latency knee rather than 503s: every request
/// succeeds, so exactly-once delivery needs no retries, and the limit has
/// to be found from latency alone (the harder of the controller's two
/// signals; 429/503 are a plain cut). The knee is steep so that one step
/// past capacity is a rise far beyond scheduling jitter.
fn knee(n: usize) -> Duration {
    let over = n.saturating_sub(C - 1).max(1) as u32;
    BASE * over * over
}

#[test]
fn adaptive_workers_settle_near_the_capacity_of_the_service() {
    // The sawtooth delivers about 150 events/s: ~8 s.
    const N: usize = 1200;
    let (addr, service) = start_ingest(knee);
    let s = Scratch::new();
    let events: Vec<String> = (0..N).map(|i| format!("{{id: {i}}}")).collect();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  gen: {{type: generator, count: {N}, events: [{}]}}\nsinks:\n  ship:\n    type: http\n    inputs: [gen]\n    url: 'http://{addr}/ingest'\n    batch: {{max_events: 1}}\n    workers: adaptive\n",
            events.join(", ")
        ),
    );
    let started = Instant::now();
    let mut d = Daemon::start(&file, &[], Stdio::null());
    // (events delivered when sampled, the limit then)
    let mut samples: Vec<(usize, f64)> = Vec::new();
    let mut peak_before_late = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = service.delivered();
        if delivered >= N {
            break;
        }
        if delivered >= N / 2 && !service.late.swap(true, Ordering::SeqCst) {
            peak_before_late = service.peak.load(Ordering::SeqCst);
        }
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {N} delivered; log:\n{}",
            d.log_text()
        );
        if let Some(v) = try_metrics(&d.address)
            .and_then(|m| metric(&m, "flowgate_workers_limit", &[("component", "ship")]))
        {
            samples.push((delivered, v));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let took = started.elapsed();

    let want: Vec<u64> = (0..N as u64).collect();
    assert_ids(&service.sorted_ids(), &want, "ids at the service");

    let late: Vec<usize> = samples
        .iter()
        .filter(|(delivered, _)| *delivered >= N / 2)
        .map(|(_, v)| *v as usize)
        .collect();
    let late_peak = service.late_peak.load(Ordering::SeqCst);
    let summary = format!(
        "run {took:?}; {} samples, {} in the second half; peak in flight before it \
         {peak_before_late}, in it {late_peak}; its limits {late:?}",
        samples.len(),
        late.len()
    );
    assert!(late.len() >= 20, "too few samples to judge: {summary}");
    // AIMD with a halving cut saws from about C/2 to a little over C: the
    // first slow call past the knee answers several windows after the
    // step that caused it, and the limit keeps growing meanwhile (seen:
    // 5..=11, mean ~7.5). The band leaves room for a cut on jitter from a
    // loaded machine.
    let (lo, hi) = (*late.iter().min().unwrap(), *late.iter().max().unwrap());
    assert!(
        (3..=16).contains(&lo) && (3..=16).contains(&hi),
        "the limit left 3..=16 in the second half: {summary}"
    );
    let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
    assert!(
        (C as f64 / 2.0..=C as f64 + 2.0).contains(&mean),
        "mean limit {mean:.2} in the second half: {summary}"
    );
    // The limit binds: it keeps reaching the knee, never far beyond it.
    assert!(
        (C - 1..=16).contains(&late_peak),
        "the service saw {late_peak} in flight at most in the second half: {summary}"
    );
}

fn flat_100ms(_: usize) -> Duration {
    Duration::from_millis(100)
}

#[test]
fn four_fixed_workers_keep_exactly_four_writes_in_flight() {
    const N: usize = 40;
    let (addr, service) = start_ingest(flat_100ms);
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: stdin}}\nsinks:\n  ship:\n    type: http\n    inputs: [in]\n    url: 'http://{addr}/ingest'\n    batch: {{max_events: 1}}\n    workers: 4\n    ordered: true\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let input: String = (0..N).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let out = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_events_out_total",
            &[("component", "ship")],
        )
    };
    assert!(
        eventually(LONG, || out(&d) == Some(N as f64)),
        "{}",
        d.metrics()
    );
    drop(stdin);
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let want: Vec<u64> = (0..N as u64).collect();
    assert_ids(&service.sorted_ids(), &want, "ids at the service");
    assert_eq!(
        service.peak.load(Ordering::SeqCst),
        4,
        "requests in flight at the service's peak"
    );
}

#[test]
fn validate_rejects_adaptive_workers_where_there_is_no_service_to_follow() {
    let (code, lines) = validate_lines(
        "sources:
  g: {type: generator, events: [{a: 1}]}
transforms:
  m: {type: map, inputs: [g], program: '.', workers: adaptive}
sinks:
  out:
    type: file
    inputs: [m]
    path: out.ndjson
    workers: adaptive
  ship: {type: http, inputs: [m], url: 'http://127.0.0.1:9/x', workers: adaptive, max_workers: 0}
",
    );
    let adaptive = "workers: adaptive follows a service's latency: it is for the http \
                    transform and the http sink; give a number of workers here";
    assert_eq!(code, Some(78), "{lines:?}");
    assert_eq!(
        lines,
        [
            format!("F:4:54: component 'm': {adaptive}"),
            format!("F:10:14: component 'out': {adaptive}"),
            "F:11:96: component 'ship': max_workers must be between 1 and 1024, not 0".into(),
            "F: 3 problem(s)".to_string(),
        ]
    );

    // Where a service answers, adaptive is valid.
    let (code, lines) = validate_lines(
        "sources:
  g: {type: generator, events: [{id: 1}]}
transforms:
  enrich: {type: http, inputs: [g], url: 'http://127.0.0.1:9/c/{{ .id }}', target: c, workers: adaptive, max_workers: 8}
sinks:
  ship: {type: http, inputs: [enrich], url: 'http://127.0.0.1:9/x', workers: adaptive}
",
    );
    assert_eq!((code, &lines[..]), (Some(0), &[][..]), "{lines:?}");
}
