use clap::Args;
use std::path::PathBuf;

use super::CliError;
use crate::fs::{self, MountOptions};
use crate::service::Kms;
use crate::store::{self, InitOptions, DATA_FILE};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The data directory holding KMS_DATA, KMS_HMKF and KMS_KPKF.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where to mount (created if missing).
    pub mountpoint: PathBuf,
    /// Create a keystore with random keys first if the data directory has none.
    #[arg(long)]
    pub init: bool,
    /// Let root in besides the mounting user.
    #[arg(long)]
    pub allow_root: bool,
    /// Let every user in (file modes still apply; `key` files are 0400).
    #[arg(long)]
    pub allow_other: bool,
    /// Threads serving requests.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
}

/// Serves until unmounted or SIGINT/SIGTERM; exits 0 after a clean unmount.
pub fn run_mount(args: &MountArgs) -> Result<(), CliError> {
    if args.init && !args.data_dir.join(DATA_FILE).exists() {
        let report = store::init(&args.data_dir, InitOptions::default())?;
        log::info!(
            "created a keystore with random keys in {} (HMK {}, KPK {})",
            args.data_dir.display(),
            report.hmk_id,
            report.kpk_id
        );
    }
    let kms = Kms::open(&args.data_dir)?;
    if !args.mountpoint.exists() {
        std::fs::create_dir_all(&args.mountpoint).map_err(|e| {
            CliError(format!(
                "cannot create mount point {}: {e}",
                args.mountpoint.display()
            ))
        })?;
    }
    let opts = MountOptions {
        threads: args.threads.max(1),
        allow_root: args.allow_root,
        allow_other: args.allow_other,
    };
    fs::mount(kms, &args.mountpoint, &opts)
        .map_err(|e| CliError(format!("cannot mount {}: {e}", args.mountpoint.display())))
}
