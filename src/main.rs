use clap::{Parser, Subcommand};
use std::process::ExitCode;

use kmsfs::cli;

/// A key management service mounted as a file system.
#[derive(Parser, Debug)]
#[command(name = "kmsfs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an empty keystore (KMS_DATA, KMS_HMKF, KMS_KPKF); never overwrites one.
    Init(cli::InitArgs),
    /// Serve a keystore as a file system until unmounted or sent SIGINT/SIGTERM.
    Mount(cli::MountArgs),
    /// Check a data directory offline: exit 0 only if everything authenticates.
    Verify(cli::VerifyArgs),
    /// Rebuild a lost KMS_HMKF or KMS_KPKF from its passphrase (passphrase-derived keys only).
    Regenerate(cli::RegenerateArgs),
    /// Write groups, records and keys into a passphrase-protected container.
    Export(cli::ExportArgs),
    /// Bring the groups and records of a container into a keystore (all or nothing).
    Import(cli::ImportArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Cli::parse();
    let result = match &args.command {
        Command::Init(a) => cli::run_init(a),
        Command::Mount(a) => cli::run_mount(a),
        Command::Verify(a) => cli::run_verify(a),
        Command::Export(a) => cli::run_export(a),
        Command::Import(a) => cli::run_import(a),
        Command::Regenerate(a) => cli::run_regenerate(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsfs: {}", e.0);
            ExitCode::FAILURE
        }
    }
}
