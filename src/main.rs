use clap::Parser;
use std::process::ExitCode;

use kmsfs::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(&Cli::parse())
}
