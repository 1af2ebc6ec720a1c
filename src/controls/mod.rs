//! Stage controls (SPEC §2) as layers around a stage's unit of work (a
//! batch; one event for the `http` transform), built once per stage from
//! its config and shared by its workers. Outermost first:
//!
//! 1. circuit breaker — an open breaker rejects (or holds) the unit before
//!    it uses rate-limit tokens; an admitted unit carries a `Call` guard
//!    that records its outcome on every path (see `breaker`);
//! 2. rate limit — one token bucket (or one per key) per stage; waiting
//!    here is backpressure; dropped or parked events never reach the work;
//! 3. concurrency — `workers` units in flight (the stage driver's pool),
//!    or with `workers: adaptive` a limit that follows the service's
//!    latency (`adaptive`), one permit per attempt;
//! 4. retry — failed attempts that are retryable run again after backoff;
//! 5. timeout — each attempt is limited;
//! 6. the stage's work.
//!
//! Layers 1–2 are `gate`, layers 3–5 are `run`: a sink encodes between the
//! two. tower's `Service`/`Layer` is the model, but its layers do not fit
//! our unit: they take one request by value per call (`Retry` needs it
//! `Clone`, `RateLimit` counts requests, not events), while a unit here is
//! a batch that the rate limit may split, drop or park by key. So each
//! layer is a small type of its own and this module composes them in the
//! order above.
//!
//! A stage that sets none of them runs exactly as before: no limiter, no
//! breaker, no timer on the hot path.

pub mod adaptive;
pub mod breaker;
mod check;
pub mod rate_limit;
pub mod retry;

pub use check::{Problem, check_source, check_stage, retries};

use crate::config::controls::{RateLimitConfig, SourceCommon, StageCommon, WhenOpen, Workers};
use crate::core::{Acks, Batch, Failed};
use crate::telemetry::ComponentMetrics;
use adaptive::{AdaptiveConcurrency, Outcome};
use breaker::{Call, CircuitBreaker};
use rate_limit::RateLimiter;
use retry::RetryPolicy;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A stage's controls, built once and shared by its workers.
pub struct StageControls {
    breaker: Option<(Arc<CircuitBreaker>, WhenOpen)>,
    limiter: Option<RateLimiter>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    retries: prometheus::IntCounter,
    /// With `workers: adaptive`: a permit per attempt.
    adaptive: Option<Arc<AdaptiveConcurrency>>,
}

/// What the gate (breaker, then rate limit) let through.
pub struct Gated {
    pub batch: Batch,
    /// Rejected by an open breaker.
    pub rejected: Vec<Failed>,
    /// Discarded by `when_limited: drop`.
    pub rate_limited: usize,
    /// The breaker's guard for this unit: hand it to `run`. Dropped unused
    /// (nothing was let through, or the unit is cancelled), it records no
    /// outcome and frees a half-open trial slot.
    pub call: Option<Call>,
}

/// How one attempt ended.
pub enum Attempt<T> {
    Done(T),
    /// A failure worth retrying (timeout, I/O), with its error type.
    Retryable(String, &'static str),
    /// The service said it is overloaded (429, 503): retryable, and an
    /// adaptive concurrency limit backs off.
    Overloaded(String, &'static str),
}

/// The last failure of a unit after its attempts: message, error type,
/// attempts made.
pub type GaveUp = (String, &'static str, u32);

fn key_program(config: &RateLimitConfig) -> Option<crate::expr::Program> {
    config.key.as_ref().map(|k| {
        crate::expr::Program::compile(k).expect("rate_limit.key is validated by graph::compile")
    })
}

impl StageControls {
    pub fn for_stage(common: &StageCommon, metrics: &ComponentMetrics) -> Self {
        Self {
            breaker: common.circuit_breaker.as_ref().map(|c| {
                (
                    CircuitBreaker::new(c.clone(), metrics.name(), Some(metrics.breaker())),
                    c.when_open,
                )
            }),
            limiter: common
                .rate_limit
                .as_ref()
                .map(|c| RateLimiter::new(c, key_program(c), Some(metrics.rate_limit()))),
            timeout: common.timeout.map(|d| d.0),
            retry: RetryPolicy::new(common.retry.as_ref()),
            retries: metrics.retries(),
            adaptive: (common.workers == Workers::Adaptive).then(|| {
                AdaptiveConcurrency::new(common.max_workers, Some(metrics.workers_limit()))
            }),
        }
    }

    pub fn for_source(common: &SourceCommon, metrics: &ComponentMetrics) -> Self {
        Self {
            breaker: None,
            limiter: common
                .rate_limit
                .as_ref()
                .map(|c| RateLimiter::new(c, key_program(c), Some(metrics.rate_limit()))),
            timeout: None,
            retry: RetryPolicy::new(None),
            retries: metrics.retries(),
            adaptive: None,
        }
    }

    /// With a waiting rate limit, how many events the bucket releases at
    /// once (its burst).
    pub fn release_size(&self) -> Option<usize> {
        self.limiter.as_ref().and_then(RateLimiter::release_size)
    }

    /// True when attempts need the retry/timeout/breaker machinery.
    pub fn guards_attempts(&self) -> bool {
        self.breaker.is_some()
            || self.timeout.is_some()
            || self.retry.attempts > 1
            || self.adaptive.is_some()
    }

    /// The limit on each attempt (`timeout`), for a stage that times an
    /// attempt it started itself (a sink's submitted batch).
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The limiter when it parks events (keyed `wait`): the stage driver
    /// then comes back for them.
    pub fn parking(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref().filter(|l| l.parks())
    }

    /// Layers 1–2: breaker, then rate limit. Events released from parking
    /// (`rate_limited_already`) have their tokens and skip the limit.
    pub async fn gate(&self, batch: Batch, acks: &Acks, rate_limited_already: bool) -> Gated {
        self.gate_with(batch, acks, false, rate_limited_already)
            .await
    }

    /// `gate` for one event in its own concurrent slot: a keyed limit waits
    /// in the slot instead of parking.
    pub async fn gate_in_place(&self, batch: Batch) -> Gated {
        self.gate_with(batch, &Acks::none(), true, false).await
    }

    async fn gate_with(
        &self,
        batch: Batch,
        acks: &Acks,
        in_place: bool,
        skip_limit: bool,
    ) -> Gated {
        let mut gated = Gated {
            batch,
            rejected: Vec::new(),
            rate_limited: 0,
            call: None,
        };
        if let Some((breaker, when_open)) = &self.breaker {
            gated.call = match when_open {
                WhenOpen::Wait => Some(breaker.admit_wait().await),
                WhenOpen::Reject => breaker.admit(),
            };
            if gated.call.is_none() {
                let events = std::mem::take(&mut gated.batch);
                gated.rejected = events
                    .into_iter()
                    .map(|e| Failed::new(e, "circuit breaker is open", "breaker_open"))
                    .collect();
                return gated;
            }
        }
        if let Some(limiter) = self.limiter.as_ref().filter(|_| !skip_limit) {
            let batch = std::mem::take(&mut gated.batch);
            let (batch, dropped) = if in_place {
                limiter.admit_in_place(batch).await
            } else {
                limiter.admit(batch, acks).await
            };
            gated.batch = batch;
            gated.rate_limited = dropped;
        }
        gated
    }

    /// Layers 4–5: runs `attempt` under the timeout, retrying retryable
    /// failures with backoff, and records each attempt's outcome through
    /// the breaker's guard (`call`, from `gate`). `Ok` carries the result
    /// and the attempts made; `Err` the last failure and the attempts.
    pub async fn run<T, F, Fut>(
        &self,
        mut call: Option<Call>,
        mut attempt: F,
        succeeded: impl Fn(&T) -> bool,
    ) -> Result<(T, u32), GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut backoffs = self.retry.backoffs();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let permit = match &self.adaptive {
                Some(limit) => Some(limit.acquire().await),
                None => None,
            };
            let outcome = match self.timeout {
                Some(limit) => match tokio::time::timeout(limit, attempt()).await {
                    Ok(o) => o,
                    Err(_) => Attempt::Retryable(
                        format!("timed out after {}", humantime::format_duration(limit)),
                        "timeout",
                    ),
                },
                None => attempt().await,
            };
            if let Some(permit) = permit {
                permit.finish(match &outcome {
                    Attempt::Done(value) if succeeded(value) => Outcome::Success,
                    Attempt::Retryable(_, "timeout") | Attempt::Overloaded(..) => {
                        Outcome::Backpressure
                    }
                    _ => Outcome::Failure,
                });
            }
            match outcome {
                Attempt::Done(value) => {
                    if let Some(call) = call.as_mut() {
                        call.record(succeeded(&value));
                    }
                    return Ok((value, attempts));
                }
                Attempt::Retryable(message, error_type)
                | Attempt::Overloaded(message, error_type) => {
                    if let Some(call) = call.as_mut() {
                        call.record(false);
                    }
                    // A breaker that opened on this failure ends the retries:
                    // retrying would call a service the breaker protects.
                    if self
                        .breaker
                        .as_ref()
                        .is_some_and(|(b, _)| b.state() == breaker::State::Open)
                    {
                        return Err((message, error_type, attempts));
                    }
                    match backoffs.next() {
                        Some(wait) => {
                            self.retries.inc();
                            tokio::time::sleep(wait).await;
                        }
                        None => return Err((message, error_type, attempts)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
