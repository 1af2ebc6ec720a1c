//! The disk queue against real files in a temporary directory.

use super::*;
use crate::core::Delivery;
use crate::ev as json;
use crate::telemetry::DiscardReason;
use crate::telemetry::Metrics;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Opened {
    tx: Sender,
    rx: Receiver,
    metrics: ComponentMetrics,
}

fn open_at(
    dir: &std::path::Path,
    registry: &DiskRegistry,
    stop: &CancellationToken,
    size: usize,
    max_bytes: u64,
    policy: WhenFull,
) -> Opened {
    let metrics = Metrics::new().component("p", "c", "sink", "blackhole");
    let place = DiskPlace {
        dir: dir.to_path_buf(),
        registry,
        stop: stop.clone(),
    };
    let cfg = DiskConfig {
        size,
        max_bytes,
        policy,
    };
    let (tx, rx) = open(place, cfg, metrics.clone()).expect("open");
    Opened { tx, rx, metrics }
}

fn events(n: usize, start: usize) -> Batch {
    (start..start + n).map(|i| json!({ "i": i })).collect()
}

fn ids(b: &Batch) -> Vec<u64> {
    b.iter().map(|e| e["i"].as_u64().unwrap()).collect()
}

/// Receives until `n` events came, returning their ids (and dropping,
/// i.e. acknowledging, each batch unless `keep` holds on to the acks).
async fn take(rx: &mut Receiver, n: usize, keep: &mut Vec<Acks>) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        let (batch, acks) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a batch within 30 s")
            .expect("queue open");
        got.extend(ids(&batch));
        keep.push(acks);
    }
    got
}

/// Acks that count how often the source heard "delivered" / "failed".
fn counted(delivered: &Arc<AtomicUsize>, failed: &Arc<AtomicUsize>) -> Acks {
    let (d, f) = (delivered.clone(), failed.clone());
    Acks::new(move |outcome| {
        let counter = if outcome == Delivery::Delivered {
            &d
        } else {
            &f
        };
        counter.fetch_add(1, Ordering::SeqCst);
    })
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn close(registry: &DiskRegistry) {
    assert!(registry.close(Duration::from_secs(30)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_through_memory_and_disk_and_acknowledged_after_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened { tx, mut rx, .. } =
        open_at(dir.path(), &registry, &stop, 100, 64 << 20, WhenFull::Block);
    let (delivered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // 50 batches of 20 with nobody reading: the first 100 events stay in
    // the window, the rest are on disk only.
    for b in 0..50 {
        tx.send(events(20, b * 20), counted(&delivered, &failed))
            .await
            .unwrap();
    }
    wait_for("every send durable", || {
        delivered.load(Ordering::SeqCst) == 50
    });
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let mut acks = Vec::new();
    let got = take(&mut rx, 1000, &mut acks).await;
    assert_eq!(got, (0..1000).collect::<Vec<u64>>());
    // Caught up: new batches come from memory again, in order.
    tx.send(events(10, 1000), Acks::none()).await.unwrap();
    assert_eq!(
        take(&mut rx, 10, &mut acks).await,
        (1000..1010).collect::<Vec<u64>>()
    );
    drop(acks);
    drop((tx, rx));
    close(&registry);
    // Everything was acknowledged: nothing comes back.
    let Opened {
        tx,
        mut rx,
        metrics,
    } = open_at(dir.path(), &registry, &stop, 100, 64 << 20, WhenFull::Block);
    assert_eq!(metrics.buffer_events.get(), 0);
    drop(tx);
    assert!(rx.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_events_come_back_after_a_crash_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened { tx, mut rx, .. } =
        open_at(dir.path(), &registry, &stop, 50, 64 << 20, WhenFull::Block);
    for b in 0..10 {
        tx.send(events(30, b * 30), Acks::none()).await.unwrap();
    }
    // Batches handed on: the first ones acknowledged, the rest still
    // "in the sink" when the process dies.
    let mut handed = 0;
    let mut acked = 0;
    let mut in_sink = Vec::new();
    while handed < 150 {
        let (batch, acks) = rx.recv().await.unwrap();
        handed += batch.len();
        if acked + batch.len() <= 100 {
            acked += batch.len();
        } else {
            in_sink.push(acks);
        }
    }
    let shared = rx.shared.clone();
    wait_for("the ledger", || {
        shared.state.lock_unpoisoned().acked_seq == acked as u64
    });
    // A crash leaves the files as they are now: copy them.
    let crashed = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, crashed.path().join(f.file_name().unwrap())).unwrap();
    }
    drop((tx, rx, in_sink, shared));
    close(&registry);
    let Opened {
        tx,
        mut rx,
        metrics,
    } = open_at(
        crashed.path(),
        &registry,
        &stop,
        50,
        64 << 20,
        WhenFull::Block,
    );
    drop(tx);
    let mut again = Vec::new();
    while let Some((batch, _acks)) = rx.recv().await {
        again.extend(ids(&batch));
    }
    // Every event not acknowledged comes again, in order, once.
    assert_eq!(again, (acked as u64..300).collect::<Vec<u64>>());
    let redelivered = metrics.disk_buffer().redelivered.get();
    let repeats = (handed - acked) as u64;
    assert!(
        redelivered >= repeats,
        "repeats ({repeats}) are counted as redelivered ({redelivered})"
    );
    drop(rx);
    close(&registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_range_is_delivered_again_after_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened {
        tx,
        mut rx,
        metrics,
        ..
    } = open_at(dir.path(), &registry, &stop, 100, 64 << 20, WhenFull::Block);
    tx.send(events(10, 0), Acks::none()).await.unwrap();
    let (batch, acks) = rx.recv().await.unwrap();
    assert_eq!(ids(&batch), (0..10).collect::<Vec<u64>>());
    acks.fail();
    drop(acks);
    let started = Instant::now();
    let (batch, acks) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&batch), (0..10).collect::<Vec<u64>>());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(metrics.disk_buffer().redelivered.get(), 10);
    drop(acks);
    drop((tx, rx));
    close(&registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_sheds_at_max_bytes_and_block_waits_for_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened {
        tx,
        mut rx,
        metrics,
        ..
    } = open_at(
        dir.path(),
        &registry,
        &stop,
        100,
        1 << 20,
        WhenFull::DropNewest,
    );
    let big = |i: usize| -> Batch {
        (0..100)
            .map(|k| json!({ "i": i * 100 + k, "pad": "x".repeat(1000) }))
            .collect()
    };
    for b in 0..30 {
        tx.send(big(b), Acks::none()).await.unwrap();
        // Let the writes land, so the byte count is what is on disk.
        wait_for("written", || {
            tx.shared.state.lock_unpoisoned().pending_bytes == 0
        });
    }
    let shed = metrics.families_discarded(DiscardReason::BufferFull);
    assert!(
        shed > 1000,
        "about 2 MB sent to a 1 MiB buffer: {shed} shed"
    );
    let disk = tx.shared.state.lock_unpoisoned().disk_bytes;
    assert!(disk <= 1 << 20, "files hold {disk} bytes");
    drop((tx, rx.recv()));
    drop(rx);
    close(&registry);

    // `block`: a full buffer makes the producer wait until the consumer
    // acknowledges enough for a segment to go.
    let dir = tempfile::tempdir().unwrap();
    let Opened { tx, mut rx, .. } =
        open_at(dir.path(), &registry, &stop, 100, 1 << 20, WhenFull::Block);
    let producer = tokio::spawn(async move {
        for b in 0..30 {
            tx.send(big(b), Acks::none()).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!producer.is_finished(), "3 MB cannot fit in 1 MiB");
    let mut got = Vec::new();
    while got.len() < 3000 {
        let (batch, acks) = rx.recv().await.unwrap();
        got.extend(ids(&batch));
        drop(acks);
    }
    producer.await.unwrap();
    assert_eq!(got, (0..3000).collect::<Vec<u64>>());
    drop(rx);
    close(&registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_attaches_to_the_open_buffer_and_loses_or_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened { tx, mut rx, .. } =
        open_at(dir.path(), &registry, &stop, 100, 64 << 20, WhenFull::Block);
    for b in 0..20 {
        tx.send(events(50, b * 50), Acks::none()).await.unwrap();
    }
    let mut acks = Vec::new();
    let first = take(&mut rx, 200, &mut acks).await;
    // The stage is rebuilt: a second open of the directory attaches.
    let again = open_at(dir.path(), &registry, &stop, 300, 64 << 20, WhenFull::Block);
    assert!(rx.recv().await.is_none(), "the old receiver ends");
    drop((tx, rx));
    let (tx2, mut rx2) = (again.tx, again.rx);
    tx2.send(events(50, 1000), Acks::none()).await.unwrap();
    let rest = take(&mut rx2, 850, &mut acks).await;
    let all: Vec<u64> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (0..1050).collect::<Vec<u64>>());
    drop((tx2, rx2, acks));
    close(&registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_the_backlog_on_disk_and_a_natural_end_drains_it() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, stop) = (DiskRegistry::default(), CancellationToken::new());
    let Opened { tx, mut rx, .. } =
        open_at(dir.path(), &registry, &stop, 10, 64 << 20, WhenFull::Block);
    for b in 0..100 {
        tx.send(events(10, b * 10), Acks::none()).await.unwrap();
    }
    stop.cancel();
    drop(tx);
    let mut first = Vec::new();
    while let Some((batch, _acks)) = rx.recv().await {
        first.extend(ids(&batch));
    }
    assert!(first.len() < 1000, "a stop does not drain the files");
    drop(rx);
    close(&registry);
    let stop = CancellationToken::new();
    let Opened {
        tx,
        mut rx,
        metrics,
    } = open_at(dir.path(), &registry, &stop, 10, 64 << 20, WhenFull::Block);
    assert_eq!(metrics.buffer_events.get() as usize, 1000 - first.len());
    drop(tx);
    let mut rest = Vec::new();
    while let Some((batch, _acks)) = rx.recv().await {
        rest.extend(ids(&batch));
    }
    // Sources gone on their own: everything is drained, nothing twice.
    let all: Vec<u64> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (0..1000).collect::<Vec<u64>>());
    assert_eq!(metrics.disk_buffer().redelivered.get(), 0);
    drop(rx);
    close(&registry);
}

#[test]
fn a_second_process_cannot_open_a_buffer_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let stop = CancellationToken::new();
    let one = DiskRegistry::default();
    let _open = open_at(dir.path(), &one, &stop, 10, 1 << 20, WhenFull::Block);
    let other = DiskRegistry::default();
    let place = DiskPlace {
        dir: dir.path().to_path_buf(),
        registry: &other,
        stop,
    };
    let cfg = DiskConfig {
        size: 10,
        max_bytes: 1 << 20,
        policy: WhenFull::Block,
    };
    let metrics = Metrics::new().component("p", "c", "sink", "blackhole");
    let err = open(place, cfg, metrics).err().expect("locked");
    assert!(err.to_string().contains("in use"), "{err}");
}
