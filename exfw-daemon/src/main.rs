//! The `exfw` command.

use std::process::ExitCode;

use clap::Parser;
use exfw_daemon::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("exfw: {error:#}");
            ExitCode::from(1)
        }
    }
}
