//! The driver of stateful transforms (`aggregate`): one task owns the
//! state, so there is no lock; it takes batches from the input queue and
//! wakes at the state's next processing-time deadline, hands each output
//! on with the acknowledgements of what it was made from, and flushes the
//! state when the pipeline stops (SIGTERM: the events still arriving are
//! flushed batch by batch) and when the input ends (`flowgate test`
//! closes its input after the test's events).
//!
//! Stateful stages run on one worker whatever `workers` says (their state
//! is ordered); rate limits, timeouts, retries and breakers do not apply.
//! The clock is tokio's, anchored to the wall clock when the stage starts,
//! so windows close under `tokio::time::pause()` as they would in real time.

use super::transform::{PortOutput, StageParts};
use crate::components::ComponentError;
use crate::components::stateful::{Stateful, StatefulOutput};
use crate::core::Acks;
use crate::flow::on_error::ErrorHandler;
use crate::telemetry::{ComponentMetrics, DiscardReason};
use std::time::{Instant as StdInstant, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Wall-clock milliseconds that follow tokio time.
struct Clock {
    epoch_ms: i64,
    at: Instant,
}

impl Clock {
    fn new() -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            epoch_ms,
            at: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.epoch_ms + self.at.elapsed().as_millis() as i64
    }

    fn instant(&self, ms: i64) -> Instant {
        let ahead = (ms - self.epoch_ms).max(0) as u64;
        self.at + std::time::Duration::from_millis(ahead)
    }
}

async fn hand_on(
    unread: &[DiscardReason],
    out: StatefulOutput,
    acks: &Acks,
    ports: &[PortOutput],
    errors: &ErrorHandler,
    m: &ComponentMetrics,
    evictions: &prometheus::IntCounter,
) {
    for (reason, n) in out.discarded {
        m.discard(reason, n);
    }
    evictions.inc_by(out.evictions);
    m.errors("aggregation_skipped", out.skipped);
    for (i, (port, (batch, port_acks))) in ports.iter().zip(out.ports).enumerate() {
        if batch.is_empty() {
            continue;
        }
        if i > 0 && !port.fanout.has_consumers() {
            m.discard(unread[i], batch.len());
            continue;
        }
        if let Err(lost) = port.fanout.send(batch, port_acks).await {
            m.discard(DiscardReason::Error, lost.0);
        }
    }
    errors.handle(out.failed, acks).await;
}

pub async fn run_stateful(
    mut state: Box<dyn Stateful>,
    parts: StageParts,
) -> Result<(), ComponentError> {
    let StageParts {
        mut input,
        ports,
        errors,
        metrics,
        ..
    } = parts;
    let (entries, evictions) = metrics.state();
    let gauge = input.gauge();
    let clock = Clock::new();
    let n_ports = ports.len();
    let unread: Vec<DiscardReason> = (0..n_ports).map(|i| state.unread(i)).collect();
    // Sources that acknowledge wait for their last acknowledgements before
    // they end, and the input closes only once they have: held until the
    // input closed, the state would hold them forever. So a stopping
    // pipeline flushes the state, and then every batch as it comes.
    let stopping = errors.control.source_token();
    let mut stopped = false;
    loop {
        let deadline = state.next_deadline().map(|ms| clock.instant(ms));
        let mut out = StatefulOutput::with_ports(n_ports);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = input.recv() => match next {
                Some((batch, acks)) => {
                    let n = batch.len();
                    metrics.events_in.inc_by(n as u64);
                    metrics.workers_busy.inc();
                    let started = StdInstant::now();
                    state.process(batch, &acks, clock.now_ms(), &mut out);
                    if stopped {
                        state.flush(&mut out);
                    }
                    metrics.processing.observe(started.elapsed().as_secs_f64());
                    metrics.workers_busy.dec();
                    hand_on(&unread, out, &acks, &ports, &errors, &metrics, &evictions).await;
                    // What the state holds has left the queue's reckoning:
                    // `flowgate_state_entries` counts it.
                    gauge.settle(n);
                }
                None => break,
            },
            () = stopping.cancelled(), if !stopped => {
                stopped = true;
                state.flush(&mut out);
                hand_on(&unread, out, &Acks::none(), &ports, &errors, &metrics, &evictions).await;
            }
            () = sleep => {
                state.advance(clock.now_ms(), &mut out);
                hand_on(&unread, out, &Acks::none(), &ports, &errors, &metrics, &evictions).await;
            }
        }
        entries.set(state.entries() as i64);
    }
    let mut out = StatefulOutput::with_ports(n_ports);
    state.flush(&mut out);
    hand_on(
        &unread,
        out,
        &Acks::none(),
        &ports,
        &errors,
        &metrics,
        &evictions,
    )
    .await;
    entries.set(0);
    Ok(())
}
