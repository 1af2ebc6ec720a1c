//! Acknowledging the nats source's JetStream messages: each batch's reply
//! subjects are registered until its outcome is known, then acked (written)
//! or nak'ed (redelivered after a second). While batches wait in the
//! pipeline — a slow sink, a breaker holding events — the registered
//! messages get "in progress" every half `ack_wait`, so JetStream does not
//! redeliver to another consumer what this one still holds.

use crate::core::sync::LockExt;
use crate::core::{Acks, Delivery};
use crate::telemetry::AckCounters;
use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Per batch: its messages' reply subjects and the events they held (a
/// packed message holds several; the metrics count events).
type Pending = Arc<Mutex<HashMap<u64, (Vec<Subject>, usize)>>>;

pub struct Acker {
    next_id: u64,
    pending: Pending,
    /// (batch, outcome, whether it counts in the metrics).
    tx: mpsc::UnboundedSender<(u64, Delivery, bool)>,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    pub fn start(client: Client, counters: AckCounters, ack_wait: Duration) -> Self {
        let pending = Pending::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, rx, pending.clone(), counters, ack_wait));
        Self {
            next_id: 0,
            pending,
            tx,
            task,
        }
    }

    fn register(&mut self, replies: Vec<Subject>, events: usize) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.lock_unpoisoned().insert(id, (replies, events));
        id
    }

    /// The acknowledgements of a batch of `events` made of these messages:
    /// every message is answered once the whole batch is settled.
    pub fn acks_for(&mut self, replies: Vec<Subject>, events: usize) -> Acks {
        let id = self.register(replies, events);
        let tx = self.tx.clone();
        Acks::new(move |delivery| {
            let _ = tx.send((id, delivery, true));
        })
    }

    /// Messages fetched but not taken into the pipeline: nak'ed at once
    /// (not counted: nothing failed, they were never taken).
    pub fn hand_back(&mut self, replies: Vec<Subject>) {
        let id = self.register(replies, 0);
        let _ = self.tx.send((id, Delivery::Failed, false));
    }

    /// Waits until every batch handed out is settled and its answer sent.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn run(
    client: Client,
    mut settled: mpsc::UnboundedReceiver<(u64, Delivery, bool)>,
    pending: Pending,
    counters: AckCounters,
    ack_wait: Duration,
) {
    let mut sent = false;
    let every = (ack_wait / 2).max(Duration::from_millis(500));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = settled.recv() => {
                let Some((id, delivery, counted)) = next else { break };
                let (replies, events) = pending.lock_unpoisoned().remove(&id).unwrap_or_default();
                sent = true;
                if counted {
                    counters.count(delivery == Delivery::Delivered, events);
                }
                let payload: bytes::Bytes = match delivery {
                    Delivery::Delivered => AckKind::Ack.into(),
                    // Redelivered after a second, so a failing sink is not hammered.
                    Delivery::Failed => AckKind::Nak(Some(Duration::from_secs(1))).into(),
                };
                publish(&client, replies, payload).await;
            }
            _ = progress.tick() => {
                let waiting: Vec<Subject> = pending.lock_unpoisoned().values().flat_map(|(r, _)| r).cloned().collect();
                if !waiting.is_empty() {
                    sent = true;
                    publish(&client, waiting, AckKind::Progress.into()).await;
                }
            }
        }
    }
    // Bounded: an unreachable server must not hold up shutdown.
    if sent {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    }
}

async fn publish(client: &Client, replies: Vec<Subject>, payload: bytes::Bytes) {
    for reply in replies {
        if let Err(e) = client.publish(reply, payload.clone()).await {
            tracing::warn!("acknowledging a NATS message: {e}");
        }
    }
}
