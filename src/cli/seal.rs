//! `kmsfs seal` and `kmsfs unseal`: keep a master key sealed to the TPM, wrapped by a PKCS#11
//! token, or nowhere (its passphrase at every start) instead of in a plain key file, and
//! back. The key itself never changes; refused while a daemon serves the keystore.

use std::path::PathBuf;

use clap::Args;

use super::unlock::{prompt_existing, UnlockArgs, WhichKey};
use super::CliError;
use crate::crypto::KeyFileKind;
use crate::sealing::tpm::PcrPolicy;
use crate::store::{self, KeepAs};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["tpm", "pkcs11_token", "passphrase_only"])))]
pub struct SealArgs {
    /// The data directory (refused while a daemon serves it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Which key to seal.
    #[arg(value_enum)]
    pub key: WhichKey,
    /// Seal the key to the host's TPM 2.0 (`--tcti` says which; default device:/dev/tpmrm0).
    #[arg(long)]
    pub tpm: bool,
    /// The PCRs (SHA-256 bank) the sealed key is bound to, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "7",
        requires = "tpm",
        value_delimiter = ','
    )]
    pub pcrs: Vec<u8>,
    /// Wrap the key by an AES-256 key in the PKCS#11 token with this label (with
    /// --pkcs11-module and --pkcs11-pin-file; the token key is created if missing).
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// The label of the token's wrapping key.
    #[arg(long, value_name = "LABEL", default_value = "kmsfs-master-key")]
    pub pkcs11_key_label: String,
    /// Keep no key file at all: the key (derived from a passphrase) is asked for at every start.
    #[arg(long)]
    pub passphrase_only: bool,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

#[derive(Args, Debug)]
pub struct UnsealArgs {
    /// The data directory (refused while a daemon serves it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Which key to write back as a plain key file.
    #[arg(value_enum)]
    pub key: WhichKey,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

pub fn run_seal(args: &SealArgs) -> Result<(), CliError> {
    let kind = KeyFileKind::from(args.key);
    let mut unlock = args.unlock.unlock(&args.data_dir)?;
    let how = if args.tpm {
        KeepAs::Tpm(PcrPolicy {
            pcrs: args.pcrs.clone(),
        })
    } else if let Some(token) = &args.pkcs11_token {
        KeepAs::Pkcs11 {
            token_label: token.clone(),
            key_label: args.pkcs11_key_label.clone(),
        }
    } else {
        // The passphrase must be given (and is checked) before the key file goes.
        let slot = match kind {
            KeyFileKind::Hmk => &mut unlock.hmk_passphrase,
            KeyFileKind::Kpk => &mut unlock.kpk_passphrase,
        };
        if slot.is_none() {
            *slot = prompt_existing(kind)?;
        }
        KeepAs::Passphrase
    };
    let keeping = store::keep_key(&args.data_dir, kind, &how, &unlock)?;
    println!(
        "the {} of {} is now kept: {}",
        kind.label(),
        args.data_dir.display(),
        keeping.describe()
    );
    println!(
        "Keep a copy of the key where this host's loss cannot take it: `kmsfs unseal` writes the plain key file back (for a passphrase-derived key, `kmsfs regenerate` does)."
    );
    Ok(())
}

pub fn run_unseal(args: &UnsealArgs) -> Result<(), CliError> {
    let kind = KeyFileKind::from(args.key);
    let unlock = args.unlock.unlock(&args.data_dir)?;
    store::keep_key(&args.data_dir, kind, &KeepAs::File, &unlock)?;
    println!(
        "the {} of {} is in a plain key file again ({})",
        kind.label(),
        args.data_dir.display(),
        kind.file_name()
    );
    Ok(())
}
