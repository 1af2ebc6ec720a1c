//! `aggregate` through the real binary: the example pipeline against exact
//! answers computed here, `flowgate test` on an aggregate, at-least-once
//! through an open window across `kill -9`, and a reload that keeps the
//! open windows of an unchanged aggregate.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn the_example_counts_requests_and_latency_per_host_status_and_minute() {
    let s = Scratch::new();
    let out = std::process::Command::new(bin())
        .args([
            "run",
            "pipelines/metrics_from_logs.yaml",
            "--metrics-address",
            "off",
        ])
        .current_dir(repo())
        .env("OUT_DIR", s.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The exact answers, from the data.
    let data = std::fs::read_to_string(repo().join("pipelines/data/app.log.ndjson")).unwrap();
    let mut want: BTreeMap<(String, u64, String), Vec<f64>> = BTreeMap::new();
    let mut requests = 0;
    for line in data.lines() {
        // The log has lines that are not JSON (decode errors of the source).
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        requests += 1;
        let ts = e["ts"].as_str().unwrap();
        let minute = format!("{}:00Z", &ts[..16]);
        want.entry((
            e["service"].as_str().unwrap().into(),
            e["status"].as_u64().unwrap(),
            minute,
        ))
        .or_default()
        .push(e["latency_ms"].as_f64().unwrap());
    }
    let got = s.read_lines("metrics.ndjson");
    assert_eq!(
        got.len(),
        want.len(),
        "one output per host, status and minute"
    );
    let mut total = 0;
    for o in &got {
        let key = (
            o["host"].as_str().unwrap().to_string(),
            o["status"].as_u64().unwrap(),
            o["window_start"].as_str().unwrap().to_string(),
        );
        let mut lat = want
            .remove(&key)
            .unwrap_or_else(|| panic!("unexpected output {o}"));
        lat.sort_by(f64::total_cmp);
        let n = lat.len();
        total += n;
        assert_eq!(o["requests"].as_u64(), Some(n as u64), "{o}");
        let mean = lat.iter().sum::<f64>() / n as f64;
        assert!(
            (o["mean_latency_ms"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{o}"
        );
        let p99 = lat[(0.99 * n as f64).ceil() as usize - 1];
        let err = (o["p99_latency_ms"].as_f64().unwrap() - p99).abs() / p99;
        assert!(err <= 0.01, "{o}: exact p99 {p99}");
    }
    assert_eq!(total, requests, "every request counted once");
}

#[test]
fn flowgate_test_drives_an_aggregate_and_flushes_at_the_end_of_the_input() {
    let out = run(&["test", "pipelines/metrics_from_logs.yaml"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("1 passed, 0 failed"));
    // A wrong count is a failure with a diff.
    let s = Scratch::new();
    let yaml = std::fs::read_to_string(repo().join("pipelines/metrics_from_logs.yaml"))
        .unwrap()
        .replace("requests: 2,", "requests: 3,");
    let file = s.write("p.yaml", &yaml);
    let out = run(&["test", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("\"requests\":2"),
        "{}",
        text(&out.stdout)
    );
}

fn append(s: &Scratch, range: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.path("app.log"))
        .unwrap();
    let text: String = range
        .map(|i| format!("{{\"i\":{i},\"ts\":\"2026-12-01T10:00:30Z\"}}\n"))
        .collect();
    f.write_all(text.as_bytes()).unwrap();
}

fn start(s: &Scratch, file: &std::path::Path) -> Daemon {
    let state = s.path("state");
    Daemon::start(
        file,
        &["--data-dir", state.to_str().unwrap()],
        Stdio::null(),
    )
}

fn received(d: &Daemon, component: &str) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_events_in_total",
        &[("component", component)],
    )
    .unwrap_or(0.0)
}

fn entries(d: &Daemon, component: &str) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_state_entries",
        &[("component", component)],
    )
    .unwrap_or(-1.0)
}

/// `i -> sum of n` over the output file.
fn counted(s: &Scratch, name: &str) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    for o in s.read_lines(name) {
        *seen.entry(o["i"].as_u64().unwrap()).or_default() += o["n"].as_u64().unwrap();
    }
    seen
}

#[test]
fn kill_9_inside_an_open_window_loses_no_event() {
    let s = Scratch::new();
    // One group per event, so the outputs show which events were counted;
    // event time, every event in one minute: the window stays open until
    // the pipeline stops, whatever the wall clock does.
    let file = s.write(
        "p.yaml",
        "name: windows\nsources:\n  logs: {type: file, path: $DIR/app.log, follow: true, poll_interval: 20ms}\ntransforms:\n  per_id:\n    type: aggregate\n    inputs: [logs]\n    group_by: {i: .i}\n    time: .ts\n    window: {type: tumbling, size: 1m}\n    aggregations: {n: count}\nsinks:\n  out: {type: file, inputs: [per_id], path: $DIR/out.ndjson}\n",
    );
    append(&s, 0..1000);
    let d = start(&s, &file);
    assert!(
        eventually(LONG, || received(&d, "per_id") == 1000.0),
        "{}",
        d.log_text()
    );
    // (The gauge is set once the batch is taken in, after it is counted.)
    assert!(
        eventually(LONG, || entries(&d, "per_id") == 1000.0),
        "every event is in an open window: {}",
        entries(&d, "per_id")
    );
    // Give an (incorrect) checkpoint write time to happen.
    std::thread::sleep(Duration::from_millis(300));
    let checkpoint = s.path("state/windows/logs.checkpoint.json");
    let offset = std::fs::read_to_string(&checkpoint)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|c| c["offset"].as_u64())
        .unwrap_or(0);
    d.signal("KILL");
    drop(d);
    assert_eq!(
        offset, 0,
        "the checkpoint does not move past events in an open window"
    );
    assert!(!s.path("out.ndjson").exists(), "nothing was emitted");
    append(&s, 1000..2000);
    let mut d = start(&s, &file);
    assert!(
        eventually(LONG, || received(&d, "per_id") >= 2000.0),
        "{}",
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let seen = counted(&s, "out.ndjson");
    let missing: Vec<u64> = (0..2000).filter(|i| !seen.contains_key(i)).collect();
    assert!(missing.is_empty(), "events never counted: {missing:?}");
    assert!(
        seen.values().all(|&n| n == 1),
        "read again from the checkpoint, each counted once"
    );
}

#[test]
fn a_reload_changing_another_component_keeps_the_open_windows() {
    let s = Scratch::new();
    let yaml = |other: &str| {
        format!(
            "name: kept\nsources:\n  logs: {{type: file, path: $DIR/app.log, follow: true, poll_interval: 20ms}}\ntransforms:\n  total:\n    type: aggregate\n    inputs: [logs]\n    window: {{type: session, gap: 1h}}\n    aggregations: {{n: count, lo: {{min: .i}}, hi: {{max: .i}}}}\nsinks:\n  out: {{type: file, inputs: [total], path: $DIR/out.ndjson}}\n  other: {{type: file, inputs: [logs], path: $DIR/{other}}}\n"
        )
    };
    let file = s.write("p.yaml", &yaml("a.ndjson"));
    append(&s, 0..500);
    let mut d = start(&s, &file);
    assert!(
        eventually(LONG, || received(&d, "total") == 500.0),
        "{}",
        d.log_text()
    );
    s.write("p.yaml", &yaml("b.ndjson"));
    d.signal("HUP");
    assert!(
        eventually(LONG, || metric(
            &d.metrics(),
            "flowgate_config_reloads_total",
            &[("result", "applied")]
        ) == Some(1.0)),
        "{}",
        d.log_text()
    );
    append(&s, 500..1000);
    assert!(
        eventually(LONG, || s.read_lines("b.ndjson").len() == 500),
        "{}",
        d.log_text()
    );
    assert!(
        eventually(LONG, || received(&d, "total") == 1000.0),
        "{}",
        d.log_text()
    );
    assert!(eventually(LONG, || entries(&d, "total") == 1.0));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    assert!(d.log_text().contains("1 replaced"), "{}", d.log_text());
    let out = s.read_lines("out.ndjson");
    assert_eq!(out.len(), 1, "one session, kept across the reload: {out:?}");
    assert_eq!(
        (
            out[0]["n"].as_u64(),
            out[0]["lo"].as_u64(),
            out[0]["hi"].as_u64()
        ),
        (Some(1000), Some(0), Some(999))
    );
}

#[test]
fn validate_reports_every_problem_of_an_aggregate_with_its_position() {
    let (code, lines) = validate_lines(
        "sources:\n  g: {type: generator, events: [{a: 1}]}\ntransforms:\n  agg:\n    type: aggregate\n    inputs: [g]\n    workers: 4\n    window: {type: hopping, size: 1m, every: 2m}\n    allowed_lateness: 5s\n    aggregations:\n      a: {sum: .x, max: .y}\n      b: {percentile: .x}\n      window_start: count\n      c: {sum: '.x +'}\nsinks:\n  o: {type: blackhole, inputs: [agg]}\n",
    );
    assert_eq!(code, Some(78));
    let want = [
        "F:7:14: component 'agg': workers: must be 1: a stateful transform runs on one task that owns its state",
        "F:8:46: component 'agg': window.every: hopping windows need 1ms <= every <= size",
        "F:9:23: component 'agg': allowed_lateness: needs `time` (event time): under processing time no event is late",
        "F:11:8: component 'agg': aggregations: aggregation 'a' names more than one function: use one entry per aggregation",
        "F:11:8: component 'agg': aggregations: aggregation 'b' percentile needs p, the quantile (e.g. p: 0.99)",
        "F:11:8: component 'agg': aggregations: output field 'window_start' is the window's own: pick another name",
        "F:14:14: component 'agg': aggregations.c: invalid jq program: expected term at the end of the program",
        "F: 7 problem(s)",
    ];
    assert_eq!(lines, want);
}
