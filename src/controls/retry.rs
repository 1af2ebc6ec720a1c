//! Retry schedule: exponential backoff (from `backon`) with full jitter —
//! each wait is uniform in [0, backoff), which spreads retries of many
//! workers apart better than backon's additive jitter.

use crate::config::controls::RetryConfig;
use backon::BackoffBuilder;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    initial: Duration,
    max: Duration,
}

impl RetryPolicy {
    pub fn new(config: Option<&RetryConfig>) -> Self {
        match config {
            Some(c) => Self {
                attempts: c.attempts.max(1),
                initial: c.initial_backoff.0,
                max: c.max_backoff.0,
            },
            None => Self {
                attempts: 1,
                initial: Duration::ZERO,
                max: Duration::ZERO,
            },
        }
    }

    /// The waits before retries 1, 2, ... (`attempts - 1` of them).
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
            .map(|d| d.mul_f64(fastrand::f64()))
    }
}

/// Problems in a retry config, as (key, message).
pub fn check(config: &RetryConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if config.attempts == 0 {
        problems.push((
            "attempts",
            "retry.attempts must be at least 1 (1 = no retry)".to_string(),
        ));
    }
    if config.initial_backoff.0 > config.max_backoff.0 {
        problems.push((
            "initial_backoff",
            "retry.initial_backoff must not exceed retry.max_backoff".to_string(),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::ConfigDuration;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = RetryPolicy::new(Some(&RetryConfig {
            attempts: 6,
            initial_backoff: ConfigDuration(Duration::from_millis(100)),
            max_backoff: ConfigDuration(Duration::from_millis(500)),
        }));
        for _ in 0..50 {
            let waits: Vec<Duration> = p.backoffs().collect();
            assert_eq!(waits.len(), 5);
            let caps = [100, 200, 400, 500, 500];
            for (w, cap) in waits.iter().zip(caps) {
                assert!(*w <= Duration::from_millis(cap), "{w:?} > {cap}ms");
            }
        }
        assert_eq!(RetryPolicy::new(None).backoffs().count(), 0);
    }
}
