use clap::Args;
use std::path::{Path, PathBuf};

use super::{prompt_passphrase, read_passphrase_file, CliError};
use crate::crypto::{Hmk, KdfParams, KeyFileKind, KeyId, Kpk, Passphrase, SecretKey32};
use crate::store::{self, DirLock, StoreError};

#[derive(Args, Debug)]
pub struct RegenerateArgs {
    /// The data directory whose KMS_DATA header holds the key-derivation parameters.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Rebuild KMS_HMKF from the passphrase in this file.
    #[arg(long)]
    pub hmk_passphrase_file: Option<PathBuf>,
    /// Rebuild KMS_KPKF from the passphrase in this file.
    #[arg(long)]
    pub kpk_passphrase_file: Option<PathBuf>,
}

/// Rebuilds a lost or damaged key file of a passphrase-derived keystore. The derived key must
/// have the id that KMS_DATA's header records, so a wrong passphrase never writes a file.
/// Refused while a daemon holds the keystore (the directory lock): a key file replaced under
/// a live mount, above all a frozen one, would break what the freeze promises (the backup
/// set unchanged and read-only). The lock is held until the files are written, so no mount
/// starts meanwhile.
pub fn run_regenerate(args: &RegenerateArgs) -> Result<(), CliError> {
    let header = store::read_header(&args.data_dir)?;
    let _lock = DirLock::acquire(&args.data_dir).map_err(|e| in_use(&args.data_dir, e))?;
    let mut wanted: Vec<(KeyFileKind, Passphrase)> = Vec::new();
    if let Some(p) = &args.hmk_passphrase_file {
        wanted.push((KeyFileKind::Hmk, read_passphrase_file(p)?));
    }
    if let Some(p) = &args.kpk_passphrase_file {
        wanted.push((KeyFileKind::Kpk, read_passphrase_file(p)?));
    }
    if wanted.is_empty() {
        for kind in [KeyFileKind::Hmk, KeyFileKind::Kpk] {
            if args.data_dir.join(kind.file_name()).exists() {
                continue;
            }
            let what = if kind == KeyFileKind::Hmk {
                "HMK"
            } else {
                "KPK"
            };
            if let Some(p) = prompt_passphrase(what)? {
                wanted.push((kind, p));
            }
        }
    }
    if wanted.is_empty() {
        return Err(CliError(
            "nothing to regenerate: give --hmk-passphrase-file and/or --kpk-passphrase-file".into(),
        ));
    }
    for (kind, pass) in wanted {
        let (params, expected) = match kind {
            KeyFileKind::Hmk => (&header.hmk_kdf, &header.hmk_id),
            KeyFileKind::Kpk => (&header.kpk_kdf, &header.kpk_id),
        };
        let file = kind.file_name();
        let params: &KdfParams = params.as_ref().ok_or_else(|| {
            CliError(format!(
                "{file}: this keystore's key is random, not derived from a passphrase; restore {file} from a backup"
            ))
        })?;
        let secret = params
            .derive_key32(&pass)
            .map_err(|e| CliError(format!("{file}: {e}")))?;
        let id = key_id(kind, &secret);
        if &id != expected {
            return Err(CliError(format!(
                "{file}: wrong passphrase (the derived key has id {id}, KMS_DATA expects {expected}); nothing written"
            )));
        }
        store::write_key_file(&args.data_dir, kind, &secret)?;
        println!("rebuilt {file} (key id {id})");
    }
    Ok(())
}

fn key_id(kind: KeyFileKind, secret: &SecretKey32) -> KeyId {
    match kind {
        KeyFileKind::Hmk => Hmk::from_secret(secret.clone()).id(),
        KeyFileKind::Kpk => Kpk::from_secret(secret.clone()).id(),
    }
}

/// A running daemon holds the directory lock; say so as `import` does.
fn in_use(dir: &Path, e: StoreError) -> CliError {
    match e {
        StoreError::Locked { pid, .. } => CliError(format!(
            "{} is in use by a running kmsfs{}: unmount it first",
            dir.display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        )),
        other => other.into(),
    }
}
