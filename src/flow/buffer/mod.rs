//! A stage's input queue: in memory (`memory`, the default) or on disk
//! (`disk`, `buffer.type: disk`, SPEC §11), behind one interface so the
//! stage drivers and fan-outs do not know which. Batches go in and out
//! whole.
//!
//! Both kinds share the semantics the stages rely on: several senders
//! (fan-in) share one receiver; `send` applies `when_full`; `recv` returns
//! `None` once the queue is closed and drained. They differ in what a
//! delivery to the queue means upstream. A memory queue passes each
//! batch's acknowledgements on with it, so the source hears of a batch
//! when the sinks wrote it. A disk queue settles them once the batch is
//! durable in its files, and is itself the acknowledging source of what it
//! hands downstream.
//!
//! Enums rather than a trait: a closed set, `match` dispatch, and no boxed
//! future per send.

pub mod disk;
pub(crate) mod memory;
pub mod storage;

use crate::config::controls::WhenFull;
use crate::core::{Acks, Batch};
use crate::telemetry::ComponentMetrics;

pub use disk::{DiskPlace, DiskRegistry};

/// Events a send could not deliver because the consumer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered(pub usize);

/// Creates a memory queue holding up to `capacity` events (at least 1)
/// and, with `max_bytes`, up to that many bytes of them.
pub fn channel(
    capacity: usize,
    max_bytes: Option<usize>,
    policy: WhenFull,
    metrics: ComponentMetrics,
) -> (BufferSender, BufferReceiver) {
    let (tx, rx) = memory::queue(capacity, max_bytes, policy, metrics);
    (BufferSender::Memory(tx), BufferReceiver::Memory(rx))
}

/// The producing side; clone it for each upstream (fan-in).
#[derive(Clone)]
pub enum BufferSender {
    Memory(memory::Sender),
    Disk(disk::Sender),
}

impl BufferSender {
    /// Whether `n` more events fit now (always true for the drop policies,
    /// which never wait). A hint for producers that answer "busy" rather
    /// than wait, like the http_server source.
    pub fn has_room(&self, n: usize) -> bool {
        match self {
            BufferSender::Memory(s) => s.has_room(n),
            BufferSender::Disk(s) => s.has_room(n),
        }
    }

    /// Queues `batch` under the queue's `when_full` policy. With `block` it
    /// waits for room; the drop policies never wait. A batch dropped by a
    /// policy releases its acknowledgements (a rule the user configured
    /// discarded it).
    pub async fn send(&self, batch: Batch, acks: Acks) -> Result<(), Undelivered> {
        match self {
            BufferSender::Memory(s) => s.send(batch, acks).await,
            BufferSender::Disk(s) => s.send(batch, acks).await,
        }
    }
}

/// The consuming side, owned by the stage.
pub enum BufferReceiver {
    Memory(memory::Receiver),
    Disk(disk::Receiver),
}

impl BufferReceiver {
    /// The next batch, small ones merged up to `MAX_BATCH` events. `None`
    /// once the queue is closed and drained.
    pub async fn recv(&mut self) -> Option<(Batch, Acks)> {
        match self {
            BufferReceiver::Memory(r) => r.recv().await,
            BufferReceiver::Disk(r) => r.recv().await,
        }
    }

    /// Events the queue holds in memory at most (`buffer.size`).
    pub fn capacity(&self) -> usize {
        match self {
            BufferReceiver::Memory(r) => r.capacity(),
            BufferReceiver::Disk(r) => r.capacity(),
        }
    }

    /// Events queued right now (for the shutdown report).
    pub fn len(&self) -> usize {
        match self {
            BufferReceiver::Memory(r) => r.len(),
            BufferReceiver::Disk(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle that reads the queue length after the receiver moved into its task.
    pub fn gauge(&self) -> BufferGauge {
        match self {
            BufferReceiver::Memory(r) => BufferGauge::Memory(r.gauge()),
            BufferReceiver::Disk(r) => BufferGauge::Disk(r.gauge()),
        }
    }
}

/// Reads how many events a stage holds: queued, or taken and not yet
/// handed on.
#[derive(Clone)]
pub enum BufferGauge {
    Memory(memory::Gauge),
    Disk(disk::Gauge),
}

impl BufferGauge {
    /// Queued, in-flight and parked events: what a shutdown deadline leaves
    /// undelivered. A disk queue counts only what it holds in memory: the
    /// rest stays in its files.
    pub fn events(&self) -> usize {
        match self {
            BufferGauge::Memory(g) => g.events(),
            BufferGauge::Disk(g) => g.events(),
        }
    }

    /// How many events the stage's keyed rate limit holds now.
    pub fn set_parked(&self, n: usize) {
        match self {
            BufferGauge::Memory(g) => g.set_parked(n),
            BufferGauge::Disk(g) => g.set_parked(n),
        }
    }

    /// The stage has handed on (or dropped by rule) `n` events it received.
    pub fn settle(&self, n: usize) {
        match self {
            BufferGauge::Memory(g) => g.settle(n),
            BufferGauge::Disk(g) => g.settle(n),
        }
    }
}
