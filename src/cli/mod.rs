//! The command line: clap arguments turned into calls on the library.

mod export;
mod import;
mod init;
mod mount;
mod regenerate;
mod verify;

pub use export::{run_export, ExportArgs};
pub use import::{run_import, ImportArgs};
pub use init::{run_init, InitArgs};
pub use mount::{run_mount, MountArgs};
pub use regenerate::{run_regenerate, RegenerateArgs};
pub use verify::{run_verify, VerifyArgs};

use std::io::IsTerminal;
use std::path::Path;

use crate::crypto::Passphrase;

/// A command's failure: one line for stderr.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError(e.to_string())
    }
}

/// Reads a passphrase file; never from the command line itself (it would show in `ps`).
pub fn read_passphrase_file(path: &Path) -> Result<Passphrase, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError(format!(
            "cannot read passphrase file {}: {e}",
            path.display()
        ))
    })?;
    Passphrase::from_file_contents(bytes)
        .map_err(|e| CliError(format!("passphrase file {}: {e}", path.display())))
}

/// Asks on the terminal; an empty answer means "no passphrase". `None` when not interactive.
pub fn prompt_passphrase(what: &str) -> Result<Option<Passphrase>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first =
        rpassword::prompt_password(format!("{what} passphrase (empty for a random key): "))?;
    if first.is_empty() {
        return Ok(None);
    }
    let second = rpassword::prompt_password(format!("{what} passphrase again: "))?;
    if first != second {
        return Err(CliError(format!("the two {what} passphrases differ")));
    }
    Ok(Some(Passphrase::new(first)))
}
