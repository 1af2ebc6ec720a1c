//! `file`: reads a file once, or with `follow: true` tails it across
//! rotation and truncation, checkpointing what was acknowledged.

use super::Codec;
use super::checkpoint::{self, Checkpointer};
use super::decode::{check_max_line_bytes, default_max_line_bytes};
use super::tail::{self, Start};
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where a followed file is read from the first time it is seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Everything the file holds.
    #[default]
    Beginning,
    /// Only lines written after flowgate started.
    End,
}

/// Reads a file, one event per line: once from the beginning, or with
/// `follow: true` as it grows.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the file to read (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// `json` (default): each line is a JSON object; `text`: each line becomes `{"message": line}`.
    #[serde(default)]
    pub codec: Codec,
    /// Keep reading as the file grows, across rotation (rename + create) and
    /// truncation; a checkpoint under `--data-dir` records the end of the last
    /// acknowledged line, so a restart resumes there. Without it the file is read once.
    #[serde(default)]
    pub follow: bool,
    /// With `follow`, where a file without a checkpoint is read from.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// With `follow`, how often to look for new data, rotation and truncation.
    #[serde(default = "default_poll")]
    pub poll_interval: ConfigDuration,
    /// Longest line, in bytes (default 1 MiB = 1048576; at least 1). A
    /// longer line is a `decode` error of this source, handled by its
    /// `on_error` (a routed event carries its first 1 KiB in
    /// `.error.sample`); it is discarded as it is read, and the lines after
    /// it are read as usual.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
}

fn default_poll() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(250))
}

impl FileSourceConfig {
    pub fn build(&self) -> FileSource {
        FileSource {
            config: self.clone(),
        }
    }

    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        if !self.follow && self.read_from != ReadFrom::Beginning {
            problems.push((
                vec!["read_from"],
                "`read_from` applies only with `follow: true`".to_string(),
            ));
        }
        if self.poll_interval.0.is_zero() {
            problems.push((vec!["poll_interval"], "must be greater than 0".to_string()));
        }
        problems
    }
}

pub struct FileSource {
    config: FileSourceConfig,
}

#[async_trait::async_trait]
impl Source for FileSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let what = format!("file '{}'", self.config.path.display());
        if !self.config.follow {
            // Opened on a blocking thread, as it is then read.
            let path = self.config.path.clone();
            let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                .await
                .map_err(|e| ComponentError::io(format!("opening {what}"), e.into()))?
                .map_err(|e| ComponentError::io(format!("opening {what}"), e))?;
            let (codec, max) = (self.config.codec, self.config.max_line_bytes);
            return super::lines::run(file, codec, max, &ctx, &what).await;
        }
        follow(self.config, ctx, what).await
    }
}

async fn follow(
    config: FileSourceConfig,
    ctx: SourceContext,
    what: String,
) -> Result<(), ComponentError> {
    let state = ctx.state_dir.join(format!("{}.checkpoint.json", ctx.name));
    let loaded = {
        let (state, path, name) = (state.clone(), config.path.clone(), ctx.name.clone());
        tokio::task::spawn_blocking(move || checkpoint::load(&state, &path, &name))
            .await
            .map_err(|e| ComponentError::io("loading the checkpoint", e.into()))?
    };
    let start = match loaded {
        Some(p) => Start::Checkpoint(p),
        None if config.read_from == ReadFrom::End => Start::End,
        None => Start::Beginning,
    };
    let mut checkpointer = Checkpointer::start(state, config.path.clone(), ctx.name.clone());
    let (tx, mut rx) = super::lines::chunk_channel();
    let reader = {
        let (path, poll, max, name) = (
            config.path.clone(),
            config.poll_interval.0,
            config.max_line_bytes,
            ctx.name.clone(),
        );
        std::thread::Builder::new()
            .name(format!("tail-{}", ctx.name))
            .spawn(move || tail::follow(&path, start, poll, max, tx, &name))
            .map_err(|e| ComponentError::io("starting the tail thread", e))?
    };
    // Each chunk's end is checkpointed once all its events are acknowledged.
    let counters = ctx.metrics.acknowledged();
    let decoded =
        super::lines::decode_in_order(&mut rx, config.codec, &ctx, &what, |end, lines| {
            checkpointer.acks_for(end, lines, &counters)
        })
        .await;
    // Lines not yet read stay behind the checkpoint for the next run.
    drop(rx);
    let result = tokio::task::spawn_blocking(move || reader.join())
        .await
        .ok()
        .and_then(|r| r.ok());
    // Let downstream drain, then wait for the last acknowledgements.
    ctx.output.close();
    checkpointer.finish().await;
    decoded?;
    match result {
        Some(Err(e)) => Err(ComponentError::io(format!("following {what}"), e)),
        _ => Ok(()),
    }
}
