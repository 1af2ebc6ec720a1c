//! Several events per JetStream message (`events_per_message` on the nats
//! sink, split again by the nats source) through the real binary and a
//! real nats-server: the stored messages are what the packing implies,
//! every event arrives once, a kill -9 of a consumer loses nothing, and
//! packed and single-event messages mix on one subject.
//!
//! The server: `FLOWGATE_TEST_NATS_URL` (set by .ci/run, which starts
//! Debian's nats-server with JetStream). Without it, a `nats-server` on
//! PATH is started for this test binary; in CI a missing server fails.

mod common;
mod nats_common;
use common::*;
use nats_common::{ids, publish};
use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// Every message stored in `stream`: its `Flowgate-Events` header (if
/// any) and its payload.
fn stored(url: &str, stream: &str) -> Vec<(Option<String>, String)> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(stream).await.unwrap();
        let n = s.info().await.unwrap().state.messages;
        let mut out = Vec::new();
        for seq in 1..=n {
            let m = s.get_raw_message(seq).await.unwrap();
            let count = m.headers.get("Flowgate-Events").map(|v| v.to_string());
            out.push((count, String::from_utf8(m.payload.to_vec()).unwrap()));
        }
        out
    })
}

/// A durable's messages delivered and not acknowledged, not yet delivered,
/// and its acknowledgement floor (the stream sequence below which all are
/// acknowledged).
fn consumer_state(url: &str, stream: &str, durable: &str) -> (usize, u64, u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let s = js.get_stream(stream).await.unwrap();
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            s.get_consumer(durable).await.unwrap();
        let info = c.info().await.unwrap();
        (
            info.num_ack_pending,
            info.num_pending,
            info.ack_floor.stream_sequence,
        )
    })
}

fn consumer_yaml(
    url: &str,
    stream: &str,
    subject: &str,
    durable: &str,
    extra: &str,
    out: &str,
) -> String {
    format!(
        "name: consumer\nsources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: {durable}{extra}}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/{out}}}\n"
    )
}

#[test]
fn packed_messages_hold_what_the_packing_implies_and_every_event_arrives_once() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("K"), unique("packed."));
    let total = 1000;
    // A 1,000-line file is one batch: 15 messages of 64 events and one of 40.
    publish(
        &s,
        url,
        &stream,
        &subject,
        0..total,
        ", events_per_message: 64",
    );
    let messages = stored(url, &stream);
    let counts: Vec<usize> = messages
        .iter()
        .map(|(header, payload)| {
            let lines = payload.lines().count();
            assert_eq!(
                header.as_deref(),
                Some(lines.to_string().as_str()),
                "the header counts the lines"
            );
            assert!(
                payload.ends_with('\n'),
                "NDJSON: every line ends with a newline"
            );
            lines
        })
        .collect();
    let mut want = vec![64; 15];
    want.push(40);
    assert_eq!(counts, want);

    let consumer = s.write(
        "consumer.yaml",
        &consumer_yaml(url, &stream, &subject, "packed", "", "out.ndjson"),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || ids(&s, "out.ndjson").len() >= total as usize));
    let m = d.metrics();
    let counted = |name, labels: &[(&str, &str)]| metric(&m, name, labels).unwrap_or(0.0);
    assert_eq!(
        counted("flowgate_events_in_total", &[("component", "bus")]),
        total as f64,
        "events, not messages"
    );
    assert!(
        eventually(LONG, || {
            metric(
                &d.metrics(),
                "flowgate_acknowledged_events_total",
                &[("component", "bus"), ("outcome", "delivered")],
            ) == Some(total as f64)
        }),
        "acknowledgements count events"
    );
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    assert_ids(
        &ids(&s, "out.ndjson"),
        &(0..total).collect::<Vec<_>>(),
        "each event once, in order",
    );
    // Every message was acknowledged: the durable has nothing pending.
    assert!(
        eventually(LONG, || {
            let (ack_pending, pending, acked) = consumer_state(url, &stream, "packed");
            ack_pending == 0 && pending == 0 && acked == 16
        }),
        "{:?}",
        consumer_state(url, &stream, "packed")
    );
}

#[test]
fn max_message_bytes_bounds_a_packed_message() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("B"), unique("bytes."));
    // Lines of 11 bytes (`{"i":1000}` and a newline): 100 bytes hold 9.
    publish(
        &s,
        url,
        &stream,
        &subject,
        1000..1100,
        ", events_per_message: 1000, max_message_bytes: 100",
    );
    let messages = stored(url, &stream);
    let counts: Vec<usize> = messages.iter().map(|(_, p)| p.lines().count()).collect();
    let mut want = vec![9; 11];
    want.push(1);
    assert_eq!(counts, want);
    assert!(messages.iter().all(|(_, p)| p.len() <= 100));
}

#[test]
fn a_packed_batch_written_again_is_stored_once_and_the_stream_gets_the_duplicate_window() {
    use flowgate::components::Sink;
    let url = nats_or_skip!();
    let (stream, subject) = (unique("D"), unique("dedup."));
    let config: flowgate::components::sinks::nats::NatsSinkConfig = serde_yaml::from_str(&format!(
        "{{url: '{url}', subject: '{subject}', stream: {stream}, events_per_message: 100, duplicate_window: 45s}}"
    ))
    .unwrap();
    assert!(config.check().is_empty());
    let (messages, window) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let sink = config.build();
        let encoded = sink.encode((0..250).map(|i| flowgate::ev!({ "id": i })).collect());
        sink.write(&encoded).await.unwrap();
        // What the stage's retry does after an acknowledgement was lost.
        sink.write(&encoded).await.unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream(&stream).await.unwrap();
        let info = s.info().await.unwrap();
        (info.state.messages, info.config.duplicate_window)
    });
    assert_eq!(
        messages, 3,
        "100 + 100 + 50 events; the copies dropped by Nats-Msg-Id"
    );
    assert_eq!(window, Duration::from_secs(45));
}

#[test]
fn packed_and_single_event_messages_mix_on_one_subject() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("X"), unique("mixed."));
    publish(&s, url, &stream, &subject, 0..300, "");
    publish(
        &s,
        url,
        &stream,
        &subject,
        300..600,
        ", events_per_message: 7",
    );
    publish(&s, url, &stream, &subject, 600..900, "");
    // A message from another publisher, without the header: one event,
    // even though its JSON spans lines.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        js.publish(subject.clone(), "{\n  \"i\": 900\n}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let messages = stored(url, &stream);
    assert_eq!(messages.len(), 300 + 300usize.div_ceil(7) + 300 + 1);
    let consumer = s.write(
        "consumer.yaml",
        &consumer_yaml(url, &stream, &subject, "mixed", ", batch: 50", "out.ndjson"),
    );
    let mut d = Daemon::start(&consumer, &[], Stdio::null());
    assert!(eventually(LONG, || ids(&s, "out.ndjson").len() >= 901));
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    assert_eq!(d.wait(LONG), Some(0));
    assert_ids(
        &ids(&s, "out.ndjson"),
        &(0..901).collect::<Vec<_>>(),
        "each event once, in order",
    );
}

#[test]
fn a_consumer_killed_with_packed_messages_outstanding_loses_nothing() {
    let url = nats_or_skip!();
    let s = Scratch::new();
    let (stream, subject) = (unique("Q"), unique("killed."));
    let total: u64 = 30_000;
    let per = 50;
    // At most 20 messages of 50 events outstanding per consumer: a kill
    // leaves at most 1,000 events to redeliver.
    let consumer = |n: usize| {
        s.write(
            &format!("consumer{n}.yaml"),
            &format!(
                "name: consumer\nsources:\n  bus: {{type: nats, url: '{url}', stream: {stream}, subject: '{subject}', durable: workers, batch: 10, max_ack_pending: 20, ack_wait: 2s}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/out{n}.ndjson, rate_limit: {{rate: 4000, burst: 200}}}}\n"
            ),
        )
    };
    let files: Vec<_> = (1..=3).map(consumer).collect();
    let mut daemons: Vec<Option<Daemon>> = files
        .iter()
        .map(|f| Some(Daemon::start(f, &[], Stdio::null())))
        .collect();
    publish(
        &s,
        url,
        &stream,
        &subject,
        0..total,
        &format!(", events_per_message: {per}"),
    );

    let written = |n: usize| ids(&s, &format!("out{n}.ndjson"));
    assert!(eventually(LONG, || written(2).len() > 2_000));
    let taken = metric(
        &daemons[1].as_ref().unwrap().metrics(),
        "flowgate_events_in_total",
        &[("component", "bus")],
    )
    .unwrap();
    daemons[1].as_ref().unwrap().signal("KILL");
    daemons[1] = None;
    let killed: HashSet<u64> = written(2).into_iter().collect();
    // Its sink is slower than its source: what it took and had not
    // written dies with it and must come from the others.
    assert!(
        taken as usize > killed.len(),
        "the killed consumer held unwritten events: took {taken}, wrote {}",
        killed.len()
    );
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
        "duplicates only from the killed daemon's unacknowledged messages"
    );
    assert!(
        repeated.len() <= 20 * per,
        "at most max_ack_pending messages' events repeat: {}",
        repeated.len()
    );
    eprintln!(
        "kill -9 of one of three consumers of packed messages: {} of {total} events repeated",
        repeated.len()
    );
}
