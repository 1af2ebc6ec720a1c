//! `file`: appends events to a file, one per line, creating the file and
//! its directory when missing. When the file is moved or deleted (log
//! rotation), the next write creates it again at `path`.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink};
use crate::core::Batch;
use crate::core::sync::LockExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Appends events to a file, one per line; the file and its directory are created if missing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path of the file to append to.
    pub path: PathBuf,
    /// `json` (default): NDJSON; `text`: the `.message` field of each event.
    #[serde(default)]
    pub codec: OutputCodec,
}

impl FileSinkConfig {
    pub fn build(&self) -> FileSink {
        FileSink {
            path: Arc::new(self.path.clone()),
            codec: self.codec,
            file: Arc::new(Mutex::new(None)),
        }
    }
}

/// The open file, with the (device, inode) it was opened as.
type Opened = Option<(std::fs::File, (u64, u64))>;

pub struct FileSink {
    path: Arc<PathBuf>,
    codec: OutputCodec,
    /// Opened on the first write, so a pipeline that writes nothing creates
    /// nothing. Only the blocking thread of the current write holds the
    /// lock (writes run one at a time).
    file: Arc<Mutex<Opened>>,
}

/// A file's identity, (device, inode): what stays the same when the file
/// is renamed and differs for a new file at the same path.
fn identity_of(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn io(path: &Path, what: &str, e: std::io::Error) -> ComponentError {
    ComponentError::io(format!("{what} '{}'", path.display()), e)
}

/// One batch, on a blocking thread (a stat or write on a hung network
/// filesystem must not hold a runtime thread): the stat that notices a
/// rotated file, the open when needed, and the write, in one round trip.
/// When it returns, the kernel has the bytes (what acknowledgements rely
/// on).
fn append(path: &Path, slot: &mut Opened, bytes: &[u8]) -> Result<(), ComponentError> {
    let now = std::fs::metadata(path).ok().map(|m| identity_of(&m));
    if let Some((_, opened)) = slot.as_ref()
        && now != Some(*opened)
    {
        tracing::info!(
            "'{}' was moved or removed; writing to a new file at the path",
            path.display()
        );
        *slot = None;
    }
    let file = match slot {
        Some((file, _)) => file,
        None => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io(path, "creating the directory of", e))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io(path, "opening", e))?;
            let opened = identity_of(&file.metadata().map_err(|e| io(path, "opening", e))?);
            &mut slot.insert((file, opened)).0
        }
    };
    file.write_all(bytes).map_err(|e| io(path, "writing", e))
}

/// Runs `f` on the open file (if any) on a blocking thread.
async fn blocking<T: Send + 'static>(
    sink: &FileSink,
    f: impl FnOnce(&Path, &mut Opened) -> Result<T, ComponentError> + Send + 'static,
) -> Result<T, ComponentError> {
    let (path, file) = (sink.path.clone(), sink.file.clone());
    tokio::task::spawn_blocking(move || f(&path, &mut file.lock_unpoisoned()))
        .await
        .map_err(|e| io(&sink.path, "writing", std::io::Error::other(e)))?
}

#[async_trait::async_trait]
impl Sink for FileSink {
    fn encode(&self, batch: Batch) -> Encoded {
        encode_lines(batch, self.codec)
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        if encoded.bytes.is_empty() {
            return Ok(());
        }
        // The thread needs its own copy (a memcpy per batch, as tokio's
        // File made into its buffer before).
        let bytes = encoded.bytes.clone();
        blocking(self, move |path, slot| append(path, slot, &bytes)).await
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        blocking(self, |path, slot| match slot {
            Some((file, _)) => {
                file.flush().map_err(|e| io(path, "flushing", e))?;
                file.sync_data().map_err(|e| io(path, "syncing", e))
            }
            None => Ok(()),
        })
        .await
    }
}
