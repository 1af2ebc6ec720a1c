//! The kafka sink's writes through the real binary and a real
//! Kafka-protocol broker, where a write's messages share one delivery
//! tally: a producer queue smaller than a batch (the write waits for
//! deliveries to make room, rather than failing) and eight workers
//! encoding for the ordered window of batches in flight in one producer
//! (`workers: 8`, each batch done when its own messages are
//! acknowledged). Every event arrives, once.
//!
//! The broker: `FLOWGATE_TEST_KAFKA_BROKERS` (set by .ci/run, which starts
//! Tansu, see .ci/kafka.sh). Without it these tests step aside; in CI they
//! fail.

mod common;
mod kafka_common;
use common::*;
use kafka_common::reader;
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);

/// Runs file -> kafka over `{"i": 0..total}` to completion with `sink_keys`.
fn produce(s: &Scratch, brokers: &str, topic: &str, total: u64, sink_keys: &str) {
    let input: String = (0..total).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(s.path("input.ndjson"), input).unwrap();
    let file = s.write(
        "producer.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: $DIR/input.ndjson}}\nsinks:\n  bus: {{type: kafka, inputs: [in], brokers: ['{brokers}'], topic: '{topic}', key: '.i % 13', {sink_keys}}}\n"
        ),
    );
    let out = run(
        &["run", file.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// How often each `i` is in `topic`, read until `total` messages arrived
/// (or `LONG` passed).
fn read_back(brokers: &str, topic: &str, total: usize) -> BTreeMap<u64, usize> {
    let consumer = reader(brokers, &[topic]);
    let mut seen = BTreeMap::new();
    let (mut n, deadline) = (0, Instant::now() + LONG);
    while n < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *seen.entry(v["i"].as_u64().unwrap()).or_insert(0) += 1;
            n += 1;
        }
    }
    // A duplicate would arrive after the last expected message: wait a little for one.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            *seen.entry(v["i"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    seen
}

fn assert_each_once(seen: &BTreeMap<u64, usize>, total: u64) {
    let missing: Vec<u64> = (0..total)
        .filter(|i| !seen.contains_key(i))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} arrived; missing e.g. {missing:?}",
        seen.len()
    );
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        repeated.is_empty(),
        "repeated without a failure: {repeated:?}"
    );
    assert_eq!(seen.len() as u64, total, "nothing else in the topic");
}

#[test]
fn a_producer_queue_smaller_than_a_batch_waits_for_room_and_loses_nothing() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let topic = unique("smallqueue");
    // 50 messages queued at most, 1,000-event batches: every write meets
    // a full queue many times over.
    produce(
        &s,
        &brokers,
        &topic,
        5_000,
        "options: {queue.buffering.max.messages: '50'}",
    );
    assert_each_once(&read_back(&brokers, &topic, 5_000), 5_000);
}

#[test]
fn eight_writes_in_flight_in_one_producer_deliver_every_event_once() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let topic = unique("inflight");
    produce(&s, &brokers, &topic, 50_000, "workers: 8");
    assert_each_once(&read_back(&brokers, &topic, 50_000), 50_000);
}
