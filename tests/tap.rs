//! `flowgate tap` against a running daemon: sampled events from any
//! output, NDJSON, rate-limited so tapping never slows the pipeline.

mod common;
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn tap_prints_events_leaving_a_component_of_a_running_daemon() {
    let s = Scratch::new();
    let file = s.write(
        "p.yaml",
        "name: shop\nsources:\n  g: {type: generator, rate: 2000, events: [{n: 1, kind: a}, {n: 2, kind: b}]}\ntransforms:\n  r: {type: route, inputs: [g], routes: {b: '.kind == \"b\"'}}\n  tag: {type: map, inputs: [r.b], program: '.tagged = true'}\nsinks:\n  out: {type: blackhole, inputs: [tag, r.unmatched]}\n",
    );
    let d = Daemon::start(&file, &[], Stdio::null());
    let started = Instant::now();
    let out = run(
        &[
            "tap",
            "tag",
            "--metrics-address",
            &d.address,
            "--count",
            "150",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 150);
    assert!(
        lines
            .iter()
            .all(|e| e["tagged"] == true && e["kind"] == "b")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "at most 100 events a second are sampled"
    );

    let out = run(
        &[
            "tap",
            "shop/r.unmatched",
            "--metrics-address",
            &d.address,
            "--count",
            "3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .all(|l| l.contains("\"kind\":\"a\""))
    );

    let out = run(&["tap", "nope", "--metrics-address", &d.address], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("no output 'nope'; outputs: shop/g, shop/r.b, shop/r.unmatched, shop/tag"),
        "{}",
        text(&out.stderr)
    );
}
