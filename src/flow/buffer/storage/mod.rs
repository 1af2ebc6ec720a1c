//! Disk buffers' storage (SPEC §11): a stage's input queue kept in files
//! under `<data-dir>/<pipeline>/<component>/`. Synchronous code for the
//! one thread that owns a buffer directory; the async front that feeds it
//! is `flow::buffer`'s business.
//!
//! A directory holds:
//! - `<first_seq:020>.seg`: append-only segments of checksummed records,
//!   one event each (`record.rs`, `segment.rs`, read back by `scan.rs`);
//!   the only record of what was written;
//! - `buffer.ledger`: the highest seq acknowledged downstream, in two
//!   alternating slots (`ledger.rs`);
//! - `buffer.lock`: held by the process that has the buffer open.
//!
//! `Store` (`store.rs`) is the owner: append, sync, read, acknowledge,
//! recovery at open. `check.rs` reads buffers without opening them, for
//! `flowgate buffer check`. Corruption never stops a buffer: damaged
//! records are skipped and counted, and a scan always terminates.

pub mod check;
pub mod ledger;
pub mod record;
pub mod scan;
pub mod segment;
mod seqs;
pub mod store;

pub use record::{EncodeError, EncodedBatch, MAX_RECORD};
pub use store::{Opened, ReadOutcome, Store};

use std::path::PathBuf;

/// Why a buffer directory could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another open in this one) has the directory.
    #[error(
        "the disk buffer {} is in use by another flowgate process{}",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// A `map_err` adapter: the I/O error of `doing` on `path`.
    pub fn io(path: &std::path::Path, doing: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            doing,
            path,
            source,
        }
    }
}
