//! The `http` transform against a local test service that can be slow,
//! fail, and recover on command: ordered worker pools, retries, timeouts,
//! the circuit breaker (state read from /metrics) and dead-letter routing.

mod common;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Service {
    failing: AtomicBool,
    delay_ms: AtomicU64,
    random_delay: AtomicBool,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

async fn customer(State(s): State<Arc<Service>>, Path(id): Path<String>) -> (StatusCode, String) {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut delay = s.delay_ms.load(Ordering::SeqCst);
    if s.random_delay.load(Ordering::SeqCst) {
        delay = fastrand::u64(0..20);
    }
    tokio::time::sleep(Duration::from_millis(delay)).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    if id == "missing" {
        return (StatusCode::NOT_FOUND, "no such customer".into());
    }
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    (
        StatusCode::OK,
        format!("{{\"id\":\"{id}\",\"tier\":\"gold\"}}"),
    )
}

/// Starts the customer service; returns its address and its controls.
fn start_service() -> (String, Arc<Service>) {
    let service = Arc::new(Service::default());
    let app = axum::Router::new()
        .route("/customers/{id}", get(customer))
        .with_state(service.clone());
    (serve_on_thread(app), service)
}

fn enrich_pipeline(s: &Scratch, addr: &str, controls: &str) -> std::path::PathBuf {
    s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: stdin}}\ntransforms:\n  enrich:\n    type: http\n    inputs: [in]\n    url: 'http://{addr}/customers/{{{{ .id }}}}'\n    target: customer\n    on_error: route\n{controls}\nsinks:\n  out: {{type: file, inputs: [enrich], path: $DIR/out.ndjson}}\n  dlq: {{type: file, inputs: [enrich.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    )
}

#[test]
fn sixteen_workers_call_concurrently_and_keep_input_order() {
    let (addr, service) = start_service();
    service.random_delay.store(true, Ordering::SeqCst);
    let s = Scratch::new();
    let file = enrich_pipeline(&s, &addr, "    workers: 16\n    ordered: true");
    let input: String = (0..300)
        .map(|i| format!("{{\"id\":\"c{i}\",\"n\":{i}}}\n"))
        .collect();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = s.read_lines("out.ndjson");
    assert_eq!(lines.len(), 300);
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e["n"], i);
        assert_eq!(e["customer"]["id"], format!("c{i}"));
    }
    let max = service.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max >= 8,
        "16 workers should overlap calls; saw at most {max} at once"
    );
}

#[test]
fn timeouts_are_retried_and_dead_lettered_with_attempts_while_4xx_is_not_retried() {
    let (addr, service) = start_service();
    service.delay_ms.store(400, Ordering::SeqCst);
    let s = Scratch::new();
    let file = enrich_pipeline(
        &s,
        &addr,
        "    timeout: 100ms\n    retry: {attempts: 3, initial_backoff: 10ms, max_backoff: 20ms}",
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"id\":\"slow\"}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["error"]["attempts"], 3);
    assert_eq!(dlq[0]["error"]["component"], "enrich");
    assert!(
        dlq[0]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 100ms")
    );
    assert_eq!(service.calls.load(Ordering::SeqCst), 3);

    service.delay_ms.store(0, Ordering::SeqCst);
    let s = Scratch::new();
    let file = enrich_pipeline(&s, &addr, "    retry: {attempts: 3, initial_backoff: 10ms}");
    let before = service.calls.load(Ordering::SeqCst);
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"id\":\"missing\"}\n{\"id\":\"ok\"}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(dlq[0]["error"]["attempts"], 1, "a 404 is not retried");
    assert!(dlq[0]["error"]["message"].as_str().unwrap().contains("404"));
    assert_eq!(service.calls.load(Ordering::SeqCst) - before, 2);
    assert_eq!(s.read_lines("out.ndjson")[0]["customer"]["tier"], "gold");
}

#[test]
fn the_breaker_opens_on_a_failing_service_rejects_without_calling_and_recovers() {
    let (addr, service) = start_service();
    service.failing.store(true, Ordering::SeqCst);
    let s = Scratch::new();
    let file = enrich_pipeline(
        &s,
        &addr,
        "    retry: {attempts: 2, initial_backoff: 5ms, max_backoff: 5ms}\n    circuit_breaker: {consecutive_failures: 3, open_for: 1s}",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let state = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_circuit_breaker_state",
            &[("component", "enrich")],
        )
    };
    for i in 0..2 {
        writeln!(stdin, "{{\"id\":\"c{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    assert!(
        eventually(LONG, || state(&d) == Some(1.0)),
        "{}",
        d.metrics()
    );
    let calls_when_open = service.calls.load(Ordering::SeqCst);
    assert_eq!(
        calls_when_open, 3,
        "it opened after 3 failed attempts and stopped retrying"
    );
    for i in 2..12 {
        writeln!(stdin, "{{\"id\":\"c{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    assert!(eventually(LONG, || metric(
        &d.metrics(),
        "flowgate_errors_total",
        &[("component", "enrich"), ("error_type", "breaker_open")]
    ) == Some(10.0)));
    assert_eq!(
        service.calls.load(Ordering::SeqCst),
        calls_when_open,
        "an open breaker does not call the service"
    );
    service.failing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        eventually(LONG, || state(&d) == Some(2.0)),
        "half-open after open_for"
    );
    writeln!(stdin, "{{\"id\":\"back\"}}").unwrap();
    stdin.flush().unwrap();
    assert!(
        eventually(LONG, || state(&d) == Some(0.0)),
        "{}",
        d.metrics()
    );
    drop(stdin);
    assert_eq!(d.wait(LONG), Some(0));
    let out = s.read_lines("out.ndjson");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["customer"]["id"], "back");
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(dlq.len(), 12);
    assert_eq!(
        dlq.iter()
            .filter(|e| e["error"]["message"] == "circuit breaker is open")
            .count(),
        10
    );
    let log = d.log_text();
    assert!(
        log.contains("circuit breaker closed -> open")
            && log.contains("circuit breaker half_open -> closed"),
        "{log}"
    );
}

#[test]
fn the_enrich_example_runs_against_a_customer_service() {
    let (addr, _service) = start_service();
    let s = Scratch::new();
    let mut child = std::process::Command::new(bin())
        .args(["run", "pipelines/enrich.yaml", "--metrics-address", "off"])
        .env("CUSTOMERS_URL", format!("http://{addr}"))
        .env("OUT_DIR", s.dir.path())
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (i, (amount, customer)) in [
        (5, "\"a\""),
        (0, "\"b\""),
        (7, "null"),
        (9, "\"missing\""),
        (3, "\"a\""),
    ]
    .iter()
    .enumerate()
    {
        writeln!(
            stdin,
            "{{\"order\":{i},\"amount\":{amount},\"customer_id\":{customer}}}"
        )
        .unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let enriched = s.read_lines("enriched.ndjson");
    assert_eq!(
        enriched
            .iter()
            .map(|e| e["order"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 4]
    );
    assert_eq!(enriched[0]["customer"]["tier"], "gold");
    let dead = s.read_lines("dead_letter.ndjson");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["order"], 3);
    assert_eq!(dead[0]["error"]["attempts"], 1, "404 is final");
}

#[test]
fn when_open_wait_holds_events_until_a_trial_succeeds() {
    let (addr, service) = start_service();
    service.failing.store(true, Ordering::SeqCst);
    let s = Scratch::new();
    let file = enrich_pipeline(
        &s,
        &addr,
        "    circuit_breaker: {consecutive_failures: 1, open_for: 500ms, when_open: wait}",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    writeln!(stdin, "{{\"id\":\"first\"}}").unwrap();
    stdin.flush().unwrap();
    let state = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_circuit_breaker_state",
            &[("component", "enrich")],
        )
    };
    assert!(eventually(LONG, || state(&d) == Some(1.0)));
    writeln!(stdin, "{{\"id\":\"second\"}}").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        service.calls.load(Ordering::SeqCst),
        1,
        "the held event is not sent while open"
    );
    service.failing.store(false, Ordering::SeqCst);
    assert!(
        eventually(LONG, || state(&d) == Some(0.0)),
        "{}",
        d.metrics()
    );
    drop(stdin);
    assert_eq!(d.wait(LONG), Some(0));
    let out = s.read_lines("out.ndjson");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["customer"]["id"], "second");
    assert_eq!(
        s.read_lines("dlq.ndjson").len(),
        1,
        "only the call that failed is dead-lettered; none rejected"
    );
}

/// A collector that counts NDJSON lines per request and fails on command.
#[derive(Default)]
struct Collector {
    failing: AtomicBool,
    requests: std::sync::Mutex<Vec<usize>>,
}

async fn collect(State(c): State<Arc<Collector>>, body: String) -> StatusCode {
    if c.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    c.requests.lock().unwrap().push(body.lines().count());
    StatusCode::OK
}

fn start_collector() -> (String, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(collect))
        .with_state(collector.clone());
    (serve_on_thread(app), collector)
}

#[test]
fn the_http_sink_posts_batches_retries_and_dead_letters_what_finally_fails() {
    let (addr, collector) = start_collector();
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: stdin}}\nsinks:\n  ship:\n    type: http\n    inputs: [in]\n    url: 'http://{addr}/ingest'\n    batch: {{max_events: 100, timeout: 200ms}}\n    retry: {{attempts: 2, initial_backoff: 5ms, max_backoff: 5ms}}\n    on_error: route\n  dlq: {{type: file, inputs: [ship.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let input: String = (0..250).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sizes = collector.requests.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    assert!(
        sizes.iter().all(|n| *n <= 100),
        "batch.max_events bounds a request: {sizes:?}"
    );
    assert!(sizes.len() >= 3);

    collector.failing.store(true, Ordering::SeqCst);
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some("{\"i\":1}\n{\"i\":2}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(
        dlq.len(),
        2,
        "the failed batch is dead-lettered event by event"
    );
    assert_eq!(dlq[0]["error"]["attempts"], 2);
    assert!(dlq[0]["error"]["message"].as_str().unwrap().contains("503"));
}

/// A collector that takes gzip bodies and fails its first `fail_first` requests.
#[derive(Default)]
struct GzipCollector {
    fail_first: AtomicUsize,
    gzipped: AtomicUsize,
    lines: std::sync::Mutex<Vec<serde_json::Value>>,
}

async fn collect_gzip(
    State(c): State<Arc<GzipCollector>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if c.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let text = if headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip")
    {
        c.gzipped.fetch_add(1, Ordering::SeqCst);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let mut lines = c.lines.lock().unwrap();
    lines.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
    StatusCode::OK
}

/// Serves a `GzipCollector` at /ingest that fails its first `fail_first` requests.
fn start_gzip_collector(fail_first: usize) -> (String, Arc<GzipCollector>) {
    let collector = Arc::new(GzipCollector::default());
    collector.fail_first.store(fail_first, Ordering::SeqCst);
    let addr = serve_on_thread(
        axum::Router::new()
            .route("/ingest", axum::routing::post(collect_gzip))
            .with_state(collector.clone()),
    );
    (addr, collector)
}

#[test]
fn the_http_sink_gzips_and_rides_out_a_service_that_fails_for_a_while() {
    let (addr, collector) = start_gzip_collector(3);
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: stdin}}\nsinks:\n  ship:\n    type: http\n    inputs: [in]\n    url: 'http://{addr}/ingest'\n    compression: gzip\n    batch: {{max_events: 50, timeout: 50ms}}\n    retry: {{attempts: 5, initial_backoff: 5ms, max_backoff: 20ms}}\n    on_error: route\n  dlq: {{type: file, inputs: [ship.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let input: String = (0..200).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: Vec<u64> = collector
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "retries deliver everything, in order"
    );
    assert!(collector.gzipped.load(Ordering::SeqCst) >= 4);
    assert!(
        s.read_lines("dlq.ndjson").is_empty(),
        "nothing needed the dead letters"
    );
}

#[test]
fn the_http_sink_breaker_opens_on_a_failing_service_dead_letters_and_recovers() {
    let (addr, collector) = start_gzip_collector(4);
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  in: {{type: generator, count: 400, rate: 500, events: [{{n: 1}}]}}\nsinks:\n  ship:\n    type: http\n    inputs: [in]\n    url: 'http://{addr}/ingest'\n    batch: {{max_events: 10, timeout: 5ms}}\n    circuit_breaker: {{consecutive_failures: 2, open_for: 30ms}}\n    on_error: route\n  dlq: {{type: file, inputs: [ship.errors], path: $DIR/dlq.ndjson}}\n"
        ),
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let delivered = collector.lines.lock().unwrap().len();
    let dlq = s.read_lines("dlq.ndjson");
    assert_eq!(
        delivered + dlq.len(),
        400,
        "every event is delivered or dead-lettered"
    );
    let rejected = dlq
        .iter()
        .filter(|e| e["error"]["message"] == "circuit breaker is open")
        .count();
    assert!(
        rejected > 0,
        "the open breaker rejected batches without calling"
    );
    assert!(
        dlq.iter()
            .any(|e| e["error"]["message"].as_str().unwrap().contains("503"))
    );
    assert!(
        delivered >= 200,
        "the breaker closed again once the service recovered: {delivered}"
    );
}
