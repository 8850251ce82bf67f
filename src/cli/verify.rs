use clap::Args;
use std::path::PathBuf;

use super::CliError;
use crate::store::{Access, Store};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The data directory to check (a live keystore or a backup copy); nothing is changed.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Accept a KMS_DATA that ends in an interrupted append: for the data directory of a live
    /// keystore (a daemon may be mid-append, or crashed during one). A backup copy taken while
    /// frozen never ends so, and without this flag such a copy fails.
    #[arg(long)]
    pub allow_torn_tail: bool,
    #[command(flatten)]
    pub unlock: super::UnlockArgs,
}

/// Every file authenticates, the keys belong to each other, every record's key unwraps under
/// the KPK bound to its own tag, and the invariants hold. A KMS_DATA that ends in the remains
/// of an interrupted append fails unless `--allow-torn-tail`: a frozen copy never ends so
/// (the freeze syncs, and the files are read-only while copied), and what those bytes held
/// (an acknowledged change whose frame was cut off, say) cannot be known from the file.
pub fn run_verify(args: &VerifyArgs) -> Result<(), CliError> {
    let unlock = args.unlock.unlock(&args.data_dir)?;
    let (store, ks, kpk, report) = Store::open_with(&args.data_dir, Access::ReadOnly, &unlock)?;
    if report.torn_tail > 0 && !args.allow_torn_tail {
        return Err(CliError(format!(
            "KMS_DATA ends with {} bytes of an interrupted append: a copy taken while frozen never does; it may be a damaged or incomplete copy, and what those bytes held cannot be known (for the data directory of a live keystore, use `kmsfs verify --allow-torn-tail`)",
            report.torn_tail
        )));
    }
    ks.check_invariants()
        .map_err(|e| CliError(format!("KMS_DATA: an invariant does not hold: {e}")))?;
    for r in ks.records() {
        let key = kpk.unwrap(&r.wrapped_key.0, r.tag.as_str()).map_err(|_| {
            CliError(format!(
                "KMS_KPKF does not open the key of record {} (tag {}): wrong KPK, or KMS_DATA was altered",
                r.name, r.tag
            ))
        })?;
        let group = ks.group(&r.group).expect("invariants checked");
        if key.len() != group.cipher.key_len() {
            return Err(CliError(format!(
                "KMS_DATA: record {} holds a {}-byte key in an {} group",
                r.name,
                key.len(),
                group.cipher
            )));
        }
    }
    if report.torn_tail > 0 {
        eprintln!(
            "note: KMS_DATA ends with {} bytes of an interrupted append (one in progress, or cut short by a crash), not counted below: what they held cannot be known; the next mount discards them",
            report.torn_tail
        );
    }
    let uncounted = match report.torn_tail {
        0 => String::new(),
        n => format!(" (not counting the {n} bytes of an interrupted append)"),
    };
    println!(
        "ok: {} group(s), {} record(s), format {}, HMK {}, KPK {}{uncounted}",
        ks.group_count(),
        ks.record_count(),
        store.format(),
        store.header().hmk_id,
        store.header().kpk_id
    );
    Ok(())
}
