//! What the Kafka scenario tests share: the broker from the environment,
//! unique names, topics with a set partition count, a plain producer and
//! reading the daemons' outputs.
#![allow(dead_code)]

pub mod broker;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The broker of `FLOWGATE_TEST_KAFKA_BROKERS`; in CI its absence fails.
pub fn brokers() -> Option<String> {
    match std::env::var("FLOWGATE_TEST_KAFKA_BROKERS") {
        Ok(b) => Some(b),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must provide a Kafka broker: set FLOWGATE_TEST_KAFKA_BROKERS (.ci/kafka.sh)")
        }
        Err(_) => None,
    }
}

#[macro_export]
macro_rules! kafka_or_skip {
    () => {
        match kafka_common::brokers() {
            Some(b) => b,
            None => {
                eprintln!(
                    "skipped: no Kafka broker (set FLOWGATE_TEST_KAFKA_BROKERS; .ci/kafka.sh starts one)"
                );
                return;
            }
        }
    };
}

/// A size from the environment variable `var`, else `default`.
pub fn size(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `topic` with `partitions` partitions (auto-created ones get 4 on Tansu).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics(&[new], &AdminOptions::new()))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// A consumer of its own new group reading `topics` from the start (the
/// test's own client, to check what flowgate wrote).
pub fn reader(brokers: &str, topics: &[&str]) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", crate::common::unique("check"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(topics).unwrap();
    consumer
}

/// A plain idempotent producer (the test's own client, not flowgate's).
pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Sends `{"i": i}` keyed by `i`, waiting when the client's queue is full.
pub fn send(producer: &BaseProducer, topic: &str, i: u64) {
    let payload = format!("{{\"i\":{i}}}");
    let key = i.to_string();
    let mut record = BaseRecord::to(topic).payload(&payload).key(&key);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("producing: {e}"),
        }
    }
}

/// Produces `{"i": i}` for `range`, keyed by `i`, and waits until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, range: std::ops::Range<u64>) {
    let p = producer(brokers);
    for i in range {
        send(&p, topic, i);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Lines in `path` (0 if it does not exist): cheap enough to poll.
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// `(i, partition)` of every line of `path` (written with `metadata_field: kafka`).
pub fn records(path: &Path) -> Vec<(u64, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("output line is JSON");
            (
                v["i"].as_u64().unwrap(),
                v["kafka"]["partition"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// How often each id was written over `paths`.
pub fn counts<'a>(paths: impl IntoIterator<Item = &'a Path>) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for p in paths {
        for (i, _) in records(p) {
            *seen.entry(i).or_insert(0) += 1;
        }
    }
    seen
}
