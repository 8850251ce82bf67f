use clap::Args;
use std::path::PathBuf;

use super::{mountpoint, CliError};
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
    /// Let every user in; the modes then decide, and they grant nothing to others, so only
    /// the owner and the entries' group get further.
    #[arg(long)]
    pub allow_other: bool,
    /// Members of this Unix group (a backup service account) may read keys, in a state that
    /// allows it, and all metadata; changes stay with the mounting user.
    #[arg(long, value_name = "GROUP")]
    pub key_readers: Option<String>,
    /// Members of this Unix group may make changes (write state, descriptions, .create, mkdir,
    /// rmdir, mv, .quiesce, .rotation) and read all metadata, but never keys; the kernel
    /// enforces it through POSIX ACLs.
    #[arg(long, value_name = "GROUP")]
    pub admins: Option<String>,
    /// Destructive moves (terminating or deleting a record, deleting a group, changing a
    /// cipher) wait for a second administrator, a different uid, to ask for the same move.
    #[arg(long)]
    pub two_person: bool,
    /// How long a destructive move waits for its second administrator, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        requires = "two_person"
    )]
    pub two_person_window: u64,
    /// Only the executables listed in FILE (JSON: {"allow": [{"path", "sha256"}]}) may open
    /// `key` files, checked at every open through /proc/PID/exe.
    #[arg(long, value_name = "FILE")]
    pub key_policy: Option<PathBuf>,
    /// Threads serving requests (1 to 64).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// At SIGTERM, how long a busy mount (a shell's working directory, an open file) may keep
    /// the daemon waiting after it is detached, in seconds (1 to 3600); then the daemon stops
    /// and what is still open there fails with ENOTCONN.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub stop_grace: u64,
    /// The audit log: every key read, change and refusal, one hash-chained, keyed JSON line
    /// each (default DATA_DIR/audit.log; see docs/audit.md).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Append the log to FILE (created mode 0600 if missing) instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    #[command(flatten)]
    pub unlock: super::UnlockArgs,
    #[command(flatten)]
    pub kmip: Box<super::kmip::KmipArgs>,
}

/// The most threads `--threads` may ask for.
pub const MAX_THREADS: usize = 64;

/// Serves until unmounted or SIGINT/SIGTERM; exits 0 after a clean unmount.
pub fn run_mount(args: &MountArgs) -> Result<(), CliError> {
    // Every refusal comes before `--init` or the mount creates anything.
    if !(1..=MAX_THREADS).contains(&args.threads) {
        return Err(CliError(format!(
            "--threads must be 1 to {MAX_THREADS} (got {})",
            args.threads
        )));
    }
    if !(1..=3600).contains(&args.stop_grace) {
        return Err(CliError(format!(
            "--stop-grace must be 1 to 3600 seconds (got {})",
            args.stop_grace
        )));
    }
    if args.two_person && !(1..=7 * 86_400).contains(&args.two_person_window) {
        return Err(CliError(format!(
            "--two-person-window must be 1 to {} seconds (got {})",
            7 * 86_400,
            args.two_person_window
        )));
    }
    let key_readers = args
        .key_readers
        .as_deref()
        .map(|g| group_id("--key-readers", g))
        .transpose()?;
    let admins = args
        .admins
        .as_deref()
        .map(|g| group_id("--admins", g))
        .transpose()?;
    let key_policy = match &args.key_policy {
        None => None,
        Some(p) => Some(std::sync::Arc::new(
            fs::KeyPolicy::load(p).map_err(CliError)?,
        )),
    };
    // Certificates, policy and address are checked (and the port bound) before anything is
    // created.
    let kmip = args.kmip.prepare()?;
    mountpoint::check_data_dir(&args.data_dir, args.init)?;
    mountpoint::check_apart(&args.data_dir, &args.mountpoint)?;
    mountpoint::check_mount_point(&args.mountpoint)?;
    mountpoint::check_can_mount()?;
    if args.init && !args.data_dir.join(DATA_FILE).exists() {
        let report = store::init(&args.data_dir, InitOptions::default())?;
        log::info!(
            "created a keystore with random keys in {} (HMK {}, KPK {})",
            args.data_dir.display(),
            report.hmk_id,
            report.kpk_id
        );
    }
    let audit_log = args
        .audit_log
        .clone()
        .unwrap_or_else(|| crate::audit::default_path(&args.data_dir));
    // Before the keys are loaded, so that no page holding one is ever swapped out.
    if let Err(e) = crate::harden::lock_memory() {
        log::warn!("{e}");
    }
    let unlock = args.unlock.unlock(&args.data_dir)?;
    let kms = Kms::open_with(&args.data_dir, Some(&audit_log), unlock)?;
    if !args.mountpoint.exists() {
        std::fs::create_dir_all(&args.mountpoint).map_err(|e| {
            CliError(format!(
                "cannot create mount point {}: {e}",
                args.mountpoint.display()
            ))
        })?;
    }
    let opts = MountOptions {
        threads: args.threads,
        allow_root: args.allow_root,
        allow_other: args.allow_other,
        key_readers,
        key_policy,
        admins,
        two_person: args
            .two_person
            .then(|| std::time::Duration::from_secs(args.two_person_window)),
        request_counts: None,
        stop_grace: std::time::Duration::from_secs(args.stop_grace),
    };
    // Before the mount reports ready: a unit ordered after kmsfs finds KMIP served too.
    if let Some(kmip) = kmip {
        kmip.start(kms.clone())?;
    }
    // Under systemd (Type=notify): READY=1 once the mount answers.
    super::notify::ready_when_served(&args.data_dir, &args.mountpoint);
    fs::mount(kms, &args.mountpoint, &opts)
        .map_err(|e| CliError(format!("cannot mount {}: {e}", args.mountpoint.display())))
}

/// The gid of a Unix group, by name or number.
fn group_id(option: &str, name: &str) -> Result<u32, CliError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(CliError(format!(
            "{option}: there is no group {name:?} (create it with `groupadd {name}`)"
        ))),
        Err(e) => Err(CliError(format!(
            "--key-readers: cannot look up group {name:?}: {e}"
        ))),
    }
}
