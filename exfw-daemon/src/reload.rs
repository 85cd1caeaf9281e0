//! `exfw run`: start, reload on SIGHUP or a change of the config file, log sampled drops, stop.
//!
//! Start-up checks everything that can fail (config, interfaces, the pin lock, verifier,
//! metrics address) before it changes the kernel, so a failed start leaves the pinned enforcement
//! as it was. A reload that fails keeps the running policy and says why.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use exfw_common::{DropEvent, Reason, family};
use sd_notify::NotifyState;
use tokio::{signal::unix::SignalKind, sync::mpsc};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    dataplane::{AttachedMode, Dataplane, LoadOptions},
    metrics::{ReloadStatus, Shared},
    policy::{Compiled, compile},
    server,
};

/// How long the config file must be quiet before a change is loaded.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Drop events logged per second at most; the rest are summarised.
const DROP_LOG_LINES_PER_SECOND: usize = 20;

/// What `exfw run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The config file.
    pub config: PathBuf,
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
}

fn notify(states: &[NotifyState]) {
    // Outside systemd (no NOTIFY_SOCKET) this is a no-op.
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "telling systemd failed");
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Loads and compiles `path`, logging every config error.
fn load_config(path: &Path) -> Result<(Config, Compiled)> {
    let config = config::load(path).map_err(|errors| {
        for e in &errors.0 {
            error!("{e}");
        }
        anyhow!("{} has {} error(s)", path.display(), errors.0.len())
    })?;
    for w in &config.warnings {
        warn!("{w}");
    }
    let compiled = compile(&config).with_context(|| format!("compiling {}", path.display()))?;
    Ok((config, compiled))
}

fn check_interfaces(config: &Config, path: &Path) -> Result<()> {
    if config.interfaces.iter().any(|i| i.reverse_path) {
        warn_without_lookup_fix();
    }
    for iface in &config.interfaces {
        if crate::dataplane::ifindex_of(&iface.name).is_none() {
            bail!(
                "interface `{}` does not exist on this host; fix its [[interface]] entry in {}",
                iface.name,
                path.display()
            );
        }
        if iface.reverse_path {
            warn_without_forwarding(&iface.name);
        }
    }
    Ok(())
}

/// Kernels without "bpf: Always return target ifindex in bpf_fib_lookup" cannot say where a
/// route leaves when its next hop has no neighbour entry: exfw drops such sources as spoofed.
fn warn_without_lookup_fix() {
    let version = crate::dataplane::kernel_version();
    if !version.is_some_and(crate::dataplane::fib_names_ifindex_without_neighbour) {
        let version = version.map_or("unknown".to_string(), |(a, b, c)| format!("{a}.{b}.{c}"));
        warn!(
            kernel = %version,
            "this kernel ({version}) does not name the route's interface when the next hop has no neighbour entry (fixed in Linux 6.2, 6.1.13, 5.15.95 and 5.10.169): the reverse-path check drops such sources as spoofed_source rather than guess; hosts the gateway has never exchanged ARP or neighbour discovery with can lose their first packets. Upgrade the kernel, or set reverse_path = \"off\" where that is not acceptable"
        );
    }
}

/// The reverse-path check asks the kernel's forwarding lookup, which refuses on an interface
/// where forwarding is off: exfw then drops that family's packets there as spoofed.
fn warn_without_forwarding(iface: &str) {
    for (family, dir) in [("IPv4", "ipv4"), ("IPv6", "ipv6")] {
        let path = format!("/proc/sys/net/{dir}/conf/{iface}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            warn!(
                %iface,
                "{family} forwarding is off on {iface}: the reverse-path check cannot validate {family} sources there, so they drop as spoofed_source; enable it (sysctl -w net.{dir}.conf.{iface}.forwarding=1) or set reverse_path = \"off\" for {iface}"
            );
        }
    }
}

/// Makes the interfaces match the config: attach (or adopt) the configured ones, detach the
/// pinned ones the config no longer names.
fn sync_interfaces(
    dataplane: &mut Dataplane,
    config: &Config,
) -> Result<Vec<(String, AttachedMode)>> {
    let mut attached = Vec::new();
    for iface in &config.interfaces {
        let mode = dataplane
            .attach(&iface.name, iface.mode)
            .with_context(|| format!("attaching to {}", iface.name))?;
        attached.push((iface.name.clone(), mode));
    }
    for (iface, _) in dataplane.pinned_links() {
        if !config.interfaces.iter().any(|i| i.name == iface) {
            dataplane.detach(&iface)?;
        }
    }
    Ok(attached)
}

/// Applies a compiled policy under the data-plane lock: stable rule slots, a new generation.
fn apply(shared: &Shared, mut compiled: Compiled, config: &Config) -> Result<u32> {
    let mut dataplane = shared.dataplane.lock().unwrap_or_else(|e| e.into_inner());
    dataplane.assign_rule_slots(&mut compiled)?;
    let generation = dataplane.apply(&compiled.policy)?;
    let attached = sync_interfaces(&mut dataplane, config)?;
    drop(dataplane);
    *shared.compiled.write().unwrap_or_else(|e| e.into_inner()) = compiled;
    *shared.interfaces.write().unwrap_or_else(|e| e.into_inner()) = attached;
    Ok(generation)
}

/// One reload: on success the new generation is in force; on failure the old one stays.
fn reload(shared: &Shared, options: &RunOptions, running: &mut Config, why: &str) {
    let started = Instant::now();
    notify(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
    ]);
    let result = load_config(&options.config).and_then(|(config, compiled)| {
        check_interfaces(&config, &options.config)?;
        if config.limits.flow_entries != running.limits.flow_entries
            || config.limits.pending_entries != running.limits.pending_entries
        {
            warn!("flow_entries or pending_entries changed: the pinned connection tables keep their sizes until `exfw detach` and a restart");
        }
        if config.metrics_listen != running.metrics_listen {
            warn!("metrics listen address changed: it takes effect at the next restart");
        }
        let generation = apply(shared, compiled, &config)?;
        *running = config;
        Ok(generation)
    });
    let mut status = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(generation) => {
            status.last_successful = true;
            status.last_success_seconds = now_seconds();
            status.successes += 1;
            info!(
                generation,
                trigger = why,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "config reloaded"
            );
        }
        Err(e) => {
            status.last_successful = false;
            status.failures += 1;
            error!(
                trigger = why,
                "reload failed, the running policy stays in force: {e:#}"
            );
        }
    }
    drop(status);
    notify(&[NotifyState::Ready, NotifyState::Status("enforcing")]);
}

fn ip_text(fam: u8, bytes: &[u8; 16]) -> String {
    match fam {
        family::V4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        family::V6 => std::net::Ipv6Addr::from(*bytes).to_string(),
        _ => "-".into(),
    }
}

fn iface_name(index: u32, cache: &mut BTreeMap<u32, String>) -> String {
    cache
        .entry(index)
        .or_insert_with(|| crate::dataplane::interface_name(index))
        .clone()
}

/// Logs sampled drops as structured lines, at most DROP_LOG_LINES_PER_SECOND a tick.
fn log_drops(shared: &Shared, names: &mut BTreeMap<u32, String>) {
    let events: Vec<DropEvent> = shared
        .dataplane
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain_events();
    let compiled = shared.compiled.read().unwrap_or_else(|e| e.into_inner());
    for e in events.iter().take(DROP_LOG_LINES_PER_SECOND) {
        let reason = Reason::from_code(e.reason).map_or("unknown", |r| r.name());
        warn!(
            target: "exfw::drop",
            src = %ip_text(e.family, &e.src),
            dst = %ip_text(e.family, &e.dst),
            proto = %crate::policy::export::proto_name(e.proto),
            port = e.dport,
            reason,
            rule = "none",
            dst_role = compiled.policy.class_name(e.dst_class),
            verdict = if e.verdict == exfw_common::Verdict::WouldDrop as u8 { "would_drop" } else { "drop" },
            iface = %iface_name(e.ifindex, names),
            vlan = e.vlan,
            "dropped"
        );
    }
    if events.len() > DROP_LOG_LINES_PER_SECOND {
        warn!(target: "exfw::drop", suppressed = events.len() - DROP_LOG_LINES_PER_SECOND, "more sampled drops this second (see exfw_port_drops_total)");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: RunOptions) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run_async(options))
}

async fn run_async(options: RunOptions) -> Result<()> {
    let (config, compiled) = load_config(&options.config).context("nothing was changed")?;
    check_interfaces(&config, &options.config)?;
    let dataplane = Dataplane::load(LoadOptions {
        flow_entries: config.limits.flow_entries,
        pending_entries: config.limits.pending_entries,
        pin_dir: Some(options.pin_dir.clone()),
        ..Default::default()
    })?;
    let listener = server::bind(config.metrics_listen).await.with_context(|| {
        format!(
            "cannot listen on {} for metrics; change [metrics] listen",
            config.metrics_listen
        )
    })?;
    let adopted = dataplane.generation();
    let shared = Arc::new(Shared {
        dataplane: Mutex::new(dataplane),
        compiled: RwLock::new(compiled.clone()),
        interfaces: RwLock::new(Vec::new()),
        reload: Mutex::new(ReloadStatus::default()),
        flow_entries: AtomicU64::new(0),
        flow_capacity: u64::from(config.limits.flow_entries),
    });
    let generation = apply(&shared, compiled, &config)?;
    {
        let mut status = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
        status.last_successful = true;
        status.last_success_seconds = now_seconds();
        status.successes = 1;
    }
    info!(generation, adopted_generation = adopted, config = %options.config.display(), pin_dir = %options.pin_dir.display(), "exfw is enforcing");
    let ready = Arc::new(AtomicBool::new(true));
    let registry = Arc::new(crate::metrics::registry(shared.clone()));
    let app = server::AppState {
        registry,
        ready: ready.clone(),
    };
    let metrics_addr = config.metrics_listen;
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, app).await {
            error!(error = %e, "the metrics server stopped");
        }
    });
    info!(%metrics_addr, "serving /metrics, /healthz, /readyz");
    notify(&[NotifyState::Ready, NotifyState::Status("enforcing")]);

    // Config-file changes: watch the directory, so editors that replace the file count.
    let (changes_tx, mut changes) = mpsc::channel::<()>(16);
    let file_name = options.config.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = changes_tx.try_send(());
        }
    })
    .context("starting the config file watcher")?;
    let directory = options
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    notify::Watcher::watch(&mut watcher, directory, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", directory.display()))?;

    let mut hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut drops = tokio::time::interval(Duration::from_secs(1));
    let mut flow_count = tokio::time::interval(Duration::from_secs(15));
    let mut names = BTreeMap::new();
    let mut running = config;
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&shared, &options, &mut running, "SIGHUP"),
            Some(()) = changes.recv() => {
                // Debounce: load once the file has been quiet for a moment; signals and
                // timers keep being served meanwhile.
                settle = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
            _ = async { tokio::time::sleep_until(settle.unwrap()).await }, if settle.is_some() => {
                settle = None;
                reload(&shared, &options, &mut running, "config file changed");
            }
            _ = drops.tick() => log_drops(&shared, &mut names),
            _ = flow_count.tick() => {
                let count = shared.dataplane.lock().unwrap_or_else(|e| e.into_inner()).flow_entries();
                shared.flow_entries.store(count, Ordering::Relaxed);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    notify(&[NotifyState::Stopping]);
    ready.store(false, Ordering::Relaxed);
    info!("stopping; the pinned policy stays in force (exfw detach removes it)");
    Ok(())
}
