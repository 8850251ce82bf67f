use clap::Args;
use std::path::PathBuf;

use super::CliError;
use crate::store::{Access, Store};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The data directory to check (a live keystore or a backup copy); nothing is changed.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// Every file authenticates, the keys belong to each other, every record's key unwraps under
/// the KPK bound to its own tag, and the invariants hold.
pub fn run_verify(args: &VerifyArgs) -> Result<(), CliError> {
    let (store, ks, kpk, report) = Store::open(&args.data_dir, Access::ReadOnly)?;
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
            "note: KMS_DATA ends with {} bytes of an append interrupted by a crash; they hold no acknowledged change and are discarded at the next mount",
            report.torn_tail
        );
    }
    println!(
        "ok: {} group(s), {} record(s), format {}, HMK {}, KPK {}",
        ks.group_count(),
        ks.record_count(),
        store.format(),
        store.header().hmk_id,
        store.header().kpk_id
    );
    Ok(())
}
