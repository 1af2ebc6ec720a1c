//! `blackhole`: counts events and writes nothing (benchmarks, tests).

use crate::components::{ComponentError, Encoded, Sink};
use crate::core::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Counts events (in `flowgate_events_out_total`) and writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

impl BlackholeConfig {
    pub fn build(&self) -> Blackhole {
        Blackhole
    }
}

pub struct Blackhole;

#[async_trait::async_trait]
impl Sink for Blackhole {
    fn encode(&self, batch: Batch) -> Encoded {
        Encoded {
            events: batch,
            ..Encoded::default()
        }
    }

    async fn write(&self, _: &Encoded) -> Result<(), ComponentError> {
        Ok(())
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}
