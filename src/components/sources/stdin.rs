//! `stdin`: one event per line of standard input; ends at EOF.

use super::Codec;
use super::decode::{check_max_line_bytes, default_max_line_bytes};
use crate::components::{ComponentError, Source, SourceContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reads standard input, one event per line; the pipeline ends at EOF.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `json` (default): each line is a JSON object; `text`: each line becomes `{"message": line}`.
    #[serde(default)]
    pub codec: Codec,
    /// Longest line, in bytes (default 1 MiB = 1048576; at least 1). A
    /// longer line is a `decode` error of this source, handled by its
    /// `on_error` (a routed event carries its first 1 KiB in
    /// `.error.sample`); it is discarded as it is read, and the lines after
    /// it are read as usual.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
}

impl StdinConfig {
    pub fn build(&self) -> Stdin {
        Stdin {
            codec: self.codec,
            max_line_bytes: self.max_line_bytes,
        }
    }

    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        check_max_line_bytes(self.max_line_bytes)
    }
}

pub struct Stdin {
    codec: Codec,
    max_line_bytes: usize,
}

#[async_trait::async_trait]
impl Source for Stdin {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let (codec, max) = (self.codec, self.max_line_bytes);
        super::lines::run(std::io::stdin(), codec, max, &ctx, "standard input").await
    }
}
