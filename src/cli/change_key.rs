//! `kmsfs change-key`: a new HMK or KPK for a keystore no daemon serves (a mounted one
//! changes its keys through `.change-key`, see docs/tree.md). Every record's key stays the
//! same; the old key file is kept as `KMS_HMKF.<old-id>` for backups taken before.

use std::path::PathBuf;

use clap::Args;

use super::unlock::{UnlockArgs, WhichKey};
use super::{read_new_passphrase_file, CliError};
use crate::crypto::KeyFileKind;
use crate::service::Kms;
use crate::store::{NewMasterKey, StoreError};

#[derive(Args, Debug)]
pub struct ChangeKeyArgs {
    /// The data directory (refused while a daemon serves it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Which key to change.
    #[arg(value_enum)]
    pub key: WhichKey,
    /// Derive the new key from the passphrase in FILE (fresh salt); else it is random.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

pub fn run_change_key(args: &ChangeKeyArgs) -> Result<(), CliError> {
    let kind = KeyFileKind::from(args.key);
    let passphrase = match &args.passphrase_file {
        Some(f) => Some(read_new_passphrase_file(
            &format!("new {} passphrase", kind.label()),
            f,
        )?),
        None => None,
    };
    let unlock = args.unlock.unlock(&args.data_dir)?;
    let audit_log = crate::audit::default_path(&args.data_dir);
    let kms = Kms::open_with(&args.data_dir, Some(&audit_log), unlock).map_err(|e| match e {
        crate::service::KmsError::Store(StoreError::Locked { dir, pid }) => CliError(format!(
            "{} is served by a kmsfs mount{}: change the key through the mount (`echo {} > MOUNT/.change-key`), or stop it first",
            dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            match kind {
                KeyFileKind::Hmk => "hmk",
                KeyFileKind::Kpk => "kpk",
            }
        )),
        e => CliError(e.to_string()),
    })?;
    let change = kms.change_master_key(kind, &NewMasterKey { passphrase })?;
    println!(
        "changed the {} of {}: {} -> {} ({})",
        kind.label(),
        args.data_dir.display(),
        change.old_id,
        change.new_id,
        if change.derived {
            "from a passphrase"
        } else {
            "random"
        }
    );
    match &change.kept_as {
        Some(f) => println!(
            "the old key file is kept as {f} (mode 0400): backups taken before this change need it; remove it once they are gone"
        ),
        None => println!(
            "the old {} had no key file: backups taken before this change need the old passphrase",
            kind.label()
        ),
    }
    Ok(())
}
