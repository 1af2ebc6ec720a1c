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
