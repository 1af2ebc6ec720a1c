//! Token-bucket rate limits (GCRA, from `governor`), one per stage or one
//! per key. Buckets read tokio's clock, so waits honour
//! `tokio::time::pause()` in tests.
//!
//! Ordering: with `when_limited: wait` and no key, events leave in input
//! order. With a key, a key over its limit has its events parked (each key
//! keeps its own order) while the other keys' events go on; the stage stops
//! taking input while as many events are parked as its buffer holds, so a
//! slow key holds back the others by at most the stage's buffer.

use crate::config::controls::{RateLimitConfig, WhenLimited};
/// Keyed parking needs the stage driver to come back for parked events:
/// `parked`, `next_ready_in` and `take_ready`.
use crate::core::sync::LockExt;
use crate::core::{Acks, Batch, Event, Str, Value};
use crate::expr::Program;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};
use lru::LruCache;

use std::collections::{HashMap, VecDeque};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Mutex;
use std::time::Duration;

/// governor's clock on tokio time.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Bucket = Gcra<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Events of one key waiting for its bucket.
struct KeyQueue {
    ready_at: tokio::time::Instant,
    /// Parked events, when they parked, and their batch's acknowledgements.
    events: VecDeque<(Event, tokio::time::Instant, Acks)>,
}

#[derive(Default)]
struct Parked {
    by_key: HashMap<Str, KeyQueue>,
    count: usize,
}

enum Buckets {
    One(Bucket),
    PerKey {
        key: Program,
        buckets: Mutex<LruCache<Str, Bucket>>,
    },
}

pub use crate::telemetry::RateLimitMetrics;

pub struct RateLimiter {
    quota: Quota,
    burst: NonZeroU32,
    when: WhenLimited,
    clock: TokioClock,
    buckets: Buckets,
    metrics: Option<RateLimitMetrics>,
    parked: Mutex<Parked>,
}

/// Problems in a rate-limit config, as (key, message).
pub fn check(config: &RateLimitConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if config.rate == 0 {
        problems.push(("rate", "rate_limit.rate must be at least 1".to_string()));
    }
    if config.per.0.is_zero() {
        problems.push(("per", "rate_limit.per must be longer than 0s".to_string()));
    }
    if config.burst == Some(0) {
        problems.push(("burst", "rate_limit.burst must be at least 1".to_string()));
    }
    if config.max_keys == 0 {
        problems.push((
            "max_keys",
            "rate_limit.max_keys must be at least 1".to_string(),
        ));
    }
    problems
}

impl RateLimiter {
    /// Builds the limiter; `config` must have passed `check`.
    pub fn new(
        config: &RateLimitConfig,
        key: Option<Program>,
        metrics: Option<RateLimitMetrics>,
    ) -> Self {
        let rate = NonZeroU32::new(config.rate).unwrap_or(NonZeroU32::MIN);
        let burst = config.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        let period = (config.per.0 / rate.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is not zero")
            .allow_burst(burst);
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let buckets = match key {
            None => Buckets::One(Gcra::direct_with_clock(quota, clock.clone())),
            Some(key) => {
                let cap = NonZeroUsize::new(config.max_keys).unwrap_or(NonZeroUsize::MIN);
                Buckets::PerKey {
                    key,
                    buckets: Mutex::new(LruCache::new(cap)),
                }
            }
        };
        Self {
            quota,
            burst,
            when: config.when_limited,
            clock,
            buckets,
            metrics,
            parked: Mutex::default(),
        }
    }

    /// Whether events can be parked (keyed `wait`).
    pub fn parks(&self) -> bool {
        matches!(self.buckets, Buckets::PerKey { .. }) && self.when == WhenLimited::Wait
    }

    /// The burst, for callers that release events as the bucket allows
    /// (`wait` mode only; `drop` decides per event anyway).
    pub fn release_size(&self) -> Option<usize> {
        (self.when == WhenLimited::Wait).then_some(self.burst.get() as usize)
    }

    /// Lets a batch through the limit: with `wait` every event, after the
    /// needed delay; with `drop` the events within the limit. Returns the
    /// admitted events and how many were dropped.
    /// Parked events keep a clone of `acks` until they are released.
    pub async fn admit(&self, batch: Batch, acks: &Acks) -> (Batch, usize) {
        match &self.buckets {
            Buckets::One(bucket) => self.admit_one(bucket, batch).await,
            Buckets::PerKey { key, buckets } => self.admit_keyed(key, buckets, batch, acks).await,
        }
    }

    async fn admit_one(&self, bucket: &Bucket, mut batch: Batch) -> (Batch, usize) {
        match self.when {
            WhenLimited::Wait => {
                let mut left = batch.len();
                while left > 0 {
                    let n = left.min(self.burst.get() as usize);
                    let cells = NonZeroU32::new(n as u32).expect("n > 0");
                    loop {
                        match bucket.check_n(cells) {
                            Ok(Ok(())) => break,
                            Ok(Err(not_until)) => {
                                self.sleep(not_until.wait_time_from(self.clock.now())).await
                            }
                            Err(_) => unreachable!("n is at most the burst"),
                        }
                    }
                    left -= n;
                }
                (batch, 0)
            }
            WhenLimited::Drop => {
                // Tokens do not come back within one batch: stop at the first refusal.
                let allowed = batch.iter().take_while(|_| bucket.check().is_ok()).count();
                let dropped = batch.len() - allowed;
                batch.truncate(allowed);
                (batch, dropped)
            }
        }
    }

    async fn admit_keyed(
        &self,
        key: &Program,
        buckets: &Mutex<LruCache<Str, Bucket>>,
        batch: Batch,
        acks: &Acks,
    ) -> (Batch, usize) {
        let keys: Vec<Str> = batch.iter().map(|e| key_of(key, e)).collect();
        let mut map = buckets.lock_unpoisoned();
        let mut admitted = Vec::with_capacity(batch.len());
        let mut dropped = 0;
        match self.when {
            WhenLimited::Drop => {
                for (event, k) in batch.into_iter().zip(keys) {
                    match self.check_key(&mut map, &k) {
                        Ok(()) => admitted.push(event),
                        Err(_) => dropped += 1,
                    }
                }
            }
            // A limited key's events are parked (behind any it already has
            // parked, so each key keeps its order) and the others go on.
            WhenLimited::Wait => {
                let now = tokio::time::Instant::now();
                let mut parked = self.parked.lock_unpoisoned();
                for (event, k) in batch.into_iter().zip(keys) {
                    if let Some(queue) = parked.by_key.get_mut(&k) {
                        queue.events.push_back((event, now, acks.clone()));
                        parked.count += 1;
                        continue;
                    }
                    match self.check_key(&mut map, &k) {
                        Ok(()) => admitted.push(event),
                        Err(wait) => {
                            parked.by_key.insert(
                                k,
                                KeyQueue {
                                    ready_at: now + wait,
                                    events: VecDeque::from([(event, now, acks.clone())]),
                                },
                            );
                            parked.count += 1;
                        }
                    }
                }
            }
        }
        (admitted, dropped)
    }

    /// Lets events through in order, sleeping for each key that has no
    /// token: for callers that run one event per concurrent slot (`http`),
    /// where a waiting event holds only its own slot.
    pub async fn admit_in_place(&self, batch: Batch) -> (Batch, usize) {
        let Buckets::PerKey { key, buckets } = &self.buckets else {
            return self.admit(batch, &Acks::none()).await;
        };
        if self.when == WhenLimited::Drop {
            return self.admit(batch, &Acks::none()).await;
        }
        let mut admitted = Vec::with_capacity(batch.len());
        for event in batch {
            let k = key_of(key, &event);
            loop {
                let checked = {
                    let mut map = buckets.lock_unpoisoned();
                    self.check_key(&mut map, &k)
                };
                match checked {
                    Ok(()) => break,
                    Err(wait) => self.sleep(wait).await,
                }
            }
            admitted.push(event);
        }
        (admitted, 0)
    }

    /// Takes a token from `k`'s bucket, or says how long until one is there.
    fn check_key(&self, map: &mut LruCache<Str, Bucket>, k: &Str) -> Result<(), Duration> {
        if !map.contains(k) {
            let fresh = Gcra::direct_with_clock(self.quota, self.clock.clone());
            if map.push(k.clone(), fresh).is_some()
                && let Some(m) = &self.metrics
            {
                m.evictions.inc();
            }
        }
        let bucket = map.get(k).expect("inserted above");
        bucket.check().map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_micros(100))
        })
    }

    /// Events parked by a keyed `wait` limit.
    pub fn parked(&self) -> usize {
        self.parked.lock_unpoisoned().count
    }

    /// Time until the earliest parked key may have a token.
    pub fn next_ready_in(&self) -> Option<Duration> {
        let parked = self.parked.lock_unpoisoned();
        let now = tokio::time::Instant::now();
        parked
            .by_key
            .values()
            .map(|q| q.ready_at.saturating_duration_since(now))
            .min()
    }

    /// The parked events whose key has tokens again, each key in order,
    /// with their acknowledgements.
    pub fn take_ready(&self) -> (Batch, Acks) {
        let Buckets::PerKey { buckets, .. } = &self.buckets else {
            return (Vec::new(), Acks::none());
        };
        let mut map = buckets.lock_unpoisoned();
        let mut parked = self.parked.lock_unpoisoned();
        let now = tokio::time::Instant::now();
        let mut ready = Vec::new();
        let mut ready_acks = Acks::none();
        let mut longest_wait = Duration::ZERO;
        let mut emptied = Vec::new();
        for (k, queue) in parked.by_key.iter_mut() {
            if queue.ready_at > now {
                continue;
            }
            while let Some((_, since, _)) = queue.events.front() {
                match self.check_key(&mut map, k) {
                    Ok(()) => {
                        longest_wait = longest_wait.max(now.saturating_duration_since(*since));
                        let (event, _, acks) = queue.events.pop_front().expect("front exists");
                        ready.push(event);
                        ready_acks.merge(acks);
                    }
                    Err(wait) => {
                        queue.ready_at = now + wait;
                        break;
                    }
                }
            }
            if queue.events.is_empty() {
                emptied.push(k.clone());
            }
        }
        for k in emptied {
            parked.by_key.remove(&k);
        }
        parked.count -= ready.len();
        if let Some(m) = &self.metrics {
            m.delay_seconds.inc_by(longest_wait.as_secs_f64());
        }
        (ready, ready_acks)
    }

    async fn sleep(&self, d: Duration) {
        let d = d.max(Duration::from_micros(100));
        if let Some(m) = &self.metrics {
            m.delay_seconds.inc_by(d.as_secs_f64());
        }
        tokio::time::sleep(d).await;
    }
}

/// The bucket key of an event: a string as is, anything else as JSON.
fn key_of(program: &Program, event: &Event) -> Str {
    let mut out = Vec::with_capacity(1);
    match program.outputs(event.clone(), &mut out) {
        Ok(()) => match out.into_iter().next() {
            Some(Value::String(s)) => s,
            Some(other) => Str::from(other.to_string()),
            None => Str::from("null"),
        },
        Err(_) => Str::from("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::ConfigDuration;
    use crate::ev;

    fn config(rate: u32, burst: Option<u32>, when: WhenLimited) -> RateLimitConfig {
        RateLimitConfig {
            rate,
            per: ConfigDuration(Duration::from_secs(1)),
            burst,
            key: None,
            max_keys: 2,
            when_limited: when,
        }
    }

    fn batch(n: usize, key: &str) -> Batch {
        (0..n).map(|i| ev!({"i": i, "k": key})).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn waits_to_hold_the_rate_and_allows_the_burst_at_once() {
        let l = RateLimiter::new(&config(100, Some(10), WhenLimited::Wait), None, None);
        let start = tokio::time::Instant::now();
        let (out, dropped) = l.admit(batch(10, "a"), &Acks::none()).await;
        assert_eq!((out.len(), dropped), (10, 0));
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst passes at once");
        let (out, _) = l.admit(batch(200, "a"), &Acks::none()).await;
        assert_eq!(out.len(), 200);
        let secs = start.elapsed().as_secs_f64();
        assert!(
            (1.9..=2.1).contains(&secs),
            "200 more events at 100/s take ~2 s, took {secs}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drop_mode_keeps_what_fits() {
        let l = RateLimiter::new(&config(100, Some(5), WhenLimited::Drop), None, None);
        let (out, dropped) = l.admit(batch(8, "a"), &Acks::none()).await;
        assert_eq!((out.len(), dropped), (5, 3));
        assert_eq!(out[4]["i"], 4);
        tokio::time::advance(Duration::from_millis(30)).await;
        let (out, dropped) = l.admit(batch(8, "a"), &Acks::none()).await;
        assert_eq!((out.len(), dropped), (3, 5), "3 tokens came back in 30 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_buckets_are_independent_and_bounded() {
        let mut c = config(1, Some(2), WhenLimited::Drop);
        c.key = Some(".k".into());
        let m = crate::telemetry::Metrics::new();
        let metrics = RateLimitMetrics {
            delay_seconds: prometheus::Counter::new("d", "d").unwrap(),
            evictions: prometheus::IntCounter::new("e", "e").unwrap(),
        };
        let evictions = metrics.evictions.clone();
        drop(m);
        let l = RateLimiter::new(&c, Some(Program::compile(".k").unwrap()), Some(metrics));
        let mut input = batch(3, "a");
        input.extend(batch(3, "b"));
        let (out, dropped) = l.admit(input, &Acks::none()).await;
        assert_eq!(dropped, 2);
        assert_eq!(out.iter().filter(|e| e["k"] == "a").count(), 2);
        assert_eq!(out.iter().filter(|e| e["k"] == "b").count(), 2);
        l.admit(batch(1, "c"), &Acks::none()).await;
        assert_eq!(
            evictions.get(),
            1,
            "max_keys 2: the least recently used key goes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_wait_parks_a_limited_key_and_lets_the_others_pass() {
        let mut c = config(10, Some(1), WhenLimited::Wait);
        c.key = Some(".k".into());
        c.max_keys = 100;
        let l = RateLimiter::new(&c, Some(Program::compile(".k").unwrap()), None);
        let start = tokio::time::Instant::now();
        let mut input = batch(1, "a");
        input.extend(batch(1, "b"));
        input.extend(batch(1, "c"));
        let (out, _) = l.admit(input, &Acks::none()).await;
        assert_eq!(out.len(), 3);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "one event per key fits every bucket"
        );
        // Key a is spent: its events park; fresh key d passes at once.
        let mut input = batch(3, "a");
        input.extend(batch(2, "d").into_iter().map(|mut e| {
            e.as_object_mut()
                .unwrap()
                .insert("i".into(), crate::core::Value::from(10));
            e
        }));
        let (out, _) = l.admit(input, &Acks::none()).await;
        assert_eq!(
            out.len(),
            1,
            "one d passes (burst 1), the other d parks behind it"
        );
        assert_eq!(l.parked(), 4);
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing waits in admit");
        let wait = l.next_ready_in().unwrap();
        assert!(wait <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        let ready = l.take_ready().0;
        assert_eq!(ready.iter().filter(|e| e["k"] == "a").count(), 1);
        assert_eq!(ready.iter().filter(|e| e["k"] == "d").count(), 1);
        assert_eq!(
            ready.iter().find(|e| e["k"] == "a").unwrap()["i"],
            0,
            "key order kept"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        let ready = l.take_ready().0;
        assert_eq!(
            ready
                .iter()
                .map(|e| e["i"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![1],
            "one token per 100 ms, not a burst"
        );
        assert_eq!(l.parked(), 1);
    }
}
