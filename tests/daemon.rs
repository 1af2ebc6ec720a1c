//! The daemon as operators see it: endpoints, metrics that add up,
//! backpressure, and signals (drain on SIGTERM, 130 on a second signal,
//! the shutdown deadline).

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn endpoints_and_counters_that_add_up_after_a_drain() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "name: counts\nsources:\n  in: {type: stdin, on_error: route}\ntransforms:\n  keep:\n    type: filter\n    inputs: [in]\n    condition: '.n % 3 != 0'\n  shape:\n    type: map\n    inputs: [keep]\n    program: 'if .n % 5 == 0 then .x.y = 1 else .ok = true end'\n    on_error: route\n    workers: 2\n  split:\n    type: route\n    inputs: [shape]\n    routes: {small: '.n < 500'}\nsinks:\n  small: {type: file, inputs: [split.small], path: $DIR/small.ndjson}\n  dlq: {type: file, inputs: [in.errors, shape.errors], path: $DIR/dlq.ndjson}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    assert_eq!(d.get("/health").0, 200);
    assert!(eventually(LONG, || d.get("/ready").0 == 200));
    let mut stdin = d.child.stdin.take().unwrap();
    let mut input = String::new();
    for n in 0..1000 {
        // every 5th .x is a number, so `.x.y = 1` fails there
        input.push_str(&format!(
            "{{\"n\":{n},\"x\":{}}}\n",
            if n % 5 == 0 { "5" } else { "{}" }
        ));
    }
    input.push_str("garbage\n");
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let m =
        |text: &str, name: &str, labels: &[(&str, &str)]| metric(text, name, labels).unwrap_or(0.0);
    // Drained: the last sink has seen every event that reached it.
    let kept = (0..1000).filter(|n| n % 3 != 0).count() as f64;
    let failed = (0..1000).filter(|n| n % 3 != 0 && n % 5 == 0).count() as f64;
    assert!(
        eventually(LONG, || {
            let t = d.metrics();
            m(&t, "flowgate_events_in_total", &[("component", "dlq")]) == failed + 1.0
                && m(&t, "flowgate_events_in_total", &[("component", "split")]) == kept - failed
        }),
        "pipeline did not drain: {}",
        d.metrics()
    );
    let t = d.metrics();
    for c in ["keep", "shape", "split"] {
        let l = [("pipeline", "counts"), ("component", c)];
        let input = m(&t, "flowgate_events_in_total", &l);
        let out: f64 = t
            .lines()
            .filter(|x| {
                x.starts_with("flowgate_events_out_total{")
                    && x.contains(&format!("component=\"{c}\""))
                    && !x.contains("output=\"errors\"")
            })
            .map(|x| x.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        let discarded: f64 = t
            .lines()
            .filter(|x| {
                x.starts_with("flowgate_events_discarded_total{")
                    && x.contains(&format!("component=\"{c}\""))
            })
            .map(|x| x.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        let routed = m(
            &t,
            "flowgate_events_out_total",
            &[("component", c), ("output", "errors")],
        );
        assert_eq!(
            input,
            out + discarded + routed,
            "{c}: in = out + discarded + routed errors\n{t}"
        );
    }
    assert_eq!(
        m(
            &t,
            "flowgate_events_discarded_total",
            &[("component", "keep"), ("reason", "filtered")]
        ),
        1000.0 - kept
    );
    assert_eq!(
        m(
            &t,
            "flowgate_events_out_total",
            &[("component", "shape"), ("output", "errors")]
        ),
        failed
    );
    assert_eq!(
        m(
            &t,
            "flowgate_errors_total",
            &[("component", "shape"), ("error_type", "program")]
        ),
        failed
    );
    assert_eq!(
        m(
            &t,
            "flowgate_errors_total",
            &[("component", "in"), ("error_type", "decode")]
        ),
        1.0
    );
    assert_eq!(
        m(
            &t,
            "flowgate_events_discarded_total",
            &[("component", "split"), ("reason", "unmatched")]
        ),
        (500..1000).filter(|n| n % 3 != 0 && n % 5 != 0).count() as f64
    );
    assert_eq!(
        m(
            &t,
            "flowgate_buffer_capacity_events",
            &[
                ("component", "shape"),
                ("component_kind", "transform"),
                ("component_type", "map")
            ]
        ),
        1000.0
    );
    assert!(
        t.contains("flowgate_build_info{version=\"") && t.contains("process_resident_memory_bytes"),
        "{t}"
    );
    assert!(t.contains("flowgate_processing_seconds_bucket{component=\"shape\""));
    drop(stdin);
    assert_eq!(d.wait(LONG), Some(0));
    assert_eq!(
        s.read_lines("small.ndjson").len(),
        (0..500).filter(|n| n % 3 != 0 && n % 5 != 0).count()
    );
}

#[test]
fn full_buffers_push_back_to_the_source() {
    let s = Scratch::new();
    // stdout is a pipe nobody reads: the sink blocks, then every queue fills.
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{msg: 'a fairly long line of text to fill the pipe quickly'}]}\ntransforms:\n  f: {type: filter, inputs: [g], condition: 'true', buffer: {size: 100}}\nsinks:\n  out: {type: stdout, inputs: [f], buffer: {size: 50}}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::piped());
    let gauge = |c: &str| {
        metric(&d.metrics(), "flowgate_buffer_events", &[("component", c)]).unwrap_or(-1.0)
    };
    let emitted = || {
        metric(
            &d.metrics(),
            "flowgate_events_out_total",
            &[("component", "g")],
        )
        .unwrap_or(0.0)
    };
    // Full queues and a source that stopped emitting: the unread pipe
    // has pushed back all the way (stdout may take a little while to fill).
    let mut last = -1.0;
    assert!(
        eventually(LONG, || {
            let now = emitted();
            let still = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(100));
            still && gauge("f") == 100.0 && gauge("out") == 50.0
        }),
        "{}",
        d.metrics()
    );
    let before = emitted();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(emitted(), before, "a blocked pipeline must stop the source");
}

#[test]
fn sigterm_drains_everything_accepted_and_exits_0() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\ntransforms:\n  m: {type: map, inputs: [in], program: '.seen = true', workers: 2, buffer: {size: 10000}}\nsinks:\n  out: {type: file, inputs: [m], path: $DIR/out.ndjson, buffer: {size: 10000}}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let n = 200_000;
    let input: String = (0..n).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // Every line accepted by the source, then SIGTERM while stdin stays open.
    assert!(eventually(LONG, || metric(
        &d.metrics(),
        "flowgate_events_in_total",
        &[("component", "in")]
    ) == Some(n as f64)));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let out = s.read_lines("out.ndjson");
    assert_eq!(out.len(), n);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, e)| e["i"] == i && e["seen"] == true)
    );
    drop(stdin);
}

#[test]
fn a_second_signal_exits_130_and_the_deadline_exits_1() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{msg: 'stuck behind an unread pipe'}]}\nsinks:\n  out: {type: stdout, inputs: [g]}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::piped());
    wait_until_stuck(&d);
    d.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the drain is blocked, so the first signal must not exit"
    );
    d.signal("INT");
    assert_eq!(d.wait(LONG), Some(130));

    let mut d = Daemon::start(&file, &["--shutdown-timeout", "500ms"], Stdio::piped());
    wait_until_stuck(&d);
    d.signal("TERM");
    let code = d.wait(LONG);
    assert_eq!(code, Some(1), "{}", d.log_text());
    let log = d.log_text();
    let left: usize = log
        .split(" events left undelivered")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no undelivered count in the log:\n{log}"));
    assert!(
        left >= 1000,
        "the full queue and the blocked write are undelivered: {left}\n{log}"
    );
}

/// Waits until the unread stdout pipe has stopped the pipeline: the sink's
/// queue is full and the source emits nothing more.
fn wait_until_stuck(d: &Daemon) {
    let emitted = || {
        metric(
            &d.metrics(),
            "flowgate_events_out_total",
            &[("component", "g")],
        )
        .unwrap_or(0.0)
    };
    let mut last = -1.0;
    let stuck = eventually(LONG, || {
        let full = metric(
            &d.metrics(),
            "flowgate_buffer_events",
            &[("component", "out")],
        ) == Some(1000.0);
        let now = emitted();
        let still = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(100));
        full && still
    });
    assert!(stuck, "the pipeline never blocked: {}", d.metrics());
}

#[test]
fn metrics_address_off_and_port_in_use() {
    let s = Scratch::new();
    let file = s.write("p.yaml", "sources:\n  g: {type: generator, count: 3, events: [{a: 1}]}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n");
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", &addr],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("cannot listen on --metrics-address {addr}")));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let s = Scratch::new();
    let file = s.write("p.yaml", "sources:\n  g: {type: generator, count: 3, events: [{a: 1}]}\nsinks:\n  o: {type: blackhole, inputs: [g]}\n");
    let out = run(
        &[
            "run",
            file.to_str().unwrap(),
            "--metrics-address",
            "off",
            "--log-format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(!err.is_empty());
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}

#[test]
fn the_deadline_counts_events_a_keyed_rate_limit_holds_as_undelivered() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, count: 50, events: [{k: slow}]}\nsinks:\n  out:\n    type: blackhole\n    inputs: [g]\n    rate_limit: {rate: 1, per: 1h, key: '.k'}\n",
    );
    let mut d = Daemon::start(&file, &["--shutdown-timeout", "500ms"], Stdio::null());
    assert!(eventually(LONG, || metric(
        &d.metrics(),
        "flowgate_events_in_total",
        &[("component", "out")]
    ) == Some(50.0)));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(1), "{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("49 events left undelivered"),
        "one passed the limit, 49 are parked:\n{log}"
    );
}
