//! `stdout`: writes events to standard output, one per line.

use super::{OutputCodec, encode_lines};
use crate::components::{ComponentError, Encoded, Sink};
use crate::core::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Writes events to standard output, one per line.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `json` (default): NDJSON; `text`: the `.message` field of each event.
    #[serde(default)]
    pub codec: OutputCodec,
}

impl StdoutConfig {
    pub fn build(&self) -> Stdout {
        Stdout {
            codec: self.codec,
            out: tokio::sync::Mutex::new(tokio::io::stdout()),
        }
    }
}

pub struct Stdout {
    codec: OutputCodec,
    out: tokio::sync::Mutex<tokio::io::Stdout>,
}

#[async_trait::async_trait]
impl Sink for Stdout {
    fn encode(&self, batch: Batch) -> Encoded {
        encode_lines(batch, self.codec)
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        let mut out = self.out.lock().await;
        out.write_all(&encoded.bytes)
            .await
            .map_err(|e| ComponentError::io("writing to stdout", e))?;
        // Written means handed to the kernel (see the file sink).
        out.flush()
            .await
            .map_err(|e| ComponentError::io("writing to stdout", e))
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        self.out
            .lock()
            .await
            .flush()
            .await
            .map_err(|e| ComponentError::io("flushing stdout", e))
    }
}
