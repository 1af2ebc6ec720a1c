//! Checkpoints of a followed file: where the last acknowledged line ends.
//!
//! Batches are acknowledged in any order (fan-out, unordered workers), but
//! a checkpoint may only move past a position once everything before it is
//! acknowledged: completions are sequenced and the checkpoint follows the
//! longest acknowledged prefix. Writes are atomic (temporary file, fsync,
//! rename, fsync of the directory) and coalesced: at most one write per
//! `WRITE_INTERVAL`, covering every acknowledgement that arrived meanwhile.

use crate::core::{Acks, Delivery};
use crate::telemetry::AckCounters;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The shortest time between two checkpoint writes. A `kill -9` repeats
/// at most what was acknowledged within it, besides what was unacknowledged.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A position in a file, named by the file's identity so a rotated file
/// can still be found after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the file consumed: the end of the last full line.
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    path: PathBuf,
    #[serde(flatten)]
    position: Position,
}

/// Reads the checkpoint of `watched`; a missing one is `None`, and so is
/// an unreadable one or one kept for another path (logged; the file is
/// then read per `read_from`).
pub fn load(file: &Path, watched: &Path, component: &str) -> Option<Position> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                component,
                "cannot read checkpoint '{}': {e}",
                file.display()
            );
            return None;
        }
    };
    match serde_json::from_slice::<Stored>(&text) {
        Ok(s) if s.path == watched => Some(s.position),
        Ok(s) => {
            tracing::info!(
                component,
                "the checkpoint is for '{}', not '{}': starting afresh",
                s.path.display(),
                watched.display()
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                component,
                "ignoring corrupt checkpoint '{}': {e}",
                file.display()
            );
            None
        }
    }
}

fn store(file: &Path, watched: &Path, position: Position) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let body = serde_json::to_vec(&Stored {
        path: watched.to_path_buf(),
        position,
    })
    .map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Hands out sequenced acknowledgements and keeps the checkpoint.
pub struct Checkpointer {
    next_seq: u64,
    tx: mpsc::UnboundedSender<(u64, Position, Delivery)>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    pub fn start(file: PathBuf, watched: PathBuf, component: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(keep(rx, file, watched, component));
        Self {
            next_seq: 0,
            tx,
            task,
        }
    }

    /// The acknowledgements of a chunk of `lines` lines that ends at `end`.
    pub fn acks_for(&mut self, end: Position, lines: usize, counters: &AckCounters) -> Acks {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (tx, counters) = (self.tx.clone(), counters.clone());
        Acks::new(move |delivery| {
            counters.count(delivery == Delivery::Delivered, lines);
            let _ = tx.send((seq, end, delivery));
        })
    }

    /// Waits until every batch handed out is acknowledged and the final
    /// checkpoint is written.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn keep(
    mut rx: mpsc::UnboundedReceiver<(u64, Position, Delivery)>,
    file: PathBuf,
    watched: PathBuf,
    component: String,
) {
    let mut done: BTreeMap<u64, Position> = BTreeMap::new();
    let mut next = 0u64;
    let mut written: Option<Position> = None;
    while let Some(first) = rx.recv().await {
        let mut arrived = vec![first];
        while let Ok(more) = rx.try_recv() {
            arrived.push(more);
        }
        for (seq, position, delivery) in arrived {
            if delivery == Delivery::Failed {
                // A file cannot be asked to send a line again: the failure
                // is counted where it happened, and the checkpoint moves on.
                tracing::warn!(
                    component,
                    "events up to offset {} were not all written (see flowgate_errors_total)",
                    position.offset
                );
            }
            done.insert(seq, position);
        }
        let mut latest = None;
        while let Some(p) = done.remove(&next) {
            latest = Some(p);
            next += 1;
        }
        if let Some(p) = latest.filter(|p| Some(*p) != written) {
            let (f, w) = (file.clone(), watched.clone());
            match tokio::task::spawn_blocking(move || store(&f, &w, p)).await {
                Ok(Ok(())) => {
                    written = Some(p);
                    // Acknowledgements arriving meanwhile are taken by the
                    // next write: fsyncs stay a few per second however
                    // fast the file grows (measured: fsync per 256 KiB
                    // chunk cost a third of the throughput).
                    tokio::time::sleep(WRITE_INTERVAL).await;
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        component,
                        "cannot write checkpoint '{}': {e}",
                        file.display()
                    )
                }
                Err(e) => tracing::error!(component, "checkpoint writer failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_checkpoint_follows_the_acknowledged_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.checkpoint.json");
        let mut cp = Checkpointer::start(file.clone(), "w.log".into(), "c".into());
        let counters = crate::telemetry::Metrics::new()
            .component("p", "c", "source", "file")
            .acknowledged();
        let at = |offset| Position {
            dev: 1,
            ino: 2,
            offset,
        };
        let first = cp.acks_for(at(10), 1, &counters);
        let second = cp.acks_for(at(20), 1, &counters);
        drop(second);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            load(&file, Path::new("w.log"), "c"),
            None,
            "20 waits for 10"
        );
        drop(first);
        let third = cp.acks_for(at(30), 1, &counters);
        let held = third.clone();
        drop(third);
        // The write happens on a blocking thread: wait for it (generously,
        // a busy machine may take a while), never for a fixed time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while load(&file, Path::new("w.log"), "c") != Some(at(20)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint at 20 within 30s: {:?}",
                load(&file, Path::new("w.log"), "c")
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(held);
        cp.finish().await;
        assert_eq!(load(&file, Path::new("w.log"), "c"), Some(at(30)));
        assert_eq!(counters.delivered.get(), 3);
    }
}
