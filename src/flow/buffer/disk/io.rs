//! The I/O thread of one disk buffer: the only owner of its `Store`. It
//! takes commands in order from one channel, so appends land in seq order
//! and a read sees every append sent before it.
//!
//! Group commit: an fsync starts when something is unsynced and
//! `SYNC_INTERVAL` has passed since the last one started; one fsync covers
//! every append made meanwhile. Upstream acknowledgements are released
//! right after the fsync that made their events durable. The ledger
//! (acknowledged prefix, handed mark) is written in the same cycle.
//!
//! The thread ends when every holder of the command channel is gone (the
//! queue's ends and every acknowledgement still in flight downstream),
//! after a last sync and ledger write.

use super::acked::Prefix;
use super::{Cmd, Fetched, Shared};
use crate::core::Acks;
use crate::core::sync::LockExt;
use crate::flow::buffer::storage::{Store, StoreError};
use crate::telemetry::ComponentMetrics;
use std::collections::VecDeque;
use std::sync::Weak;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The group-commit interval (SPEC §11 allows up to 100 ms).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// Commands handled before a due commit is looked at again.
const COMMANDS_PER_ROUND: usize = 256;

pub(super) struct Io {
    pub store: Store,
    pub shared: Weak<Shared>,
    pub metrics: ComponentMetrics,
    pub corrupt: prometheus::IntCounter,
    /// Upstream acknowledgements waiting for a sync: the last seq of
    /// their append, in seq order.
    pub upstream: VecDeque<(u64, Acks)>,
    pub prefix: Prefix,
    /// The handed mark the front asked for.
    pub handed_wanted: u64,
}

impl Io {
    pub fn run(mut self, rx: Receiver<Cmd>) {
        let mut last_commit = Instant::now();
        loop {
            let wait = if self.has_work() {
                SYNC_INTERVAL.saturating_sub(last_commit.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(cmd) => {
                    self.handle(cmd);
                    for cmd in rx.try_iter().take(COMMANDS_PER_ROUND) {
                        self.handle(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.has_work() && last_commit.elapsed() >= SYNC_INTERVAL {
                last_commit = Instant::now();
                self.commit();
            }
        }
        self.commit();
        tracing::debug!(buffer = %self.store.dir().display(), "disk buffer closed");
    }

    fn has_work(&self) -> bool {
        self.store.needs_sync()
            || !self.upstream.is_empty()
            || self.prefix.through() > self.store.acked_seq()
            || self.handed_wanted != self.store.handed_seq()
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Append { batch, upstream } => {
                let bytes = batch.disk_bytes() as u64;
                match self.store.append(&batch) {
                    Ok(seqs) => {
                        if !upstream.is_empty() {
                            self.upstream.push_back((seqs.end - 1, upstream));
                        }
                    }
                    Err(e) => {
                        // Void seqs: the source hears "failed" and sends again.
                        upstream.fail();
                        self.io_error(&e, batch.len());
                    }
                }
                let on_disk = self.store.bytes();
                self.publish(|s| {
                    s.pending_bytes = s.pending_bytes.saturating_sub(bytes);
                    s.disk_bytes = on_disk;
                });
            }
            Cmd::Read { from, max, reply } => {
                let mut records = Vec::new();
                let outcome = self.store.read(from, max, &mut records);
                self.corrupt.inc_by(outcome.corrupt);
                for gap in &outcome.gaps {
                    self.prefix.settle(gap.clone());
                }
                let _ = reply.send(Fetched { records, outcome });
            }
            Cmd::Settled { range, delivered } => {
                if delivered {
                    self.prefix.settle(range);
                } else if let Some(shared) = self.shared.upgrade() {
                    shared.redeliver(range);
                }
            }
            Cmd::Handed(mark) => self.handed_wanted = self.handed_wanted.max(mark),
            // The receiver ended: what it really handed on, not the mark it
            // asked for ahead, so a clean restart counts no redelivery.
            Cmd::HandedThrough(seq) => self.handed_wanted = seq,
            Cmd::MaxBytes(max) => self.store.set_max_bytes(max),
        }
    }

    /// Sync, release what became durable, write the ledger, free segments.
    fn commit(&mut self) {
        if self.store.needs_sync() {
            match self.store.sync() {
                Ok(durable) => {
                    while self
                        .upstream
                        .front()
                        .is_some_and(|(last, _)| *last <= durable)
                    {
                        // Dropping the acks tells the source "delivered".
                        self.upstream.pop_front();
                    }
                }
                Err(e) => {
                    let n = self.upstream.len();
                    for (_, acks) in self.upstream.drain(..) {
                        acks.fail();
                    }
                    self.io_error(&e, n);
                }
            }
        } else {
            // Appends that failed left nothing to sync; what is left was
            // synced by an earlier commit.
            let durable = self.store.durable_through();
            while self
                .upstream
                .front()
                .is_some_and(|(last, _)| *last <= durable)
            {
                self.upstream.pop_front();
            }
        }
        let (acked, handed) = (self.prefix.through(), self.handed_wanted);
        if (acked > self.store.acked_seq() || handed != self.store.handed_seq())
            && let Err(e) = self.store.record(acked, handed)
        {
            self.io_error(&e, 0);
        }
        let (bytes, events, handed, acked) = (
            self.store.bytes(),
            self.store.events(),
            self.store.handed_seq(),
            self.store.acked_seq(),
        );
        self.publish(|s| {
            s.disk_bytes = bytes;
            s.stored_events = events;
            s.handed_limit = handed;
            s.acked_seq = acked;
        });
    }

    /// Applies `f` to the front's state, updates the gauges and wakes
    /// whoever waits on room or on the handed mark.
    fn publish(&self, f: impl FnOnce(&mut super::State)) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        {
            let mut state = shared.state.lock_unpoisoned();
            f(&mut state);
            shared.show(&state);
        }
        shared.room.notify_waiters();
        shared.filled.notify_waiters();
    }

    fn io_error(&self, e: &StoreError, events: usize) {
        tracing::error!(
            pipeline = %self.metrics_pipeline(),
            component = %self.metrics.name(),
            "disk buffer: {e}"
        );
        self.metrics.errors("io", events.max(1));
    }

    fn metrics_pipeline(&self) -> String {
        self.store
            .dir()
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Starts the thread of an opened store.
pub(super) fn spawn(io: Io, rx: Receiver<Cmd>, name: String) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || io.run(rx))
        .expect("spawning a disk buffer thread")
}
