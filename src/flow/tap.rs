//! Taps: a sample of the events leaving a component, for `flowgate tap`.
//! Each output has a tap point; while nobody listens it costs one atomic
//! load per batch. Listeners get at most `SAMPLE_PER_SECOND` events a
//! second, serialised once and broadcast; a slow listener misses events
//! rather than slowing the pipeline.

use crate::core::Batch;
use crate::core::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Events a tap passes on per second at most.
pub const SAMPLE_PER_SECOND: usize = 100;

pub struct TapPoint {
    listeners: AtomicUsize,
    tx: broadcast::Sender<Arc<str>>,
    /// (window start, events sent in this one-second window)
    window: Mutex<(Instant, usize)>,
}

impl TapPoint {
    fn new() -> Self {
        Self {
            listeners: AtomicUsize::new(0),
            tx: broadcast::channel(SAMPLE_PER_SECOND * 2).0,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Called by the fan-out for every batch it sends.
    pub fn offer(&self, batch: &Batch) {
        if self.listeners.load(Ordering::Relaxed) == 0 {
            return;
        }
        let take = {
            let mut w = self.window.lock_unpoisoned();
            let now = Instant::now();
            if now.duration_since(w.0).as_secs() >= 1 {
                *w = (now, 0);
            }
            let take = (SAMPLE_PER_SECOND - w.1).min(batch.len());
            w.1 += take;
            take
        };
        for event in &batch[..take] {
            let _ = self.tx.send(Arc::from(event.to_string()));
        }
    }

    /// A listener; dropping it stops the sampling when it was the last.
    pub fn listen(self: &Arc<Self>) -> Listener {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listener {
            rx: self.tx.subscribe(),
            point: self.clone(),
        }
    }
}

pub struct Listener {
    pub rx: broadcast::Receiver<Arc<str>>,
    point: Arc<TapPoint>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.point.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every tap point of the process, by `pipeline/component[.port]`.
#[derive(Clone, Default)]
pub struct Taps {
    points: Arc<Mutex<BTreeMap<String, Arc<TapPoint>>>>,
}

impl Taps {
    /// The tap point of one output (created on first use).
    pub fn point(&self, pipeline: &str, output: &str) -> Arc<TapPoint> {
        let mut points = self.points.lock_unpoisoned();
        points
            .entry(format!("{pipeline}/{output}"))
            .or_insert_with(|| Arc::new(TapPoint::new()))
            .clone()
    }

    /// Finds `pipeline/output` or a unique `output` across pipelines.
    pub fn find(&self, name: &str) -> Result<Arc<TapPoint>, String> {
        let points = self.points.lock_unpoisoned();
        if let Some(p) = points.get(name) {
            return Ok(p.clone());
        }
        let matching: Vec<(&String, &Arc<TapPoint>)> = points
            .iter()
            .filter(|(k, _)| k.split_once('/').is_some_and(|(_, o)| o == name))
            .collect();
        match matching.as_slice() {
            [(_, p)] => Ok((*p).clone()),
            [] => {
                let known: Vec<&str> = points.keys().map(String::as_str).collect();
                Err(format!("no output '{name}'; outputs: {}", known.join(", ")))
            }
            many => Err(format!(
                "'{name}' is in several pipelines; name one of: {}",
                many.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    #[tokio::test(start_paused = true)]
    async fn samples_at_most_the_rate_and_only_while_listened_to() {
        let taps = Taps::default();
        let p = taps.point("p", "c");
        let batch: Batch = (0..150).map(|i| ev!({ "i": i })).collect();
        p.offer(&batch);
        let mut l = p.listen();
        assert!(
            l.rx.try_recv().is_err(),
            "nothing is kept for later listeners"
        );
        p.offer(&batch);
        let mut got = 0;
        while l.rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, SAMPLE_PER_SECOND);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        p.offer(&batch[..3].to_vec());
        assert_eq!(&*l.rx.try_recv().unwrap(), "{\"i\":0}");
        assert!(taps.find("c").is_ok() && taps.find("p/c").is_ok() && taps.find("x").is_err());
    }
}
