//! The `exfw` command.

use std::process::ExitCode;

use clap::Parser;
use exfw_daemon::{
    cli::{Cli, run},
    reload::{EXIT_REFUSED, Refusal},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.prints_and_ends() {
        // Rust ignores SIGPIPE, so printing to a closed pipe would panic; the daemon keeps
        // ignoring it (a scraper that hangs up must not kill it).
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("exfw: {error:#}");
            if error.chain().any(|e| e.is::<Refusal>()) {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
