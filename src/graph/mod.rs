//! `RawPipeline` -> validated `Pipeline`: names checked, inputs resolved to
//! component ids and ports, cycles rejected, programs compiled. Every
//! problem of a file is collected; warnings are separate. No tokio here.
//!
//! `compile.rs` runs the checks in order; `components.rs` builds each
//! component, `inputs.rs` resolves what it reads, `checks.rs` holds the
//! rest; `pipeline.rs` is the result.

mod checks;
mod compile;
mod components;
pub mod diff;
mod inputs;
pub mod layout;
mod pipeline;
pub mod render;
pub mod schema;

pub use compile::compile;
pub use inputs::resolve_output;
pub use pipeline::{Component, InputRef, Pipeline, Port, Role};

use crate::config::{ConfigError, ConfigWarning};
use crate::load::RawPipeline;

/// Loads, parses and validates one file: all problems of the file, or the
/// pipeline and its warnings.
pub fn load(path: &std::path::Path) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    finish(crate::load::load_file(path))
}

/// Like `load`, from text.
pub fn load_str(
    text: &str,
    file: &str,
    default_name: &str,
) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    finish(crate::load::parse(text, file, default_name))
}

/// Validates a parsed pipeline, merging parse and graph problems in file order.
fn finish(
    (raw, mut errors): (Option<RawPipeline>, Vec<ConfigError>),
) -> Result<(Pipeline, Vec<ConfigWarning>), Vec<ConfigError>> {
    let Some(raw) = raw else { return Err(errors) };
    match compile(raw) {
        Ok(ok) if errors.is_empty() => Ok(ok),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            compile::sort_in_file_order(&mut errors);
            Err(errors)
        }
    }
}
