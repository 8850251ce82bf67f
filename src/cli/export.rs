use clap::Args;
use std::path::PathBuf;

use super::{read_new_passphrase_file, CliError};
use crate::store::{Access, Store};
use crate::transfer;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The data directory (read only; works while the keystore is mounted).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The container to create (mode 0600); an existing file is never overwritten.
    #[arg(long)]
    pub out: PathBuf,
    /// The passphrase that protects the container, read from this file.
    #[arg(long)]
    pub passphrase_file: PathBuf,
    /// Export only this group (repeatable); all groups by default.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub unlock: super::UnlockArgs,
}

/// Writes every group (or the named ones) with records, states and keys into a container
/// sealed under a key derived from the passphrase.
pub fn run_export(args: &ExportArgs) -> Result<(), CliError> {
    // Refuse early, before the slow key derivation; `write_new` refuses again atomically.
    if args.out.symlink_metadata().is_ok() {
        return Err(transfer::TransferError::OutputExists(args.out.clone()).into());
    }
    let pass = read_new_passphrase_file("passphrase", &args.passphrase_file)?;
    let unlock = args.unlock.unlock(&args.data_dir)?;
    let (_store, ks, kpk, _report) = Store::open_with(&args.data_dir, Access::ReadOnly, &unlock)?;
    let body = transfer::collect(&ks, &kpk, &args.groups)?;
    let bytes = transfer::seal(&pass, &body)?;
    transfer::write_new(&args.out, &bytes)?;
    println!(
        "exported {} group(s), {} record(s) to {}",
        body.groups.len(),
        body.record_count(),
        args.out.display()
    );
    for g in &body.groups {
        println!("  {}: {} record(s)", g.name, g.records.len());
    }
    Ok(())
}
