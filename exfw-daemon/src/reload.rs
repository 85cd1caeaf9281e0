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

/// Why a reload (or a start over pinned state) is refused: it would take protection away that
/// the operator did not ask to remove.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Interfaces exfw filters now that the new config does not name.
    #[error(
        "the config no longer names {} (filtered now): exfw would stop filtering there. If that is meant, remove it explicitly with `exfw detach {}` and reload; otherwise restore the [[interface]] entries",
        .0.join(", "),
        .0.join(" ")
    )]
    DetachesInterfaces(Vec<String>),
    /// More of the protected addresses would go than `[reload] max_protected_removal_percent`.
    #[error(
        "the config removes {removed} of the {protected} protected addresses ({}), more than max_protected_removal_percent = {limit}: a file cut short looks like this. If that is meant, raise [reload] max_protected_removal_percent in the new config",
        examples.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    RemovesProtectedAddresses {
        /// Addresses the new config no longer protects.
        removed: usize,
        /// Addresses the running config protects.
        protected: usize,
        /// The limit in force (the new config's).
        limit: u8,
        /// Up to five of the removed addresses.
        examples: Vec<ipnet::IpNet>,
    },
}

impl Refusal {
    /// The `reason` label of `exfw_config_reload_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::DetachesInterfaces(_) => "detaches_interface",
            Refusal::RemovesProtectedAddresses { .. } => "removes_protected_addresses",
        }
    }
}

/// Whether moving from `running` (None at start) to `new` would remove protection by
/// accident: an interface in `filtered` (exfw's program is attached there now) that `new`
/// does not name, or more of the running protected addresses than `new` allows to go.
pub fn refusal(running: Option<&Config>, new: &Config, filtered: &[String]) -> Option<Refusal> {
    let detached: Vec<String> = filtered
        .iter()
        .filter(|iface| !new.interfaces.iter().any(|i| &i.name == *iface))
        .cloned()
        .collect();
    if !detached.is_empty() {
        return Some(Refusal::DetachesInterfaces(detached));
    }
    let running = running?.protected_addresses();
    let kept = new.protected_addresses();
    let removed: Vec<ipnet::IpNet> = running.difference(&kept).copied().collect();
    let limit = new.reload.max_protected_removal_percent;
    // removed / running > limit / 100, in integers.
    (removed.len() * 100 > usize::from(limit) * running.len()).then(|| {
        Refusal::RemovesProtectedAddresses {
            removed: removed.len(),
            protected: running.len(),
            limit,
            examples: removed.into_iter().take(5).collect(),
        }
    })
}

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

/// The interfaces exfw's program filters now: pinned links whose interface is present.
fn filtered_interfaces(dataplane: &Dataplane) -> Vec<String> {
    dataplane
        .pinned_links()
        .into_iter()
        .map(|(iface, _)| iface)
        .filter(|iface| crate::dataplane::ifindex_of(iface).is_some())
        .collect()
}

/// What one reload came to.
enum Outcome {
    /// The new generation is in force.
    Applied(u32),
    /// The new config would remove protection by accident; the running one stays.
    Refused(Refusal),
    /// The new config could not be loaded or applied; the running one stays.
    Failed(anyhow::Error),
}

/// Loads, checks against the running config and applies `options.config`.
fn try_reload(shared: &Shared, options: &RunOptions, running: &mut Config) -> Outcome {
    let (config, compiled) = match load_config(&options.config)
        .and_then(|loaded| check_interfaces(&loaded.0, &options.config).map(|()| loaded))
    {
        Ok(loaded) => loaded,
        Err(e) => return Outcome::Failed(e),
    };
    let filtered = filtered_interfaces(&shared.dataplane.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(refused) = refusal(Some(running), &config, &filtered) {
        return Outcome::Refused(refused);
    }
    if config.limits.flow_entries != running.limits.flow_entries
        || config.limits.pending_entries != running.limits.pending_entries
    {
        warn!(
            "flow_entries or pending_entries changed: the pinned connection tables keep their sizes until `exfw detach` and a restart"
        );
    }
    if config.metrics_listen != running.metrics_listen {
        warn!("metrics listen address changed: it takes effect at the next restart");
    }
    match apply(shared, compiled, &config) {
        Ok(generation) => {
            *running = config;
            Outcome::Applied(generation)
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// One reload: on success the new generation is in force; on failure or refusal the old one
/// stays, and the log and metrics say why.
fn reload(shared: &Shared, options: &RunOptions, running: &mut Config, why: &str) {
    let started = Instant::now();
    notify(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
    ]);
    let outcome = try_reload(shared, options, running);
    let mut status = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Outcome::Applied(generation) => {
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
        Outcome::Refused(refused) => {
            status.last_successful = false;
            status.failures += 1;
            match refused {
                Refusal::DetachesInterfaces(_) => status.refused_detach += 1,
                Refusal::RemovesProtectedAddresses { .. } => status.refused_removal += 1,
            }
            error!(
                trigger = why,
                reason = refused.reason(),
                "reload refused, the running policy stays in force: {refused}"
            );
        }
        Outcome::Failed(e) => {
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

/// Whether a file event means the file is complete: a writer closed it, or a complete file
/// was renamed into place (the safe way to deploy). Writes still in progress (modify) and
/// creation do not count; a deletion does, so the failed load says the file is gone.
fn completes_the_file(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    matches!(
        kind,
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
            | notify::EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
            | notify::EventKind::Remove(_)
    )
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
    if let Some(refused) = refusal(None, &config, &filtered_interfaces(&dataplane)) {
        bail!("{refused}; the pinned policy stays in force");
    }
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

    // Config-file changes: watch the directory, so a file renamed into place counts; act only
    // once a writer has closed the file or renamed it in, never in the middle of a write.
    let (changes_tx, mut changes) = mpsc::channel::<()>(16);
    let file_name = options.config.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name)
            && completes_the_file(&event.kind)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with servers EX01..EXn (one address each) and the given interfaces.
    fn config(servers: usize, interfaces: &[&str], extra: &str) -> Config {
        let mut text =
            String::from("version = 1\nmode = \"enforce\"\n[organization]\nexchange = \"2019\"\n");
        text.push_str(extra);
        for n in 1..=servers {
            text.push_str(&format!(
                "[[server]]\nname = \"EX{n}\"\nroles = [\"mailbox\"]\naddresses = [\"192.0.2.{n}\"]\n"
            ));
        }
        for iface in interfaces {
            text.push_str(&format!("[[interface]]\nname = \"{iface}\"\n"));
        }
        config::parse(&text, "test.toml").unwrap()
    }

    fn filtered(names: &[&str]) -> Vec<String> {
        names.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_reload_that_drops_a_filtered_interface_is_refused() {
        let running = config(2, &["eth0", "eth1"], "");
        let new = config(2, &["eth0"], "");
        let refused = refusal(Some(&running), &new, &filtered(&["eth0", "eth1"])).unwrap();
        assert_eq!(refused, Refusal::DetachesInterfaces(vec!["eth1".into()]));
        assert!(
            refused.to_string().contains("exfw detach eth1"),
            "{refused}"
        );
        // Once detached explicitly (no longer filtered), the same reload goes through.
        assert_eq!(refusal(Some(&running), &new, &filtered(&["eth0"])), None);
        // At start, a pinned interface the config forgot is refused the same way.
        assert!(refusal(None, &new, &filtered(&["eth0", "eth1"])).is_some());
    }

    #[test]
    fn removing_more_than_the_allowed_share_of_protected_addresses_is_refused() {
        let running = config(4, &["eth0"], "");
        // Half of them: the default limit (50 %) allows it.
        assert_eq!(
            refusal(Some(&running), &config(2, &["eth0"], ""), &[]),
            None
        );
        // Three of four: refused, naming what would go.
        let refused = refusal(Some(&running), &config(1, &["eth0"], ""), &[]).unwrap();
        assert_eq!(refused.reason(), "removes_protected_addresses");
        assert!(refused.to_string().contains("3 of the 4"), "{refused}");
        assert!(refused.to_string().contains("192.0.2.4/32"), "{refused}");
        // The new config may allow it explicitly.
        let allowed = config(
            1,
            &["eth0"],
            "[reload]\nmax_protected_removal_percent = 100\n",
        );
        assert_eq!(refusal(Some(&running), &allowed, &[]), None);
        // A limit of 0 refuses any loss, and adding hosts is never refused.
        let strict = config(
            3,
            &["eth0"],
            "[reload]\nmax_protected_removal_percent = 0\n",
        );
        assert!(refusal(Some(&running), &strict, &[]).is_some());
        assert_eq!(
            refusal(Some(&running), &config(9, &["eth0"], ""), &[]),
            None
        );
    }

    #[test]
    fn only_a_complete_file_triggers_a_reload() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        assert!(completes_the_file(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(completes_the_file(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(completes_the_file(&EventKind::Remove(RemoveKind::File)));
        assert!(!completes_the_file(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(!completes_the_file(&EventKind::Create(CreateKind::File)));
        assert!(!completes_the_file(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
