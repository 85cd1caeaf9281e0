//! `cargo xtask soak`: the real daemon on a namespace gateway for N minutes under mixed allowed
//! and denied TCP connections as fast as the machine opens them, a reload every second (a file
//! renamed into place, every tenth a SIGHUP) and the outside interface deleted and re-created
//! every minute. It counts misclassified connections (an allowed one refused while exfw filters
//! a working link, a denied one that connects), the daemon's resident memory growth after a
//! warm-up, and error lines in its log; prints a table, writes JSON, and fails on any of them.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use exfw_tests::{
    daemon::{
        GATEWAY_CONFIG, METRICS, Scratch, http_get, metric, scrape, value, wait_until, write_config,
    },
    netns::Topology,
};

/// Soak the daemon.
#[derive(Parser)]
struct Args {
    /// How long.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/soak/report.json")]
    report: PathBuf,
}

/// What the traffic threads count.
#[derive(Default)]
struct Tally {
    in_flight: AtomicU64,
    allowed: AtomicU64,
    allowed_refused: AtomicU64,
    denied: AtomicU64,
    denied_connected: AtomicU64,
}

/// An extra rule no traffic uses: reloads alternate with and without it, so every reload
/// writes a new generation while what the traffic expects stays the same.
const EXTRA: &str = r#"
[[allow]]
name = "soak-unused"
from = ["external"]
to = ["mailbox"]
proto = "tcp"
ports = [9999]
reason = "soak: toggled every reload"
"#;

const WORKERS_PER_PORT: usize = 4;
/// A denied SYN is never answered: how long a worker waits before counting it denied.
const DENIED_WAIT: Duration = Duration::from_millis(300);
/// An allowed connection may wait for one retransmitted SYN (the server's accept queue
/// overflows at this rate): persistent refusal is what counts, and exfw's own counters show
/// any allowed packet it dropped.
const ALLOWED_WAIT: Duration = Duration::from_secs(3);
const WARM_UP: Duration = Duration::from_secs(20);

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "the soak creates network namespaces and loads XDP: run `cargo xtask soak` as root"
        );
        return ExitCode::FAILURE;
    }
    let scratch = Scratch::new("soak");
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    net.outside.exec(&[
        "sysctl",
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=1024 65000",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    // The denied port's server counts what reaches it: anything at all is a fail-open, also a
    // connection that completed after its client gave up.
    let reached_denied = Arc::new(AtomicU64::new(0));
    for port in [443u16, 3389] {
        let listener = net
            .inside
            .run(|| TcpListener::bind(format!("0.0.0.0:{port}")).unwrap());
        let reached = reached_denied.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if port == 3389 && stream.is_ok() {
                    reached.fetch_add(1, Ordering::Relaxed);
                }
                drop(stream);
            }
        });
    }
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let daemon = scratch.start_ready(&net.gateway, "soak");
    let pid = daemon.pid();

    let mut workers = Vec::new();
    for (port, allowed) in [(443u16, true), (3389, false)] {
        for _ in 0..WORKERS_PER_PORT {
            let (stop, paused, tally) = (stop.clone(), paused.clone(), tally.clone());
            workers.push(net.outside.spawn(move || {
                let dst: SocketAddr = format!("192.0.2.2:{port}").parse().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if paused.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    tally.in_flight.fetch_add(1, Ordering::AcqRel);
                    let wait = if allowed { ALLOWED_WAIT } else { DENIED_WAIT };
                    let connected = exfw_tests::netns::connect_here(None, dst, wait).is_ok();
                    tally.in_flight.fetch_sub(1, Ordering::AcqRel);
                    // A result that straddles a pause (the link being re-created) says nothing.
                    if paused.load(Ordering::Acquire) {
                        continue;
                    }
                    match (allowed, connected) {
                        (true, true) => tally.allowed.fetch_add(1, Ordering::Relaxed),
                        (true, false) => tally.allowed_refused.fetch_add(1, Ordering::Relaxed),
                        (false, false) => tally.denied.fetch_add(1, Ordering::Relaxed),
                        (false, true) => tally.denied_connected.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }

    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let mut rss_after_warm_up = None;
    let mut rss_peak = 0;
    let mut reloads_asked = 0u64;
    let mut recreations = Vec::new();
    let mut next_recreation = started + Duration::from_secs(60);
    while Instant::now() < end {
        let second = Instant::now();
        reloads_asked += 1;
        let text = if reloads_asked.is_multiple_of(2) {
            format!("{GATEWAY_CONFIG}{EXTRA}")
        } else {
            GATEWAY_CONFIG.to_string()
        };
        write_config(&scratch.config(), &text);
        if reloads_asked.is_multiple_of(10) {
            daemon.signal(libc::SIGHUP);
        }
        if Instant::now() >= next_recreation {
            next_recreation += Duration::from_secs(60);
            paused.store(true, Ordering::Release);
            wait_until(
                "connections in flight to end",
                Duration::from_secs(10),
                || tally.in_flight.load(Ordering::Acquire) == 0,
            );
            let t = Instant::now();
            net.gateway.ip(&["link", "del", "out0"]);
            net.recreate_outside_link();
            wait_until("out0 filtered again", Duration::from_secs(10), || {
                value(
                    &net.gateway,
                    "exfw_interface_state",
                    &[r#"iface="out0""#, r#"state="attached""#],
                ) == 1.0
            });
            recreations.push(t.elapsed());
            paused.store(false, Ordering::Release);
        }
        if started.elapsed() >= WARM_UP && rss_after_warm_up.is_none() {
            rss_after_warm_up = Some(resident_kib(pid));
        }
        rss_peak = rss_peak.max(resident_kib(pid));
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_end = resident_kib(pid);
    let rss_start = rss_after_warm_up.unwrap_or(rss_end).max(1);
    let growth = 100.0 * (rss_end as f64 - rss_start as f64) / rss_start as f64;
    let reloaded = value(
        &net.gateway,
        "exfw_config_reloads_total",
        &[r#"result="success""#],
    );
    let failed = value(
        &net.gateway,
        "exfw_config_reloads_total",
        &[r#"result="failure""#],
    );
    let ready = http_get(&net.gateway, METRICS, "/readyz").is_some_and(|(s, _)| s == 200);
    // The kernel's own account: packets to the allowed port that exfw dropped, for any reason.
    let allowed_port_drops = metric(
        &scrape(&net.gateway),
        "exfw_port_drops_total",
        &[r#"port="443""#],
    )
    .unwrap_or(0.0);
    let log = daemon.log_text();
    // An interface being deleted is logged as an error on purpose; the soak does it.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && !l.contains("is gone (deleted"))
        .collect();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let misclassified = load(&tally.allowed_refused)
        + load(&tally.denied_connected)
        + load(&reached_denied)
        + allowed_port_drops as u64;
    let slowest = recreations.iter().max().copied().unwrap_or_default();
    let rows = [
        ("minutes", format!("{:.1}", elapsed / 60.0)),
        ("allowed connections", load(&tally.allowed).to_string()),
        (
            "allowed per second",
            format!("{:.0}", load(&tally.allowed) as f64 / elapsed),
        ),
        ("denied connections", load(&tally.denied).to_string()),
        (
            "allowed but refused",
            load(&tally.allowed_refused).to_string(),
        ),
        (
            "denied but connected",
            load(&tally.denied_connected).to_string(),
        ),
        ("denied port reached", load(&reached_denied).to_string()),
        (
            "allowed-port packets dropped",
            allowed_port_drops.to_string(),
        ),
        ("reloads applied / failed", format!("{reloaded} / {failed}")),
        ("interface re-creations", recreations.len().to_string()),
        ("slowest re-attach (ms)", slowest.as_millis().to_string()),
        (
            "resident memory (KiB)",
            format!("{rss_start} -> {rss_end} (peak {rss_peak})"),
        ),
        ("resident memory growth", format!("{growth:.2} %")),
        ("error lines in the log", errors.len().to_string()),
        ("ready at the end", ready.to_string()),
    ];
    println!("exfw soak");
    for (what, v) in &rows {
        println!("  {what:<28} {v}");
    }
    for e in errors.iter().take(10) {
        println!("  error: {e}");
    }
    let json = format!(
        "{{\"minutes\":{:.2},\"allowed\":{},\"denied\":{},\"allowed_refused\":{},\"denied_connected\":{},\"allowed_port_drops\":{allowed_port_drops},\"denied_port_reached\":{},\"reloads_applied\":{reloaded},\"reloads_failed\":{failed},\"recreations\":{},\"slowest_reattach_ms\":{},\"rss_kib_start\":{rss_start},\"rss_kib_end\":{rss_end},\"rss_kib_peak\":{rss_peak},\"rss_growth_percent\":{growth:.3},\"error_lines\":{},\"ready\":{ready}}}\n",
        elapsed / 60.0,
        load(&tally.allowed),
        load(&tally.denied),
        load(&tally.allowed_refused),
        load(&tally.denied_connected),
        load(&reached_denied),
        recreations.len(),
        slowest.as_millis(),
        errors.len(),
    );
    if let Some(dir) = args.report.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&args.report, json) {
        eprintln!("writing {}: {e}", args.report.display());
    }
    println!("  report: {}", args.report.display());
    let passed = misclassified == 0
        && growth < 5.0
        && errors.is_empty()
        && ready
        && failed == 0.0
        && load(&tally.allowed) > 0
        && load(&tally.denied) > 0;
    if passed {
        ExitCode::SUCCESS
    } else {
        println!(
            "  FAILED: misclassified {misclassified}, growth {growth:.2} %, errors {}, ready {ready}, failed reloads {failed}",
            errors.len()
        );
        ExitCode::FAILURE
    }
}
