//! The queue's tests, and helpers the fan-out's tests use too.

use super::*;
use crate::ev as json;
use crate::flow::buffer::{BufferReceiver, BufferSender, channel};
use crate::telemetry::Metrics;

/// `n` events `{"i": start..}`.
pub(in crate::flow) fn events(n: usize, start: usize) -> Batch {
    (start..start + n).map(|i| json!({ "i": i })).collect()
}

fn ids(b: &Batch) -> Vec<u64> {
    b.iter().map(|e| e["i"].as_u64().unwrap()).collect()
}

/// A queue of `cap` events feeding a sink, with its metrics.
pub(in crate::flow) fn make(
    cap: usize,
    policy: WhenFull,
) -> (BufferSender, BufferReceiver, ComponentMetrics) {
    let m = Metrics::new().component("p", "c", "sink", "blackhole");
    let (tx, rx) = channel(cap, None, policy, m.clone());
    (tx, rx, m)
}

#[tokio::test]
async fn block_waits_for_room_and_loses_nothing() {
    let (tx, mut rx, _) = make(10, WhenFull::Block);
    tx.send(events(10, 0), Acks::none()).await.unwrap();
    let tx2 = tx.clone();
    let pending = tokio::spawn(async move { tx2.send(events(5, 10), Acks::none()).await });
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "a full queue must block the sender");
    assert_eq!(rx.len(), 10);
    assert_eq!(
        ids(&rx.recv().await.unwrap().0),
        (0..10).collect::<Vec<_>>()
    );
    pending.await.unwrap().unwrap();
    drop(tx);
    assert_eq!(
        ids(&rx.recv().await.unwrap().0),
        (10..15).collect::<Vec<_>>()
    );
    assert!(rx.recv().await.is_none());
}

fn make_bytes(
    cap: usize,
    max_bytes: usize,
    policy: WhenFull,
) -> (BufferSender, BufferReceiver, ComponentMetrics) {
    let m = Metrics::new().component("p", "c", "sink", "blackhole");
    let (tx, rx) = channel(cap, Some(max_bytes), policy, m.clone());
    (tx, rx, m)
}

#[tokio::test]
async fn max_bytes_blocks_at_whichever_limit_comes_first() {
    // `{"i":0}` is 7 bytes: 20 bytes hold two such events.
    let (tx, mut rx, _) = make_bytes(100, 20, WhenFull::Block);
    tx.send(events(2, 0), Acks::none()).await.unwrap();
    let tx2 = tx.clone();
    let pending = tokio::spawn(async move { tx2.send(events(1, 2), Acks::none()).await });
    tokio::task::yield_now().await;
    assert!(!pending.is_finished(), "14 + 7 bytes is over 20");
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1]);
    pending.await.unwrap().unwrap();
    // A batch over the byte limit goes in parts that fit: 5 events, 2 per part.
    let tx3 = tx.clone();
    let big = tokio::spawn(async move { tx3.send(events(5, 3), Acks::none()).await });
    let mut got = ids(&rx.recv().await.unwrap().0);
    while got.len() < 6 {
        let (b, _) = rx.recv().await.unwrap();
        assert!(b.len() <= 3, "at most 20 bytes queued at once: {b:?}");
        got.extend(ids(&b));
    }
    big.await.unwrap().unwrap();
    assert_eq!(got, (2..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_event_larger_than_max_bytes_passes_alone() {
    let (tx, mut rx, _) = make_bytes(100, 4, WhenFull::Block);
    tx.send(events(1, 0), Acks::none()).await.unwrap();
    let tx2 = tx.clone();
    let second = tokio::spawn(async move { tx2.send(events(1, 1), Acks::none()).await });
    tokio::task::yield_now().await;
    assert!(!second.is_finished(), "it waits for the queue to empty");
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0]);
    second.await.unwrap().unwrap();
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![1]);
}

#[tokio::test]
async fn max_bytes_drop_policies_shed_by_bytes() {
    let (tx, mut rx, m) = make_bytes(100, 20, WhenFull::DropNewest);
    tx.send(events(5, 0), Acks::none()).await.unwrap();
    drop(tx);
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1]);
    assert!(rx.recv().await.is_none());
    assert_eq!(m.families_discarded(DiscardReason::BufferFull), 3);

    let (tx, mut rx, m) = make_bytes(100, 20, WhenFull::DropOldest);
    tx.send(events(2, 0), Acks::none()).await.unwrap();
    tx.send(events(1, 2), Acks::none()).await.unwrap();
    tx.send(events(1, 3), Acks::none()).await.unwrap();
    drop(tx);
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![2, 3]);
    assert_eq!(m.families_discarded(DiscardReason::BufferFull), 2);
}

#[tokio::test]
async fn drop_newest_keeps_the_first_events() {
    let (tx, mut rx, m) = make(4, WhenFull::DropNewest);
    tx.send(events(3, 0), Acks::none()).await.unwrap();
    tx.send(events(3, 3), Acks::none()).await.unwrap();
    drop(tx);
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![0, 1, 2, 3]);
    assert!(rx.recv().await.is_none());
    assert_eq!(m.families_discarded(DiscardReason::BufferFull), 2);
}

#[tokio::test]
async fn drop_oldest_keeps_the_latest_events() {
    let (tx, mut rx, m) = make(4, WhenFull::DropOldest);
    tx.send(events(3, 0), Acks::none()).await.unwrap();
    tx.send(events(3, 3), Acks::none()).await.unwrap();
    tx.send(events(6, 6), Acks::none()).await.unwrap();
    drop(tx);
    assert_eq!(ids(&rx.recv().await.unwrap().0), vec![8, 9, 10, 11]);
    assert_eq!(m.families_discarded(DiscardReason::BufferFull), 8);
}

/// Acks recording their outcome under `name`.
fn recorded(
    seen: &Arc<Mutex<Vec<(&'static str, crate::core::Delivery)>>>,
    name: &'static str,
) -> Acks {
    let seen = seen.clone();
    Acks::new(move |d| seen.lock().unwrap().push((name, d)))
}

#[tokio::test]
async fn a_dead_receiver_fails_what_it_queued_and_every_later_send() {
    use crate::core::Delivery::Failed;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx, m) = make(4, WhenFull::Block);
    tx.send(events(2, 0), recorded(&seen, "a")).await.unwrap();
    tx.send(events(2, 2), recorded(&seen, "b")).await.unwrap();
    let blocked = {
        let (tx, acks) = (tx.clone(), recorded(&seen, "c"));
        tokio::spawn(async move { tx.send(events(1, 4), acks).await })
    };
    tokio::task::yield_now().await;
    assert!(!blocked.is_finished(), "the queue is full");
    // The stage ends abnormally; `tx` (an upstream) keeps the queue.
    drop(rx);
    assert_eq!(blocked.await.unwrap(), Err(Undelivered(1)));
    assert_eq!(
        tx.send(events(3, 5), recorded(&seen, "d")).await,
        Err(Undelivered(3))
    );
    let mut outcomes = seen.lock().unwrap().clone();
    outcomes.sort_by_key(|(name, _)| *name);
    assert_eq!(
        outcomes,
        vec![("a", Failed), ("b", Failed), ("c", Failed), ("d", Failed)],
        "what the queue held and what came later are failed, none waits"
    );
    assert_eq!(m.families_discarded(DiscardReason::Error), 4);
}

#[tokio::test]
async fn oversized_batches_split_and_dead_receiver_reports_undelivered() {
    let (tx, mut rx, _) = make(3, WhenFull::Block);
    let send = tokio::spawn(async move {
        let r = tx.send(events(7, 0), Acks::none()).await;
        (r, tx)
    });
    assert_eq!(rx.recv().await.unwrap().0.len(), 3);
    assert_eq!(rx.recv().await.unwrap().0.len(), 3);
    drop(rx);
    let (r, _tx) = send.await.unwrap();
    assert_eq!(r, Err(Undelivered(1)));
}
