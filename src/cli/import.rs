use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{read_new_passphrase_file, CliError};
use crate::crypto::Kpk;
use crate::keystore::{Keystore, Timestamp};
use crate::service::{Kms, KmsError};
use crate::store::{Access, Store, StoreError};
use crate::transfer::{self, ImportOptions};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The data directory to import into; refused while it is mounted.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The passphrase the container was exported with, read from this file.
    #[arg(long)]
    pub passphrase_file: PathBuf,
    /// Keep group names (a group of the same name here receives the records) instead of
    /// renaming each imported group NAME_YYYYMMDDTHHMMSSZ.
    #[arg(long)]
    pub preserve_names: bool,
    /// Print what the import would do and change nothing (allowed while mounted).
    #[arg(long)]
    pub preview: bool,
    /// The container written by `kmsfs export`.
    pub file: PathBuf,
}

/// The keystore an import works on.
enum Target {
    /// Read only: a preview changes nothing, not even a crash's torn tail or the file modes,
    /// so it may also run beside a mount.
    Preview(Box<Keystore>, Kpk),
    /// Held exclusively (the directory lock), as the daemon would hold it.
    Live(Arc<Kms>),
}

/// All or nothing: the whole plan is decided first, then committed in one atomic rewrite.
pub fn run_import(args: &ImportArgs) -> Result<(), CliError> {
    // Exports refuse passphrases this short, so no container made here has one.
    let pass = read_new_passphrase_file("passphrase", &args.passphrase_file)?;
    let bytes = std::fs::read(&args.file)
        .map_err(|e| CliError(format!("cannot read {}: {e}", args.file.display())))?;
    // The keystore is opened before the slow key derivation, so that a refusal comes at once.
    let target = if args.preview {
        let (_store, ks, kpk, _report) = Store::open(&args.data_dir, Access::ReadOnly)?;
        Target::Preview(Box::new(ks), kpk)
    } else {
        Target::Live(Kms::open(&args.data_dir).map_err(|e| in_use(&args.data_dir, e))?)
    };
    let (header, body) = transfer::open(&bytes, &pass)
        .map_err(|e| CliError(format!("cannot open {}: {e}", args.file.display())))?;
    let opts = ImportOptions {
        preserve_names: args.preserve_names,
        at: Timestamp::now(),
    };
    let plan = match &target {
        Target::Preview(ks, kpk) => {
            let plan = transfer::plan_import(ks, kpk, &body, &opts)?;
            transfer::dry_run(ks, &plan)?;
            plan
        }
        Target::Live(kms) => {
            let plan = kms.plan_import(&body, &opts)?;
            kms.apply_atomically(&plan.changes)
                .map_err(|e| CliError(format!("nothing was imported: {e}")))?;
            plan
        }
    };
    println!(
        "{}: exported {}, {} group(s), {} record(s)",
        args.file.display(),
        header.created.to_rfc3339(),
        body.groups.len(),
        body.record_count()
    );
    print!("{}", plan.report.render(args.preview));
    Ok(())
}

/// A running daemon holds the directory lock; say so in the administrator's words.
fn in_use(dir: &Path, e: KmsError) -> CliError {
    match e {
        KmsError::Store(StoreError::Locked { pid, .. }) => CliError(format!(
            "{} is in use by a running kmsfs{}: unmount it first",
            dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        other => other.into(),
    }
}
