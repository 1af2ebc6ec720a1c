//! The Kafka issue's rolling restart, through the real binary and a real
//! Kafka-protocol broker (`FLOWGATE_TEST_KAFKA_BROKERS`, see tests/kafka.rs):
//! three daemons in one group on a 6-partition topic, each stopped with
//! SIGTERM and replaced in turn while a producer writes: nothing lost,
//! nothing read twice.
//!
//! As an operator's rolling restart waits for the new instance to be ready,
//! the next member is stopped only once every member owns partitions and
//! the coordinator reports the group `Stable`. On Tansu 0.6.0 this is
//! needed, not just tidy: a group leader that leaves while the group is
//! forming again (a member joined, the leader has not rejoined yet) leaves
//! the group with a leader that is gone, and no member is ever assigned
//! again (README, "Scaling out with Kafka").
//!
//! Size: produced at 2,000/s until 4,000 after the last restart (about
//! 50,000), at most `FLOWGATE_KAFKA_ROLLING_EVENTS` (default 200,000).

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// A member pipeline: kafka -> file `name`.
fn member(s: &Scratch, name: &str, brokers: &str, topic: &str, group: &str) -> PathBuf {
    s.write(
        &format!("{name}.yaml"),
        &format!(
            "name: member\nsources:\n  bus: {{type: kafka, brokers: ['{brokers}'], topics: ['{topic}'], group_id: '{group}', metadata_field: kafka, options: {{session.timeout.ms: '6000'}}}}\nsinks:\n  out: {{type: file, inputs: [bus], path: $DIR/{name}.ndjson}}\n"
        ),
    )
}

/// Whether the member's log shows it owns partitions now.
fn assigned(d: &Daemon) -> bool {
    let log = d.log_text();
    let last = log.lines().rev().find(|l| {
        l.contains(" partitions") && (l.contains("assigned ") || l.contains("released "))
    });
    last.is_some_and(|l| l.contains("assigned ") && !l.contains("assigned 0 "))
}

/// The group's state and member count as its coordinator reports them
/// (DescribeGroups: `Stable` once the members synced their assignment).
fn group_state(client: &BaseConsumer, group: &str) -> (String, usize) {
    match client.fetch_group_list(Some(group), Duration::from_secs(10)) {
        Ok(list) => list
            .groups()
            .first()
            .map(|g| (g.state().to_string(), g.members().len()))
            .unwrap_or_default(),
        Err(e) => (e.to_string(), 0),
    }
}

/// Every daemon's log, named, for a failure message.
fn logs(daemons: &[(String, Daemon)]) -> String {
    daemons
        .iter()
        .map(|(n, d)| format!("--- {n}\n{}", d.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_rolling_restart_while_producing_loses_nothing_and_repeats_nothing() {
    let brokers = kafka_or_skip!();
    let started = Instant::now();
    // At most this many; the producer stops 4,000 events (2 s) after the
    // last restart, so the restarts overlap the producing however slow
    // the machine.
    let most = size("FLOWGATE_KAFKA_ROLLING_EVENTS", 200_000);
    let s = Scratch::new();
    let (topic, group) = (unique("rolling"), unique("g"));
    create_topic(&brokers, &topic, 6);
    let admin: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // Produced at about 2000/s while the members restart one by one.
    let sent = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let producing = {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        let (sent, restarted) = (sent.clone(), restarted.clone());
        std::thread::spawn(move || {
            let p = producer(&brokers);
            let t0 = Instant::now();
            let mut until = most;
            for i in 0..most {
                if i == until {
                    break;
                }
                send(&p, &topic, i);
                sent.store(i + 1, Ordering::Relaxed);
                if until == most && restarted.load(Ordering::Relaxed) {
                    until = i + 4_000;
                }
                let due = Duration::from_micros(i * 500);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
                p.poll(Duration::ZERO);
            }
            p.flush(Duration::from_secs(60)).unwrap();
            until.min(most)
        })
    };
    // Every daemon ever started, by name; `live` indexes the running ones.
    let mut daemons: Vec<(String, Daemon)> = (1..=3)
        .map(|n| {
            let name = format!("m{n}");
            let file = member(&s, &name, &brokers, &topic, &group);
            (name, Daemon::start(&file, &[], Stdio::null()))
        })
        .collect();
    let mut live = [0, 1, 2];
    let settled = |daemons: &[(String, Daemon)], live: &[usize]| {
        live.iter().all(|i| assigned(&daemons[*i].1))
            && group_state(&admin, &group) == ("Stable".to_string(), 3)
    };
    for k in 0..3 {
        assert!(
            eventually(LONG, || settled(&daemons, &live)),
            "every member owns partitions and the group is stable before restart {k}: {:?}\n{}",
            group_state(&admin, &group),
            logs(&daemons)
        );
        let (name, old) = &mut daemons[live[k]];
        old.signal("TERM");
        assert_eq!(old.wait(LONG), Some(0), "{name}: {}", old.log_text());
        let name = format!("m{}b", k + 1);
        let file = member(&s, &name, &brokers, &topic, &group);
        daemons.push((name, Daemon::start(&file, &[], Stdio::null())));
        live[k] = daemons.len() - 1;
    }
    restarted.store(true, Ordering::Relaxed);
    let restarted_at = sent.load(Ordering::Relaxed);
    let total = producing.join().unwrap();
    assert!(
        restarted_at < total,
        "the restarts happened while producing ({restarted_at} of {total} sent)"
    );
    let paths: Vec<PathBuf> = daemons
        .iter()
        .map(|(n, _)| s.path(&format!("{n}.ndjson")))
        .collect();
    let written = || paths.iter().map(|p| line_count(p)).sum::<usize>();
    assert!(
        eventually(LONG, || written() >= total as usize),
        "{} of {total}; group {:?}\n{}",
        written(),
        group_state(&admin, &group),
        logs(&daemons)
    );
    for k in live {
        let (name, d) = &mut daemons[k];
        d.signal("TERM");
        assert_eq!(d.wait(LONG), Some(0), "{name}: {}", d.log_text());
    }
    let seen = counts(paths.iter().map(PathBuf::as_path));
    assert_eq!(seen.len(), total as usize, "nothing lost");
    let repeated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        repeated.is_empty(),
        "every stop drained and committed, yet {} events were read twice (first {:?})\n{}",
        repeated.len(),
        &repeated[..repeated.len().min(10)],
        logs(&daemons)
    );
    eprintln!(
        "rolling restart: {total} events, the last restart at {restarted_at} sent; {:?}",
        started.elapsed()
    );
}
