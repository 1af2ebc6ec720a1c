//! What `flowgate run` runs when it is given no path: the pipelines
//! directory of an installed flowgate (the Debian package's, the systemd
//! unit's), so `flowgate run` on a server does what the service does.

use std::path::PathBuf;
use std::process::ExitCode;

pub const DEFAULT_PIPELINES_DIR: &str = "/etc/flowgate/pipelines";
/// Names another default directory: for tests (which must not depend on
/// /etc) and for installs under another prefix.
pub const PIPELINES_DIR_ENV: &str = "FLOWGATE_PIPELINES_DIR";

/// `paths` as given, or the default directory when none is given and it
/// exists; otherwise says what to pass and returns the usage exit code.
pub fn or_default(paths: Vec<PathBuf>) -> Result<Vec<PathBuf>, ExitCode> {
    if !paths.is_empty() {
        return Ok(paths);
    }
    let dir = std::env::var_os(PIPELINES_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PIPELINES_DIR), PathBuf::from);
    if dir.is_dir() {
        return Ok(vec![dir]);
    }
    eprintln!(
        "error: no pipeline to run: none given, and the default directory {} does not exist\n\n\
         Pass pipeline files or directories of *.yaml files:\n    flowgate run PATH...\n\
         or put pipeline files in {} (set {PIPELINES_DIR_ENV} to use another directory).",
        dir.display(),
        dir.display()
    );
    Err(ExitCode::from(2))
}
