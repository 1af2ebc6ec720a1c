//! NATS JetStream through the real binary and a real nats-server:
//! a publisher pipeline, three consumer daemons sharing one durable
//! consumer, one of them killed with `kill -9` mid-run. The union of the
//! outputs holds every event; duplicates only come from what the killed
//! daemon wrote without having acknowledged it.
//!
//! The server: `FLOWGATE_TEST_NATS_URL` (set by .ci/run, which starts
//! Debian's nats-server with JetStream). Without it, a `nats-server` on
//! PATH is started for this test binary; in CI a missing server fails.

mod common;
mod nats_common;
use common::*;
use nats_common::ids;
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// Publishes `{"i": 0..total}` into `stream` on `subject`.
fn publish(s: &Scratch, url: &str, stream: &str, subject: &str, total: u64) {
    nats_common::publish(s, url, stream, subject, 0..total, "");
}

#[test]
fn three_consumers_share_a_durable_and_survive_one_kill_9() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("S"), unique("events."));
    let total: u64 = 30_000;
    let consumer = |n: usize| {
        s.write(
            &format!("consumer{n}.yaml"),
            &format!(
                "name: consumer\nsources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: workers, batch: 200, max_ack_pending: 1000, ack_wait: 2s}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out{n}.ndjson, rate_limit: {{rate: 4000, burst: 200}}}}\n"
            ),
        )
    };
    let files: Vec<_> = (1..=3).map(consumer).collect();
    let mut daemons: Vec<Option<Daemon>> = files
        .iter()
        .map(|f| Some(Daemon::start(f, &[], Stdio::null())))
        .collect();
    publish(&s, url, &stream, &subject, total);

    let written = |n: usize| ids(&s, &format!("out{n}.ndjson"));
    assert!(eventually(LONG, || written(2).len() > 2_000));
    daemons[1].as_ref().unwrap().signal("KILL");
    daemons[1] = None;
    let killed: HashSet<u64> = written(2).into_iter().collect();

    let union = || -> BTreeMap<u64, usize> {
        let mut seen = BTreeMap::new();
        for n in 1..=3 {
            for i in written(n) {
                *seen.entry(i).or_insert(0) += 1;
            }
        }
        seen
    };
    assert!(
        eventually(LONG, || union().len() == total as usize),
        "every event reaches a surviving consumer after redelivery: {} of {total}",
        union().len()
    );
    for d in daemons.iter().flatten() {
        let m = d.metrics();
        let got = metric(&m, "flowgate_events_in_total", &[("component", "bus")]).unwrap_or(0.0);
        assert!(got > 0.0, "each daemon takes a share of the work");
    }
    for d in daemons.iter_mut().flatten() {
        d.signal("TERM");
        assert_eq!(d.wait(LONG), Some(0));
    }
    let seen = union();
    assert_eq!(seen.len(), total as usize);
    let repeated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        repeated.iter().all(|i| killed.contains(i) && seen[i] == 2),
        "duplicates only from the killed daemon's unacknowledged window"
    );
    assert!(
        repeated.len() <= 1000,
        "at most max_ack_pending repeat: {}",
        repeated.len()
    );
    eprintln!(
        "kill -9 of one of three consumers: {} of {total} events repeated",
        repeated.len()
    );
}

#[test]
fn a_consumer_restarted_after_sigterm_repeats_nothing() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("R"), unique("restart."));
    let total: u64 = 5_000;
    publish(&s, url, &stream, &subject, total);
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: once}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson, rate_limit: {{rate: 5000, burst: 100}}}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || ids(&s, "out.ndjson").len() > 1_000));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    assert!(
        ids(&s, "out.ndjson").len() < total as usize,
        "work left for the restart"
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || ids(&s, "out.ndjson").len() >= total as usize));
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    // Messages fetched but not taken at the stop were handed back, so the
    // order may change across the restart; nothing is lost or repeated.
    let mut got = ids(&s, "out.ndjson");
    got.sort_unstable();
    let n = got.len();
    got.dedup();
    assert_eq!(n, got.len(), "no message written twice");
    assert!(
        got == (0..total).collect::<Vec<_>>(),
        "all {total} written once: {n} lines"
    );
}

/// Serves a collector on `port` that records the `i` of every NDJSON line.
fn collector_on(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<u64>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let state = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
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
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    seen
}

#[test]
fn messages_a_sink_could_not_write_are_nakd_and_redelivered() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("N"), unique("nak."));
    let total: u64 = 300;
    publish(&s, url, &stream, &subject, total);
    // The service is down at first: every POST fails and is not retried.
    let port = free_port();
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: naks}}\nsinks:\n  ship: {{type: http, inputs: [bus], url: 'http://127.0.0.1:{port}/', batch: {{max_events: 100, timeout: 10ms}}}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || {
        let m = d.metrics();
        metric(&m, "flowgate_errors_total", &[("component", "ship")]).unwrap_or(0.0) > 0.0
    }));
    let seen = collector_on(port);
    assert!(
        eventually(LONG, || {
            let got: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
            got.len() == total as usize
        }),
        "nak'ed messages are redelivered once the service is back: {} of {total}",
        seen.lock().unwrap().len()
    );
    let outcome = |o| {
        metric(
            &d.metrics(),
            "flowgate_acknowledged_events_total",
            &[("component", "bus"), ("outcome", o)],
        )
        .unwrap_or(0.0)
    };
    assert!(outcome("failed") > 0.0, "naks are counted");
    assert!(
        eventually(LONG, || outcome("delivered") >= total as f64),
        "acks are counted"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
}

#[test]
fn the_scale_out_demo_of_the_readme_runs_and_loses_nothing() {
    let installed = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok();
    if !installed && std::env::var_os("CI").is_none() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    // The script starts its own nats-server, three workers and the ingest
    // daemon on the example pipelines, kills a worker with kill -9 half-way
    // and fails unless every event arrives.
    let out = Command::new("bash")
        .arg(repo().join("deploy/scaleout-demo.sh"))
        .env("FLOWGATE", bin())
        .env("EVENTS", "20000")
        .output()
        .expect("run deploy/scaleout-demo.sh");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("killed worker 2 with kill -9"), "{stdout}");
    assert!(stdout.contains("all 20000 events written"), "{stdout}");
}

#[test]
fn messages_waiting_longer_than_ack_wait_in_a_slow_pipeline_are_not_redelivered() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("P"), unique("progress."));
    let total: u64 = 1_000;
    publish(&s, url, &stream, &subject, total);
    // 1,000 messages through a 250/s sink take 4 s, four times ack_wait:
    // "in progress" keeps JetStream from redelivering what is queued.
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: slow, ack_wait: 1s}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson, rate_limit: {{rate: 250, burst: 50}}}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || ids(&s, "out.ndjson").len() >= total as usize));
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    let mut got = ids(&s, "out.ndjson");
    got.sort_unstable();
    assert_ids(
        &got,
        &(0..total).collect::<Vec<_>>(),
        "each message written once",
    );
}

#[test]
fn max_deliver_stops_redelivering_what_a_sink_never_takes() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("M"), unique("poison."));
    publish(&s, url, &stream, &subject, 5);
    let dead = free_port();
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: poison, max_deliver: 2}}\nsinks:\n  ship: {{type: http, inputs: [bus], url: 'http://127.0.0.1:{dead}/', batch: {{max_events: 100, timeout: 10ms}}}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    let failed = |d: &Daemon| {
        metric(
            &d.metrics(),
            "flowgate_acknowledged_events_total",
            &[("component", "bus"), ("outcome", "failed")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(LONG, || failed(&d) >= 10.0),
        "five messages, two deliveries each"
    );
    // The nak delay is a second: a third delivery would have come by now.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(failed(&d), 10.0, "no delivery beyond max_deliver");
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
}

/// Runs a generator of `count` events `{message: MESSAGE}` (YAML) into a
/// nats sink with `codec: text`, to completion.
fn publish_text(s: &Scratch, url: &str, stream: &str, subject: &str, count: u32, message: &str) {
    run_to_end(
        s,
        "publisher.yaml",
        &format!(
            "sources:\n  in: {{type: generator, count: {count}, events: [{{message: {message}}}]}}\nsinks:\n  bus: {{type: nats, inputs: [in], url: '{url}', subject: '{subject}', stream: {stream}, codec: text}}\n"
        ),
    );
}

#[test]
fn the_text_codec_publishes_and_reads_plain_messages() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("T"), unique("text."));
    publish_text(&s, url, &stream, &subject, 3, "'plain words'");
    let consumer = s.write(
        "consumer.yaml",
        &format!(
            "sources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: text, codec: text}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out.ndjson}}\n"
        ),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || s.read_lines("out.ndjson").len() == 3));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    // The payload was the bare text, not JSON: it comes back as `.message`.
    for e in s.read_lines("out.ndjson") {
        assert_eq!(e, serde_json::json!({"message": "plain words"}));
    }
}

#[test]
fn a_text_message_holding_a_newline_is_published_as_one_message() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("N"), unique("newline."));
    publish_text(&s, url, &stream, &subject, 2, "\"two\\nlines\"");
    // JetStream's own count: one message per event, not per line.
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(&stream).await.unwrap();
        s.info().await.unwrap().state.messages
    });
    assert_eq!(stored, 2);
}

#[test]
fn a_batch_written_again_is_stored_once() {
    use flowgate::components::Sink;
    let url = nats_or_skip!();
    let (stream, subject) = (unique("R"), unique("retry."));
    let config: flowgate::components::sinks::nats::NatsSinkConfig = serde_yaml::from_str(&format!(
        "{{url: '{url}', subject: '{subject}', stream: {stream}}}"
    ))
    .unwrap();
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let sink = config.build();
        let encoded = sink.encode((0..5).map(|i| flowgate::ev!({ "id": i })).collect());
        sink.write(&encoded).await.unwrap();
        // What the stage's retry does after an acknowledgement was lost.
        sink.write(&encoded).await.unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(&stream).await.unwrap();
        s.info().await.unwrap().state.messages
    });
    assert_eq!(
        stored, 5,
        "JetStream dropped the second copies by Nats-Msg-Id"
    );
}
