//! Stage controls (SPEC §2): rate limits, timeouts, retries and circuit
//! breakers, built from a stage's config and applied in one fixed order,
//! outermost first:
//!
//! 1. circuit breaker — an open breaker rejects (or holds) events before
//!    they use rate-limit tokens;
//! 2. rate limit — one token bucket (or one per key) per stage, shared by
//!    its workers; waiting here is backpressure;
//! 3. concurrency — `workers` attempts in flight;
//! 4. retry — failed attempts that are retryable run again after backoff;
//! 5. timeout — each attempt is limited;
//! 6. the stage's work.
//!
//! A stage that sets none of them runs exactly as before: no limiter, no
//! breaker, no timer on the hot path.

pub mod breaker;
pub mod rate_limit;
pub mod retry;

use crate::config::controls::{
    CircuitBreakerConfig, RateLimitConfig, RetryConfig, SourceCommon, StageCommon,
};
use crate::config::duration::ConfigDuration;

/// A problem with a control: the key path under the component and a message.
pub type Problem = (Vec<&'static str>, String);

fn check_breaker(c: &CircuitBreakerConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let at = |k: &'static str, m: &str| (vec!["circuit_breaker", k], m.to_string());
    if c.consecutive_failures.is_none() && c.failure_rate.is_none() {
        problems.push((
            vec!["circuit_breaker"],
            "circuit_breaker needs consecutive_failures or failure_rate (when to open)".to_string(),
        ));
    }
    if c.consecutive_failures == Some(0) {
        problems.push(at(
            "consecutive_failures",
            "circuit_breaker.consecutive_failures must be at least 1",
        ));
    }
    if let Some(rate) = c.failure_rate
        && !(rate > 0.0 && rate <= 1.0)
    {
        problems.push(at(
            "failure_rate",
            "circuit_breaker.failure_rate must be a fraction in (0, 1], e.g. 0.5",
        ));
    }
    if c.min_calls == 0 {
        problems.push(at(
            "min_calls",
            "circuit_breaker.min_calls must be at least 1",
        ));
    }
    if c.half_open_calls == 0 {
        problems.push(at(
            "half_open_calls",
            "circuit_breaker.half_open_calls must be at least 1",
        ));
    }
    if c.window.0.is_zero() {
        problems.push(at(
            "window",
            "circuit_breaker.window must be longer than 0s",
        ));
    }
    if c.open_for.0.is_zero() {
        problems.push(at(
            "open_for",
            "circuit_breaker.open_for must be longer than 0s",
        ));
    }
    problems
}

fn check_rate_limit(c: &RateLimitConfig) -> Vec<Problem> {
    let mut problems: Vec<Problem> = rate_limit::check(c)
        .into_iter()
        .map(|(k, m)| (vec!["rate_limit", k], m))
        .collect();
    if let Some(key) = &c.key
        && let Err(errors) = crate::expr::Program::compile(key)
    {
        for e in errors {
            problems.push((
                vec!["rate_limit", "key"],
                format!("rate_limit.key: invalid jq program: {}", e.message),
            ));
        }
    }
    problems
}

/// Every problem with a transform's or sink's controls.
pub fn check_stage(common: &StageCommon) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(r) = &common.rate_limit {
        problems.extend(check_rate_limit(r));
    }
    if let Some(r) = &common.retry {
        problems.extend(
            retry::check(r)
                .into_iter()
                .map(|(k, m)| (vec!["retry", k], m)),
        );
    }
    if let Some(b) = &common.circuit_breaker {
        problems.extend(check_breaker(b));
    }
    if common.timeout.is_some_and(|ConfigDuration(d)| d.is_zero()) {
        problems.push((
            vec!["timeout"],
            "timeout must be longer than 0s".to_string(),
        ));
    }
    problems
}

/// Every problem with a source's controls.
pub fn check_source(common: &SourceCommon) -> Vec<Problem> {
    common
        .rate_limit
        .as_ref()
        .map(check_rate_limit)
        .unwrap_or_default()
}

/// Whether a retry config retries at all.
pub fn retries(config: Option<&RetryConfig>) -> bool {
    config.is_some_and(|r| r.attempts > 1)
}

use crate::config::controls::WhenOpen;
use crate::core::Failed;
use crate::core::{Acks, Batch};
use crate::telemetry::ComponentMetrics;
use breaker::{Admission, CircuitBreaker};
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
}

/// What the gate (breaker, then rate limit) let through.
pub struct Gated {
    pub batch: Batch,
    /// Rejected by an open breaker.
    pub rejected: Vec<Failed>,
    /// Discarded by `when_limited: drop`.
    pub rate_limited: usize,
}

/// How one attempt ended.
pub enum Attempt<T> {
    Done(T),
    /// A failure worth retrying (timeout, I/O), with its error type.
    Retryable(String, &'static str),
}

fn key_program(config: &crate::config::controls::RateLimitConfig) -> Option<crate::expr::Program> {
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
        }
    }

    /// With a waiting rate limit, how many events the bucket releases at
    /// once (its burst).
    pub fn release_size(&self) -> Option<usize> {
        self.limiter.as_ref().and_then(RateLimiter::release_size)
    }

    /// True when attempts need the retry/timeout/breaker machinery.
    pub fn guards_attempts(&self) -> bool {
        self.breaker.is_some() || self.timeout.is_some() || self.retry.attempts > 1
    }

    /// The limiter when it parks events (keyed `wait`): the stage driver
    /// then comes back for them.
    pub fn parking(&self) -> Option<&RateLimiter> {
        self.limiter.as_ref().filter(|l| l.parks())
    }

    /// Breaker, then rate limit, in that order. Events released from
    /// parking (`rate_limited_already`) have their tokens and skip the limit.
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
        };
        if let Some((breaker, when_open)) = &self.breaker {
            match when_open {
                WhenOpen::Wait => breaker.admit_wait().await,
                WhenOpen::Reject => {
                    if breaker.admit() == Admission::Rejected {
                        let events = std::mem::take(&mut gated.batch);
                        gated.rejected = events
                            .into_iter()
                            .map(|e| Failed::new(e, "circuit breaker is open", "breaker_open"))
                            .collect();
                        return gated;
                    }
                }
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

    /// Runs `attempt` under the timeout, retrying retryable failures with
    /// backoff; records the call's outcome in the breaker. `Ok` carries the
    /// result and the attempts made; `Err` the last failure and the attempts.
    pub async fn run<T, F, Fut>(
        &self,
        mut attempt: F,
        succeeded: impl Fn(&T) -> bool,
    ) -> Result<(T, u32), (String, &'static str, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut backoffs = self.retry.backoffs();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
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
            match outcome {
                Attempt::Done(value) => {
                    self.record(succeeded(&value));
                    return Ok((value, attempts));
                }
                Attempt::Retryable(message, error_type) => {
                    self.record(false);
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

    fn record(&self, success: bool) {
        if let Some((breaker, _)) = &self.breaker {
            breaker.record([success]);
        }
    }
}
