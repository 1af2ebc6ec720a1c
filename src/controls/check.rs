//! Checks of stage-control configs: every problem, with the key path
//! under the component, for `graph::compile` to place in the file.

use super::{rate_limit, retry};
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
