//! The options every command that opens a keystore takes for master keys kept off the disk:
//! passphrases (files or inherited descriptors, else a terminal prompt), the TPM, a PKCS#11
//! token. Never a passphrase or a PIN on the command line (it would show in `ps`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{read_passphrase_file, CliError};
use crate::crypto::{KeyFileKind, Passphrase};
use crate::sealing::pkcs11::Pin;
use crate::store::{self, Keeping, TokenAccess, Unlock};

#[derive(Args, Debug, Default, Clone)]
pub struct UnlockArgs {
    /// When KMS_HMKF is absent and the HMK is derived from a passphrase: read the passphrase
    /// from FILE (`/dev/fd/N` for an inherited descriptor); else it is asked at the terminal.
    #[arg(long, value_name = "FILE")]
    pub hmk_passphrase_file: Option<PathBuf>,
    /// The same for KMS_KPKF and the KPK.
    #[arg(long, value_name = "FILE")]
    pub kpk_passphrase_file: Option<PathBuf>,
    /// The TPM that sealed a key file (a TCTI; default device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// The PKCS#11 library of the token that wraps a key file (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "LIBRARY", requires = "pkcs11_pin_file")]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's user PIN, first line of FILE (`/dev/fd/N` for an inherited descriptor).
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

impl UnlockArgs {
    /// What opening `dir` needs. A key kept as a passphrase with no file given is asked for
    /// at the terminal when there is one; without one, opening says which option gives it.
    pub fn unlock(&self, dir: &Path) -> Result<Unlock, CliError> {
        let pkcs11 = match (&self.pkcs11_module, &self.pkcs11_pin_file) {
            (Some(module), Some(pin)) => Some(TokenAccess {
                module: module.clone(),
                pin: Pin::from_file(pin).map_err(|e| {
                    CliError(format!("cannot read the PIN file {}: {e}", pin.display()))
                })?,
            }),
            _ => None,
        };
        Ok(Unlock {
            hmk_passphrase: self.passphrase(dir, KeyFileKind::Hmk, &self.hmk_passphrase_file)?,
            kpk_passphrase: self.passphrase(dir, KeyFileKind::Kpk, &self.kpk_passphrase_file)?,
            tpm: self.tcti.clone(),
            pkcs11,
        })
    }

    fn passphrase(
        &self,
        dir: &Path,
        kind: KeyFileKind,
        file: &Option<PathBuf>,
    ) -> Result<Option<Passphrase>, CliError> {
        if let Some(f) = file {
            return read_passphrase_file(f).map(Some);
        }
        // Only a key kept off the disk is asked for; anything else reading the directory
        // finds (no keystore, a damaged file) is for opening to report.
        if !matches!(store::keeping(dir, kind), Ok(Some(Keeping::Passphrase))) {
            return Ok(None);
        }
        prompt_existing(kind)
    }
}

/// Asks for an existing key's passphrase at the terminal, once; None without a terminal.
pub fn prompt_existing(kind: KeyFileKind) -> Result<Option<Passphrase>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let pass = Passphrase::new(rpassword::prompt_password(format!(
        "{} passphrase ({} is not on disk): ",
        kind.label(),
        kind.file_name()
    ))?);
    Ok(Some(pass))
}

/// `hmk` or `kpk` on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhichKey {
    Hmk,
    Kpk,
}

impl From<WhichKey> for KeyFileKind {
    fn from(k: WhichKey) -> KeyFileKind {
        match k {
            WhichKey::Hmk => KeyFileKind::Hmk,
            WhichKey::Kpk => KeyFileKind::Kpk,
        }
    }
}
