//! `file`: appends events to a file, one per line, creating the file and
//! its directory when missing.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink};
use crate::event::Batch;
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
    /// Opened on the first write, so a pipeline that writes nothing creates nothing.
    file: tokio::sync::Mutex<Option<tokio::fs::File>>,
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
            *slot = Some(file);
        }
        let file = slot.as_mut().expect("opened above");
        file.write_all(&encoded.bytes)
            .await
            .map_err(|e| self.io("writing", e))?;
        // tokio's File finishes a write on a blocking thread after
        // `write_all` returns; flushing waits for it, so "written" (what
        // acknowledgements rely on) means the kernel has the bytes.
        file.flush().await.map_err(|e| self.io("writing", e))
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        if let Some(file) = self.file.lock().await.as_mut() {
            file.flush().await.map_err(|e| self.io("flushing", e))?;
            file.sync_data().await.map_err(|e| self.io("syncing", e))?;
        }
        Ok(())
    }
}
