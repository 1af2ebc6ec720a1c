//! The kafka source's consumer thread: a librdkafka group member polled on
//! a thread of its own, because rebalance callbacks run inside `poll` and
//! a revocation blocks there while the pipeline drains the revoked
//! partitions — a wait that must not hold up a tokio worker.
//!
//! The thread makes batches of up to `MAX_BATCH` messages, registers their
//! per-partition segments (`kafka_offsets`) and hands them to the source
//! task; acknowledgements come back over a channel and move the
//! committable offsets, committed every `commit_interval`. A full pipeline
//! pauses every assigned partition (polling goes on, so rebalances are
//! served) until the batch is taken. A batch a sink could not write rewinds
//! its partition: it is read again, from the first message not yet
//! acknowledged, a second later. The shared state and the rebalance
//! callbacks are in `kafka_context`.

use super::decode;
use super::kafka_context::{Context, Fetched, REWIND_DELAY};
use super::kafka_offsets::Partition;
use crate::core::sync::LockExt;
use crate::core::{Acks, Delivery, Map, Value};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Longest wait in `poll`: how soon a stop or a full pipeline is noticed.
const POLL: Duration = Duration::from_millis(100);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a full pipeline may keep the next batch waiting before the
/// partitions are paused (polling, for rebalances, stops meanwhile; well
/// within `max.poll.interval.ms`).
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// On stop, how long the last commit may wait for the brokers, and leaving
/// the group when they were unreachable last (within the default 30 s
/// shutdown timeout).
const STOP_WAIT: Duration = Duration::from_secs(3);
/// How long leaving the group may take while the brokers are reachable.
const LEAVE_WAIT: Duration = Duration::from_secs(15);

/// Runs the consumer until its stop flag is set or the source task is gone; then
/// waits until every batch handed out is settled, commits and leaves the
/// group.
pub fn run(
    consumer: BaseConsumer<Context>,
    acks_tx: mpsc::Sender<(u64, Delivery)>,
    out: tokio::sync::mpsc::Sender<Fetched>,
) {
    let ctx = consumer.context().clone();
    let mut next_id = 0u64;
    let mut paused = false;
    let mut last_commit = Instant::now();
    // Since when the pipeline has not taken the held batch.
    let mut full_since: Option<Instant> = None;
    while !ctx.stopping.load(Ordering::Relaxed) {
        ctx.settle(Duration::ZERO);
        rewind_due(&consumer);
        if last_commit.elapsed() >= ctx.settings.commit_interval {
            ctx.commit(&consumer, None, CommitMode::Async);
            last_commit = Instant::now();
        }
        let held = ctx.shared.lock_unpoisoned().held.take();
        if held.is_none() {
            // Taken, or forgotten by a revocation.
            full_since = None;
        }
        if let Some(fetched) = held {
            match out.try_send(fetched) {
                Ok(()) => full_since = None,
                Err(tokio::sync::mpsc::error::TrySendError::Full(fetched)) => {
                    ctx.shared.lock_unpoisoned().held = Some(fetched);
                    // A pipeline busy with the batches before takes this one
                    // in a moment: pausing at once would drop what the client
                    // fetched ahead and fetch it again, on every batch.
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if !paused && since.elapsed() < PAUSE_AFTER {
                        // Waits for an acknowledgement, 1 ms at most.
                        ctx.settle(Duration::from_millis(1));
                        continue;
                    }
                    if !paused {
                        set_paused(&consumer, true);
                        paused = true;
                    }
                    // Serves rebalances and statistics; paused partitions
                    // deliver nothing (librdkafka drops what it prefetched
                    // and resumes from the last message handed out).
                    if let Some(Ok(m)) = consumer.poll(POLL) {
                        // Prefetched before the pause took effect: read it
                        // again from here, or the position would move past it.
                        let p = (Arc::from(m.topic()), m.partition());
                        tracing::debug!(component = %ctx.settings.name, "message at offset {} while paused: read again", m.offset());
                        ctx.shared
                            .lock_unpoisoned()
                            .rewinds
                            .insert(p, (m.offset(), Instant::now()));
                    }
                    continue;
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if paused {
            set_paused(&consumer, false);
            paused = false;
        }
        if let Some(fetched) = fill(&consumer, &ctx, &acks_tx, &mut next_id) {
            ctx.shared.lock_unpoisoned().held = Some(fetched);
        }
    }
    ctx.stopping.store(true, Ordering::Relaxed);
    ctx.unhold(None);
    drop(out);
    drop(acks_tx);
    // Every batch handed out settles (the pipeline drains on stop).
    while ctx.settle(POLL) {
        // Serves commit callbacks and statistics; a message is left unread.
        let _ = consumer.poll(Duration::ZERO);
    }
    ctx.commit_last(&consumer, STOP_WAIT);
    // A member that leaves cleanly lets the group rebalance at once (one
    // that does not is waited for, up to the group's rebalance timeout).
    let wait = match ctx.down.load(Ordering::Relaxed) {
        true => STOP_WAIT,
        false => LEAVE_WAIT,
    };
    leave(consumer, &ctx.settings.name, wait);
}

/// Dropping the consumer leaves the group (a last revocation runs with
/// nothing in flight). librdkafka waits for the coordinator there, for as
/// long as it is unreachable: past `wait` the leaving goes on in the
/// background and the source ends (the group then notices the member gone
/// after `session.timeout.ms`).
fn leave(consumer: BaseConsumer<Context>, name: &str, wait: Duration) {
    // The last revocation and librdkafka's closing lines log on this
    // thread: with the component's span, as the consumer thread's do.
    let span = tracing::Span::current();
    let leaving = std::thread::Builder::new()
        .name(format!("kafka-{name}-leave"))
        .spawn(move || span.in_scope(|| drop(consumer)));
    let Ok(leaving) = leaving else {
        return;
    };
    let deadline = Instant::now() + wait;
    while !leaving.is_finished() {
        if Instant::now() >= deadline {
            tracing::info!(component = %name, "Kafka is unreachable: leaving the group in the background");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pauses or resumes every assigned partition.
fn set_paused(consumer: &BaseConsumer<Context>, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = match pause {
        true => consumer.pause(&assignment),
        false => consumer.resume(&assignment),
    };
    if let Err(e) = result {
        tracing::warn!(component = %consumer.context().settings.name, "pausing/resuming partitions: {e}");
    }
}

/// Seeks the partitions whose rewind delay has passed.
fn rewind_due(consumer: &BaseConsumer<Context>) {
    let ctx = consumer.context();
    let now = Instant::now();
    let due: Vec<(Partition, i64)> = {
        let mut shared = ctx.shared.lock_unpoisoned();
        let due: Vec<_> = shared
            .rewinds
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(p, (offset, _))| (p.clone(), *offset))
            .collect();
        for (p, _) in &due {
            shared.rewinds.remove(p);
        }
        due
    };
    for ((topic, partition), offset) in due {
        if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), CLIENT_TIMEOUT) {
            tracing::warn!(component = %ctx.settings.name, "seeking {topic} [{partition}] back to {offset}: {e}; retrying");
            ctx.shared
                .lock_unpoisoned()
                .rewinds
                .insert((topic, partition), (offset, Instant::now() + REWIND_DELAY));
        }
    }
}

/// Polls up to `MAX_BATCH` messages into a batch (waiting up to `POLL`
/// for the first); `None` when nothing arrived.
fn fill(
    consumer: &BaseConsumer<Context>,
    ctx: &Context,
    acks_tx: &mpsc::Sender<(u64, Delivery)>,
    next_id: &mut u64,
) -> Option<Fetched> {
    let s = &ctx.settings;
    // Payloads copied as they are (decoded by the source task, see `Fetched`).
    let mut payloads = Vec::with_capacity(256 * 1024);
    let mut events = Vec::new();
    let mut failed = Vec::new();
    // (partition, its epoch when read, first offset, last offset)
    let mut spans: Vec<(Partition, u64, i64, i64)> = Vec::new();
    // The span of each event and failure, to drop stale ones.
    let (mut event_span, mut failed_span) = (Vec::new(), Vec::new());
    let mut rebalances = ctx.rebalances.load(Ordering::Relaxed);
    let mut wait = POLL;
    while events.len() + failed.len() < crate::core::MAX_BATCH {
        let polled = consumer.poll(wait);
        let now = ctx.rebalances.load(Ordering::Relaxed);
        if now != rebalances {
            rebalances = now;
            let stale: Vec<bool> = {
                let shared = ctx.shared.lock_unpoisoned();
                spans
                    .iter()
                    .map(|(p, epoch, ..)| shared.offsets.epoch(p) != Some(*epoch))
                    .collect()
            };
            if stale.contains(&true) {
                drop_stale(&stale, &mut events, &mut event_span);
                drop_stale(&stale, &mut failed, &mut failed_span);
                let mut i = 0;
                spans.retain(|_| {
                    i += 1;
                    !stale[i - 1]
                });
            }
        }
        let m = match polled {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                use rdkafka::error::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
                if let KafkaError::MessageConsumption(AllBrokersDown | BrokerTransportFailure) = e {
                    // The client's `error` callback reported it once.
                    ctx.error(e, "retrying");
                    break;
                }
                let e = e.to_string();
                let mut last = ctx.last_poll_error.lock_unpoisoned();
                if *last != e {
                    tracing::warn!(component = %s.name, "Kafka: {e}");
                    *last = e;
                } else {
                    tracing::debug!(component = %s.name, "Kafka: {e}");
                }
                break;
            }
        };
        wait = Duration::ZERO;
        if ctx.down.swap(false, Ordering::Relaxed) {
            tracing::info!(component = %s.name, "Kafka is reachable again");
        }
        let at = spans
            .iter()
            .position(|(p, ..)| &*p.0 == m.topic() && p.1 == m.partition());
        let span = match at {
            Some(i) => {
                spans[i].3 = m.offset();
                i
            }
            None => {
                let p: Partition = (Arc::from(m.topic()), m.partition());
                let shared = ctx.shared.lock_unpoisoned();
                // Read again after a rewind; prefetched before a revocation.
                let epoch = shared.offsets.epoch(&p);
                let Some(epoch) = epoch.filter(|_| !shared.rewinds.contains_key(&p)) else {
                    continue;
                };
                drop(shared);
                spans.push((p, epoch, m.offset(), m.offset()));
                spans.len() - 1
            }
        };
        let payload = m.payload().unwrap_or_default();
        if payload.len() > s.max_line_bytes {
            let f = decode::too_long(payload, payload.len() as u64, s.max_line_bytes, "message");
            failed.push(f);
            failed_span.push(span);
            continue;
        }
        let start = payloads.len();
        payloads.extend_from_slice(payload);
        let meta = s.metadata_field.as_ref().map(|_| metadata(&m));
        events.push((start..payloads.len(), meta));
        event_span.push(span);
    }
    if spans.is_empty() {
        return None;
    }
    let messages = events.len() + failed.len();
    let mut shared = ctx.shared.lock_unpoisoned();
    let segments = spans
        .iter()
        .filter_map(|(p, epoch, first, last)| shared.offsets.segment(p, *epoch, *first, *last))
        .collect();
    let id = *next_id;
    *next_id += 1;
    shared.batches.insert(id, (segments, messages));
    let tx = acks_tx.clone();
    let acks = Acks::new(move |delivery| {
        let _ = tx.send((id, delivery));
    });
    Some(Fetched {
        id,
        payloads,
        messages: events,
        failed,
        acks,
    })
}

/// Removes the items whose span is stale and renumbers the owners of the
/// rest for `stale`'s survivors: a rebalance ran while a batch was filled,
/// and what it read of released or re-assigned partitions is read again
/// from their committed offsets (emitted untracked, it would be written twice).
fn drop_stale<T>(stale: &[bool], items: &mut Vec<T>, owner: &mut Vec<usize>) {
    let mut renumber = Vec::with_capacity(stale.len());
    let mut kept = 0;
    for &s in stale {
        renumber.push(kept);
        kept += usize::from(!s);
    }
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        !stale[owner[i - 1]]
    });
    owner.retain(|o| !stale[*o]);
    for o in owner.iter_mut() {
        *o = renumber[*o];
    }
}

/// `{topic, partition, offset, key, timestamp, headers}` of a message.
fn metadata(m: &BorrowedMessage<'_>) -> Value {
    let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).as_ref().into());
    let mut map = Map::with_capacity(6);
    map.insert("topic".into(), Value::String(m.topic().into()));
    map.insert("partition".into(), Value::Number(m.partition().into()));
    map.insert("offset".into(), Value::Number(m.offset().into()));
    map.insert("key".into(), m.key().map_or(Value::Null, text));
    let timestamp = m.timestamp().to_millis();
    map.insert(
        "timestamp".into(),
        timestamp.map_or(Value::Null, |t| Value::Number(t.into())),
    );
    let mut headers = Map::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            headers.insert(h.key.into(), h.value.map_or(Value::Null, text));
        }
    }
    map.insert("headers".into(), Value::Object(headers));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_of_stale_spans_are_dropped_and_the_rest_renumbered() {
        let stale = [false, true, false];
        let mut items = vec!["a0", "b1", "c2", "d0", "e1"];
        let mut owner = vec![0, 1, 2, 0, 1];
        drop_stale(&stale, &mut items, &mut owner);
        assert_eq!(items, vec!["a0", "c2", "d0"]);
        assert_eq!(owner, vec![0, 1, 0], "span 2 is now span 1");
    }
}
