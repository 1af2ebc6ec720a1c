//! A circuit breaker: closed -> open after `consecutive_failures` in a row
//! or a `failure_rate` over `min_calls` in a sliding `window`; open for
//! `open_for`; then half-open, admitting `half_open_calls` trial calls:
//! their success closes it, a failure re-opens it. One breaker per stage,
//! shared by its workers. Time is tokio's, so tests run under
//! `tokio::time::pause()`.
//!
//! Outcomes are recorded through `Call`, the guard `admit` hands out: an
//! admitted call that ends without an outcome (its batch was dropped or
//! parked by the rate limit, its task was cancelled) gives its trial slot
//! back when the guard drops, so a half-open breaker can always close again.

use crate::config::controls::CircuitBreakerConfig;
use crate::core::sync::LockExt;
pub use crate::telemetry::BreakerMetrics;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The `flowgate_circuit_breaker_state` value.
    pub fn gauge_value(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// The failure-rate window in 10 buckets, so memory does not grow with the call rate.
const BUCKETS: u32 = 10;

struct Inner {
    state: State,
    opened_at: Instant,
    consecutive: u32,
    trials_admitted: u32,
    trial_successes: u32,
    /// Counts half-open periods, so a guard from an earlier one cannot give
    /// back a slot of the current one.
    half_opened: u64,
    /// (bucket start, calls, failures), oldest first.
    window: VecDeque<(Instant, u32, u32)>,
}

pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    component: String,
    inner: Mutex<Inner>,
    /// Wakes `when_open: wait` callers when the state changes.
    changed: Notify,
    metrics: Option<BreakerMetrics>,
    /// For the timer that half-opens the breaker with no traffic, so the
    /// state in /metrics is true while nothing calls.
    this: std::sync::Weak<CircuitBreaker>,
}

/// An admitted call. Record each attempt's outcome with `record`; a call
/// dropped without any (dropped by the rate limit, parked, cancelled) was
/// never made: it counts neither way and frees its half-open trial slot.
#[must_use = "a call records its outcome through this guard"]
pub struct Call {
    breaker: std::sync::Arc<CircuitBreaker>,
    /// The half-open period this call is a trial of.
    trial_of: Option<u64>,
    recorded: bool,
}

impl Call {
    /// Records the outcome of one attempt (each retry is an attempt).
    pub fn record(&mut self, success: bool) {
        self.recorded = true;
        self.breaker.record([success]);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let (false, Some(period)) = (self.recorded, self.trial_of) {
            self.breaker.release_trial(period);
        }
    }
}

impl CircuitBreaker {
    pub fn new(
        config: CircuitBreakerConfig,
        component: &str,
        metrics: Option<BreakerMetrics>,
    ) -> std::sync::Arc<Self> {
        if let Some(m) = &metrics {
            m.state.set(0);
        }
        std::sync::Arc::new_cyclic(|this| Self {
            this: this.clone(),
            config,
            component: component.to_string(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: Instant::now(),
                consecutive: 0,
                trials_admitted: 0,
                trial_successes: 0,
                half_opened: 0,
                window: VecDeque::new(),
            }),
            changed: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_unpoisoned()
    }

    pub fn state(&self) -> State {
        let mut inner = self.lock();
        self.refresh(&mut inner, Instant::now());
        inner.state
    }

    fn transition(&self, inner: &mut Inner, to: State, now: Instant) {
        if inner.state == to {
            return;
        }
        let from = inner.state;
        inner.state = to;
        match to {
            State::Open => {
                inner.opened_at = now;
                let (this, open_for) = (self.this.clone(), self.config.open_for.0);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        tokio::time::sleep(open_for).await;
                        if let Some(breaker) = this.upgrade() {
                            breaker.state();
                        }
                    });
                }
            }
            State::HalfOpen => {
                inner.trials_admitted = 0;
                inner.trial_successes = 0;
                inner.half_opened += 1;
            }
            State::Closed => {
                inner.consecutive = 0;
                inner.window.clear();
            }
        }
        if let Some(m) = &self.metrics {
            m.state.set(to.gauge_value());
            m.to[to.gauge_value() as usize].inc();
        }
        tracing::warn!(component = %self.component, "circuit breaker {} -> {}", from.as_str(), to.as_str());
        self.changed.notify_waiters();
    }

    /// Open turns half-open once `open_for` has passed.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if inner.state == State::Open
            && now.duration_since(inner.opened_at) >= self.config.open_for.0
        {
            self.transition(inner, State::HalfOpen, now);
        }
    }

    /// Asks to make one call: `None` when the breaker rejects it.
    pub fn admit(self: &std::sync::Arc<Self>) -> Option<Call> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        let trial_of = match inner.state {
            State::Closed => None,
            State::Open => return None,
            State::HalfOpen if inner.trials_admitted < self.config.half_open_calls => {
                inner.trials_admitted += 1;
                Some(inner.half_opened)
            }
            State::HalfOpen => return None,
        };
        Some(Call {
            breaker: self.clone(),
            trial_of,
            recorded: false,
        })
    }

    /// A trial ended without an outcome: its slot is free for another.
    fn release_trial(&self, period: u64) {
        let mut inner = self.lock();
        if inner.state == State::HalfOpen && inner.half_opened == period {
            inner.trials_admitted = inner.trials_admitted.saturating_sub(1);
            drop(inner);
            self.changed.notify_waiters();
        }
    }

    /// Waits until a call is admitted (`when_open: wait`).
    pub async fn admit_wait(self: &std::sync::Arc<Self>) -> Call {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(call) = self.admit() {
                return call;
            }
            let reopen_in = {
                let inner = self.lock();
                match inner.state {
                    State::Open => self
                        .config
                        .open_for
                        .0
                        .saturating_sub(Instant::now().duration_since(inner.opened_at)),
                    // Half-open with every trial slot taken: wait for their outcome.
                    _ => Duration::from_secs(3600),
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(reopen_in) => {}
            }
        }
    }

    /// Records the outcomes of admitted calls, in order.
    pub fn record(&self, outcomes: impl IntoIterator<Item = bool>) {
        let now = Instant::now();
        let mut inner = self.lock();
        for success in outcomes {
            match inner.state {
                // Late results of calls admitted before the breaker opened.
                State::Open => {}
                State::HalfOpen => {
                    if success {
                        inner.trial_successes += 1;
                        if inner.trial_successes >= self.config.half_open_calls {
                            self.transition(&mut inner, State::Closed, now);
                        }
                    } else {
                        self.transition(&mut inner, State::Open, now);
                    }
                }
                State::Closed => {
                    inner.consecutive = if success { 0 } else { inner.consecutive + 1 };
                    self.count(&mut inner, now, success);
                    if self.should_open(&inner) {
                        self.transition(&mut inner, State::Open, now);
                    }
                }
            }
        }
    }

    fn count(&self, inner: &mut Inner, now: Instant, success: bool) {
        let window = self.config.window.0;
        let bucket = window / BUCKETS;
        while inner
            .window
            .front()
            .is_some_and(|(start, _, _)| now.duration_since(*start) >= window)
        {
            inner.window.pop_front();
        }
        match inner.window.back_mut() {
            Some((start, calls, failures)) if now.duration_since(*start) < bucket => {
                *calls += 1;
                *failures += u32::from(!success);
            }
            _ => inner.window.push_back((now, 1, u32::from(!success))),
        }
    }

    fn should_open(&self, inner: &Inner) -> bool {
        if self
            .config
            .consecutive_failures
            .is_some_and(|n| inner.consecutive >= n)
        {
            return true;
        }
        let Some(rate) = self.config.failure_rate else {
            return false;
        };
        let (calls, failures) = inner
            .window
            .iter()
            .fold((0u64, 0u64), |(c, f), (_, bc, bf)| {
                (c + u64::from(*bc), f + u64::from(*bf))
            });
        calls >= u64::from(self.config.min_calls) && failures as f64 >= rate * calls as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::controls::WhenOpen;
    use crate::config::duration::ConfigDuration;

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            consecutive_failures: Some(3),
            failure_rate: None,
            min_calls: 20,
            window: ConfigDuration(Duration::from_secs(60)),
            open_for: ConfigDuration(Duration::from_secs(10)),
            half_open_calls: 2,
            when_open: WhenOpen::Reject,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_half_opens_and_closes() {
        let b = CircuitBreaker::new(config(), "c", None);
        b.record([false, false, true, false, false]);
        assert_eq!(b.state(), State::Closed, "a success resets the run");
        b.record([false]);
        assert_eq!(b.state(), State::Open);
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.admit().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), State::HalfOpen);
        let mut first = b.admit().expect("a first trial");
        let mut second = b.admit().expect("a second trial");
        assert!(b.admit().is_none(), "only half_open_calls trials");
        first.record(true);
        assert_eq!(b.state(), State::HalfOpen);
        second.record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_gauge_shows_half_open_without_traffic() {
        let gauge = prometheus::IntGauge::new("s", "s").unwrap();
        let to = ["c", "o", "h"].map(|n| prometheus::IntCounter::new(n, n).unwrap());
        let b = CircuitBreaker::new(
            config(),
            "c",
            Some(BreakerMetrics {
                state: gauge.clone(),
                to: to.clone(),
            }),
        );
        b.record([false; 3]);
        assert_eq!(gauge.get(), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert_eq!(gauge.get(), 2, "the open_for timer half-opens the breaker");
        assert_eq!((to[0].get(), to[1].get(), to[2].get()), (0, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens() {
        let b = CircuitBreaker::new(config(), "c", None);
        b.record([false; 3]);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.admit().expect("a trial").record(false);
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), State::Open, "open_for restarts on re-opening");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_dropped_without_an_outcome_frees_its_slot() {
        let b = CircuitBreaker::new(config(), "c", None);
        b.record([false; 3]);
        tokio::time::advance(Duration::from_secs(10)).await;
        let (one, two) = (b.admit().unwrap(), b.admit().unwrap());
        assert!(b.admit().is_none());
        drop(one);
        let mut three = b.admit().expect("the dropped trial's slot is free");
        three.record(true);
        drop(two);
        b.admit().expect("and so is the other's").record(true);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_from_an_earlier_half_open_period_frees_nothing() {
        let b = CircuitBreaker::new(config(), "c", None);
        b.record([false; 3]);
        tokio::time::advance(Duration::from_secs(10)).await;
        let stale = b.admit().unwrap();
        b.admit().unwrap().record(false);
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        let (_a, _b) = (b.admit().unwrap(), b.admit().unwrap());
        drop(stale);
        assert!(b.admit().is_none(), "both slots of this period are taken");
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_needs_min_calls_within_the_window() {
        let mut c = config();
        c.consecutive_failures = None;
        c.failure_rate = Some(0.5);
        c.min_calls = 10;
        let b = CircuitBreaker::new(c, "c", None);
        b.record([false, true].repeat(4));
        assert_eq!(b.state(), State::Closed, "8 calls < min_calls");
        tokio::time::advance(Duration::from_secs(61)).await;
        b.record([false, true]);
        assert_eq!(b.state(), State::Closed, "old calls left the window");
        b.record([false, true, false, true, false, true, false, false]);
        assert_eq!(b.state(), State::Open, "6 of 10 calls failed");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_resume_when_the_breaker_half_opens() {
        let b = CircuitBreaker::new(config(), "c", None);
        b.record([false; 3]);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let _call = b.admit_wait().await;
                Instant::now()
            })
        };
        let start = Instant::now();
        let admitted_at = waiter.await.unwrap();
        assert_eq!(admitted_at.duration_since(start), Duration::from_secs(10));
    }
}
