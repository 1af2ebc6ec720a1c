//! One component's metric handles, with its labels fixed, and the handles
//! of the controls and buffers it reports through.

use super::{DiscardReason, Metrics, REASONS};
use prometheus::IntCounter;
use prometheus::IntGauge;
use std::sync::Arc;

/// Metric handles a circuit breaker reports to.
pub struct BreakerMetrics {
    pub state: IntGauge,
    /// `transitions_total{to="closed"|"open"|"half_open"}`.
    pub to: [IntCounter; 3],
}

/// Metric handles a rate limiter reports to.
pub struct RateLimitMetrics {
    pub delay_seconds: prometheus::Counter,
    pub evictions: IntCounter,
}

/// A disk buffer's counters.
pub struct DiskBufferMetrics {
    pub corrupt: IntCounter,
    pub redelivered: IntCounter,
}

/// What acknowledging sources count, per outcome.
#[derive(Clone)]
pub struct AckCounters {
    pub delivered: IntCounter,
    pub failed: IntCounter,
}

impl AckCounters {
    /// Counts `n` events as delivered or failed.
    pub fn count(&self, delivered: bool, n: usize) {
        match delivered {
            true => self.delivered.inc_by(n as u64),
            false => self.failed.inc_by(n as u64),
        }
    }
}

/// One component's metric handles.
#[derive(Clone)]
pub struct ComponentMetrics {
    pub(super) labels: [String; 4],
    pub(super) families: Arc<Metrics>,
    pub events_in: IntCounter,
    pub buffer_events: IntGauge,
    pub buffer_capacity: IntGauge,
    pub workers_busy: IntGauge,
    pub processing: prometheus::Histogram,
    pub(super) discarded: [IntCounter; 8],
}

impl ComponentMetrics {
    fn with<'a>(&'a self, extra: &'a str) -> [&'a str; 5] {
        [
            &self.labels[0],
            &self.labels[1],
            &self.labels[2],
            &self.labels[3],
            extra,
        ]
    }

    /// The queue's byte gauges: filled and capacity. Made only for queues
    /// that count bytes, so the others export no zero series.
    pub fn buffer_byte_gauges(&self) -> (IntGauge, IntGauge) {
        let l = self.with("");
        let l = &l[..4];
        (
            self.families.buffer_bytes.with_label_values(l),
            self.families.buffer_capacity_bytes.with_label_values(l),
        )
    }

    /// The `events_out_total` counter of one output port (resolve once).
    pub fn output(&self, port: &str) -> IntCounter {
        self.families.events_out.with_label_values(&self.with(port))
    }

    pub fn discard(&self, reason: DiscardReason, n: usize) {
        if n > 0 {
            let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
            self.discarded[i].inc_by(n as u64);
        }
    }

    /// Counts failures of one type (called per batch, so the label lookup is cheap enough).
    pub fn errors(&self, error_type: &str, n: usize) {
        if n > 0 {
            self.families
                .errors
                .with_label_values(&self.with(error_type))
                .inc_by(n as u64);
        }
    }

    pub fn name(&self) -> &str {
        &self.labels[1]
    }

    fn fixed(&self) -> [&str; 4] {
        [
            &self.labels[0],
            &self.labels[1],
            &self.labels[2],
            &self.labels[3],
        ]
    }

    /// `flowgate_workers_limit` (stages with `workers: adaptive`).
    pub fn workers_limit(&self) -> IntGauge {
        self.families.workers_limit.with_label_values(&self.fixed())
    }

    pub fn retries(&self) -> IntCounter {
        self.families.retries.with_label_values(&self.fixed())
    }

    pub fn breaker(&self) -> BreakerMetrics {
        let f = &self.families;
        BreakerMetrics {
            state: f.breaker_state.with_label_values(&self.fixed()),
            to: ["closed", "open", "half_open"]
                .map(|to| f.breaker_transitions.with_label_values(&self.with(to))),
        }
    }

    /// `(delivered, failed)` counters of an acknowledging source.
    pub fn acknowledged(&self) -> AckCounters {
        let f = &self.families.acknowledged;
        AckCounters {
            delivered: f.with_label_values(&self.with("delivered")),
            failed: f.with_label_values(&self.with("failed")),
        }
    }

    /// `(flowgate_state_entries, flowgate_state_evictions_total)` of a stateful transform.
    pub fn state(&self) -> (IntGauge, IntCounter) {
        let f = &self.families;
        (
            f.state_entries.with_label_values(&self.fixed()),
            f.state_evictions.with_label_values(&self.fixed()),
        )
    }

    /// Made only for disk buffers, so memory queues export no zero series.
    pub fn disk_buffer(&self) -> DiskBufferMetrics {
        DiskBufferMetrics {
            corrupt: self
                .families
                .buffer_corrupt
                .with_label_values(&self.fixed()),
            redelivered: self
                .families
                .buffer_redelivered
                .with_label_values(&self.fixed()),
        }
    }

    /// The lag gauge of a Kafka partition this component consumes (topic
    /// and partition come from the configuration and the broker).
    pub fn kafka_lag(&self, topic: &str, partition: i32) -> IntGauge {
        let p = partition.to_string();
        let [a, b, c, d] = self.fixed();
        self.families
            .kafka_lag
            .with_label_values(&[a, b, c, d, topic, &p])
    }

    /// Drops the lag gauge of a partition no longer consumed here.
    pub fn remove_kafka_lag(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let [a, b, c, d] = self.fixed();
        let _ = self
            .families
            .kafka_lag
            .remove_label_values(&[a, b, c, d, topic, &p]);
    }

    pub fn rate_limit(&self) -> RateLimitMetrics {
        RateLimitMetrics {
            delay_seconds: self
                .families
                .rate_limit_delay
                .with_label_values(&self.fixed()),
            evictions: self
                .families
                .rate_limit_evictions
                .with_label_values(&self.fixed()),
        }
    }
}

#[cfg(test)]
impl ComponentMetrics {
    /// Current value of a discard counter (tests only).
    pub fn families_discarded(&self, reason: DiscardReason) -> u64 {
        self.discarded
            .iter()
            .zip(REASONS)
            .find(|(_, r)| *r == reason)
            .map_or(0, |(c, _)| c.get())
    }
}
