//! Disk buffers (SPEC §11), driven as a user drives them: an
//! `http_server` with acknowledgements answers 200 once events are durable
//! in a sink's disk buffer; the sink posts to a collector (a real HTTP
//! server in this test process) that can fail on command, as a service
//! that is down. Kills, restarts, corruption, a full buffer and a reload.

mod common;
use common::*;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// The sink's service: records every id it accepted and when.
#[derive(Default)]
struct Collector {
    failing: AtomicBool,
    delay_ms: AtomicU64,
    received: Mutex<Vec<(u64, Instant)>>,
    /// The `.v` field of the events, when present (the reload test).
    versions: Mutex<Vec<(u64, i64)>>,
}

async fn ingest(
    axum::extract::State(c): axum::extract::State<Arc<Collector>>,
    body: String,
) -> axum::http::StatusCode {
    let delay = c.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if c.failing.load(Ordering::SeqCst) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = Instant::now();
    let mut received = c.received.lock().unwrap();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("NDJSON from the sink");
        let id = v["id"].as_u64().expect("an id");
        received.push((id, now));
        if let Some(version) = v["v"].as_i64() {
            c.versions.lock().unwrap().push((id, version));
        }
    }
    axum::http::StatusCode::OK
}

fn collector() -> (String, Arc<Collector>) {
    let c = Arc::new(Collector::default());
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(c.clone());
    (serve_on_thread(app), c)
}

impl Collector {
    fn ids(&self) -> Vec<u64> {
        self.received.lock().unwrap().iter().map(|r| r.0).collect()
    }
}

/// `http_server` (acks) -> `http` sink with a disk buffer.
fn pipeline(port: u16, collector: &str, buffer: &str) -> String {
    format!(
        "name: durable
sources:
  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}
sinks:
  ship:
    type: http
    inputs: [web]
    url: 'http://{collector}/ingest'
    batch: {{max_events: 100, timeout: 20ms}}
    retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 10ms}}
    buffer: {buffer}
"
    )
}

/// A body of `n` events with ids from `first`.
fn body(first: u64, n: u64) -> String {
    (first..first + n)
        .map(|id| format!("{{\"id\":{id},\"pad\":\"{}\"}}\n", "x".repeat(60)))
        .collect()
}

/// POSTs batches of `per` events from `next` on until `stop`; returns the
/// ids answered 200.
fn client(url: String, next: Arc<AtomicU64>, per: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut ok = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let first = next.fetch_add(per, Ordering::SeqCst);
        let sent = rt.block_on(http.post(&url).body(body(first, per)).send());
        match sent {
            Ok(r) if r.status().as_u16() == 200 => ok.extend(first..first + per),
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    ok
}

fn counter(d: &Daemon, name: &str) -> f64 {
    metric(&d.metrics(), name, &[("component", "ship")]).unwrap_or(0.0)
}

#[test]
fn events_answered_200_survive_twenty_kill_9s_during_an_outage() {
    let (addr, c) = collector();
    let s = Scratch::new();
    let data = s.path("data");
    let data_arg = data.to_str().unwrap().to_string();
    let next = Arc::new(AtomicU64::new(0));
    let mut answered = Vec::new();
    // Per life: when it ended and the last redelivery count read before.
    let mut lives: Vec<(Instant, f64, Instant)> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(11);
    for life in 0..20 {
        // The service is down in most lives, up in every third.
        c.failing.store(life % 3 != 2, Ordering::SeqCst);
        let port = free_port();
        let file = s.write(
            "p.yaml",
            &pipeline(port, &addr, "{type: disk, max_bytes: 64MiB, size: 300}"),
        );
        let started = Instant::now();
        let d = Daemon::start(&file, &["--data-dir", &data_arg], Stdio::null());
        wait_listening(port);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|_| {
                let (url, next, stop) = (
                    format!("http://127.0.0.1:{port}/"),
                    next.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || client(url, next, 20, stop))
            })
            .collect();
        let until = Instant::now() + Duration::from_millis(rng.u64(300..1200));
        let mut last = (
            Instant::now(),
            counter(&d, "flowgate_buffer_redelivered_events_total"),
        );
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            let at = Instant::now();
            last = (at, counter(&d, "flowgate_buffer_redelivered_events_total"));
        }
        d.signal("KILL");
        stop.store(true, Ordering::SeqCst);
        for t in clients {
            answered.extend(t.join().unwrap());
        }
        drop(d);
        lives.push((started, last.1, last.0));
    }
    assert!(answered.len() > 1000, "clients got {} 200s", answered.len());
    // The service recovers; one more life delivers the backlog.
    c.failing.store(false, Ordering::SeqCst);
    let port = free_port();
    let file = s.write(
        "p.yaml",
        &pipeline(port, &addr, "{type: disk, max_bytes: 64MiB, size: 300}"),
    );
    let started = Instant::now();
    let mut d = Daemon::start(&file, &["--data-dir", &data_arg], Stdio::null());
    let have = |c: &Collector| {
        let got: std::collections::HashSet<u64> = c.ids().into_iter().collect();
        answered.iter().filter(|id| !got.contains(id)).count()
    };
    assert!(
        eventually(LONG, || have(&c) == 0),
        "{} of {} ids answered 200 never reached the service; log:\n{}",
        have(&c),
        answered.len(),
        d.log_text()
    );
    // Duplicates only from redelivery, and every one counted: a repeat
    // that reached the service in a life before that life's last reading
    // of the counter is in that reading.
    std::thread::sleep(Duration::from_millis(200));
    let final_count = counter(&d, "flowgate_buffer_redelivered_events_total");
    lives.push((started, final_count, Instant::now()));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let received = c.received.lock().unwrap().clone();
    let mut seen = HashMap::new();
    let mut repeats_counted = vec![0u64; lives.len()];
    for (id, at) in received {
        let times = seen.entry(id).or_insert(0);
        *times += 1;
        if *times > 1 {
            let life = lives.iter().rposition(|l| l.0 <= at).expect("a life");
            if at <= lives[life].2 {
                repeats_counted[life] += 1;
            }
        }
    }
    for (i, (n, life)) in repeats_counted.iter().zip(&lives).enumerate() {
        assert!(
            *n as f64 <= life.1,
            "life {i}: {n} repeats reached the service, {} counted as redelivered",
            life.1
        );
    }
}

#[test]
fn sigterm_with_a_backlog_then_a_restart_delivers_the_rest_once() {
    let (addr, c) = collector();
    c.delay_ms.store(200, Ordering::SeqCst);
    let s = Scratch::new();
    let data = s.path("data");
    let data_arg = data.to_str().unwrap().to_string();
    let port = free_port();
    let buffer = "{type: disk, max_bytes: 64MiB, size: 200}";
    let file = s.write("p.yaml", &pipeline(port, &addr, buffer));
    let mut d = Daemon::start(&file, &["--data-dir", &data_arg], Stdio::null());
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    for b in 0..30 {
        let (code, text) = post(&url, &body(b * 200, 200), None);
        assert_eq!(code, 200, "{text}");
    }
    // Slow service: most of the 6000 are still on disk.
    assert!(eventually(LONG, || !c.ids().is_empty()));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let before = c.ids().len();
    assert!(before < 6000, "a backlog was left: {before} delivered");
    c.delay_ms.store(0, Ordering::SeqCst);
    let port = free_port();
    let file = s.write("p.yaml", &pipeline(port, &addr, buffer));
    let mut d = Daemon::start(&file, &["--data-dir", &data_arg], Stdio::null());
    assert!(
        eventually(LONG, || c.ids().len() >= 6000),
        "{} delivered; log:\n{}",
        c.ids().len(),
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = c.ids();
    ids.sort_unstable();
    assert_ids(
        &ids,
        &(0..6000).collect::<Vec<u64>>(),
        "delivered after SIGTERM and restart",
    );
    assert_eq!(counter(&d, "flowgate_buffer_redelivered_events_total"), 0.0);
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
}

/// Fills the buffer of `ship` behind a failing service and stops cleanly.
fn backlog(c: &Collector, s: &Scratch, addr: &str, events: u64, buffer: &str) {
    c.failing.store(true, Ordering::SeqCst);
    let port = free_port();
    let file = s.write("p.yaml", &pipeline(port, addr, buffer));
    let data = s.path("data");
    let mut d = Daemon::start(
        &file,
        &["--data-dir", data.to_str().unwrap()],
        Stdio::null(),
    );
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    for b in 0..events / 500 {
        let (code, text) = post(&url, &body(b * 500, 500), None);
        assert_eq!(code, 200, "{text}");
    }
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
}

#[test]
fn corrupt_records_are_skipped_counted_and_reported_by_buffer_check() {
    let (addr, c) = collector();
    let s = Scratch::new();
    let buffer = "{type: disk, max_bytes: 1MiB}";
    backlog(&c, &s, &addr, 6000, buffer);
    let dir = s.path("data/durable/ship");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    // Truncate the newest mid-record; flip bytes in the middle of an older one.
    let newest = segments.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    f.set_len(len - 40).unwrap();
    let older = &segments[segments.len() - 2];
    let mut bytes = std::fs::read(older).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 3] {
        *b ^= 0x5a;
    }
    std::fs::write(older, bytes).unwrap();

    let data = s.path("data");
    let check = run(
        &["buffer", "check", "--data-dir", data.to_str().unwrap()],
        None,
    );
    let report = text(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{report}{}",
        text(&check.stderr)
    );
    let line = report
        .lines()
        .find(|l| l.starts_with("durable/ship"))
        .unwrap_or_else(|| panic!("{report}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let corrupt: u64 = cols[3].parse().unwrap();
    assert!((2..=4).contains(&corrupt), "{report}");

    c.failing.store(false, Ordering::SeqCst);
    let port = free_port();
    let file = s.write("p.yaml", &pipeline(port, &addr, buffer));
    let mut d = Daemon::start(
        &file,
        &["--data-dir", data.to_str().unwrap()],
        Stdio::null(),
    );
    let expected = 6000 - corrupt as usize;
    assert!(
        eventually(LONG, || c.ids().len() >= expected),
        "{} of {expected} delivered; log:\n{}",
        c.ids().len(),
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let ids = c.ids();
    assert_eq!(ids.len(), expected, "every intact record, once");
    assert_eq!(
        counter(&d, "flowgate_buffer_corrupt_records_total"),
        corrupt as f64,
        "the daemon counts what buffer check reports"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    let check = run(
        &["buffer", "check", "--data-dir", data.to_str().unwrap()],
        None,
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

#[test]
fn a_full_disk_buffer_blocks_with_503_or_drops_newest_and_counts() {
    let (addr, c) = collector();
    c.failing.store(true, Ordering::SeqCst);
    for (policy, expect_503) in [("block", true), ("drop_newest", false)] {
        let s = Scratch::new();
        let port = free_port();
        let buffer = format!("{{type: disk, max_bytes: 1MiB, when_full: {policy}}}");
        let file = s.write("p.yaml", &pipeline(port, &addr, &buffer));
        let data = s.path("data");
        let mut d = Daemon::start(
            &file,
            &["--data-dir", data.to_str().unwrap()],
            Stdio::null(),
        );
        wait_listening(port);
        let url = format!("http://127.0.0.1:{port}/");
        // 2.4 MB into 1 MiB.
        let codes: Vec<u16> = (0..40)
            .map(|b| post(&url, &body(b * 500, 500), None).0)
            .collect();
        let m = d.metrics();
        let bytes = metric(&m, "flowgate_buffer_bytes", &[("component", "ship")]).unwrap();
        assert!(bytes <= (1 << 20) as f64, "{policy}: {bytes} bytes on disk");
        if expect_503 {
            // 429 "full, try again", as with a memory buffer.
            assert!(codes.contains(&429), "{policy}: {codes:?}");
            assert!(codes.iter().all(|&c| c == 200 || c == 429), "{codes:?}");
        } else {
            assert!(codes.iter().all(|&c| c == 200), "{policy}: {codes:?}");
            let shed = metric(
                &m,
                "flowgate_events_discarded_total",
                &[("component", "ship"), ("reason", "buffer_full")],
            )
            .unwrap_or(0.0);
            assert!(shed > 5000.0, "{policy}: {shed} shed");
        }
        d.signal("TERM");
        assert_eq!(d.wait(LONG), Some(0));
    }
}

#[test]
fn a_reload_that_changes_the_buffered_stage_keeps_its_events() {
    let (addr, c) = collector();
    c.failing.store(true, Ordering::SeqCst);
    let s = Scratch::new();
    let port = free_port();
    let yaml = |version: u32, timeout: &str| {
        format!(
            "name: durable
sources:
  web: {{type: http_server, address: '127.0.0.1:{port}', acknowledgements: true}}
transforms:
  stamp:
    type: map
    inputs: [web]
    program: '.v = {version}'
    buffer: {{type: disk, max_bytes: 64MiB, size: 100}}
sinks:
  ship:
    type: http
    inputs: [stamp]
    url: 'http://{addr}/ingest'
    batch: {{max_events: 100, timeout: {timeout}}}
    retry: {{attempts: 2, initial_backoff: 10ms, max_backoff: 10ms}}
    buffer: {{size: 100}}
"
        )
    };
    let file = s.write("p.yaml", &yaml(1, "20ms"));
    let data = s.path("data");
    let mut d = Daemon::start(
        &file,
        &["--data-dir", data.to_str().unwrap()],
        Stdio::null(),
    );
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/");
    // The sink cannot write, so it soon stops taking: a backlog builds up
    // in `stamp`'s buffer.
    for b in 0..20 {
        let (code, text) = post(&url, &body(b * 200, 200), None);
        assert_eq!(code, 200, "{text}");
    }
    s.write("p.yaml", &yaml(2, "20ms"));
    d.signal("HUP");
    assert!(
        eventually(LONG, || d.log_text().contains("reloaded")),
        "{}",
        d.log_text()
    );
    c.failing.store(false, Ordering::SeqCst);
    assert!(
        eventually(LONG, || c.ids().len() >= 4000),
        "{} delivered; log:\n{}",
        c.ids().len(),
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = c.ids();
    ids.sort_unstable();
    assert_ids(
        &ids,
        &(0..4000).collect::<Vec<u64>>(),
        "delivered across the reload",
    );
    let versions = c.versions.lock().unwrap();
    let new = versions.iter().filter(|(_, v)| *v == 2).count();
    assert!(
        new > 0,
        "events buffered before the reload went through the new program"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs `flowgate run FILE` to its end, sampling its RSS; returns the peak.
fn run_sampling_rss(file: &std::path::Path, data: &str) -> u64 {
    let mut child = std::process::Command::new(bin())
        .args(["run", file.to_str().unwrap(), "--metrics-address", "off"])
        .args(["--data-dir", data])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return peak;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "still running"
        );
        peak = peak.max(rss_bytes(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backlog far larger than memory (`DISK_BUFFER_BACKLOG_MB`, default
/// 100; the 2 GB run of the issue is `benches/disk_buffer_rss.sh`) fills
/// and replays in bounded memory.
#[test]
fn a_large_backlog_fills_and_replays_in_bounded_memory() {
    let mb: u64 = std::env::var("DISK_BUFFER_BACKLOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (addr, c) = collector();
    c.failing.store(true, Ordering::SeqCst);
    let s = Scratch::new();
    let data = s.path("data");
    let data = data.to_str().unwrap();
    // ~300 bytes per record on disk.
    let events = mb * (1 << 20) / 300;
    let pad = "y".repeat(250);
    // Filling: the sink takes one event a second, so everything the
    // generator makes piles up in its buffer; once all is there, the
    // daemon is killed (what is in the buffer is durable).
    let fill = s.write(
        "fill.yaml",
        &format!(
            "name: big
sources:
  gen: {{type: generator, count: {events}, events: [{{pad: '{pad}'}}]}}
sinks:
  ship:
    type: http
    inputs: [gen]
    url: 'http://{addr}/ingest'
    rate_limit: {{rate: 1, burst: 1}}
    buffer: {{type: disk, max_bytes: 4GiB}}
"
        ),
    );
    let d_started = Instant::now();
    let d = Daemon::start(&fill, &["--data-dir", data], Stdio::null());
    let mut peak_fill = 0;
    let filled = eventually(Duration::from_secs(600), || {
        peak_fill = peak_fill.max(rss_bytes(d.child.id()).unwrap_or(0));
        let m = d.metrics();
        metric(&m, "flowgate_events_out_total", &[("component", "gen")]) == Some(events as f64)
            && metric(&m, "flowgate_buffer_events", &[("component", "ship")])
                .is_some_and(|n| n >= events as f64 - 1000.0)
    });
    assert!(filled, "{}", d.metrics());
    let fill_time = d_started.elapsed();
    d.signal("KILL");
    drop(d);
    let check = run(&["buffer", "check", "--data-dir", data], None);
    let report = text(&check.stdout);
    let line = report.lines().find(|l| l.starts_with("big/ship")).unwrap();
    let stored: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(stored as f64 > events as f64 * 0.9, "{report}");
    // Replaying into a file: no source events, so the run drains the buffer and ends.
    let replay = s.write(
        "replay.yaml",
        "name: big
sources:
  gen: {type: generator, count: 0, events: [{}]}
sinks:
  ship:
    type: file
    inputs: [gen]
    path: $DIR/out.ndjson
    buffer: {type: disk, max_bytes: 4GiB}
",
    );
    let replay_started = Instant::now();
    let peak_replay = run_sampling_rss(&replay, data);
    let replay_time = replay_started.elapsed();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(
        std::fs::File::open(s.path("out.ndjson")).unwrap(),
    ))
    .count() as u64;
    assert_eq!(lines, stored, "every stored event replayed");
    const LIMIT: u64 = 100 << 20;
    assert!(
        peak_fill < LIMIT && peak_replay < LIMIT,
        "peak RSS {} MB filling, {} MB replaying {mb} MB",
        peak_fill >> 20,
        peak_replay >> 20
    );
    eprintln!(
        "{mb} MB backlog: peak RSS {} MB filling ({fill_time:?}), {} MB replaying ({replay_time:?})",
        peak_fill >> 20,
        peak_replay >> 20
    );
}
