//! `Pipeline` -> `Pieces`: every queue, fan-out and task future of a
//! pipeline, made without spawning anything.

pub mod build;
pub mod faults;
mod tasks;
mod topology;

use crate::flow::buffer::DiskRegistry;
use crate::flow::tap::Taps;
use crate::telemetry::Metrics;
use std::path::PathBuf;
use std::sync::Arc;

/// The default of `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./.flowgate";

/// What every pipeline of a process shares, handed to each build: the
/// metrics registry, the tap points, the state directory and the disk
/// buffers open in it.
#[derive(Clone)]
pub struct Host {
    pub metrics: Arc<Metrics>,
    pub taps: Taps,
    /// `--data-dir`: each pipeline keeps its state in `<data_dir>/<name>/`.
    pub data_dir: PathBuf,
    /// Open disk buffers, so a reload reuses them; closed (last sync and
    /// ledger written) before the process exits.
    pub disks: DiskRegistry,
}

impl Host {
    pub fn new(metrics: Arc<Metrics>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            metrics,
            taps: Taps::default(),
            data_dir: data_dir.into(),
            disks: DiskRegistry::default(),
        }
    }
}
