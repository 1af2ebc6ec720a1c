//! `dedupe` and `sample` through the real binary: a followed file fanned
//! out to both; outputs, discard counters and the state gauge checked.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn dedupe_drops_repeats_and_sample_keeps_one_in_n() {
    let s = Scratch::new();
    let lines: String = (0..1000)
        .map(|i| {
            let level = if i % 100 == 7 { "error" } else { "debug" };
            format!("{{\"i\":{i},\"id\":{},\"level\":\"{level}\"}}\n", i % 40)
        })
        .collect();
    s.write("app.log", &lines);
    let file = s.write(
        "p.yaml",
        "name: ds\nsources:\n  logs: {type: file, path: $DIR/app.log, follow: true, poll_interval: 20ms}\ntransforms:\n  once: {type: dedupe, inputs: [logs], key: .id, ttl: 1h, max_keys: 1000}\n  some: {type: sample, inputs: [logs], rate: 10, exclude: '.level == \"error\"'}\nsinks:\n  unique: {type: file, inputs: [once], path: $DIR/unique.ndjson}\n  sampled: {type: file, inputs: [some], path: $DIR/sampled.ndjson}\n",
    );
    let state = s.path("state");
    let mut d = Daemon::start(
        &file,
        &["--data-dir", state.to_str().unwrap()],
        Stdio::null(),
    );
    let discarded = |component: &str, reason: &str| {
        metric(
            &d.metrics(),
            "flowgate_events_discarded_total",
            &[("component", component), ("reason", reason)],
        )
    };
    assert!(
        eventually(LONG, || discarded("once", "duplicate") == Some(960.0)),
        "{}",
        d.log_text()
    );
    assert!(
        eventually(LONG, || discarded("some", "sampled") == Some(891.0)),
        "{}",
        d.log_text()
    );
    let entries = || {
        metric(
            &d.metrics(),
            "flowgate_state_entries",
            &[("component", "once")],
        )
    };
    assert!(
        eventually(LONG, || entries() == Some(40.0)),
        "{:?}",
        entries()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0), "{}", d.log_text());
    let ids: Vec<u64> = s
        .read_lines("unique.ndjson")
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..40).collect::<Vec<_>>(),
        "the first event of each id"
    );
    let kept = s.read_lines("sampled.ndjson");
    let errors = kept.iter().filter(|e| e["level"] == "error").count();
    assert_eq!(
        (kept.len(), errors),
        (109, 10),
        "every error and one in ten of the other 990"
    );
}
