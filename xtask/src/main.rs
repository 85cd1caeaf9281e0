//! `cargo xtask`: everything that is not a plain `cargo build`.
//!
//! Each command installs what it needs and nothing more (Debian packages, bpf-linker,
//! cargo-deb, bpffs), so a fresh machine needs no manual step: `build` and `lint` need only the
//! toolchain and run without root once it is there; the kernel-facing commands need root.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

mod vm;
use clap::{Parser, Subcommand, ValueEnum};

/// What a command needs installed: each need names its Debian packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Building: Debian's rustc ships a prebuilt `core` for bpfel-unknown-none
    /// (libstd-rust-web-dev-bpf); llvm-22 is what bpf-linker 0.13 links against. Also installs
    /// bpf-linker.
    Toolchain,
    /// The Debian package (cargo-deb), for the packaging tests.
    Packaging,
    /// Loading XDP programs, network namespaces, nftables and ping; mounts bpffs.
    Kernel,
    /// The lab's servers and clients, and Prometheus (promtool).
    Lab,
    /// The VM kernel matrix.
    Vm,
}

impl Need {
    /// Every need: what `cargo xtask setup` installs.
    const ALL: [Need; 5] = [
        Need::Toolchain,
        Need::Packaging,
        Need::Kernel,
        Need::Lab,
        Need::Vm,
    ];

    fn packages(self) -> &'static [&'static str] {
        match self {
            Need::Toolchain => &[
                "rustc-web",
                "cargo-web",
                "libstd-rust-web-dev-bpf",
                "llvm-22-dev",
                "libpolly-22-dev",
                "zlib1g-dev",
                "libzstd-dev",
            ],
            Need::Packaging => &[],
            // busybox-static: the tests' ping (and the VMs' userland).
            Need::Kernel => &[
                "iproute2",
                "ethtool",
                "bpftool",
                "nftables",
                "busybox-static",
            ],
            Need::Lab => &[
                "prometheus",
                "nginx-light",
                "postfix",
                "dovecot-imapd",
                "dovecot-pop3d",
                "dnsmasq-base",
                "swaks",
                "curl",
                "bind9-dnsutils",
                "openssl",
            ],
            Need::Vm => &["qemu-system-x86", "cpio"],
        }
    }
}

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds the Debian package (`cargo deb`).
const CARGO_DEB_VERSION: &str = "3.8.0";

#[derive(Parser)]
#[command(about = "Build, test and benchmark exfw")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The parts of `cargo xtask test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TestPart {
    /// Formatting and clippy (`cargo xtask lint`), the unit tests, then the integration suites.
    All,
    /// The tests that need no privilege (what a plain `cargo test` runs).
    Unit,
    /// The suites on the real kernel path, as root: BPF_PROG_TEST_RUN, network namespaces,
    /// the daemon, packaging, the lab.
    Integration,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what every command needs (idempotent; quiet when everything is present).
    Setup,
    /// Build the XDP object (Debian's rustc) and the `exfw` binary (rustup's stable), release.
    /// Needs no root once the toolchain is installed.
    Build,
    /// Check formatting (both workspaces) and clippy with warnings denied. Needs no root.
    Lint,
    /// Run the tests: by default lint, the unit tests and, as root, the integration suites.
    Test {
        /// Which part.
        #[arg(value_enum, default_value = "all")]
        part: TestPart,
        /// Arguments passed to the test binaries after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks; prints tables and writes target/bench/exfw.json.
    Bench,
    /// Fuzz coverage-guided (libFuzzer; rustc's sanitizer coverage, no nightly needed): each
    /// target for N seconds, inputs that reach new code merged into fuzz/corpus/TARGET (which
    /// `cargo xtask test` replays); prints executions and writes target/fuzz/report.json.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (config, classifier, differential).
        #[arg(long)]
        target: Option<String>,
    },
    /// Soak the daemon (not in CI): mixed allowed and denied connections at full rate, a reload
    /// every second, the outside interface re-created every minute; fails on any misclassified
    /// connection, 5 % resident-memory growth or an error in the log. Writes
    /// target/soak/report.json.
    Soak {
        /// How long.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Run the kernel-facing suites in qemu on Debian's 5.10, 6.1 and 6.12 cloud kernels.
    VmTest {
        /// 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Build an Exchange organisation in network namespaces behind a real exfw gateway, with
    /// real servers, clients and Prometheus; print what each scenario expected and got.
    Lab {
        /// The organisation: any example config, or your own.
        #[arg(long, default_value = "examples/exchange2016-edge.toml")]
        config: String,
        /// Keep generating the scenarios' traffic for at least this many seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Leave the lab running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
}

impl Cmd {
    /// What the command needs installed.
    fn needs(&self) -> Vec<Need> {
        use Need::*;
        match self {
            Cmd::Setup => Need::ALL.to_vec(),
            Cmd::Build | Cmd::Lint => vec![Toolchain],
            Cmd::Test { part, .. } => match part {
                TestPart::Unit => vec![Toolchain],
                TestPart::All | TestPart::Integration => vec![Toolchain, Packaging, Kernel, Lab],
            },
            Cmd::Bench | Cmd::Soak { .. } => vec![Toolchain, Kernel],
            Cmd::Fuzz { .. } => vec![Toolchain],
            Cmd::VmTest { .. } => vec![Toolchain, Kernel, Vm],
            Cmd::Lab { .. } => vec![Toolchain, Kernel, Lab],
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    env::set_current_dir(&root)?;
    setup(&cli.command.needs())?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build => build(),
        Cmd::Lint => lint(),
        Cmd::Test { part, args } => test(part, &args),
        Cmd::Bench => bench(),
        Cmd::Fuzz { seconds, target } => fuzz(seconds, target.as_deref()),
        Cmd::Soak { minutes } => soak(minutes),
        Cmd::VmTest { kernel } => vm::vm_test(&kernel),
        Cmd::Lab {
            config,
            duration,
            keep,
        } => lab(&config, duration, keep),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command and fails with its name when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
}

/// Installs what `needs` asks for that is missing: Debian packages (as root), bpf-linker and
/// cargo-deb (into ~/.cargo/bin), and mounts bpffs.
fn setup(needs: &[Need]) -> Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .flat_map(|n| n.packages())
        .copied()
        .filter(|pkg| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .stderr(Stdio::null())
                .output();
            !out.is_ok_and(|o| o.stdout.ends_with(b"install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}: run this command as root once, or `sudo cargo xtask setup`"
            );
        }
        eprintln!("xtask setup: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if needs.contains(&Need::Toolchain) {
        install_bpf_linker()?;
    }
    if needs.contains(&Need::Packaging) {
        install_cargo_deb()?;
    }
    if needs.contains(&Need::Kernel) && is_root() {
        mount_bpffs()?;
    }
    Ok(())
}

fn install_bpf_linker() -> Result<()> {
    let linker = cargo_bin().join("bpf-linker");
    let have = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have
        .as_deref()
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against llvm-22 (about 90 s)");
    run(Command::new("cargo")
        .args([
            "install",
            "--quiet",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

fn install_cargo_deb() -> Result<()> {
    let deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if deb.as_deref().is_ok_and(|v| v.contains(CARGO_DEB_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-deb {CARGO_DEB_VERSION}");
    run(Command::new("cargo").args([
        "install",
        "--quiet",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

fn mount_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    eprintln!("xtask setup: mounting bpffs on /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn build() -> Result<()> {
    run(Command::new("cargo").args(["build", "--release", "--locked", "-p", "exfw-daemon"]))?;
    eprintln!("built target/release/exfw (the XDP object is embedded in it)");
    Ok(())
}

fn lint() -> Result<()> {
    run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo").args([
        "fmt",
        "--manifest-path",
        "exfw-ebpf/Cargo.toml",
        "--",
        "--check",
    ]))?;
    run(Command::new("cargo").args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test(part: TestPart, args: &[String]) -> Result<()> {
    if part != TestPart::Unit && !is_root() {
        bail!(
            "the integration suites load BPF programs and create network namespaces: run `cargo xtask test` as root (`cargo xtask lint` and `cargo xtask test unit` need no root)"
        );
    }
    if part == TestPart::All {
        lint()?;
    }
    if part != TestPart::Integration {
        // What a plain `cargo test` runs: the privileged suites report themselves ignored.
        run(Command::new("cargo")
            .args(["test", "--locked", "--workspace"])
            .arg("--")
            .args(args))?;
    }
    if part != TestPart::Unit {
        // The daemon tests run the `exfw` binary itself, and the packaging test reads the .deb.
        run(Command::new("cargo").args(["build", "--locked", "--workspace", "--bins"]))?;
        run(Command::new("cargo")
            .args(["deb", "--locked", "-p", "exfw-daemon"])
            .stdout(Stdio::null()))?;
        run(Command::new("cargo")
            .args(["test", "--locked", "--workspace"])
            // The privileged suites, which a plain `cargo test` lists as ignored; a missing
            // privilege or kernel feature fails them here.
            .args(["--", "--ignored"])
            .args(args))?;
    }
    Ok(())
}

fn lab(config: &str, duration: u64, keep: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "the lab creates network namespaces and loads XDP programs: run `cargo xtask lab` as root"
        );
    }
    run(Command::new("cargo").args(["build", "--quiet", "--locked", "--workspace", "--bins"]))?;
    let mut lab = Command::new("target/debug/exfw-lab");
    lab.args(["--config", config, "--duration", &duration.to_string()]);
    if keep {
        lab.arg("--keep");
    }
    // Become the lab, so Ctrl-C reaches it and it tears everything down before the shell returns.
    let error = std::os::unix::process::CommandExt::exec(&mut lab);
    Err(error).context("starting target/debug/exfw-lab")
}

fn soak(minutes: u64) -> Result<()> {
    if !is_root() {
        bail!(
            "the soak creates network namespaces and loads XDP programs: run `cargo xtask soak` as root"
        );
    }
    // The daemon as it ships.
    run(Command::new("cargo").args(["build", "--quiet", "--release", "--locked", "--bins"]))?;
    run(Command::new("target/release/exfw-soak").args(["--minutes", &minutes.to_string()]))
}

const FUZZ_TARGETS: [&str; 3] = ["config", "classifier", "differential"];
const FUZZ_TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    let targets: Vec<&str> = match only {
        Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target `{t}`: choose one of {}",
            FUZZ_TARGETS.join(", ")
        ),
        None => FUZZ_TARGETS.to_vec(),
    };
    if targets.contains(&"differential") && !is_root() {
        bail!(
            "the differential target loads the XDP program: run `cargo xtask fuzz` as root (or --target config)"
        );
    }
    // What cargo-fuzz passes, without a sanitizer: stable rustc instruments for libFuzzer. The
    // explicit --target keeps the flags off build scripts (and exfw-daemon's build script
    // clears them for the eBPF build).
    let rustflags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "--manifest-path",
            "fuzz/Cargo.toml",
        ])
        .args(["--target", FUZZ_TRIPLE])
        .env("CARGO_TARGET_DIR", "target/fuzz")
        .env("RUSTFLAGS", &rustflags))?;
    let mut report = Vec::new();
    for target in targets {
        let binary = format!("target/fuzz/{FUZZ_TRIPLE}/release/{target}");
        let found = format!("target/fuzz/new/{target}");
        let artifacts = format!("target/fuzz/artifacts/{target}/");
        fs::create_dir_all(&found)?;
        fs::create_dir_all(&artifacts)?;
        let out = Command::new(&binary)
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-print_final_stats=1", "-max_len=4096"])
            .arg(format!("-artifact_prefix={artifacts}"))
            .arg(&found)
            .arg(format!("fuzz/corpus/{target}"))
            .output()
            .with_context(|| format!("running {binary}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| -> u64 {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let executions = stat("number_of_executed_units");
        let per_second = stat("average_exec_per_sec");
        let coverage = log
            .lines()
            .rev()
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "cov:").nth(1))
            .unwrap_or("?")
            .to_string();
        if !out.status.success() {
            bail!(
                "fuzz target {target} failed ({}); the input is in {artifacts}, add it to fuzz/corpus/{target}/ once fixed:\n{}",
                out.status,
                log.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        // Keep only inputs that reach new code.
        let merge = Command::new(&binary)
            .args(["-merge=1"])
            .arg(format!("fuzz/corpus/{target}"))
            .arg(&found)
            .output()
            .with_context(|| format!("merging the corpus of {target}"))?;
        if !merge.status.success() {
            bail!(
                "merging the corpus of {target} failed: {}",
                String::from_utf8_lossy(&merge.stderr)
            );
        }
        let corpus = fs::read_dir(format!("fuzz/corpus/{target}"))?.count();
        report.push((target, executions, per_second, coverage, corpus));
    }
    println!(
        "{:<14} {:>14} {:>10} {:>10} {:>8}",
        "target", "executions", "per second", "coverage", "corpus"
    );
    for (target, executions, per_second, coverage, corpus) in &report {
        println!("{target:<14} {executions:>14} {per_second:>10} {coverage:>10} {corpus:>8}");
    }
    let json: Vec<String> = report
        .iter()
        .map(|(t, e, p, c, n)| {
            format!(
                "{{\"target\":\"{t}\",\"seconds\":{seconds},\"executions\":{e},\"executions_per_second\":{p},\"coverage\":\"{c}\",\"corpus\":{n}}}"
            )
        })
        .collect();
    fs::create_dir_all("target/fuzz")?;
    fs::write("target/fuzz/report.json", format!("[{}]\n", json.join(",")))?;
    println!("wrote target/fuzz/report.json; commit new inputs in fuzz/corpus/");
    Ok(())
}

fn bench() -> Result<()> {
    fs::create_dir_all("target/bench")?;
    // The benchmark starts the real daemon: build it in the same profile.
    run(Command::new("cargo").args([
        "build",
        "--quiet",
        "--release",
        "--locked",
        "-p",
        "exfw-daemon",
    ]))?;
    run(Command::new("cargo").args([
        "run",
        "--quiet",
        "--release",
        "--locked",
        "-p",
        "exfw-tests",
        "--bin",
        "exfw-bench",
        "--",
        "target/bench/exfw.json",
    ]))
}
