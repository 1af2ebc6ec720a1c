//! `generator`: emits configured events, cycled, as fast as downstream
//! takes them or at a fixed rate.

use crate::components::{ComponentError, Source, SourceContext};
use crate::core::{Batch, Event, MAX_BATCH};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Emits `events` in a cycle: `count` in total (absent = endless), at `rate` per second
/// (absent = as fast as downstream takes them).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// The events (JSON objects) to emit, cycled in order.
    pub events: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Total events to emit; absent means endless.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second; absent means as fast as downstream takes them.
    #[serde(default)]
    pub rate: Option<f64>,
}

impl GeneratorConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if self.events.is_empty() {
            problems.push((vec!["events"], "needs at least one event".to_string()));
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            problems.push((
                vec!["rate"],
                format!("must be a positive number of events per second, not {rate}"),
            ));
        }
        problems
    }

    pub fn build(&self) -> Generator {
        Generator {
            events: self
                .events
                .iter()
                .cloned()
                .map(|m| Event::from(serde_json::Value::Object(m)))
                .collect(),
            count: self.count,
            rate: self.rate,
        }
    }
}

pub struct Generator {
    events: Vec<Event>,
    count: Option<u64>,
    rate: Option<f64>,
}

/// Ticks of at least 10ms keep timer overhead low at high rates.
const MIN_TICK: Duration = Duration::from_millis(10);

#[async_trait::async_trait]
impl Source for Generator {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let mut emitted: u64 = 0;
        let mut next = 0usize;
        let mut ticker = self.rate.map(|rate| {
            let tick = Duration::from_secs_f64(1.0 / rate).max(MIN_TICK);
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (interval, rate * tick.as_secs_f64(), 0.0f64)
        });
        loop {
            let remaining = self.count.map_or(u64::MAX, |c| c - emitted.min(c));
            if remaining == 0 {
                return Ok(());
            }
            let mut size = remaining.min(MAX_BATCH as u64) as usize;
            if let Some((interval, per_tick, credit)) = ticker.as_mut() {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = interval.tick() => {}
                }
                *credit += *per_tick;
                let whole = credit.floor();
                *credit -= whole;
                size = size.min(whole as usize);
                if size == 0 {
                    continue;
                }
            } else if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            let batch: Batch = (0..size)
                .map(|_| {
                    let e = self.events[next].clone();
                    next = (next + 1) % self.events.len();
                    e
                })
                .collect();
            emitted += size as u64;
            ctx.metrics.events_in.inc_by(size as u64);
            tokio::select! {
                biased;
                _ = ctx.emit(batch) => {}
                // A blocked send is abandoned on shutdown: generated events
                // were never accepted from outside, so none is lost.
                _ = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::controls::{OnError, WhenFull};
    use crate::flow::buffer;
    use crate::flow::control::PipelineControl;
    use crate::flow::fanout::Fanout;
    use crate::flow::on_error::ErrorHandler;
    use crate::telemetry::Metrics;
    use tokio_util::sync::CancellationToken;

    fn run(
        config: GeneratorConfig,
        shutdown: CancellationToken,
    ) -> (tokio::task::JoinHandle<()>, buffer::BufferReceiver) {
        let metrics = Metrics::new();
        let m = metrics.component("p", "g", "source", "generator");
        let (tx, rx) = buffer::channel(
            100_000,
            None,
            WhenFull::Block,
            metrics.component("p", "o", "sink", "blackhole"),
        );
        let ctx = SourceContext {
            name: "g".into(),
            pipeline: "p".into(),
            state_dir: std::env::temp_dir(),
            downstream_capacity: 10,
            output: Fanout::new(vec![tx], m.output("default")),
            errors: ErrorHandler {
                name: "g".into(),
                on_error: OnError::Drop,
                errors: None,
                metrics: m.clone(),
                control: PipelineControl::new(),
            },
            shutdown,
            controls: crate::controls::StageControls::for_source(&Default::default(), &m),
            metrics: m,
        };
        let task = tokio::spawn(async move {
            Box::new(config.build()).run(ctx).await.unwrap();
        });
        (task, rx)
    }

    fn config(count: Option<u64>, rate: Option<f64>) -> GeneratorConfig {
        let events = vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})];
        GeneratorConfig {
            events: events
                .into_iter()
                .map(|v| v.as_object().unwrap().clone())
                .collect(),
            count,
            rate,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn emits_count_events_cycled_at_the_configured_rate() {
        let started = tokio::time::Instant::now();
        let (task, mut rx) = run(config(Some(250), Some(100.0)), CancellationToken::new());
        task.await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            (2.4..=2.6).contains(&elapsed),
            "250 events at 100/s take 2.5 s, took {elapsed}"
        );
        let mut all = Vec::new();
        while let Some(b) = rx.recv().await {
            all.extend(b.0);
        }
        assert_eq!(all.len(), 250);
        assert_eq!(all[0], serde_json::json!({"a": 1}));
        assert_eq!(all[1], serde_json::json!({"b": 2}));
        assert_eq!(all[249], serde_json::json!({"b": 2}));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_generator_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let (task, _rx) = run(config(None, Some(1000.0)), shutdown.clone());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn rejects_empty_events_and_bad_rates() {
        let mut c = config(None, Some(0.0));
        c.events.clear();
        let problems: Vec<String> = c.check().into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            problems,
            vec![
                "needs at least one event",
                "must be a positive number of events per second, not 0"
            ]
        );
    }
}
