//! The kafka sink's ordered window failing with batches outstanding,
//! through the real binary and a real Tansu broker: the connection to the
//! broker is cut (a loopback proxy, so the broker keeps its data) while
//! events stream into the sink, for longer than `message.timeout.ms`, so
//! the oldest submitted batch fails with later ones submitted behind it.
//! Afterwards every event is in the topic, and per key the last copy of
//! each event stands in input order (the failed batch and those after it
//! are written again in order); the daemon retried.
//!
//! The broker binary: `FLOWGATE_TEST_TANSU` (set by .ci/kafka.sh). Without
//! it this test steps aside; in CI it fails.

mod common;
mod kafka_common;
use common::*;
use kafka_common::broker::{Broker, Proxy};
use kafka_common::reader;
use rdkafka::message::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);
const TOTAL: u64 = 40_000;
const KEYS: u64 = 5;

fn retries(d: &Daemon) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_retries_total",
        &[("component", "bus")],
    )
    .unwrap_or(0.0)
}

fn written(d: &Daemon) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_events_out_total",
        &[("component", "bus")],
    )
    .unwrap_or(0.0)
}

/// Every message of `topic` in the order each partition holds them: per
/// key (`k`), the sequence of `i`s. Reads until every `i` was seen, then
/// a little longer for copies after it.
fn read_all(port: u16, topic: &str) -> BTreeMap<u64, Vec<u64>> {
    let consumer = reader(&format!("127.0.0.1:{port}"), &[topic]);
    let mut by_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + LONG;
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|t| Instant::now() < t) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let (i, k) = (v["i"].as_u64().unwrap(), v["k"].as_u64().unwrap());
            assert_eq!(m.key(), Some(k.to_string().as_bytes()), "keyed by .k");
            by_key.entry(k).or_default().push(i);
            seen.insert(i);
        }
        if settle.is_none() && seen.len() as u64 == TOTAL {
            settle = Some(Instant::now() + Duration::from_secs(3));
        }
    }
    by_key
}

#[test]
fn a_cut_with_batches_in_flight_loses_nothing_and_keeps_each_keys_order() {
    let bin = tansu_or_skip!();
    let s = Scratch::new();
    let (port, broker_port) = (free_port(), free_port());
    let topic = unique("failover");
    let input: String = (0..TOTAL)
        .map(|i| format!("{{\"i\":{i},\"k\":{}}}\n", i % KEYS))
        .collect();
    std::fs::write(s.path("input.ndjson"), input).unwrap();
    // 4,000 events/s in 500-event batches: the cut finds the window
    // filling; a message not delivered in 2 s fails its batch.
    let file = s.write(
        "producer.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: $DIR/input.ndjson, rate_limit: {{rate: 4000, burst: 500}}}}\nsinks:\n  bus: {{type: kafka, inputs: [in], brokers: ['127.0.0.1:{port}'], topic: '{topic}', key: '.k', max_in_flight_batches: 8, retry: {{attempts: 1000, initial_backoff: 100ms, max_backoff: 1s}}, options: {{message.timeout.ms: '2000'}}}}\n"
        ),
    );
    let _broker = Broker::advertising(&bin, broker_port, port);
    let proxy = Proxy::up(port, broker_port);
    let mut d = Daemon::start(&file, &["--shutdown-timeout", "30s"], Stdio::null());
    assert!(
        eventually(LONG, || written(&d) >= 8_000.0),
        "written before the cut; log:\n{}",
        d.log_text()
    );
    proxy.down();
    // Down until the oldest submitted batch failed (`message.timeout.ms`)
    // with the window behind it and its retry began.
    assert!(
        eventually(LONG, || retries(&d) >= 1.0),
        "retried while the connection was cut; log:\n{}",
        d.log_text()
    );
    let during = written(&d);
    let _proxy = Proxy::up(port, broker_port);
    let code = d.wait(LONG);
    let log = d.log_text();
    assert_eq!(
        code,
        Some(0),
        "the daemon ends once the file is written: {log}"
    );
    let by_key = read_all(port, &topic);
    let mut all = BTreeSet::new();
    for (k, seq) in &by_key {
        all.extend(seq.iter().copied());
        // The position of each event's last copy: in input order.
        let mut last: BTreeMap<u64, usize> = BTreeMap::new();
        for (pos, i) in seq.iter().enumerate() {
            last.insert(*i, pos);
        }
        let positions: Vec<(u64, usize)> = last.into_iter().collect();
        let out_of_order: Vec<_> = positions
            .windows(2)
            .filter(|w| w[0].1 > w[1].1)
            .take(5)
            .collect();
        assert!(
            out_of_order.is_empty(),
            "key {k}: a later event's last copy precedes an earlier one's: {out_of_order:?}"
        );
        assert!(
            seq.iter().all(|i| i % KEYS == *k),
            "key {k} holds only its events"
        );
    }
    let missing: Vec<u64> = (0..TOTAL).filter(|i| !all.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {TOTAL} in the topic; missing e.g. {missing:?}; log:\n{log}",
        all.len()
    );
    let copies: usize = by_key.values().map(Vec::len).sum();
    // The window had batches behind the failed one: it wrote them again.
    let behind: Vec<usize> = log
        .lines()
        .filter_map(|l| l.split("writing it and the ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        behind.iter().any(|n| *n >= 1),
        "a failed batch with batches submitted after it: {behind:?}; log:\n{log}"
    );
    assert!(during < TOTAL as f64, "cut mid-stream: {during} written");
    eprintln!(
        "{copies} messages for {TOTAL} events ({} copies written again); batches behind each failure: {behind:?}; {during} written when the connection came back",
        copies as u64 - all.len() as u64
    );
}
