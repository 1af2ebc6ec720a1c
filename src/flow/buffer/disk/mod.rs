//! The disk queue (`buffer.type: disk`, SPEC §11): a stage's input queue
//! kept in `<data-dir>/<pipeline>/<component>/` (`storage`), the design in
//! `docs/disk-buffers.md`.
//!
//! - **Durable before acknowledged upstream.** A sent batch is encoded on
//!   the producer's task and handed to the buffer's I/O thread (`io`); its
//!   upstream acknowledgements are released after the fsync that made it
//!   durable (group commit every `io::SYNC_INTERVAL`, 10 ms).
//! - **Delivered from memory while it keeps up.** A batch that fits the
//!   in-memory window (`buffer.size` events) also stays there and goes
//!   downstream without being read back or parsed, possibly before its
//!   fsync. Once the window is full, batches go to disk only and the
//!   receiver reads them back in order (`receive`), a bounded number at a
//!   time: memory stays bounded whatever the backlog.
//! - **Removed only when acknowledged downstream.** The buffer is the
//!   acknowledging source of what it hands on: each delivered range carries
//!   its own `Acks`; the acknowledged prefix (`acked`) goes into the
//!   ledger, and wholly acknowledged segments are deleted. A range a sink
//!   gave up on (`Failed`) is read from disk again after a backoff.
//! - **Kept across a reload.** A process-wide `DiskRegistry` hands a stage
//!   rebuilt on the same directory the buffer already open; the old
//!   receiver ends (a newer generation took over) and the new one goes on
//!   from the same place.

mod acked;
mod io;
mod receive;
mod send;

pub use receive::{Gauge, Receiver};
pub use send::Sender;

use super::storage::{EncodedBatch, ReadOutcome, Store, StoreError};
use crate::config::controls::WhenFull;
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch, MAX_BATCH};
use crate::telemetry::ComponentMetrics;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Encoded bytes handed to the I/O thread and not yet written, past which
/// producers wait (the disk is slower than they are).
const PENDING_MAX: u64 = 8 << 20;

/// How long a producer waits for room in the in-memory window (while the
/// consumer keeps up) before its batch goes to disk only. Short, but
/// longer than a commit (the receiver may be waiting for the handed mark):
/// a consumer that keeps up takes a batch within it, and then nothing is
/// read back from disk or parsed again; one that does not is not waited
/// for, the backlog goes to the files.
const SPILL_WAIT: Duration = Duration::from_millis(25);

/// What a disk queue is opened with.
pub struct DiskConfig {
    /// Events held in memory at most (`buffer.size`).
    pub size: usize,
    /// Segment file bytes on disk at most (`buffer.max_bytes`).
    pub max_bytes: u64,
    pub policy: WhenFull,
}

/// Where a disk queue lives and what it answers to.
pub struct DiskPlace<'a> {
    /// `<data-dir>/<pipeline>/<component>`.
    pub dir: PathBuf,
    pub registry: &'a DiskRegistry,
    /// The pipeline's stop signal: once it is given and the producers are
    /// gone, the receiver ends with what it holds in memory and leaves the
    /// rest on disk (durable) instead of draining it all.
    pub stop: CancellationToken,
}

/// The disk buffers open in this process, by directory: a stage rebuilt
/// by a reload attaches to its buffer instead of opening it again (it
/// could not: the directory is locked while open).
#[derive(Clone, Default)]
pub struct DiskRegistry {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    open: HashMap<PathBuf, Weak<Shared>>,
    threads: Vec<(PathBuf, std::thread::JoinHandle<()>)>,
}

impl DiskRegistry {
    /// Waits up to `deadline` for every buffer's I/O thread to write its
    /// last sync and ledger (each ends once its queue and every
    /// acknowledgement downstream are gone). Returns the directories whose
    /// thread had not finished. Blocking: call it off the async runtime.
    pub fn close(&self, deadline: Duration) -> Vec<PathBuf> {
        let threads = std::mem::take(&mut self.inner.lock_unpoisoned().threads);
        let until = Instant::now() + deadline;
        let mut late = Vec::new();
        for (dir, thread) in threads {
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                late.push(dir);
            }
        }
        late
    }
}

/// Commands to the I/O thread, in one channel: order is seq order.
pub(super) enum Cmd {
    Append {
        batch: EncodedBatch,
        upstream: Acks,
    },
    Read {
        from: u64,
        max: usize,
        reply: tokio::sync::oneshot::Sender<Fetched>,
    },
    /// A delivered range settled downstream.
    Settled {
        range: Range<u64>,
        delivered: bool,
    },
    /// Raise the ledger's handed mark to at least this seq.
    Handed(u64),
    /// Set the handed mark to exactly this seq.
    HandedThrough(u64),
    MaxBytes(u64),
}

/// What a read brought back: raw payloads with their seqs.
pub(super) struct Fetched {
    pub records: Vec<(u64, Vec<u8>)>,
    pub outcome: ReadOutcome,
}

/// The state the front and the I/O thread share, under one lock taken once
/// per batch.
pub(super) struct State {
    pub capacity: usize,
    pub max_bytes: u64,
    pub policy: WhenFull,
    /// The seq the next sent event gets.
    pub next_seq: u64,
    /// The next seq the receiver hands on; the window, when not empty,
    /// holds the batches from here on.
    pub deliver_seq: u64,
    pub window: VecDeque<Batch>,
    pub window_events: usize,
    /// Segment file bytes, as of the last commit.
    pub disk_bytes: u64,
    /// Encoded bytes sent to the thread and not yet written.
    pub pending_bytes: u64,
    /// Unacknowledged events in the files, as of the last commit.
    pub stored_events: u64,
    pub acked_seq: u64,
    /// The receiver may hand on events up to this seq (the ledger's mark).
    pub handed_limit: u64,
    /// The highest mark asked for.
    pub handed_asked: u64,
    /// How far ahead of what is handed on the mark is asked for.
    pub handed_ahead: u64,
    /// Events up to this seq were handed on before the process started:
    /// reading them again counts as redelivery.
    pub replayed_through: u64,
    /// Ranges a sink gave up on, to read again at `redo_at`.
    pub redo: VecDeque<Range<u64>>,
    pub redo_at: Option<Instant>,
    pub redo_backoff: Duration,
    /// A read of the backlog is under way.
    pub reading: bool,
    pub senders: usize,
    /// The receiver that may take batches; older ones end.
    pub generation: u64,
    pub in_flight: usize,
    pub parked: usize,
    /// Mean encoded bytes per event, for `has_room`.
    pub mean_event: u64,
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    pub io: mpsc::Sender<Cmd>,
    /// Wakes the receiver: a batch arrived, a sender left, a range is to
    /// be redelivered, the handed mark moved, a newer receiver took over.
    pub filled: Notify,
    /// Wakes blocked senders: bytes freed or written.
    pub room: Notify,
    pub metrics: ComponentMetrics,
    pub bytes_gauge: prometheus::IntGauge,
    pub capacity_bytes_gauge: prometheus::IntGauge,
    pub redelivered: prometheus::IntCounter,
    pub dir: PathBuf,
}

impl Shared {
    /// Updates the gauges from `state` (under its lock).
    pub fn show(&self, state: &State) {
        let unacked = state.next_seq - 1 - state.acked_seq.min(state.next_seq - 1);
        self.metrics.buffer_events.set(unacked as i64);
        self.bytes_gauge
            .set((state.disk_bytes + state.pending_bytes) as i64);
        self.capacity_bytes_gauge.set(state.max_bytes as i64);
    }

    /// A range a sink gave up on: read it again after the backoff.
    pub fn redeliver(&self, range: Range<u64>) {
        {
            let mut state = self.state.lock_unpoisoned();
            state.redo.push_back(range);
            if state.redo_at.is_none() {
                let backoff = state.redo_backoff;
                state.redo_at = Some(Instant::now() + backoff);
                state.redo_backoff = (backoff * 2).min(REDO_BACKOFF_MAX);
            }
        }
        self.filled.notify_waiters();
    }
}

/// First wait before a failed range is delivered again; it doubles while
/// deliveries keep failing, up to `REDO_BACKOFF_MAX`.
pub(super) const REDO_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const REDO_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Opens (or, on a reload, attaches to) the disk queue at `place.dir`.
/// Fails only when the directory cannot be created, locked or read.
pub fn open(
    place: DiskPlace<'_>,
    cfg: DiskConfig,
    metrics: ComponentMetrics,
) -> Result<(Sender, Receiver), StoreError> {
    let mut registry = place.registry.inner.lock_unpoisoned();
    if let Some(shared) = registry.open.get(&place.dir).and_then(Weak::upgrade) {
        return Ok(attach(shared, cfg, place.stop));
    }
    let (store, opened) = Store::open(&place.dir, cfg.max_bytes)?;
    if opened.events > 0 || opened.corrupt > 0 {
        tracing::info!(
            buffer = %place.dir.display(),
            events = opened.events,
            bytes = opened.bytes,
            corrupt = opened.corrupt,
            "disk buffer opened with events from before"
        );
    }
    metrics.buffer_capacity.set(cfg.size.max(1) as i64);
    let (bytes_gauge, capacity_bytes_gauge) = metrics.buffer_byte_gauges();
    let disk = metrics.disk_buffer();
    disk.corrupt.inc_by(opened.corrupt);
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            capacity: cfg.size.max(1),
            max_bytes: cfg.max_bytes,
            policy: cfg.policy,
            next_seq: opened.next_seq,
            deliver_seq: opened.acked_seq + 1,
            window: VecDeque::new(),
            window_events: 0,
            disk_bytes: opened.bytes,
            pending_bytes: 0,
            stored_events: opened.events,
            acked_seq: opened.acked_seq,
            handed_limit: opened.handed_seq,
            handed_asked: opened.handed_seq,
            handed_ahead: (cfg.size.max(MAX_BATCH) * 16) as u64,
            replayed_through: opened.handed_seq.min(opened.next_seq - 1),
            redo: VecDeque::new(),
            redo_at: None,
            redo_backoff: REDO_BACKOFF,
            reading: false,
            senders: 1,
            generation: 0,
            in_flight: 0,
            parked: 0,
            mean_event: 256,
        }),
        io: tx,
        filled: Notify::new(),
        room: Notify::new(),
        metrics: metrics.clone(),
        bytes_gauge,
        capacity_bytes_gauge,
        redelivered: disk.redelivered,
        dir: place.dir.clone(),
    });
    shared.show(&shared.state.lock_unpoisoned());
    let io = io::Io {
        prefix: acked::Prefix::new(opened.acked_seq),
        handed_wanted: opened.handed_seq,
        store,
        shared: Arc::downgrade(&shared),
        metrics,
        corrupt: disk.corrupt,
        upstream: VecDeque::new(),
    };
    let name = format!(
        "buffer:{}",
        place.dir.file_name().unwrap_or_default().to_string_lossy()
    );
    let thread = io::spawn(io, rx, name);
    registry
        .open
        .insert(place.dir.clone(), Arc::downgrade(&shared));
    registry.threads.push((place.dir, thread));
    Ok((
        Sender {
            shared: shared.clone(),
        },
        Receiver::new(shared, 0, place.stop),
    ))
}

/// A reload: a new sender and a receiver of the next generation on the
/// buffer already open; the new size, limit and policy apply from now on.
fn attach(shared: Arc<Shared>, cfg: DiskConfig, stop: CancellationToken) -> (Sender, Receiver) {
    let generation = {
        let mut state = shared.state.lock_unpoisoned();
        state.generation += 1;
        state.senders += 1;
        state.capacity = cfg.size.max(1);
        state.policy = cfg.policy;
        if state.max_bytes != cfg.max_bytes {
            state.max_bytes = cfg.max_bytes;
            let _ = shared.io.send(Cmd::MaxBytes(cfg.max_bytes));
        }
        shared.metrics.buffer_capacity.set(state.capacity as i64);
        shared.show(&state);
        state.generation
    };
    shared.filled.notify_waiters();
    shared.room.notify_waiters();
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver::new(shared, generation, stop),
    )
}

#[cfg(test)]
mod tests;
