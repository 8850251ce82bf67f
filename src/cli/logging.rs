//! The log: `RUST_LOG` (default `info`) to stderr, or appended to `--log-file FILE`.
//!
//! Both get the same lines (env_logger's format, without colours: a file is never a
//! terminal). Under systemd stderr is the journal, so the unit needs no `--log-file`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use env_logger::{Builder, Env, Target};

use super::CliError;

/// Installs the logger; with `file`, every line is appended to it (created mode 0600 if
/// missing; an existing file keeps its mode and content).
pub fn init(file: Option<&Path>) -> Result<(), CliError> {
    let mut builder = Builder::from_env(Env::default().default_filter_or("info"));
    if let Some(path) = file {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| CliError(format!("cannot open log file {}: {e}", path.display())))?;
        builder.target(Target::Pipe(Box::new(f)));
    }
    builder
        .try_init()
        .map_err(|e| CliError(format!("cannot set up the log: {e}")))
}
