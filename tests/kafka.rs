//! Kafka through the real binary and a real Kafka-protocol broker: the
//! example pair (file -> kafka sink -> kafka source -> file) with topic
//! template, keys and headers checked on the consumer side; a daemon
//! killed with `kill -9` mid-stream and restarted; a sink that fails (no
//! commit, everything arrives after recovery, the lag metric); a second
//! group member joining mid-stream and the first leaving (SIGTERM); every
//! compression codec; an unreachable broker.
//!
//! The broker: `FLOWGATE_TEST_KAFKA_BROKERS` (set by .ci/run, which starts
//! Tansu, see .ci/kafka.sh). Without it these tests step aside; in CI they
//! fail. Every test uses its own topics and group.

mod common;
use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn brokers() -> Option<String> {
    match std::env::var("FLOWGATE_TEST_KAFKA_BROKERS") {
        Ok(b) => Some(b),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must provide a Kafka broker: set FLOWGATE_TEST_KAFKA_BROKERS (.ci/kafka.sh)")
        }
        Err(_) => None,
    }
}

macro_rules! kafka_or_skip {
    () => {
        match brokers() {
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

fn ids(s: &Scratch, name: &str) -> Vec<u64> {
    s.read_lines(name)
        .iter()
        .map(|e| e["i"].as_u64().unwrap())
        .collect()
}

/// Produces `{"i": 0..total}` to `topic` with a pipeline (file -> kafka), run to completion.
fn produce(s: &Scratch, brokers: &str, topic: &str, total: u64) {
    let input: String = (0..total).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(s.path("input.ndjson"), input).unwrap();
    let producer = s.write(
        "producer.yaml",
        &format!(
            "name: producer\nsources:\n  in: {{type: file, path: $DIR/input.ndjson}}\nsinks:\n  bus: {{type: kafka, inputs: [in], brokers: ['{brokers}'], topic: '{topic}', key: '.i % 97', compression: lz4}}\n"
        ),
    );
    let out = run(
        &[
            "run",
            producer.to_str().unwrap(),
            "--metrics-address",
            "off",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A consumer pipeline: kafka -> file `out{n}.ndjson`, rate-limited so a
/// test can act mid-stream.
fn consumer(
    s: &Scratch,
    n: usize,
    brokers: &str,
    topic: &str,
    group: &str,
    rate: u32,
) -> std::path::PathBuf {
    s.write(
        &format!("consumer{n}.yaml"),
        &format!(
            "name: consumer\nsources:\n  bus: {{type: kafka, brokers: ['{brokers}'], topics: ['{topic}'], group_id: '{group}', options: {{session.timeout.ms: '6000'}}}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out{n}.ndjson, rate_limit: {{rate: {rate}, burst: 200}}}}\n"
        ),
    )
}

/// How often each id was written, over `out1..=outN`.
fn union(s: &Scratch, n: usize) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for k in 1..=n {
        for i in ids(s, &format!("out{k}.ndjson")) {
            *seen.entry(i).or_insert(0) += 1;
        }
    }
    seen
}

/// The group's committed offsets of `topic`'s partitions 0..partitions (-1: none).
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

fn lag_sum(d: &Daemon, topic: &str) -> f64 {
    d.metrics()
        .lines()
        .filter(|l| l.starts_with("flowgate_kafka_consumer_lag_messages{"))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_example_pair_round_trips_with_topic_template_keys_and_headers() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let (topic, group) = (unique("logs"), unique("workers"));
    let example = |name: &str| {
        let text = std::fs::read_to_string(repo().join("pipelines").join(name)).unwrap();
        text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", &brokers)
            .replace("${TOPIC:-logs}", &topic)
            .replace("${GROUP:-log_workers}", &group)
            .replace("${OUTPUT:-out/kafka_worker.ndjson}", "$DIR/out.ndjson")
            .replace(
                "${INPUT:-pipelines/data/app.log.ndjson}",
                &repo()
                    .join("pipelines/data/app.log.ndjson")
                    .display()
                    .to_string(),
            )
    };
    let ingest = s.write("ingest.yaml", &example("kafka_ingest.yaml"));
    let out = run(
        &["run", ingest.to_str().unwrap(), "--metrics-address", "off"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let input: Vec<serde_json::Value> =
        std::fs::read_to_string(repo().join("pipelines/data/app.log.ndjson"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(serde_json::Value::is_object)
            .collect();

    let worker = s.write("worker.yaml", &example("kafka_worker.yaml"));
    let mut d = Daemon::start(&worker, &[], Stdio::null());
    assert!(
        eventually(LONG, || s.read_lines("out.ndjson").len() >= input.len()),
        "{} of {} events consumed; log:\n{}",
        s.read_lines("out.ndjson").len(),
        input.len(),
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));

    let got = s.read_lines("out.ndjson");
    assert_eq!(got.len(), input.len(), "each event once");
    let mut partition_of: HashMap<(String, String), i64> = HashMap::new();
    let mut bodies = Vec::new();
    for mut e in got {
        let meta = e.as_object_mut().unwrap().remove("kafka").unwrap();
        let level = e["level"].as_str().unwrap();
        assert_eq!(meta["topic"], format!("{topic}-{level}"), "templated topic");
        assert_eq!(meta["key"], e["service"], "key from the jq expression");
        assert_eq!(meta["headers"]["origin"], "flowgate");
        assert!(meta["offset"].as_i64().unwrap() >= 0 && meta["timestamp"].is_i64());
        let key = (
            meta["topic"].as_str().unwrap().to_string(),
            meta["key"].to_string(),
        );
        let partition = meta["partition"].as_i64().unwrap();
        assert_eq!(
            *partition_of.entry(key).or_insert(partition),
            partition,
            "one key, one partition"
        );
        bodies.push(e.to_string());
    }
    let mut want: Vec<String> = input.iter().map(|e| e.to_string()).collect();
    bodies.sort();
    want.sort();
    assert!(bodies == want, "the consumed events are the produced ones");
}

#[test]
fn a_daemon_killed_mid_stream_and_restarted_delivers_every_message() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let (topic, group) = (unique("kill"), unique("g"));
    let total = 20_000;
    produce(&s, &brokers, &topic, total);
    let first = consumer(&s, 1, &brokers, &topic, &group, 4000);
    let d = Daemon::start(&first, &[], Stdio::null());
    assert!(
        eventually(LONG, || ids(&s, "out1.ndjson").len() > 4_000),
        "log:\n{}",
        d.log_text()
    );
    d.signal("KILL");
    drop(d);
    let before: HashSet<u64> = ids(&s, "out1.ndjson").into_iter().collect();
    let second = consumer(&s, 2, &brokers, &topic, &group, 20_000);
    let mut d = Daemon::start(&second, &[], Stdio::null());
    assert!(
        eventually(LONG, || union(&s, 2).len() == total as usize),
        "every message after the restart: {} of {total}; log:\n{}",
        union(&s, 2).len(),
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    let seen = union(&s, 2);
    let repeated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        repeated.iter().all(|i| before.contains(i) && seen[i] == 2),
        "only what the killed daemon wrote without a commit is read again"
    );
    // Uncommitted at the kill: at most a commit_interval (1s) of writes at
    // 4000/s plus what the pipeline and the consumer held (1000 + 3 x 1000).
    assert!(repeated.len() <= 8_000, "{} repeated", repeated.len());
    eprintln!(
        "kill -9 mid-stream: {} of {total} messages read twice",
        repeated.len()
    );
}

/// Produces `n` messages `{"i": ..}` one record per request (Tansu reports
/// a wrong end offset for records that arrive in batches).
fn produce_one_by_one(brokers: &str, topic: &str, n: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("{{\"i\":{i}}}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}

#[test]
fn a_failing_sink_commits_nothing_and_everything_arrives_after_recovery() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let (topic, group) = (unique("fail"), unique("g"));
    let total = 20;
    produce_one_by_one(&brokers, &topic, total);
    let port = free_port();
    let file = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: kafka, brokers: ['{brokers}'], topics: ['{topic}'], group_id: '{group}', commit_interval: 100ms, options: {{session.timeout.ms: '6000'}}}}\nsinks:\n  ship: {{type: http, inputs: [bus], url: 'http://127.0.0.1:{port}/', batch: {{max_events: 100, timeout: 10ms}}}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    let failed = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_acknowledged_events_total",
            &[("component", "bus"), ("outcome", "failed")],
        )
        .unwrap_or(0.0)
    };
    // Read, failed, read again and failed again: nothing may be committed.
    assert!(
        eventually(LONG, || failed(&d) >= 2.0 * total as f64),
        "log:\n{}",
        d.log_text()
    );
    // Auto-created topics have four partitions.
    assert!(
        committed(&brokers, &group, &topic, 4)
            .iter()
            .all(|o| *o <= 0),
        "committed past a failure: {:?}",
        committed(&brokers, &group, &topic, 4)
    );
    assert!(
        eventually(LONG, || lag_sum(&d, &topic) == total as f64),
        "lag of the uncommitted messages: {}",
        lag_sum(&d, &topic)
    );

    let seen = collector_on(port);
    assert!(
        eventually(LONG, || {
            let got: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
            got.len() == total as usize
        }),
        "read again once the service is back: {:?}",
        seen.lock().unwrap()
    );
    assert!(
        eventually(LONG, || committed(&brokers, &group, &topic, 4)
            .iter()
            .map(|o| o.max(&0))
            .sum::<i64>()
            == total as i64),
        "committed after recovery: {:?}",
        committed(&brokers, &group, &topic, 4)
    );
    assert!(
        eventually(LONG, || lag_sum(&d, &topic) == 0.0),
        "lag back to 0"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
}

/// Serves a collector on `port` that records the `i` of every NDJSON line.
fn collector_on(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<u64>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: String| {
            let state = state.clone();
            async move {
                let mut seen = state.lock().unwrap();
                for line in body.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    seen.push(v["i"].as_u64().unwrap());
                }
                "ok"
            }
        }),
    );
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    seen
}

#[test]
fn members_joining_and_leaving_mid_stream_lose_nothing_and_repeat_nothing() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let (topic, group) = (unique("join"), unique("g"));
    let total = 30_000;
    produce(&s, &brokers, &topic, total);
    // 15 s of work at 2000/s: the second member joins within the first few.
    let mut first = Daemon::start(
        &consumer(&s, 1, &brokers, &topic, &group, 2000),
        &[],
        Stdio::null(),
    );
    assert!(
        eventually(LONG, || ids(&s, "out1.ndjson").len() > 3_000),
        "log:\n{}",
        first.log_text()
    );
    let mut second = Daemon::start(
        &consumer(&s, 2, &brokers, &topic, &group, 2000),
        &[],
        Stdio::null(),
    );
    assert!(
        eventually(LONG, || ids(&s, "out2.ndjson").len() > 500),
        "the new member takes a share ({} and {} lines written); logs:\n{}\n{}",
        ids(&s, "out1.ndjson").len(),
        ids(&s, "out2.ndjson").len(),
        first.log_text(),
        second.log_text()
    );
    // The first member leaves mid-stream (a rolling restart's stop): it
    // drains, commits and leaves; the second takes its partitions over.
    first.signal("TERM");
    assert_eq!(first.wait(LONG), Some(0));
    assert!(
        union(&s, 2).len() < total as usize,
        "work left after the first member left"
    );
    assert!(
        eventually(LONG, || union(&s, 2).len() == total as usize),
        "{} of {total}; logs:\n{}\n{}",
        union(&s, 2).len(),
        first.log_text(),
        second.log_text()
    );
    second.signal("TERM");
    assert_eq!(second.wait(LONG), Some(0));
    let seen = union(&s, 2);
    let repeated = seen.values().filter(|n| **n > 1).count();
    assert_eq!(
        repeated,
        0,
        "each rebalance drained and committed before releasing: nothing read twice; logs:\n{}\n{}",
        first.log_text(),
        second.log_text()
    );
}

#[test]
fn every_compression_codec_round_trips() {
    let brokers = kafka_or_skip!();
    let s = Scratch::new();
    let (prefix, group) = (unique("codec"), unique("g"));
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let sinks: String = codecs
        .iter()
        .map(|c| {
            format!("  to_{c}: {{type: kafka, inputs: [in], brokers: ['{brokers}'], topic: '{prefix}-{c}', compression: {c}}}\n")
        })
        .collect();
    let producer = s.write(
        "producer.yaml",
        &format!(
            "sources:\n  in: {{type: generator, count: 10, events: [{{text: 'the same words again and again and again'}}]}}\nsinks:\n{sinks}"
        ),
    );
    let out = run(
        &[
            "run",
            producer.to_str().unwrap(),
            "--metrics-address",
            "off",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let topics: Vec<String> = codecs.iter().map(|c| format!("'{prefix}-{c}'")).collect();
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: kafka, brokers: ['{brokers}'], topics: [{}], group_id: '{group}', metadata_field: m, options: {{session.timeout.ms: '6000'}}}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n",
            topics.join(", ")
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(
        eventually(LONG, || s.read_lines("out.ndjson").len() >= 50),
        "log:\n{}",
        d.log_text()
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    let mut per_topic: BTreeMap<String, usize> = BTreeMap::new();
    for e in s.read_lines("out.ndjson") {
        assert_eq!(e["text"], "the same words again and again and again");
        *per_topic
            .entry(e["m"]["topic"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = codecs
        .iter()
        .map(|c| (format!("{prefix}-{c}"), 10))
        .collect();
    assert_eq!(per_topic, want);
}

#[test]
fn an_unreachable_broker_is_one_warning_and_sigterm_still_exits_promptly() {
    // No broker needed: nothing listens on this port.
    let s = Scratch::new();
    let port = free_port();
    let file = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: kafka, brokers: ['127.0.0.1:{port}'], topics: [t], group_id: g}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n"
        ),
    );
    let mut d = Daemon::start(&file, &[], Stdio::null());
    assert!(
        eventually(LONG, || d.log_text().contains("WARN")),
        "the failure is reported: {}",
        d.log_text()
    );
    // librdkafka retries in the background; say so once, not per attempt.
    std::thread::sleep(Duration::from_secs(3));
    let started = std::time::Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let log = d.log_text();
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
}
