//! The command line: clap arguments turned into calls on the library.

mod args;
mod audit;
mod change_key;
mod export;
mod generate;
mod import;
mod info;
mod init;
mod kmip;
mod logging;
mod mount;
mod mountpoint;
pub mod notify;
mod regenerate;
mod seal;
mod unlock;
mod verify;

pub use args::{command, run, version, Cli, Command};
pub use audit::{run_audit, AuditArgs, AuditCommand, AuditVerifyArgs};
pub use change_key::{run_change_key, ChangeKeyArgs};
pub use export::{run_export, ExportArgs};
pub use generate::{man_page, run_generate, CompletionShell, GenerateArgs, Generated};
pub use import::{run_import, ImportArgs};
pub use info::{run_info, InfoArgs};
pub use init::{run_init, InitArgs};
pub use mount::{run_mount, MountArgs};
pub use regenerate::{run_regenerate, RegenerateArgs};
pub use seal::{run_seal, run_unseal, SealArgs, UnsealArgs};
pub use unlock::{UnlockArgs, WhichKey};
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

/// The fewest characters (not bytes) of a passphrase chosen for a new key or container:
/// Argon2id makes each guess slow, it cannot make a short passphrase hard to guess.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Refuses a new passphrase shorter than `MIN_PASSPHRASE_CHARS`; `what` names it ("the HMK
/// passphrase in FILE"). The message never shows the passphrase. Not applied where an
/// existing passphrase is given back (`kmsfs regenerate`): a keystore made before this rule
/// must stay recoverable.
pub fn check_passphrase_length(what: &str, pass: &Passphrase) -> Result<(), CliError> {
    let n = pass.expose().chars().count();
    if n < MIN_PASSPHRASE_CHARS {
        return Err(CliError(format!(
            "{what} is too short ({n} character{}): use at least {MIN_PASSPHRASE_CHARS} characters",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

/// `read_passphrase_file`, refusing a passphrase that is too short; `what` is e.g. "HMK
/// passphrase" or "passphrase".
pub fn read_new_passphrase_file(what: &str, path: &Path) -> Result<Passphrase, CliError> {
    let pass = read_passphrase_file(path)?;
    check_passphrase_length(&format!("the {what} in {}", path.display()), &pass)?;
    Ok(pass)
}

/// Asks on the terminal; an empty answer means "no passphrase". `None` when not interactive.
pub fn prompt_passphrase(what: &str) -> Result<Option<Passphrase>, CliError> {
    prompt(what, false)
}

/// `prompt_passphrase` for a new key: a passphrase that is too short is refused at the first
/// answer, before it is asked again.
pub fn prompt_new_passphrase(what: &str) -> Result<Option<Passphrase>, CliError> {
    prompt(what, true)
}

fn prompt(what: &str, new: bool) -> Result<Option<Passphrase>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Passphrase::new(rpassword::prompt_password(format!(
        "{what} passphrase (empty for a random key): "
    ))?);
    if first.expose().is_empty() {
        return Ok(None);
    }
    if new {
        check_passphrase_length(&format!("the {what} passphrase"), &first)?;
    }
    let second = zeroize::Zeroizing::new(rpassword::prompt_password(format!(
        "{what} passphrase again: "
    ))?);
    if first.expose() != second.as_str() {
        return Err(CliError(format!("the two {what} passphrases differ")));
    }
    Ok(Some(first))
}
