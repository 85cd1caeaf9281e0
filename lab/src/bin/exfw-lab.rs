//! `cargo xtask lab`: builds the lab organisation in network namespaces, runs every scenario,
//! prints the table and exits non-zero on any mismatch. `--keep` leaves it running until Ctrl-C.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use exfw_lab::{Lab, Options, print_table};

/// The exfw lab: an Exchange organisation in network namespaces behind a real exfw gateway.
#[derive(Parser)]
struct Args {
    /// The organisation: any example config (its interfaces, metrics address and mode are the lab's).
    #[arg(long, default_value = "examples/exchange2016-edge.toml")]
    config: PathBuf,
    /// Keep generating the scenarios' traffic for at least this many seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Leave the lab running after the table, until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// Blocks SIGINT and SIGTERM in every thread and sets the flag when one arrives, so the lab is
/// always torn down by its destructor.
fn catch_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: plain signal-disposition and signal-mask calls on a zeroed sigset.
    unsafe {
        // An inherited "ignore" would discard the signals before sigwait sees them.
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut signal = 0;
            libc::sigwait(&set, &mut signal);
            eprintln!("lab: signal {signal}: tearing down");
            flag.store(true, Ordering::Relaxed);
        });
    }
    stop
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = catch_signals();
    let repo = std::env::current_dir().expect("working directory");
    let options = Options {
        config: args.config.clone(),
        duration: Duration::from_secs(args.duration),
        repo,
    };
    eprintln!(
        "lab: building the organisation from {} ...",
        args.config.display()
    );
    let lab = match Lab::start(&options) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("lab: {e:#}");
            return ExitCode::from(1);
        }
    };
    eprintln!("lab: {}", lab.origin());
    let started = Instant::now();
    let mut rows = lab.scenarios();
    let mut rounds = 1;
    while started.elapsed() < options.duration && !stop.load(Ordering::Relaxed) {
        let again = lab.scenarios();
        for (row, next) in rows.iter_mut().zip(again) {
            if !next.ok {
                *row = next;
            }
        }
        rounds += 1;
    }
    print_table(&rows);
    let mismatches = rows.iter().filter(|r| !r.ok).count();
    println!(
        "\n{} scenarios, {mismatches} mismatches, {rounds} rounds in {:.0} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if args.keep && !stop.load(Ordering::Relaxed) {
        println!(
            "\nThe lab keeps running; Ctrl-C tears it down.\n{}",
            lab.describe()
        );
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(lab);
    if mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
