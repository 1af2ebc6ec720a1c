//! The Kafka broker down at start and mid-run, through the real binary and
//! a real Tansu broker that the tests start, kill (`kill -9`) and start
//! again on the same port: one warning per outage (not one per retry), no
//! crash, the daemon resumes once the broker is back, and SIGTERM exits
//! promptly while it is down.
//!
//! Tansu 0.6.0 (the build `.ci/kafka.sh` installs) keeps topics, records
//! and committed offsets in memory only: its other storage engines are S3
//! and PostgreSQL, and this build refuses `sqlite://` and `file://`. A
//! restarted broker is therefore empty, and the tests are built around
//! that: the source must consume what is produced after the broker is
//! back (its group, topic and offsets are gone, so it rejoins and starts
//! from `earliest`); the sink must deliver what it was given while the
//! broker was down to the new, empty broker.
//!
//! The broker binary: `FLOWGATE_TEST_TANSU` (set by .ci/kafka.sh). Without
//! it these tests step aside; in CI they fail.

mod common;
mod kafka_common;
use common::*;
use kafka_common::broker::{Broker, Proxy};
use kafka_common::reader;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);

fn ids(s: &Scratch, name: &str) -> BTreeSet<u64> {
    s.read_lines(name)
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect()
}

/// Warning and error lines of the log.
fn warning_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count()
}

fn warnings(d: &Daemon) -> usize {
    warning_lines(&d.log_text())
}

/// Produces `{"i": n}` for `range` to `topic` with a plain client.
fn produce(port: u16, topic: &str, range: std::ops::Range<u64>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .create()
        .unwrap();
    for i in range {
        let payload = format!("{{\"i\":{i}}}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The `i`s on `topic`, read from the start by a consumer of its own.
struct Reader {
    consumer: BaseConsumer,
    seen: BTreeSet<u64>,
}

impl Reader {
    fn new(port: u16, topic: &str) -> Self {
        let consumer = reader(&format!("127.0.0.1:{port}"), &[topic]);
        Self {
            consumer,
            seen: BTreeSet::new(),
        }
    }

    /// Reads until every id of `want` was seen or `limit` passes.
    fn read_until(&mut self, want: std::ops::Range<u64>, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if want.clone().all(|i| self.seen.contains(&i)) {
                return true;
            }
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                self.seen.insert(v["i"].as_u64().unwrap());
            }
        }
        false
    }
}

/// The offsets `group` committed on `topic`, summed over its partitions
/// (asked without joining the group).
fn committed(port: u16, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", group)
        .create()
        .unwrap();
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return -1;
    };
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions.add_partition(topic, p.id());
    }
    match consumer.committed_offsets(partitions, Duration::from_secs(5)) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => Some(n),
                _ => None,
            })
            .sum(),
        Err(_) => -1,
    }
}

fn events_in(d: &Daemon, component: &str) -> f64 {
    metric(
        &d.metrics(),
        "flowgate_events_in_total",
        &[("component", component)],
    )
    .unwrap_or(0.0)
}

#[test]
fn the_source_waits_for_a_broker_down_at_start_and_mid_run_and_stops_promptly() {
    let bin = tansu_or_skip!();
    let s = Scratch::new();
    // Clients reach the broker through the proxy's port only.
    let (port, broker_port) = (free_port(), free_port());
    let (topic, group) = (unique("down"), unique("g"));
    let file = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: kafka, brokers: ['127.0.0.1:{port}'], topics: ['{topic}'], group_id: '{group}', commit_interval: 200ms, options: {{session.timeout.ms: '6000'}}}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n"
        ),
    );
    // Down at start.
    let mut d = Daemon::start(&file, &["--shutdown-timeout", "10s"], Stdio::null());
    assert!(
        eventually(LONG, || warnings(&d) >= 1),
        "the failure is reported: {}",
        d.log_text()
    );
    let broker = Broker::advertising(&bin, broker_port, port);
    let proxy = Proxy::up(port, broker_port);
    produce(port, &topic, 0..1000);
    assert!(
        eventually(LONG, || ids(&s, "out.ndjson").len() == 1000),
        "consumed once the broker is up: {} of 1000; log:\n{}",
        ids(&s, "out.ndjson").len(),
        d.log_text()
    );
    assert!(
        eventually(LONG, || d.log_text().contains("reachable again")),
        "{}",
        d.log_text()
    );
    // Committed before the cut: an outage longer than the session makes
    // the group read again from the committed offsets.
    assert!(
        eventually(LONG, || committed(port, &group, &topic) == 1000),
        "committed: {}; log:\n{}",
        committed(port, &group, &topic),
        d.log_text()
    );
    // Down mid-run: events produced meanwhile (they wait in the test's
    // producer) arrive once it is back.
    let before = warnings(&d);
    proxy.down();
    assert!(
        eventually(LONG, || warnings(&d) > before),
        "the outage is reported: {}",
        d.log_text()
    );
    let producing = std::thread::spawn(move || produce(port, &topic, 1000..2000));
    std::thread::sleep(Duration::from_secs(2));
    let proxy = Proxy::up(port, broker_port);
    producing.join().unwrap();
    assert!(
        eventually(LONG, || ids(&s, "out.ndjson").len() == 2000),
        "consumed after the broker came back: {} of 2000; log:\n{}",
        ids(&s, "out.ndjson").len(),
        d.log_text()
    );
    let lines = s.read_lines("out.ndjson").len();
    assert_eq!(lines, 2000, "each once; log:\n{}", d.log_text());
    // SIGTERM with the broker process gone: the last commit cannot reach
    // it, and the daemon still exits at once.
    broker.kill();
    proxy.down();
    let started = Instant::now();
    d.signal("TERM");
    let code = d.wait(LONG);
    let took = started.elapsed();
    let log = d.log_text();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}: {log}");
    let warned = warning_lines(&log);
    assert!(
        warned <= 6,
        "{warned} warnings for three outages (not one per retry):\n{log}"
    );
    eprintln!("source: {warned} warnings, SIGTERM with the broker down took {took:?}:\n{log}");
}

#[test]
fn the_sink_delivers_what_it_took_while_the_broker_was_down_and_stops_promptly() {
    let bin = tansu_or_skip!();
    let s = Scratch::new();
    let port = free_port();
    let topic = unique("sinkdown");
    let append = |range: std::ops::Range<u64>| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.path("input.ndjson"))
            .unwrap();
        let lines: String = range.map(|i| format!("{{\"i\":{i}}}\n")).collect();
        f.write_all(lines.as_bytes()).unwrap();
    };
    append(0..1000);
    let data = s.path("data");
    let file = s.write(
        "producer.yaml",
        &format!(
            "sources:\n  in: {{type: file, path: $DIR/input.ndjson, follow: true}}\nsinks:\n  bus: {{type: kafka, inputs: [in], brokers: ['127.0.0.1:{port}'], topic: '{topic}', key: '.i', retry: {{attempts: 1000, initial_backoff: 200ms, max_backoff: 2s}}}}\n"
        ),
    );
    let broker = Broker::start(&bin, port);
    let mut d = Daemon::start(
        &file,
        &[
            "--shutdown-timeout",
            "10s",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let mut reader = Reader::new(port, &topic);
    assert!(
        reader.read_until(0..1000, LONG),
        "delivered while the broker is up: {} of 1000; log:\n{}",
        reader.seen.len(),
        d.log_text()
    );
    // Closed while the broker is up (closing waits for it).
    drop(reader);
    // Down mid-run: what the file gets now waits for the broker.
    broker.kill();
    append(1000..2000);
    assert!(
        eventually(LONG, || events_in(&d, "in") >= 2000.0),
        "read while the broker is down; log:\n{}",
        d.log_text()
    );
    assert!(
        eventually(LONG, || warnings(&d) >= 1),
        "the outage is reported: {}",
        d.log_text()
    );
    // Back, empty: the events taken while it was down arrive.
    let broker = Broker::start(&bin, port);
    let mut reader = Reader::new(port, &topic);
    assert!(
        reader.read_until(1000..2000, LONG),
        "delivered after the broker came back: {} of 1000; log:\n{}",
        reader.seen.range(1000..2000).count(),
        d.log_text()
    );
    drop(reader);
    // SIGTERM with the broker down and a batch waiting for it: the daemon
    // gives up at the shutdown timeout at the latest (unwritten lines stay
    // past the file's checkpoint for the next start).
    broker.kill();
    append(2000..2100);
    assert!(
        eventually(LONG, || events_in(&d, "in") >= 2100.0),
        "log:\n{}",
        d.log_text()
    );
    let started = Instant::now();
    d.signal("TERM");
    let code = d.wait(LONG);
    let took = started.elapsed();
    let log = d.log_text();
    assert!(
        took < Duration::from_secs(13),
        "exit took {took:?} ({code:?}): {log}"
    );
    // As documented for `--shutdown-timeout`: exit 1, saying what is left.
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("100 events undelivered"), "{log}");
    let warned = warning_lines(&log);
    assert!(
        warned <= 6,
        "{warned} warnings for two outages (not one per retry):\n{log}"
    );
    eprintln!(
        "sink: {warned} warnings, SIGTERM with the broker down took {took:?} ({code:?}):\n{log}"
    );
}
