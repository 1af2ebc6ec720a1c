//! The receiving side of a disk queue: batches from the in-memory window
//! while it keeps up, else read back from the files in order, and ranges a
//! sink gave up on read again after a backoff. Every batch handed on
//! carries acknowledgements of its own seq range.
//!
//! `recv` is cancel-safe (the stage drivers call it under `select!` and
//! `timeout_at`): a read of the files under way is kept in the receiver
//! and awaited again by the next call, so nothing is read twice or lost.

use super::{Cmd, Fetched, REDO_BACKOFF, Shared, State};
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch, Delivery, MAX_BATCH, from_json};
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::Instant;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A read of the files: where from, what it may cover, why.
#[derive(Debug, Clone)]
struct ReadOf {
    from: u64,
    /// Records at or past it belong to someone else (a redelivery's range).
    end: u64,
    redo: bool,
}

enum Step {
    Hand(Vec<Batch>, Range<u64>),
    Read(ReadOf, usize),
    Wait(Option<Instant>),
    End,
}

/// The consuming side, owned by the stage.
pub struct Receiver {
    pub(super) shared: Arc<Shared>,
    generation: u64,
    stop: CancellationToken,
    reading: Option<(ReadOf, oneshot::Receiver<Fetched>)>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // What the window holds is on disk too: a later receiver reads it
        // from there. A newer receiver owns the window already.
        let mut state = self.shared.state.lock_unpoisoned();
        if let Some((of, _)) = self.reading.take() {
            // Its reply is lost with it: read that again.
            state.reading = false;
            if of.redo {
                state.redo.push_front(of.from..of.end);
                state.redo_at.get_or_insert_with(Instant::now);
            }
        }
        if state.generation == self.generation {
            state.window.clear();
            state.window_events = 0;
            state.in_flight = 0;
            state.reading = false;
            state.handed_asked = state.deliver_seq - 1;
            let _ = self
                .shared
                .io
                .send(Cmd::HandedThrough(state.deliver_seq - 1));
        }
    }
}

impl Receiver {
    pub(super) fn new(shared: Arc<Shared>, generation: u64, stop: CancellationToken) -> Self {
        Self {
            shared,
            generation,
            stop,
            reading: None,
        }
    }

    /// The next batch. `None` once a newer receiver took over (a reload),
    /// or the producers are gone and either everything was handed on or
    /// the pipeline is stopping (the rest stays on disk for the next start).
    pub async fn recv(&mut self) -> Option<(Batch, Acks)> {
        loop {
            if let Some((of, reply)) = &mut self.reading {
                let fetched = reply.await;
                let of = of.clone();
                self.reading = None;
                match fetched {
                    Ok(fetched) => match self.take_read(of, fetched) {
                        Some(out) => return Some(out),
                        None => continue,
                    },
                    // The I/O thread is gone: nothing more can be read.
                    Err(_) => return None,
                }
            }
            let filled = self.shared.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            let step = self.next_step();
            match step {
                Step::Hand(batches, range) => {
                    let mut batches = batches.into_iter();
                    let mut batch = batches.next().unwrap_or_default();
                    for more in batches {
                        batch.extend(more);
                    }
                    return Some((batch, self.acks_for(range, false)));
                }
                Step::Read(of, max) => {
                    let (tx, rx) = oneshot::channel();
                    let read = Cmd::Read {
                        from: of.from,
                        max,
                        reply: tx,
                    };
                    if self.shared.io.send(read).is_err() {
                        return None;
                    }
                    self.reading = Some((of, rx));
                }
                Step::Wait(None) => filled.await,
                Step::Wait(Some(at)) => {
                    tokio::select! {
                        _ = filled => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                Step::End => return None,
            }
        }
    }

    /// Under the lock: what to do next.
    fn next_step(&self) -> Step {
        let shared = &*self.shared;
        let mut state = shared.state.lock_unpoisoned();
        if state.generation != self.generation {
            return Step::End;
        }
        self.ask_handed(&mut state);
        if !state.window.is_empty() {
            return self.take_window(&mut state);
        }
        let producers = state.senders > 0;
        if !producers && self.stop.is_cancelled() {
            return Step::End;
        }
        if state.reading {
            return Step::Wait(None);
        }
        let now = Instant::now();
        // Redeliveries only while the pipeline runs: a drain at the end
        // leaves them on disk rather than retrying a sink forever.
        if producers && state.redo_at.is_some_and(|at| at <= now) {
            if let Some(range) = state.redo.pop_front() {
                if state.redo.is_empty() {
                    state.redo_at = None;
                }
                state.reading = true;
                let max = (range.end - range.start) as usize;
                let of = ReadOf {
                    from: range.start,
                    end: range.end,
                    redo: true,
                };
                return Step::Read(of, max);
            }
            state.redo_at = None;
        }
        if state.deliver_seq < state.next_seq {
            let room = (state.handed_limit + 1).saturating_sub(state.deliver_seq) as usize;
            let max = state.capacity.min(MAX_BATCH).min(room);
            if max == 0 {
                return mark_reached(&mut state);
            }
            state.reading = true;
            let of = ReadOf {
                from: state.deliver_seq,
                end: u64::MAX,
                redo: false,
            };
            return Step::Read(of, max);
        }
        if !producers {
            if !state.redo.is_empty() {
                tracing::warn!(
                    buffer = %shared.dir.display(),
                    "disk buffer: events a sink gave up on stay on disk for the next start"
                );
            }
            return Step::End;
        }
        Step::Wait(if producers { state.redo_at } else { None })
    }

    /// Keeps the ledger's handed mark ahead of what is handed on, asking
    /// before it is reached so the receiver rarely waits for it.
    fn ask_handed(&self, state: &mut State) {
        let ahead = state.handed_ahead;
        let want = state.deliver_seq - 1 + ahead;
        if state.handed_asked < state.deliver_seq - 1 + ahead / 2 {
            state.handed_asked = want;
            let _ = self.shared.io.send(Cmd::Handed(want));
        }
    }

    fn take_window(&self, state: &mut State) -> Step {
        let mut batches = Vec::new();
        let mut n = 0;
        while let Some(front) = state.window.front() {
            let len = front.len();
            let past_mark = state.deliver_seq + (n + len) as u64 - 1 > state.handed_limit;
            if (n > 0 && n + len > MAX_BATCH) || past_mark {
                break;
            }
            batches.extend(state.window.pop_front());
            n += len;
        }
        if n == 0 {
            return mark_reached(state);
        }
        let range = state.deliver_seq..state.deliver_seq + n as u64;
        state.deliver_seq = range.end;
        state.window_events -= n;
        state.in_flight += n;
        self.shared.show(state);
        Step::Hand(batches, range)
    }

    /// Parses what a read brought back (outside the lock) and hands it on.
    fn take_read(&mut self, of: ReadOf, fetched: Fetched) -> Option<(Batch, Acks)> {
        let shared = &*self.shared;
        let mut batch = Vec::with_capacity(fetched.records.len());
        let mut last = None;
        let mut undecodable = 0;
        let mut replayed = 0;
        let replayed_through = shared.state.lock_unpoisoned().replayed_through;
        for (seq, payload) in &fetched.records {
            if *seq >= of.end {
                break;
            }
            last = Some(*seq);
            match from_json(payload) {
                Ok(event) if event.is_object() => {
                    replayed += u64::from(*seq <= replayed_through);
                    batch.push(event);
                }
                // A record whose checksum holds but whose JSON does not
                // (written by another version?): skipped and counted, as a
                // corrupt record is.
                _ => undecodable += 1,
            }
        }
        if undecodable > 0 {
            tracing::warn!(
                buffer = %shared.dir.display(),
                records = undecodable,
                "disk buffer: records that are not JSON events were skipped"
            );
            shared.metrics.disk_buffer().corrupt.inc_by(undecodable);
        }
        let mut next = fetched.outcome.next_seq.min(of.end);
        if let Some(last) = last {
            next = next.max(last + 1);
        }
        let mut state = shared.state.lock_unpoisoned();
        state.reading = false;
        if state.generation != self.generation {
            // A newer receiver took over: it reads these again.
            if of.redo {
                state.redo.push_front(of.from..of.end);
                state.redo_at.get_or_insert_with(Instant::now);
            }
            return None;
        }
        if of.redo {
            if next < of.end {
                state.redo.push_front(next..of.end);
                state.redo_at.get_or_insert_with(Instant::now);
            }
            shared.redelivered.inc_by(batch.len() as u64);
        } else {
            if next <= of.from {
                // Nothing to read there yet (cannot happen: appends reach
                // the thread before the reads that follow them).
                tracing::error!(buffer = %shared.dir.display(), seq = of.from, "disk buffer read made no progress");
                return None;
            }
            state.deliver_seq = state.deliver_seq.max(next);
            shared.redelivered.inc_by(replayed);
        }
        state.in_flight += batch.len();
        shared.show(&state);
        drop(state);
        let range = of.from..next;
        if batch.is_empty() {
            // All damaged: settled as they are.
            let _ = shared.io.send(Cmd::Settled {
                range,
                delivered: true,
            });
            return None;
        }
        Some((batch, self.acks_for(range, of.redo)))
    }

    fn acks_for(&self, range: Range<u64>, redo: bool) -> Acks {
        let io = self.shared.io.clone();
        let shared = Arc::downgrade(&self.shared);
        Acks::new(move |outcome| {
            let delivered = outcome == Delivery::Delivered;
            if delivered && redo {
                reset_backoff(&shared);
            }
            let _ = io.send(Cmd::Settled { range, delivered });
        })
    }

    /// Events the queue holds in memory at most (`buffer.size`).
    pub fn capacity(&self) -> usize {
        self.shared.state.lock_unpoisoned().capacity
    }

    /// Events in memory now (the rest are on disk).
    pub fn len(&self) -> usize {
        self.shared.state.lock_unpoisoned().window_events
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn gauge(&self) -> Gauge {
        Gauge {
            shared: Arc::downgrade(&self.shared),
        }
    }
}

/// The receiver caught up with the handed mark: it waits for the ledger,
/// and asks further ahead from now on, so that at its rate it rarely
/// waits again. (How far ahead bounds how many events a crash can count
/// as redelivered that were never handed on.)
fn mark_reached(state: &mut State) -> Step {
    state.handed_ahead = (state.handed_ahead * 2).min(HANDED_AHEAD_MAX);
    Step::Wait(None)
}

/// The furthest the handed mark runs ahead of what was handed on.
const HANDED_AHEAD_MAX: u64 = 1 << 20;

/// A redelivery went through: the next failure waits the first backoff again.
fn reset_backoff(shared: &Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        shared.state.lock_unpoisoned().redo_backoff = REDO_BACKOFF;
    }
}

/// Reads how many events a stage holds in memory: in the window, or taken
/// and not yet handed on. Weak: a gauge kept for shutdown reports does not
/// keep the buffer open.
#[derive(Clone)]
pub struct Gauge {
    shared: Weak<Shared>,
}

impl Gauge {
    pub fn events(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| {
            let state = s.state.lock_unpoisoned();
            state.window_events + state.in_flight + state.parked
        })
    }

    pub fn set_parked(&self, n: usize) {
        if let Some(s) = self.shared.upgrade() {
            s.state.lock_unpoisoned().parked = n;
        }
    }

    pub fn settle(&self, n: usize) {
        if let Some(s) = self.shared.upgrade() {
            let mut state = s.state.lock_unpoisoned();
            state.in_flight = state.in_flight.saturating_sub(n);
        }
    }
}
