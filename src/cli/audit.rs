//! `kmsfs audit verify [--data-dir DIR] FILE...`: checks audit log files offline. Reads only:
//! it writes nothing, takes no lock, and can run beside a live mount or on a backup.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::CliError;
use crate::audit;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check audit log files as one chain: exit 0 only if every line verifies.
    Verify(AuditVerifyArgs),
}

#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    /// The keystore's data directory: its KMS_HMKF checks every line's MAC (read-only).
    /// Without it, only the chain and the sequence numbers are checked.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The files in chain order, oldest first (audit.log.2 audit.log.1 audit.log); plain
    /// files, not .gz.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub unlock: super::UnlockArgs,
}

pub fn run_audit(args: &AuditArgs) -> Result<(), CliError> {
    match &args.command {
        AuditCommand::Verify(a) => run_audit_verify(a),
    }
}

fn run_audit_verify(args: &AuditVerifyArgs) -> Result<(), CliError> {
    let key = match &args.data_dir {
        Some(dir) => Some(crate::store::read_audit_key(
            dir,
            &args.unlock.unlock(dir)?,
        )?),
        None => None,
    };
    let report = audit::verify(&args.files, key.as_ref())?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let seqs = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!(", seq {a}..{b}"),
        _ => String::new(),
    };
    let checked = match &key {
        Some(k) => format!("chain, sequence numbers and MACs checked ({})", k.context()),
        None => "chain and sequence numbers checked; MACs NOT checked (give --data-dir)".into(),
    };
    println!(
        "ok: {} line(s) in {} file(s){seqs}: {checked}",
        report.lines, report.files
    );
    Ok(())
}
