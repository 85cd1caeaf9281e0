//! `exfw run`: start, reload on SIGHUP or a change of the config file, log sampled drops, stop.
//!
//! Start-up checks everything that can fail (config, interfaces, the pin lock, verifier,
//! metrics address) before it changes the kernel, so a failed start leaves the pinned enforcement
//! as it was. A reload that fails keeps the running policy and says why.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow};
use exfw_common::{DropEvent, Reason, family};
use sd_notify::NotifyState;
use tokio::{signal::unix::SignalKind, sync::mpsc};
use tracing::{error, info, warn};

use crate::{
    config::{self, Config},
    dataplane::{Dataplane, EventRing, LoadOptions},
    links::{self, InterfaceState, InterfaceStatus},
    policy::{Compiled, Protection, compile},
    server,
    state::{ReloadStatus, Shared},
};

/// The exit status of a start refused because it would remove protection (the pinned policy
/// stays in force): the unit does not restart on it, and the fail-closed fallback leaves it be.
pub const EXIT_REFUSED: u8 = 3;

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
    /// Interfaces whose accepts list the new config drops: they would take every source.
    #[error(
        "the config drops the accepts list of {}: exfw would take every source there, spoofed Exchange server and domain controller addresses included (a file cut short inside an [[interface]] table looks like this). If that is meant, list the groups in accepts (\"external\" included); otherwise restore the list",
        .0.join(", ")
    )]
    OpensInterfaceSources(Vec<String>),
}

impl Refusal {
    /// The `reason` label of `exfw_config_reload_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::DetachesInterfaces(_) => "detaches_interface",
            Refusal::RemovesProtectedAddresses { .. } => "removes_protected_addresses",
            Refusal::OpensInterfaceSources(_) => "opens_interface_sources",
        }
    }
}

/// Whether moving from the protection `in_force` (the running config's at a reload, the pinned
/// policy's at a start, `None` when nothing is in force) to `new` would remove protection by
/// accident: an interface in `filtered` (exfw's program is attached there now) that `new`
/// does not name, a restricted interface that loses its accepts list, or more of the protected
/// addresses than `new` allows to go.
pub fn refusal(
    in_force: Option<&Protection>,
    new: &Config,
    filtered: &[String],
) -> Option<Refusal> {
    let detached: Vec<String> = filtered
        .iter()
        .filter(|iface| !new.interfaces.iter().any(|i| &i.name == *iface))
        .cloned()
        .collect();
    if !detached.is_empty() {
        return Some(Refusal::DetachesInterfaces(detached));
    }
    let in_force = in_force?;
    let opened: Vec<String> = new
        .interfaces
        .iter()
        .filter(|i| i.accepts.is_none() && in_force.restricted_interfaces.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    if !opened.is_empty() {
        return Some(Refusal::OpensInterfaceSources(opened));
    }
    removal_refusal(&in_force.protected, new)
}

/// What `config` protects, to hold the next config to (a reload).
pub fn protection_of(config: &Config) -> Protection {
    Protection {
        protected: config.protected_addresses(),
        restricted_interfaces: config
            .interfaces
            .iter()
            .filter(|i| i.accepts.is_some())
            .map(|i| i.name.clone())
            .collect(),
    }
}

/// Whether `new` drops more of the `running` protected addresses than its
/// `[reload] max_protected_removal_percent` allows.
pub fn removal_refusal(running: &BTreeSet<ipnet::IpNet>, new: &Config) -> Option<Refusal> {
    let trunc = |nets: &BTreeSet<ipnet::IpNet>| -> BTreeSet<ipnet::IpNet> {
        nets.iter().map(ipnet::IpNet::trunc).collect()
    };
    let (running, kept) = (trunc(running), trunc(&new.protected_addresses()));
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
/// How often the flow table is counted (and after every reload).
const FLOW_COUNT_EVERY: Duration = Duration::from_secs(15);
/// How often every interface is re-checked besides the kernel's link events.
const INTERFACE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// A reload or interface check running longer than this is taken as hung: the watchdog is no
/// longer fed.
const JOB_HANG: Duration = Duration::from_secs(120);
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
            // At boot exfw starts before the network manager creates VLANs and bonds; a
            // missing interface is attached the moment it appears, and reported meanwhile.
            error!(
                iface = %iface.name,
                "interface `{}` does not exist (yet): exfw attaches to it as soon as it appears and reports it missing until then (/readyz 503, exfw_interface_state); if the name is wrong, fix its [[interface]] entry in {}",
                iface.name,
                path.display()
            );
            continue;
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

/// Attaches (or adopts, through its pinned link) every configured interface that exists; the
/// others are missing until the link watcher sees them appear.
fn attach_interfaces(dataplane: &mut Dataplane, config: &Config) -> Result<Vec<InterfaceStatus>> {
    let mut attached = Vec::new();
    for iface in &config.interfaces {
        if crate::dataplane::ifindex_of(&iface.name).is_none() {
            attached.push(InterfaceStatus {
                name: iface.name.clone(),
                state: InterfaceState::Missing,
            });
            continue;
        }
        let mode = dataplane
            .attach(&iface.name, iface.mode)
            .with_context(|| format!("attaching to {}", iface.name))?;
        attached.push(InterfaceStatus {
            name: iface.name.clone(),
            state: InterfaceState::Attached(mode),
        });
    }
    Ok(attached)
}

/// Detaches the pinned interfaces the config no longer names (only dead links or ones detached
/// explicitly remain by then: `refusal` stopped the rest).
fn detach_unnamed(dataplane: &mut Dataplane, config: &Config) -> Result<()> {
    for (iface, _) in dataplane.pinned_links() {
        if !config.interfaces.iter().any(|i| i.name == iface) {
            dataplane.detach(&iface)?;
        }
    }
    Ok(())
}

/// Applies a compiled policy under the data-plane lock: stable rule slots, the interfaces, a
/// new generation; then publishes the config, policy and interface states it applied.
///
/// Interfaces are attached before the flip, so a failure there leaves the running generation
/// in force (an interface attached anew meanwhile drops what arrives as `unknown_interface`);
/// over maps without a policy, after it.
/// After the flip nothing can fail but the removal of unnamed interfaces, and what is in force
/// is published either way.
fn apply(shared: &Shared, mut compiled: Compiled, config: Config) -> Result<u32> {
    let mut dataplane = shared.dataplane.lock().unwrap_or_else(|e| e.into_inner());
    let class_ids = dataplane.class_ids(&compiled)?;
    compiled.renumber_classes(&class_ids);
    let rule_slots = dataplane.rule_slots(&compiled)?;
    compiled.renumber(|rule| rule_slots[&rule.id]);
    let (attached, generation) = if dataplane.generation() == 0 {
        // Maps without a policy (a first start, or the state of an incompatible build set
        // aside): the policy goes in before a program that reads them is attached. Attached
        // first, it would drop everything as `unknown_interface` until the flip, and for good
        // if the flip failed; this way a failure leaves the old program, if any, filtering.
        let generation = dataplane.apply(&compiled.policy)?;
        (attach_interfaces(&mut dataplane, &config)?, generation)
    } else {
        let attached = attach_interfaces(&mut dataplane, &config)?;
        (attached, dataplane.apply(&compiled.policy)?)
    };
    // Maps of an incompatible build set aside at a start (this one's or an interrupted one's).
    if let Err(e) = dataplane.discard_replaced_maps() {
        warn!("removing the maps of an incompatible build failed: {e}");
    }
    let detached = detach_unnamed(&mut dataplane, &config);
    *shared.compiled.write().unwrap_or_else(|e| e.into_inner()) = compiled;
    *shared.interfaces.write().unwrap_or_else(|e| e.into_inner()) = attached;
    *shared.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    if let Err(e) = detached {
        error!(
            generation,
            "the new policy is in force, but removing an interface the config no longer names failed: {e:#}"
        );
    }
    Ok(generation)
}

/// The interfaces exfw's program filters now: pinned links alive on the interface of their name.
fn filtered_interfaces(dataplane: &Dataplane) -> Vec<String> {
    dataplane
        .pinned_links()
        .into_iter()
        .map(|(iface, _)| iface)
        .filter(|iface| {
            let index = crate::dataplane::ifindex_of(iface);
            index.is_some()
                && dataplane
                    .pinned_link(iface)
                    .is_some_and(|(_, linked)| linked.is_none() || linked == index)
        })
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

/// Loads `options.config`, checks it against the config in force and applies it.
fn try_reload(shared: &Shared, options: &RunOptions) -> Outcome {
    let (config, compiled) = match load_config(&options.config)
        .and_then(|loaded| check_interfaces(&loaded.0, &options.config).map(|()| loaded))
    {
        Ok(loaded) => loaded,
        Err(e) => return Outcome::Failed(e),
    };
    let filtered = filtered_interfaces(&shared.dataplane.lock().unwrap_or_else(|e| e.into_inner()));
    let running = shared
        .config
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(refused) = refusal(Some(&protection_of(&running)), &config, &filtered) {
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
    match apply(shared, compiled, config) {
        Ok(generation) => Outcome::Applied(generation),
        Err(e) => Outcome::Failed(e),
    }
}

/// One reload: on success the new generation is in force; on failure or refusal the old one
/// stays, and the log and metrics say why. Runs on a blocking thread.
fn reload(shared: &Shared, options: &RunOptions, why: &str) {
    let started = Instant::now();
    info!(trigger = why, "reload started");
    notify(&[
        NotifyState::Reloading,
        NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading")),
    ]);
    let outcome = try_reload(shared, options);
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
                Refusal::OpensInterfaceSources(_) => status.refused_opening += 1,
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

/// Re-checks every configured interface (after a link event, a reload, or on the timer).
fn reconcile_interfaces(shared: &Shared) {
    let mut dataplane = shared.dataplane.lock().unwrap_or_else(|e| e.into_inner());
    let config = shared
        .config
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let previous = shared
        .interfaces
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let states = links::reconcile(&mut dataplane, &config, &previous);
    // A re-created interface has a new index, which the policy's interface table must name:
    // until it does, the program drops what arrives there as unknown_interface (fail closed).
    let changed: Vec<&str> = config
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| dataplane.interface_index_changed(name))
        .collect();
    if !changed.is_empty() {
        let compiled = shared.compiled.read().unwrap_or_else(|e| e.into_inner());
        match dataplane.apply(&compiled.policy) {
            Ok(generation) => info!(
                generation,
                interfaces = %changed.join(","),
                "interface index changed: the policy in force applied again"
            ),
            Err(e) => error!(
                interfaces = %changed.join(","),
                "applying the policy for a re-created interface failed, it drops everything there (unknown_interface): {e}"
            ),
        }
    }
    *shared.interfaces.write().unwrap_or_else(|e| e.into_inner()) = states;
}

/// Counts the flow table on its own thread with its own descriptors, every `FLOW_COUNT_EVERY`
/// or when nudged: a walk of millions of entries never holds up scrapes, reloads or signals.
/// The walk stops at the table's capacity, so evictions that restart it cannot make it endless.
fn spawn_flow_counter(
    shared: Arc<Shared>,
    pin_dir: PathBuf,
) -> Result<std::sync::mpsc::SyncSender<()>> {
    let reader = Dataplane::open_pinned(&pin_dir).context("opening the flow table for counting")?;
    let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("exfw-flow-count".into())
        .spawn(move || {
            loop {
                let started = Instant::now();
                let count = reader.flow_entries_at_most(shared.flow_capacity);
                shared.flow_entries.store(count, Ordering::Relaxed);
                tracing::debug!(
                    entries = count,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "flow table counted"
                );
                match nudged.recv_timeout(FLOW_COUNT_EVERY) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
    Ok(nudge)
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
fn log_drops(shared: &Shared, ring: &mut EventRing, names: &mut BTreeMap<u32, String>) {
    let events: Vec<DropEvent> = ring.drain();
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
            verdict = exfw_common::Verdict::of_drop(e.verdict).name(),
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
/// creation do not count; a deletion does, so the failed load says the file is gone, and so
/// does a change of mode or owner (`chmod o-w` on a refused file).
fn completes_the_file(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    matches!(
        kind,
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
            | notify::EventKind::Modify(
                ModifyKind::Name(RenameMode::To | RenameMode::Both) | ModifyKind::Metadata(_)
            )
            | notify::EventKind::Remove(_)
    )
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: RunOptions) -> Result<()> {
    // Two workers: HTTP and the control loop; reloads, interface checks and the flow count run
    // on blocking threads of their own, so none of them delays /metrics, /healthz or signals.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run_async(options))
}

/// A job on a blocking thread, and when it started (the watchdog stops being fed when one
/// runs far too long).
struct Job {
    kind: &'static str,
    started: Instant,
    handle: tokio::task::JoinHandle<()>,
}

async fn run_async(options: RunOptions) -> Result<()> {
    let (config, compiled) = load_config(&options.config).context("nothing was changed")?;
    check_interfaces(&config, &options.config)?;
    // A second daemon is told so first; then the port is bound before the kernel is touched:
    // a taken port fails the start with nothing changed.
    if crate::dataplane::daemon_running(&options.pin_dir) {
        return Err(crate::dataplane::DataplaneError::Busy(options.pin_dir.clone()).into());
    }
    let listener = server::bind(config.metrics_listen).await.with_context(|| {
        format!(
            "cannot listen on {} for metrics; change [metrics] listen",
            config.metrics_listen
        )
    })?;
    let mut dataplane = Dataplane::load(LoadOptions {
        flow_entries: config.limits.flow_entries,
        pending_entries: config.limits.pending_entries,
        pin_dir: Some(options.pin_dir.clone()),
        // The program's diagnostics cost nothing unless the log shows them.
        kernel_log: tracing::enabled!(target: "exfw::kernel", tracing::Level::DEBUG),
        ..Default::default()
    })?;
    // A start over pinned state is held to what that state protects, as a reload is to the
    // running config: a restart with a file cut short must not apply it either.
    let in_force = dataplane
        .protection_in_force()
        .context("reading what the pinned policy protects")?;
    let refused = refusal(in_force.as_ref(), &config, &filtered_interfaces(&dataplane));
    if let Some(refused) = refused {
        return Err(anyhow::Error::new(refused).context("the pinned policy stays in force"));
    }
    // Accepted: maps staged beside an incompatible build's take their place now, before the
    // counters' reader opens them.
    dataplane.commit_replacement()?;
    if !config.metrics_listen.ip().is_loopback() {
        warn!(
            listen = %config.metrics_listen,
            "metrics are served beyond loopback ({}): anyone who reaches it learns the policy, the interfaces and the traffic; bind 127.0.0.1 and scrape through a proxy, or restrict it with the host firewall (and IPAddressAllow= in the unit)",
            config.metrics_listen
        );
    }
    let mut events = dataplane
        .take_event_ring()
        .context("the drop-event ring is missing")?;
    let mut kernel_log = dataplane.take_kernel_log();
    let reader = Dataplane::open_pinned(&options.pin_dir).context("opening the counters")?;
    let adopted = dataplane.generation();
    let flow_capacity = u64::from(
        dataplane
            .flow_capacity()
            .unwrap_or(config.limits.flow_entries),
    );
    let shared = Arc::new(Shared {
        dataplane: Mutex::new(dataplane),
        reader: Mutex::new(reader),
        config: RwLock::new(config.clone()),
        compiled: RwLock::new(compiled.clone()),
        interfaces: RwLock::new(Vec::new()),
        reload: Mutex::new(ReloadStatus::default()),
        flow_entries: AtomicU64::new(0),
        flow_capacity,
    });
    let metrics_addr = config.metrics_listen;
    let generation = apply(&shared, compiled, config)?;
    {
        let mut status = shared.reload.lock().unwrap_or_else(|e| e.into_inner());
        status.last_successful = true;
        status.last_success_seconds = now_seconds();
        status.successes = 1;
    }
    info!(generation, adopted_generation = adopted, config = %options.config.display(), pin_dir = %options.pin_dir.display(), "exfw is enforcing");
    let count_flows = spawn_flow_counter(shared.clone(), options.pin_dir.clone())?;
    let (link_tx, mut link_events) = mpsc::channel::<()>(1);
    links::watch_link_events(link_tx).context("subscribing to the kernel's link events")?;

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

    // Serving (and so /readyz) starts last: once ready, every change is seen.
    let ready = Arc::new(AtomicBool::new(true));
    let registry = Arc::new(crate::metrics::registry(shared.clone()));
    let app = server::AppState {
        registry,
        ready: ready.clone(),
        shared: shared.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, app).await {
            error!(error = %e, "the metrics server stopped");
        }
    });
    info!(%metrics_addr, "serving /metrics, /healthz, /readyz");
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    notify(&[NotifyState::Ready, NotifyState::Status("enforcing")]);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut interface_check = tokio::time::interval(INTERFACE_CHECK_EVERY);
    let mut names = BTreeMap::new();
    let mut settle: Option<tokio::time::Instant> = None;
    // One job at a time changes the data plane; what arrives meanwhile waits its turn.
    let mut job: Option<Job> = None;
    let mut reload_wanted: Option<&'static str> = None;
    let mut check_wanted = false;
    let mut stopping = false;
    let mut told_stopping = false;
    loop {
        if job.is_none() {
            if stopping {
                break;
            }
            let shared = shared.clone();
            if let Some(why) = reload_wanted.take() {
                let options = options.clone();
                let nudge = count_flows.clone();
                job = Some(Job {
                    kind: "reload",
                    started: Instant::now(),
                    handle: tokio::task::spawn_blocking(move || {
                        // The table is counted beside the reload: its size next to a policy
                        // change is what an operator looks at.
                        let _ = nudge.try_send(());
                        reload(&shared, &options, why);
                        reconcile_interfaces(&shared);
                    }),
                });
            } else if std::mem::take(&mut check_wanted) {
                job = Some(Job {
                    kind: "interface check",
                    started: Instant::now(),
                    handle: tokio::task::spawn_blocking(move || reconcile_interfaces(&shared)),
                });
            }
        }
        tokio::select! {
            _ = hangup.recv() => reload_wanted = Some("SIGHUP"),
            Some(()) = changes.recv() => {
                // Debounce: load once the file has been quiet for a moment.
                settle = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
            _ = async { tokio::time::sleep_until(settle.unwrap()).await }, if settle.is_some() => {
                settle = None;
                reload_wanted = Some("config file changed");
            }
            Some(()) = link_events.recv() => check_wanted = true,
            _ = interface_check.tick() => check_wanted = true,
            result = async { (&mut job.as_mut().unwrap().handle).await }, if job.is_some() => {
                let done = job.take().unwrap();
                if let Err(e) = result {
                    error!(job = done.kind, error = %e, "a background job failed");
                }
            }
            _ = tick.tick() => {
                log_drops(&shared, &mut events, &mut names);
                if let Some(log) = kernel_log.as_mut() {
                    log.flush();
                }
                // Fed only while no job hangs: a wedged reload or interface check lets systemd
                // restart exfw, which adopts the pinned policy.
                if watchdog && job.as_ref().is_none_or(|j| j.started.elapsed() < JOB_HANG) {
                    notify(&[NotifyState::Watchdog]);
                }
            }
            _ = terminate.recv() => stopping = true,
            _ = interrupt.recv() => stopping = true,
        }
        if stopping
            && !told_stopping
            && let Some(j) = &job
        {
            // The job runs to its end: a reload either applies whole or not at all.
            info!(
                job = j.kind,
                "stopping once the running {} completes", j.kind
            );
            told_stopping = true;
        }
    }
    notify(&[NotifyState::Stopping]);
    ready.store(false, Ordering::Relaxed);
    drop(watcher);
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
        let refused = refusal(
            Some(&protection_of(&running)),
            &new,
            &filtered(&["eth0", "eth1"]),
        )
        .unwrap();
        assert_eq!(refused, Refusal::DetachesInterfaces(vec!["eth1".into()]));
        assert!(
            refused.to_string().contains("exfw detach eth1"),
            "{refused}"
        );
        // Once detached explicitly (no longer filtered), the same reload goes through.
        assert_eq!(
            refusal(Some(&protection_of(&running)), &new, &filtered(&["eth0"])),
            None
        );
        // At start, a pinned interface the config forgot is refused the same way.
        assert!(refusal(None, &new, &filtered(&["eth0", "eth1"])).is_some());
    }

    #[test]
    fn removing_more_than_the_allowed_share_of_protected_addresses_is_refused() {
        let running = config(4, &["eth0"], "");
        // Half of them: the default limit (50 %) allows it.
        assert_eq!(
            refusal(
                Some(&protection_of(&running)),
                &config(2, &["eth0"], ""),
                &[]
            ),
            None
        );
        // Three of four: refused, naming what would go.
        let refused = refusal(
            Some(&protection_of(&running)),
            &config(1, &["eth0"], ""),
            &[],
        )
        .unwrap();
        assert_eq!(refused.reason(), "removes_protected_addresses");
        assert!(refused.to_string().contains("3 of the 4"), "{refused}");
        assert!(refused.to_string().contains("192.0.2.4/32"), "{refused}");
        // The new config may allow it explicitly.
        let allowed = config(
            1,
            &["eth0"],
            "[reload]\nmax_protected_removal_percent = 100\n",
        );
        assert_eq!(refusal(Some(&protection_of(&running)), &allowed, &[]), None);
        // A limit of 0 refuses any loss, and adding hosts is never refused.
        let strict = config(
            3,
            &["eth0"],
            "[reload]\nmax_protected_removal_percent = 0\n",
        );
        assert!(refusal(Some(&protection_of(&running)), &strict, &[]).is_some());
        assert_eq!(
            refusal(
                Some(&protection_of(&running)),
                &config(9, &["eth0"], ""),
                &[]
            ),
            None
        );
    }

    #[test]
    fn a_reload_that_drops_an_accepts_list_is_refused() {
        let with_list = |accepts: &str| {
            config::parse(
                &format!(
                    "version = 1\nmode = \"enforce\"\n[organization]\nexchange = \"2019\"\n[[server]]\nname = \"EX1\"\nroles = [\"mailbox\"]\naddresses = [\"192.0.2.1\"]\n[[interface]]\nname = \"eth0\"\n{accepts}"
                ),
                "test.toml",
            )
            .unwrap()
        };
        let running = with_list("accepts = [\"external\", \"mailbox\"]\n");
        // Cut short before the accepts key: refused, naming the interface.
        let cut = with_list("");
        let refused = refusal(Some(&protection_of(&running)), &cut, &filtered(&["eth0"])).unwrap();
        assert_eq!(refused, Refusal::OpensInterfaceSources(vec!["eth0".into()]));
        assert_eq!(refused.reason(), "opens_interface_sources");
        // Another list is a choice, not an accident; an interface that never had one is fine.
        let other = with_list("accepts = [\"mailbox\"]\n");
        assert_eq!(
            refusal(Some(&protection_of(&running)), &other, &filtered(&["eth0"])),
            None
        );
        assert_eq!(
            refusal(Some(&protection_of(&cut)), &cut, &filtered(&["eth0"])),
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
