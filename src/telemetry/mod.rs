//! Metric definitions and logging setup; a leaf every layer may call.

pub mod logging;
pub mod metrics;

pub use metrics::{
    AckCounters, BreakerMetrics, ComponentMetrics, DiscardReason, DiskBufferMetrics, Metrics,
    RateLimitMetrics,
};
