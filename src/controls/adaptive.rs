//! Adaptive concurrency for `workers: adaptive` (the `http` transform and
//! sink): a limit on calls in flight that grows by one per observation window
//! while latency holds and is halved when latency rises or the service pushes
//! back (429/503, timeouts) — additive increase, multiplicative decrease.
//! The design follows Vector's adaptive request concurrency (ARC,
//! `src/sinks/util/adaptive_concurrency/controller.rs`).
//!
//! This module owns the controller and its permits only: one controller per
//! stage, shared by its workers; a [`Permit`] per call, which measures the
//! call's round-trip time (RTT) and records its outcome on every path. The
//! config (`max_workers`) and the `flowgate_workers_limit` gauge belong to
//! the caller, who hands both in.
//!
//! The decision is taken once per window, about one RTT long (the long-run
//! mean), not per response: one response is noise, a window is evidence, and
//! a cut needs about one RTT to show in latency. At the first call finished
//! after a window's end:
//! - the service pushed back, or the window's mean RTT exceeds the long-run
//!   mean by more than [`RTT_DEVIATION_SCALE`] deviations: the limit is
//!   multiplied by [`DECREASE_RATIO`] (at least 1);
//! - else, if the limit was reached in the window and its mean RTT is at most
//!   the long-run mean: the limit grows by one, up to `max_workers`;
//! - else the limit holds.
//!
//! Then the window's mean RTT joins the long-run mean and deviation (an
//! EWMA). Calls that began before the last cut are left out of the next
//! decisions: their latency and their 429s reflect the old limit and already
//! caused that cut (TCP, likewise, cuts at most once per window of data).

use crate::core::sync::LockExt;
use prometheus::IntGauge;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `max_workers` when the config sets none: enough for a fast service, few
/// enough that a latency signal lost in noise cannot flood it.
pub const DEFAULT_MAX_WORKERS: usize = 64;
/// Where the limit starts, as in Vector: one call, until the service shows
/// it takes more.
pub const INITIAL_LIMIT: usize = 1;
/// Factor applied on a cut. The feature asks for "halves" (TCP's AIMD
/// factor): an overloaded or rate-limited service gets relief within one
/// window. Vector defaults to 0.9 (its own service tests use 0.5); the price
/// of 0.5 is a deeper sawtooth, about 3/4 of capacity on average.
pub const DECREASE_RATIO: f64 = 0.5;
/// Weight of a window's mean RTT in the long-run mean: Vector's default,
/// chosen there by simulation; the baseline follows a real latency change
/// within a few windows yet one slow window does not move it much.
pub const EWMA_ALPHA: f64 = 0.4;
/// Deviations above the long-run mean that still count as normal latency:
/// Vector's default (it suggests 1.0–3.0); below it, jitter would cut.
pub const RTT_DEVIATION_SCALE: f64 = 2.5;

/// How a call went, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered: the call's RTT feeds the estimate.
    Success,
    /// 429, 503 or a timeout: the service asks for less; the window cuts.
    Backpressure,
    /// Any other error: it says nothing about load (a refused connection is
    /// fast), so it neither feeds the RTT nor cuts.
    Failure,
}

/// Exponentially weighted mean and variance of RTT in seconds (the
/// incremental form Vector's `EwmaVar` uses).
#[derive(Debug, Clone, Copy)]
struct MeanVar {
    mean: f64,
    var: f64,
}

impl MeanVar {
    fn update(&mut self, x: f64) {
        let diff = x - self.mean;
        let inc = EWMA_ALPHA * diff;
        self.mean += inc;
        self.var = (1.0 - EWMA_ALPHA) * (self.var + diff * inc);
    }
}

struct Inner {
    limit: usize,
    in_flight: usize,
    /// None until the first successful call sets the baseline.
    past: Option<MeanVar>,
    window: Window,
    /// Cuts so far: a permit taken under an older count is stale.
    cuts: u64,
}

/// What one observation window saw.
struct Window {
    end: Instant,
    // The window's successful calls: summed as a Duration so equal RTTs
    // average to exactly themselves (no float drift to read as a rise).
    rtt_sum: Duration,
    rtt_count: u32,
    backpressure: bool,
    reached_limit: bool,
}

impl Window {
    fn new(now: Instant, length_secs: f64) -> Self {
        Self {
            end: now + Duration::try_from_secs_f64(length_secs).unwrap_or_default(),
            rtt_sum: Duration::ZERO,
            rtt_count: 0,
            backpressure: false,
            reached_limit: false,
        }
    }

    fn mean_rtt(&self) -> Option<f64> {
        (self.rtt_count > 0).then(|| (self.rtt_sum / self.rtt_count).as_secs_f64())
    }
}

/// One stage's adaptive concurrency limit, shared by its workers.
pub struct AdaptiveConcurrency {
    max: usize,
    inner: Mutex<Inner>,
    /// Signalled once per slot that frees (a release or a raise).
    freed: Notify,
    gauge: Option<IntGauge>,
}

impl AdaptiveConcurrency {
    /// A controller starting at [`INITIAL_LIMIT`], never above `max_workers`
    /// (0 counts as 1). `gauge` is set to the limit whenever it changes.
    pub fn new(max_workers: usize, gauge: Option<IntGauge>) -> Arc<Self> {
        let limit = INITIAL_LIMIT.min(max_workers.max(1));
        if let Some(g) = &gauge {
            g.set(limit as i64);
        }
        Arc::new(Self {
            max: max_workers.max(1),
            inner: Mutex::new(Inner {
                limit,
                in_flight: 0,
                past: None,
                window: Window::new(Instant::now(), 0.0),
                cuts: 0,
            }),
            freed: Notify::new(),
            gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only arithmetic runs under the lock; a panic there leaves
        // consistent counters, so a poisoned lock is still usable.
        self.inner.lock_unpoisoned()
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Calls in flight (permits alive).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Waits until fewer calls than the limit are in flight. Cancel-safe:
    /// dropping the future takes no slot and passes on any wake-up it got.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before the check, so a slot freed between the check
            // and the await still wakes us.
            freed.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            freed.await;
        }
    }

    /// A permit if a slot is free now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut inner = self.lock();
        if inner.in_flight >= inner.limit {
            return None;
        }
        inner.in_flight += 1;
        if inner.in_flight >= inner.limit {
            inner.window.reached_limit = true;
        }
        Some(Permit {
            controller: Arc::clone(self),
            started: Instant::now(),
            cuts: inner.cuts,
            finished: false,
        })
    }

    fn release(&self, started: Instant, cuts: u64, outcome: Option<Outcome>) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.in_flight -= 1;
        if let Some(outcome) = outcome {
            if cuts == inner.cuts {
                match outcome {
                    Outcome::Success => {
                        let w = &mut inner.window;
                        w.rtt_sum += now.saturating_duration_since(started);
                        w.rtt_count = w.rtt_count.saturating_add(1);
                    }
                    Outcome::Backpressure => inner.window.backpressure = true,
                    Outcome::Failure => {}
                }
            }
            self.close_window(&mut inner, now);
        }
        let free = inner.in_flight < inner.limit;
        drop(inner);
        if free {
            self.freed.notify_one();
        }
    }

    /// At a window's end, the AIMD decision (see the module doc).
    fn close_window(&self, inner: &mut Inner, now: Instant) {
        let mean = inner.window.mean_rtt();
        let Some(mut past) = inner.past else {
            // No baseline, no decision: the first RTT sets it and the
            // window length. (The limit is 1 until then; nothing to cut.)
            if let Some(m) = mean {
                inner.past = Some(MeanVar { mean: m, var: 0.0 });
                inner.window = Window::new(now, m);
            }
            return;
        };
        if now < inner.window.end {
            return;
        }
        let old = inner.limit;
        let threshold = past.mean + RTT_DEVIATION_SCALE * past.var.sqrt();
        if inner.window.backpressure || mean.is_some_and(|m| m > threshold) {
            if old > 1 {
                // Truncation makes the cut strict; max(1) keeps one call going.
                inner.limit = ((old as f64 * DECREASE_RATIO) as usize).max(1);
                inner.cuts += 1;
            }
        } else if inner.window.reached_limit
            && mean.is_some_and(|m| m <= past.mean)
            && old < self.max
        {
            // Only with evidence: the limit was binding and latency held.
            inner.limit += 1;
            self.freed.notify_one();
        }
        if inner.limit != old
            && let Some(g) = &self.gauge
        {
            g.set(inner.limit as i64);
        }
        if let Some(m) = mean {
            past.update(m);
        }
        inner.past = Some(past);
        inner.window = Window::new(now, past.mean);
    }
}

/// A slot for one call. [`Permit::finish`] records how the call went; a
/// permit dropped unfinished (a cancelled call) frees its slot and teaches
/// the controller nothing.
#[must_use = "a permit holds a slot until it is finished or dropped"]
pub struct Permit {
    controller: Arc<AdaptiveConcurrency>,
    started: Instant,
    cuts: u64,
    finished: bool,
}

impl Permit {
    /// Frees the slot and records the outcome; the RTT runs from acquire.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.controller
            .release(self.started, self.cuts, Some(outcome));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.controller.release(self.started, self.cuts, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Backpressure, Failure, Success};
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const BASE: Duration = Duration::from_millis(10);
    const C: usize = 8;

    /// `callers` loops for `run`, each calling a service that answers its
    /// n-th concurrent call with `answer(n)`. Returns the limit sampled every
    /// 10ms and the most calls the service saw at once.
    async fn drive(
        ctrl: &Arc<AdaptiveConcurrency>,
        callers: usize,
        run: Duration,
        answer: fn(usize) -> (Duration, Outcome),
    ) -> (Vec<usize>, usize) {
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let end = Instant::now() + run;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let (ctrl, busy, peak) = (ctrl.clone(), busy.clone(), peak.clone());
            tasks.spawn(async move {
                while Instant::now() < end {
                    let permit = ctrl.acquire().await;
                    let n = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    let (latency, outcome) = answer(n);
                    tokio::time::sleep(latency).await;
                    busy.fetch_sub(1, Ordering::SeqCst);
                    permit.finish(outcome);
                }
            });
        }
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < end {
            tick.tick().await;
            samples.push(ctrl.limit());
        }
        while tasks.join_next().await.is_some() {}
        (samples, peak.load(Ordering::SeqCst))
    }

    /// Over the second half of the run, every sampled limit is within
    /// [C/2, 2C] and their mean within [C/2, C]: AIMD's sawtooth around the
    /// capacity. The run is deterministic (one thread, paused time), so the
    /// bounds are exact, not statistical.
    fn assert_settled(samples: &[usize]) {
        let last = &samples[samples.len() / 2..];
        let (lo, hi) = (*last.iter().min().unwrap(), *last.iter().max().unwrap());
        let mean = last.iter().sum::<usize>() as f64 / last.len() as f64;
        let band = format!("min {lo}, max {hi}, mean {mean:.2}");
        assert!(lo >= C / 2 && hi <= 2 * C, "limit left [C/2, 2C]: {band}");
        assert!((C / 2) as f64 <= mean && mean <= C as f64, "{band}");
    }

    /// Flat latency up to C concurrent calls, proportional beyond.
    fn knee(n: usize) -> (Duration, Outcome) {
        (BASE * n.max(C) as u32 / C as u32, Success)
    }

    #[tokio::test(start_paused = true)]
    async fn settles_near_the_knee_of_the_latency_curve() {
        let ctrl = AdaptiveConcurrency::new(DEFAULT_MAX_WORKERS, None);
        let (samples, _) = drive(&ctrl, 32, Duration::from_secs(60), knee).await;
        assert_settled(&samples);
    }

    #[tokio::test(start_paused = true)]
    async fn settles_near_a_service_that_answers_429_beyond_capacity() {
        let ctrl = AdaptiveConcurrency::new(DEFAULT_MAX_WORKERS, None);
        let over = |n: usize| (BASE, if n > C { Backpressure } else { Success });
        let (samples, _) = drive(&ctrl, 32, Duration::from_secs(60), over).await;
        assert_settled(&samples);
    }

    #[tokio::test(start_paused = true)]
    async fn constant_latency_grows_the_limit_to_max_workers_and_no_further() {
        let gauge = IntGauge::new("limit", "limit").unwrap();
        let ctrl = AdaptiveConcurrency::new(DEFAULT_MAX_WORKERS, Some(gauge.clone()));
        assert_eq!(gauge.get(), 1);
        let constant = |_: usize| (BASE, Success);
        let (samples, peak) = drive(&ctrl, 100, Duration::from_secs(5), constant).await;
        assert!(samples.windows(2).all(|w| w[0] <= w[1]), "never cut");
        assert_eq!(samples.last(), Some(&DEFAULT_MAX_WORKERS));
        assert_eq!(peak, DEFAULT_MAX_WORKERS, "in flight never above the limit");
        assert_eq!(gauge.get(), DEFAULT_MAX_WORKERS as i64);
        assert_eq!(ctrl.in_flight(), 0);
    }

    /// `n` calls started together, finished `BASE` later with `outcome`.
    async fn round(ctrl: &Arc<AdaptiveConcurrency>, n: usize, outcome: Outcome) {
        let permits: Vec<_> = (0..n).map(|_| ctrl.try_acquire().unwrap()).collect();
        tokio::time::advance(BASE).await;
        permits.into_iter().for_each(|p| p.finish(outcome));
    }

    #[tokio::test(start_paused = true)]
    async fn backpressure_halves_the_limit_once_per_window() {
        let ctrl = AdaptiveConcurrency::new(100, None);
        ctrl.lock().limit = 16;
        round(&ctrl, 16, Success).await; // sets the baseline
        round(&ctrl, 16, Backpressure).await;
        assert_eq!(
            ctrl.limit(),
            8,
            "the rest of the round is in the next window"
        );
        let mut calls: Vec<_> = (0..8).map(|_| ctrl.try_acquire().unwrap()).collect();
        tokio::time::advance(BASE).await;
        calls.pop().unwrap().finish(Backpressure);
        assert_eq!(ctrl.limit(), 4);
        tokio::time::advance(BASE * 2).await;
        calls.into_iter().for_each(|p| p.finish(Backpressure));
        assert_eq!(
            ctrl.limit(),
            4,
            "calls begun before the cut do not cut again"
        );
        let mut limits = vec![];
        for _ in 0..3 {
            let n = ctrl.limit();
            round(&ctrl, n, Backpressure).await;
            limits.push(ctrl.limit());
        }
        assert_eq!(limits, [2, 1, 1]);
        round(&ctrl, 1, Failure).await;
        round(&ctrl, 1, Success).await;
        assert_eq!(ctrl.limit(), 2, "other failures do not cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_latency_rise_cuts_and_growth_needs_the_limit_reached() {
        let ctrl = AdaptiveConcurrency::new(100, None);
        ctrl.lock().limit = 10;
        round(&ctrl, 10, Success).await;
        round(&ctrl, 3, Success).await;
        assert_eq!(ctrl.limit(), 10, "3 of 10 in flight is no evidence for 11");
        round(&ctrl, 10, Success).await;
        assert_eq!(ctrl.limit(), 11);
        let slow: Vec<_> = (0..11).map(|_| ctrl.try_acquire().unwrap()).collect();
        tokio::time::advance(BASE * 2).await;
        slow.into_iter().for_each(|p| p.finish(Success));
        assert_eq!(ctrl.limit(), 5, "RTT doubled");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_permits_and_waiters_release_their_slots() {
        let ctrl = AdaptiveConcurrency::new(4, None);
        fn send<T: Send>(_: &T) {}
        send(&ctrl.acquire()); // stage drivers spawn it
        let held = ctrl.acquire().await;
        // A waiter woken and then cancelled passes the wake-up on.
        let mut first = Box::pin(ctrl.acquire());
        assert!((&mut first).now_or_never().is_none());
        let second = tokio::spawn({
            let ctrl = ctrl.clone();
            async move { ctrl.acquire().await }
        });
        tokio::task::yield_now().await;
        drop(held);
        drop(first);
        let permit = second.await.unwrap();
        assert_eq!(ctrl.in_flight(), 1);
        assert!(ctrl.lock().past.is_none(), "cancelled calls feed no RTT");
        drop(permit);
        // A task aborted mid-call frees its slot too.
        let call = tokio::spawn({
            let ctrl = ctrl.clone();
            async move {
                let _permit = ctrl.acquire().await;
                std::future::pending::<()>().await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(ctrl.in_flight(), 1);
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(ctrl.in_flight(), 0);
        assert!(ctrl.try_acquire().is_some());
    }
}
