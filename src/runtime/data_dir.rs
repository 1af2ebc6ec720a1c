//! Where components keep state between runs (`--data-dir`, SPEC §6):
//! file checkpoints live under `<data-dir>/<pipeline>/`.
//!
//! One directory per process, like the metrics registry: it is set once by
//! `flowgate run` before any pipeline starts; library users may set it too.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The default of `--data-dir`.
pub const DEFAULT: &str = "./.flowgate";

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets the state directory; the first call wins.
pub fn set(dir: impl Into<PathBuf>) {
    let _ = DATA_DIR.set(dir.into());
}

/// The state directory (`./.flowgate` unless set).
pub fn get() -> &'static Path {
    DATA_DIR.get_or_init(|| PathBuf::from(DEFAULT))
}

/// The directory for one pipeline's state.
pub fn for_pipeline(pipeline: &str) -> PathBuf {
    get().join(pipeline)
}
