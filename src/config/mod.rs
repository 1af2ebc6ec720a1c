//! YAML text -> typed, unvalidated `RawPipeline`: environment
//! interpolation, per-component deserialisation, positions for errors.

pub mod controls;
pub mod duration;
pub mod error;
pub mod interpolate;
pub mod positions;
pub mod size;
pub mod tests;

pub use error::{ConfigError, ConfigWarning};
