//! `file`: appends events to a file, one per line, creating the file and
//! its directory when missing. When the file is moved or deleted (log
//! rotation), the next write creates it again at `path`.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink};
use crate::core::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

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
            path: self.path.clone(),
            codec: self.codec,
            file: tokio::sync::Mutex::new(None),
        }
    }
}

pub struct FileSink {
    path: PathBuf,
    codec: OutputCodec,
    /// Opened on the first write, so a pipeline that writes nothing creates
    /// nothing; with the (device, inode) it was opened as.
    file: tokio::sync::Mutex<Option<(tokio::fs::File, (u64, u64))>>,
}

/// A file's identity, (device, inode): what stays the same when the file
/// is renamed and differs for a new file at the same path.
fn identity_of(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The identity of the file at `path` now, if there is one. A stat per
/// batch, on a blocking thread like the write itself (a stat on a hung
/// network filesystem must not hold a runtime thread).
async fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| identity_of(&m))
}

impl FileSink {
    fn io(&self, what: &str, e: std::io::Error) -> ComponentError {
        ComponentError::io(format!("{what} '{}'", self.path.display()), e)
    }
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
        let mut slot = self.file.lock().await;
        let now = identity(&self.path).await;
        if let Some((_, opened)) = slot.as_ref()
            && now != Some(*opened)
        {
            tracing::info!(
                "'{}' was moved or removed; writing to a new file at the path",
                self.path.display()
            );
            *slot = None;
        }
        if slot.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| self.io("creating the directory of", e))?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| self.io("opening", e))?;
            let opened = identity_of(&file.metadata().await.map_err(|e| self.io("opening", e))?);
            *slot = Some((file, opened));
        }
        let (file, _) = slot.as_mut().expect("opened above");
        file.write_all(&encoded.bytes)
            .await
            .map_err(|e| self.io("writing", e))?;
        // tokio's File finishes a write on a blocking thread after
        // `write_all` returns; flushing waits for it, so "written" (what
        // acknowledgements rely on) means the kernel has the bytes.
        file.flush().await.map_err(|e| self.io("writing", e))
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        if let Some((file, _)) = self.file.lock().await.as_mut() {
            file.flush().await.map_err(|e| self.io("flushing", e))?;
            file.sync_data().await.map_err(|e| self.io("syncing", e))?;
        }
        Ok(())
    }
}
