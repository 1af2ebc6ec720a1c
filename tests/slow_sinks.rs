//! A fast source in front of a slow (rate-limited) sink: drop policies shed
//! while the source runs on, `block` bounds memory, and SIGTERM drains
//! everything accepted through the slow sink.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn m(d: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&d.metrics(), name, labels).unwrap_or(0.0)
}

#[test]
fn drop_policies_shed_at_a_slow_sink_while_the_source_runs_on() {
    for policy in ["drop_newest", "drop_oldest"] {
        let s = Scratch::new();
        let file = s.write(
            "p.yaml",
            &format!(
                "sources:\n  g: {{type: generator, events: [{{a: 1}}]}}\nsinks:\n  slow:\n    type: blackhole\n    inputs: [g]\n    buffer: {{size: 100, when_full: {policy}}}\n    rate_limit: {{rate: 500, per: 1s, burst: 50}}\n"
            ),
        );
        let d = Daemon::start(&file, &[], Stdio::null());
        assert!(eventually(LONG, || m(
            &d,
            "flowgate_events_discarded_total",
            &[("component", "slow"), ("reason", "buffer_full")]
        ) > 1000.0));
        let before = m(&d, "flowgate_events_out_total", &[("component", "g")]);
        std::thread::sleep(Duration::from_millis(300));
        let after = m(&d, "flowgate_events_out_total", &[("component", "g")]);
        assert!(
            after > before + 1000.0,
            "{policy}: the source must not be held back ({before} -> {after})"
        );
        let written = m(&d, "flowgate_events_out_total", &[("component", "slow")]);
        assert!(
            written < after / 2.0,
            "{policy}: the sink writes at its own pace ({written} of {after})"
        );
        assert!(m(&d, "flowgate_buffer_events", &[("component", "slow")]) <= 100.0);
    }
}

#[test]
fn max_bytes_bounds_the_queue_in_bytes_before_its_size_is_reached() {
    // ~1 KiB events against `size: 100000, max_bytes: 64KiB`: the byte
    // limit comes first, at ~60 events.
    let s = Scratch::new();
    let msg = "x".repeat(1000);
    let file = s.write(
        "p.yaml",
        &format!(
            "sources:\n  g: {{type: generator, events: [{{msg: '{msg}'}}]}}\nsinks:\n  slow:\n    type: blackhole\n    inputs: [g]\n    buffer: {{size: 100000, max_bytes: 64KiB}}\n    rate_limit: {{rate: 2000, per: 1s}}\n"
        ),
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    let slow = [("component", "slow")];
    let mut seen = Vec::new();
    let filled = eventually(LONG, || {
        let text = d.metrics();
        let bytes = metric(&text, "flowgate_buffer_bytes", &slow).unwrap_or(0.0);
        let events = metric(&text, "flowgate_buffer_events", &slow).unwrap_or(0.0);
        seen.push((bytes, events));
        seen.len() >= 10 && bytes > 32768.0
    });
    assert!(filled, "the queue never filled: {seen:?}");
    for &(bytes, events) in &seen {
        assert!(bytes <= 65536.0, "{bytes} bytes queued: {seen:?}");
        assert!(
            events <= 65536.0 / 1010.0,
            "{events} events queued: {seen:?}"
        );
    }
    let text = d.metrics();
    assert_eq!(
        metric(&text, "flowgate_buffer_capacity_bytes", &slow),
        Some(65536.0)
    );
    assert_eq!(
        metric(
            &text,
            "flowgate_buffer_capacity_bytes",
            &[("component", "g")]
        ),
        None,
        "queues without a byte limit export no byte series"
    );
    assert_eq!(
        metric(
            &text,
            "flowgate_events_discarded_total",
            &[("component", "slow"), ("reason", "buffer_full")]
        ),
        Some(0.0),
        "block sheds nothing"
    );
}

#[test]
fn block_keeps_memory_bounded_behind_a_slow_sink() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  g: {type: generator, events: [{msg: 'an event with a little text in it to take some room'}]}\ntransforms:\n  m: {type: map, inputs: [g], program: '.n = 1', workers: 4}\nsinks:\n  slow:\n    type: blackhole\n    inputs: [m]\n    rate_limit: {rate: 2000, per: 1s}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    std::thread::sleep(Duration::from_millis(700));
    let rss1 = m(&d, "process_resident_memory_bytes", &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let rss2 = m(&d, "process_resident_memory_bytes", &[]);
    assert!(rss2 < 200.0 * 1024.0 * 1024.0, "resident memory {rss2}");
    assert!(
        rss2 < rss1 * 1.25 + 4.0 * 1024.0 * 1024.0,
        "memory grows behind a slow sink: {rss1} -> {rss2}"
    );
    let emitted = m(&d, "flowgate_events_out_total", &[("component", "g")]);
    let written = m(&d, "flowgate_events_out_total", &[("component", "slow")]);
    // Each stage holds at most its buffer plus a batch per worker and one
    // being handed on: map 1000 + 5 x 1000, sink 1000 + 2 x 1000.
    assert!(
        emitted - written <= 9000.0,
        "only buffers and workers hold the difference: {emitted} - {written}"
    );
}

#[test]
fn sigterm_drains_through_a_slow_sink_losing_nothing() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "sources:\n  in: {type: stdin}\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: $DIR/out.ndjson\n    buffer: {size: 5000}\n    rate_limit: {rate: 4000, per: 1s, burst: 100}\n",
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let mut stdin = d.child.stdin.take().unwrap();
    let input: String = (0..3000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(eventually(LONG, || m(
        &d,
        "flowgate_events_in_total",
        &[("component", "in")]
    ) == 3000.0));
    assert!(
        m(&d, "flowgate_events_out_total", &[("component", "out")]) < 3000.0,
        "the sink is still behind"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let out = s.read_lines("out.ndjson");
    assert_eq!(out.len(), 3000);
    assert!(out.iter().enumerate().all(|(i, e)| e["i"] == i));
    drop(stdin);
}
