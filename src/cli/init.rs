use clap::Args;
use std::path::PathBuf;

use super::{prompt_new_passphrase, read_new_passphrase_file, CliError};
use crate::store::{self, InitOptions};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The data directory (created mode 0700 if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Derive the host master key from the passphrase in this file (else random).
    #[arg(long)]
    pub hmk_passphrase_file: Option<PathBuf>,
    /// Derive the key protection key from the passphrase in this file (else random).
    #[arg(long)]
    pub kpk_passphrase_file: Option<PathBuf>,
}

pub fn run_init(args: &InitArgs) -> Result<(), CliError> {
    // Refuse early, before asking for passphrases that would be thrown away.
    for f in store::BACKUP_SET {
        if args.data_dir.join(f).exists() {
            return Err(CliError(format!(
                "{} already holds a keystore file ({f}); refusing to overwrite it",
                args.data_dir.display()
            )));
        }
    }
    let hmk = match &args.hmk_passphrase_file {
        Some(p) => Some(read_new_passphrase_file("HMK passphrase", p)?),
        None if args.kpk_passphrase_file.is_none() => prompt_new_passphrase("HMK")?,
        None => None,
    };
    let kpk = match &args.kpk_passphrase_file {
        Some(p) => Some(read_new_passphrase_file("KPK passphrase", p)?),
        None if args.hmk_passphrase_file.is_none() => prompt_new_passphrase("KPK")?,
        None => None,
    };
    let report = store::init(
        &args.data_dir,
        InitOptions {
            hmk_passphrase: hmk,
            kpk_passphrase: kpk,
        },
    )?;
    let how = |derived| {
        if derived {
            "from a passphrase"
        } else {
            "random"
        }
    };
    println!(
        "created a keystore in {}\n  HMK {} ({})\n  KPK {} ({})\nKeep copies of KMS_HMKF and KMS_KPKF apart from KMS_DATA.",
        args.data_dir.display(),
        report.hmk_id,
        how(report.hmk_derived),
        report.kpk_id,
        how(report.kpk_derived)
    );
    Ok(())
}
