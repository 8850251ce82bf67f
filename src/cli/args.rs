//! The whole command line as one clap definition, in the library so that `main` and
//! `kmsfs generate` (the man page, the shell completions) build the very same `Command`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{CommandFactory, Parser, Subcommand};

use super::{
    logging, run_export, run_generate, run_import, run_init, run_mount, run_regenerate, run_verify,
    CliError, ExportArgs, GenerateArgs, ImportArgs, InitArgs, MountArgs, RegenerateArgs,
    VerifyArgs,
};

/// What `kmsfs --version` prints after the name: the crate version and the range of
/// `KMS_DATA` format versions this build reads, e.g. `0.1.0 (KMS_DATA format 1..=1)`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (KMS_DATA format 1..={})",
            env!("CARGO_PKG_VERSION"),
            crate::store::FORMAT_VERSION
        )
    })
}

/// A key management service mounted as a file system.
#[derive(Parser, Debug)]
#[command(name = "kmsfs", version = version(), about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an empty keystore (KMS_DATA, KMS_HMKF, KMS_KPKF); never overwrites one.
    Init(InitArgs),
    /// Serve a keystore as a file system until unmounted or sent SIGINT/SIGTERM.
    Mount(MountArgs),
    /// Check a data directory offline: exit 0 only if everything authenticates.
    Verify(VerifyArgs),
    /// Rebuild a lost KMS_HMKF or KMS_KPKF from its passphrase (passphrase-derived keys only).
    Regenerate(RegenerateArgs),
    /// Write groups, records and keys into a passphrase-protected container.
    Export(ExportArgs),
    /// Bring the groups and records of a container into a keystore (all or nothing).
    Import(ImportArgs),
    /// Print the man page or a shell completion script (for packagers and `make install`).
    Generate(GenerateArgs),
    /// Check the audit log (`kmsfs audit verify`), offline and read-only.
    Audit(super::AuditArgs),
    /// Show which master keys a data directory (or a backup copy) needs and how each is kept;
    /// reads only the plain header, needs no key.
    Info(super::InfoArgs),
    /// Change the HMK or the KPK (every record's key stays the same); offline.
    ChangeKey(super::ChangeKeyArgs),
    /// Keep a master key sealed to the TPM, wrapped by a PKCS#11 token, or nowhere (its
    /// passphrase at every start) instead of in a plain key file; offline.
    Seal(super::SealArgs),
    /// Write a sealed (or passphrase-only) master key back as a plain key file; offline.
    Unseal(super::UnsealArgs),
}

/// The clap `Command` of kmsfs, for generators and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

impl Cli {
    /// Where the log goes instead of stderr (`kmsfs mount --log-file FILE`).
    pub fn log_file(&self) -> Option<&Path> {
        match &self.command {
            Command::Mount(a) => a.log_file.as_deref(),
            _ => None,
        }
    }
}

/// Runs a parsed command line: sets up the log, runs the subcommand, and turns its failure
/// into one line on stderr (and in the log file, if there is one) and a non-zero exit.
pub fn run(cli: &Cli) -> ExitCode {
    if let Err(e) = crate::harden::harden() {
        eprintln!("kmsfs: {e}");
        return ExitCode::FAILURE;
    }
    let log_file = cli.log_file();
    if let Err(e) = logging::init(log_file) {
        eprintln!("kmsfs: {}", e.0);
        return ExitCode::FAILURE;
    }
    let result: Result<(), CliError> = match &cli.command {
        Command::Init(a) => run_init(a),
        Command::Mount(a) => run_mount(a),
        Command::Verify(a) => run_verify(a),
        Command::Export(a) => run_export(a),
        Command::Import(a) => run_import(a),
        Command::Regenerate(a) => run_regenerate(a),
        Command::Generate(a) => run_generate(a),
        Command::Audit(a) => super::run_audit(a),
        Command::Info(a) => super::run_info(a),
        Command::ChangeKey(a) => super::run_change_key(a),
        Command::Seal(a) => super::run_seal(a),
        Command::Unseal(a) => super::run_unseal(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if log_file.is_some() {
                // A daemon logging to a file: its reason for exiting belongs there too.
                log::error!("{}", e.0);
            }
            eprintln!("kmsfs: {}", e.0);
            ExitCode::FAILURE
        }
    }
}
