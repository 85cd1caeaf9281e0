//! The `exfw` command.

use clap::Parser;

/// exfw: an XDP firewall that enforces Microsoft's Exchange port tables on a Linux gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
