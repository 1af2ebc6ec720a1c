//! Every metric of SPEC §8, defined once. Components record through
//! `ComponentMetrics`, whose handles are resolved when the graph is built so
//! the hot path only does atomic adds, once per batch.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

mod component;
pub use component::{
    AckCounters, BreakerMetrics, ComponentMetrics, DiskBufferMetrics, RateLimitMetrics,
};

const COMPONENT_LABELS: [&str; 4] = ["pipeline", "component", "component_kind", "component_type"];

/// Why an event left the pipeline without being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    Filtered,
    BufferFull,
    Error,
    Unmatched,
    RateLimited,
    /// An `aggregate`'s events for windows already emitted, `.late` unread.
    Late,
    /// A `dedupe` repeat within its ttl.
    Duplicate,
    /// Not chosen by a `sample`.
    Sampled,
}

/// Every discard reason, in the order of `ComponentMetrics::discarded`.
const REASONS: [DiscardReason; 8] = [
    DiscardReason::Filtered,
    DiscardReason::BufferFull,
    DiscardReason::Error,
    DiscardReason::Unmatched,
    DiscardReason::RateLimited,
    DiscardReason::Late,
    DiscardReason::Duplicate,
    DiscardReason::Sampled,
];

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Filtered => "filtered",
            DiscardReason::BufferFull => "buffer_full",
            DiscardReason::Error => "error",
            DiscardReason::Unmatched => "unmatched",
            DiscardReason::RateLimited => "rate_limited",
            DiscardReason::Late => "late",
            DiscardReason::Duplicate => "duplicate",
            DiscardReason::Sampled => "sampled",
        }
    }
}

/// The process-wide metric families.
pub struct Metrics {
    registry: Registry,
    events_in: IntCounterVec,
    events_out: IntCounterVec,
    discarded: IntCounterVec,
    errors: IntCounterVec,
    buffer_events: IntGaugeVec,
    buffer_capacity: IntGaugeVec,
    buffer_bytes: IntGaugeVec,
    buffer_capacity_bytes: IntGaugeVec,
    buffer_corrupt: IntCounterVec,
    buffer_redelivered: IntCounterVec,
    workers_busy: IntGaugeVec,
    workers_limit: IntGaugeVec,
    processing: HistogramVec,
    config_reloads: IntCounterVec,
    retries: IntCounterVec,
    rate_limit_delay: CounterVec,
    rate_limit_evictions: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    acknowledged: IntCounterVec,
    kafka_lag: IntGaugeVec,
    state_entries: IntGaugeVec,
    state_evictions: IntCounterVec,
}

fn with_extra(extra: &str) -> Vec<&str> {
    let mut labels = COMPONENT_LABELS.to_vec();
    labels.push(extra);
    labels
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "flowgate_processing_seconds",
                "Time one stage spent on one batch.",
            )
            .buckets(vec![
                0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            &COMPONENT_LABELS,
        )
        .expect("static metric definition");
        registry
            .register(Box::new(processing.clone()))
            .expect("metric registered once");
        let config_reloads = counter(
            "flowgate_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        );
        // Present from the start, so `increase(...)` alerts see the first one.
        for result in ["applied", "rejected"] {
            config_reloads.with_label_values(&[result]);
        }
        let build_info = gauge(
            "flowgate_build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registered once");
        let rate_limit_delay = CounterVec::new(
            Opts::new(
                "flowgate_rate_limit_delay_seconds_total",
                "Time events waited for a rate limit.",
            ),
            &COMPONENT_LABELS,
        )
        .expect("static metric definition");
        registry
            .register(Box::new(rate_limit_delay.clone()))
            .expect("metric registered once");
        Arc::new(Self {
            retries: counter(
                "flowgate_retries_total",
                "Retried attempts.",
                &COMPONENT_LABELS,
            ),
            rate_limit_delay,
            buffer_corrupt: counter(
                "flowgate_buffer_corrupt_records_total",
                "Disk buffer records found damaged (torn, failed checksum, not JSON) and skipped.",
                &COMPONENT_LABELS,
            ),
            buffer_redelivered: counter(
                "flowgate_buffer_redelivered_events_total",
                "Disk buffer events handed on again: after a sink gave up on them, or after a crash before they were acknowledged.",
                &COMPONENT_LABELS,
            ),
            rate_limit_evictions: counter(
                "flowgate_rate_limit_key_evictions_total",
                "Per-key rate-limit buckets evicted (least recently used) beyond max_keys.",
                &COMPONENT_LABELS,
            ),
            breaker_state: gauge(
                "flowgate_circuit_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                &COMPONENT_LABELS,
            ),
            breaker_transitions: counter(
                "flowgate_circuit_breaker_transitions_total",
                "Circuit breaker state changes, by new state.",
                &with_extra("to"),
            ),
            acknowledged: counter(
                "flowgate_acknowledged_events_total",
                "Events of acknowledging sources by outcome: delivered (acked, checkpointed, answered 200) or failed (nak'ed, answered 503).",
                &with_extra("outcome"),
            ),
            events_in: counter(
                "flowgate_events_in_total",
                "Events a component received.",
                &COMPONENT_LABELS,
            ),
            events_out: counter(
                "flowgate_events_out_total",
                "Events a component emitted, by output.",
                &with_extra("output"),
            ),
            discarded: counter(
                "flowgate_events_discarded_total",
                "Events dropped by a configured rule, by reason.",
                &with_extra("reason"),
            ),
            errors: counter(
                "flowgate_errors_total",
                "Failures, by error type.",
                &with_extra("error_type"),
            ),
            buffer_events: gauge(
                "flowgate_buffer_events",
                "Events in the stage's input queue.",
                &COMPONENT_LABELS,
            ),
            buffer_capacity: gauge(
                "flowgate_buffer_capacity_events",
                "Events the stage's input queue holds.",
                &COMPONENT_LABELS,
            ),
            buffer_bytes: gauge(
                "flowgate_buffer_bytes",
                "Bytes the stage's input queue holds: encoded JSON of the queued events (memory, with max_bytes), or segment file bytes (disk).",
                &COMPONENT_LABELS,
            ),
            buffer_capacity_bytes: gauge(
                "flowgate_buffer_capacity_bytes",
                "Bytes the stage's input queue holds (buffer.max_bytes).",
                &COMPONENT_LABELS,
            ),
            workers_busy: gauge(
                "flowgate_workers_busy",
                "Workers of the stage busy on a batch.",
                &COMPONENT_LABELS,
            ),
            workers_limit: gauge(
                "flowgate_workers_limit",
                "With workers: adaptive, the concurrency the stage allows itself now.",
                &COMPONENT_LABELS,
            ),
            kafka_lag: gauge(
                "flowgate_kafka_consumer_lag_messages",
                "Kafka source: messages of a partition after the committed offset (the broker's end offset minus it).",
                &[&COMPONENT_LABELS[..], &["topic", "partition"]].concat(),
            ),
            state_entries: gauge(
                "flowgate_state_entries",
                "Entries a stateful transform holds: open (group, window) pairs, remembered keys, open groups.",
                &COMPONENT_LABELS,
            ),
            state_evictions: counter(
                "flowgate_state_evictions_total",
                "Entries a stateful transform emitted early or forgot to stay within its bound (max_groups, max_keys).",
                &COMPONENT_LABELS,
            ),
            config_reloads,
            processing,
            registry,
        })
    }

    /// Handles for one component, with its four labels fixed.
    pub fn component(
        self: &Arc<Self>,
        pipeline: &str,
        name: &str,
        kind: &str,
        type_name: &str,
    ) -> ComponentMetrics {
        let labels = [
            pipeline.to_string(),
            name.to_string(),
            kind.to_string(),
            type_name.to_string(),
        ];
        let l: [&str; 4] = [&labels[0], &labels[1], &labels[2], &labels[3]];
        ComponentMetrics {
            events_in: self.events_in.with_label_values(&l),
            buffer_events: self.buffer_events.with_label_values(&l),
            buffer_capacity: self.buffer_capacity.with_label_values(&l),
            workers_busy: self.workers_busy.with_label_values(&l),
            processing: self.processing.with_label_values(&l),
            discarded: REASONS.map(|r| {
                self.discarded
                    .with_label_values(&[l[0], l[1], l[2], l[3], r.as_str()])
            }),
            labels,
            families: self.clone(),
        }
    }

    pub fn config_reload(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Every family as `render` encodes it, for readers that want the
    /// figures as numbers (`/api/pipelines`): one registry, so both agree.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
