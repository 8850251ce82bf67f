//! `kmsfs info`: which master keys a data directory needs and where each is kept, from the
//! plain header and the key files alone: no key is used, nothing is decrypted, so it works on
//! a backup copy that holds KMS_DATA alone (the way the model product's `-info` tells which
//! key files a restored keystore needs).

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::CliError;
use crate::crypto::{KdfParams, KeyFileKind};
use crate::store::{self, Header};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The data directory, or a backup copy of it.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Info {
    data_dir: String,
    format_version: u16,
    created: String,
    hmk: KeyInfo,
    kpk: KeyInfo,
    /// Key files kept by key changes (`KMS_HMKF.<ID>`): what backups from before a change need.
    kept_key_files: Vec<String>,
}

#[derive(Serialize)]
struct KeyInfo {
    id: String,
    derived_from_passphrase: bool,
    kdf: Option<String>,
    changed: String,
    /// `file`, `passphrase`, `tpm`, `pkcs11`, or `missing`.
    kept: &'static str,
    /// In words: what opening needs.
    needs: String,
}

fn kdf_text(k: &KdfParams) -> String {
    format!(
        "{}, {} KiB, {} passes, {} lanes",
        k.algorithm, k.m_cost_kib, k.t_cost, k.p_cost
    )
}

fn key_info(dir: &Path, header: &Header, kind: KeyFileKind) -> Result<KeyInfo, CliError> {
    let (id, kdf, changed) = match kind {
        KeyFileKind::Hmk => (&header.hmk_id, &header.hmk_kdf, header.hmk_changed),
        KeyFileKind::Kpk => (&header.kpk_id, &header.kpk_kdf, header.kpk_changed),
    };
    let file = kind.file_name();
    let keeping = store::keeping(dir, kind)?;
    let (kept, needs) = match keeping {
        Some(store::Keeping::File) => ("file", format!("{file} (a plain key file)")),
        Some(store::Keeping::Passphrase) => (
            "passphrase",
            format!(
                "the {} passphrase at every start ({file} is not on disk)",
                kind.label()
            ),
        ),
        Some(store::Keeping::Sealed(by)) => {
            let what = match store::sealed_blob(dir, kind)? {
                Some((by, blob)) => store::describe_sealed(by, &blob),
                None => by.label().to_string(),
            };
            (
                store::Keeping::Sealed(by).as_str(),
                format!("{file}, sealed: {what}"),
            )
        }
        None => {
            let kept = store::retired_name(kind, id);
            let hint = if dir.join(&kept).exists() {
                format!(": {kept} holds it (kept by a key change); copy it to {file}")
            } else {
                format!(": restore {file} from where its copies are kept")
            };
            ("missing", format!("{file}, which is missing{hint}"))
        }
    };
    Ok(KeyInfo {
        id: id.to_string(),
        derived_from_passphrase: kdf.is_some(),
        kdf: kdf.as_ref().map(kdf_text),
        changed: changed.unwrap_or(header.created).to_rfc3339(),
        kept,
        needs,
    })
}

pub fn run_info(args: &InfoArgs) -> Result<(), CliError> {
    let dir = &args.data_dir;
    let header = store::read_header(dir)?;
    let format_version = store::read_format(dir)?;
    let info = Info {
        data_dir: dir.display().to_string(),
        format_version,
        created: header.created.to_rfc3339(),
        hmk: key_info(dir, &header, KeyFileKind::Hmk)?,
        kpk: key_info(dir, &header, KeyFileKind::Kpk)?,
        kept_key_files: store::retired_files(dir)?
            .into_iter()
            .map(|(_, name)| name)
            .collect(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("info serialises")
        );
        return Ok(());
    }
    println!("{}: KMS_DATA format {}", info.data_dir, info.format_version);
    println!("  created {}", info.created);
    for (label, k) in [("HMK", &info.hmk), ("KPK", &info.kpk)] {
        let how = match &k.kdf {
            Some(kdf) => format!("derived from a passphrase ({kdf})"),
            None => "random".to_string(),
        };
        println!("  {label} {}: {how}, last changed {}", k.id, k.changed);
        println!("      needs {}", k.needs);
    }
    for f in &info.kept_key_files {
        println!("  kept: {f} (for backups taken before a key change)");
    }
    Ok(())
}
