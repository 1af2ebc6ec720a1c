//! `file`: reads a file once, one event per line, then ends.

use super::Codec;
use crate::components::{ComponentError, Source, SourceContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Reads a file once from the beginning, one event per line, then ends.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the file to read (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// `json` (default): each line is a JSON object; `text`: each line becomes `{"message": line}`.
    #[serde(default)]
    pub codec: Codec,
}

impl FileSourceConfig {
    pub fn build(&self) -> FileSource {
        FileSource {
            path: self.path.clone(),
            codec: self.codec,
        }
    }
}

pub struct FileSource {
    path: PathBuf,
    codec: Codec,
}

#[async_trait::async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let what = format!("file '{}'", self.path.display());
        let file = std::fs::File::open(&self.path)
            .map_err(|e| ComponentError::io(format!("opening {what}"), e))?;
        super::lines::run(file, self.codec, &ctx, &what).await
    }
}
