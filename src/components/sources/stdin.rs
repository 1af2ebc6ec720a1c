//! `stdin`: one event per line of standard input; ends at EOF.

use super::Codec;
use crate::components::{ComponentError, Source, SourceContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reads standard input, one event per line; the pipeline ends at EOF.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// `json` (default): each line is a JSON object; `text`: each line becomes `{"message": line}`.
    #[serde(default)]
    pub codec: Codec,
}

impl StdinConfig {
    pub fn build(&self) -> Stdin {
        Stdin { codec: self.codec }
    }
}

pub struct Stdin {
    codec: Codec,
}

#[async_trait::async_trait]
impl Source for Stdin {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        super::lines::run(std::io::stdin(), self.codec, &ctx, "standard input").await
    }
}
