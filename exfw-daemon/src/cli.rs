//! The `exfw` command line: check, explain, simulate, export.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use exfw_common::{Reason, Verdict, proto};

use crate::{
    config,
    dataplane::{self, DEFAULT_PIN_DIR, Dataplane},
    policy::{
        ANY_INTERFACE, Accepts, Compiled, Policy, Reference, Routes, compile, encode,
        export::{
            ExplainFormat, NftChains, nftables_chains, ports_text, proto_name, render_explain,
        },
        probe, scenario,
    },
    reload,
};

/// exfw: an XDP firewall that enforces Microsoft's Exchange port tables on a Linux gateway.
#[derive(Parser)]
#[command(
    version,
    propagate_version = true,
    about = "exfw: an XDP firewall that enforces Microsoft's Exchange port tables on a Linux gateway."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// True for the commands that print and end (everything but `run`): a closed pipe on their
    /// output (`exfw explain FILE | head -1`) should end them quietly, as it does `cat`.
    pub fn prints_and_ends(&self) -> bool {
        !matches!(self.command, Command::Run { .. })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the firewall: compile the config, load or adopt the pinned state, attach to the
    /// configured interfaces, serve metrics; reload on SIGHUP or when the config file changes.
    #[command(
        after_help = "Examples:\n  exfw run                                  # /etc/exfw/exfw.toml\n  exfw run --config ./exfw.toml --log-format json\n  systemctl reload exfw                     # sends SIGHUP"
    )]
    Run {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Where maps and links are pinned (bpffs).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Show what is enforced, from the pinned state (works while the daemon is down).
    #[command(after_help = "Examples:\n  exfw status\n  exfw status --format json")]
    Status {
        /// Where maps and links are pinned.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Remove exfw from the named interfaces (the daemon may run), or, with no name, from every
    /// interface, deleting its pinned maps too (stop the daemon first).
    #[command(
        after_help = "Examples:\n  exfw detach eth2                    # then remove eth2's [[interface]] and reload\n  systemctl stop exfw && exfw detach  # everything\n\nA reload never detaches an interface by itself: a config that no longer names one is\nrefused until `exfw detach IFACE` removes it explicitly. A running daemon leaves an\ninterface detached this way alone until its next reload."
    )]
    Detach {
        /// Where maps and links are pinned.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Only these interfaces.
        interfaces: Vec<String>,
    },
    /// Validate a config and summarise it; exit 1 with every error (file:line:column) if invalid.
    #[command(
        after_help = "Examples:\n  exfw check /etc/exfw/exfw.toml\n  exfw check examples/exchange2016-edge.toml"
    )]
    Check {
        /// The config file.
        config: PathBuf,
    },
    /// Print the allowlist as a firewall change request: service, protocol/port, source,
    /// destination, and why (the document and table row), with the trusted-pair rule spelled out.
    #[command(
        after_help = "Examples:\n  exfw explain /etc/exfw/exfw.toml\n  exfw explain exfw.toml --format markdown > change-request.md\n  exfw explain exfw.toml --format csv > rules.csv"
    )]
    Explain {
        /// The config file.
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExplainFormat::Table)]
        format: ExplainFormat,
    },
    /// Judge one packet, or replay a scenario of frames, with the reference classifier: the
    /// verdict, the reason and the rule. One packet is judged with empty connection tables (a
    /// new connection, or a mid-stream packet exfw never saw open).
    #[command(
        after_help = "Examples:\n  exfw simulate exfw.toml --src 203.0.113.5 --dst 192.0.2.21 --proto tcp --port 443 --syn --iface eth0\n  exfw simulate exfw.toml --src 192.0.2.5 --dst 192.0.2.21 --proto tcp --port 445 --syn --iface eth0 --route-via eth1\n  exfw simulate exfw.toml --src 2001:db8:100::7 --dst 2001:db8:21::21 --proto icmp --iface eth1\n  exfw simulate exfw.toml --scenario handshake.txt\n\nScenario files: one frame a line, `TIME IFACE PROTO SRC DST [flags] [key=value ...]`; see docs/security.md."
    )]
    Simulate {
        /// The config file.
        config: PathBuf,
        /// Replay this scenario file instead of judging one packet.
        #[arg(long, conflicts_with_all = ["src", "dst", "proto", "port", "syn", "iface", "route_via"])]
        scenario: Option<PathBuf>,
        /// Source address.
        #[arg(long, required_unless_present = "scenario")]
        src: Option<IpAddr>,
        /// Destination address.
        #[arg(long, required_unless_present = "scenario")]
        dst: Option<IpAddr>,
        /// Protocol (icmp means ICMPv6 for IPv6 addresses).
        #[arg(long, value_enum, required_unless_present = "scenario")]
        proto: Option<SimProto>,
        /// Destination port (tcp, udp) or ICMP type (default: echo request).
        #[arg(long)]
        port: Option<u16>,
        /// Send a TCP SYN (a new connection) rather than a mid-connection segment.
        #[arg(long)]
        syn: bool,
        /// The interface the packet arrives on (needed when the config names several).
        #[arg(long)]
        iface: Option<String>,
        /// The gateway's route back to --src leaves through this interface (default: the one
        /// the packet arrived on, so the reverse-path check passes).
        #[arg(long)]
        route_via: Option<String>,
    },
    /// Export an equivalent ruleset for hosts without XDP or for side-by-side comparison.
    #[command(
        after_help = "Examples:\n  exfw export exfw.toml --format nft-gateway > gateway.nft && nft -f gateway.nft   # beside XDP\n  exfw export exfw.toml --format nft > exfw.nft                                    # instead of XDP"
    )]
    Export {
        /// The config file.
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SimProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusFormat {
    /// Human-readable.
    Text,
    /// Machine-readable.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// nftables, loadable with `nft -f`: the whole policy (forward and input chains), for hosts
    /// without XDP or a fail-closed fallback.
    Nft,
    /// nftables, only the gateway's own input chain: what runs beside the XDP program.
    NftGateway,
}

/// One packet to simulate.
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    proto: SimProto,
    port: Option<u16>,
    syn: bool,
}

/// The policy a simulation runs, and the interface a packet arrives on when none is named: the
/// config's only interface, or (with none) one that accepts every source.
fn simulation_policy(compiled: &Compiled, iface: Option<String>) -> Result<(Policy, String)> {
    let policy = &compiled.policy;
    match (iface, policy.interfaces.as_slice()) {
        (Some(name), _) if policy.interface(&name).is_some() => Ok((policy.clone(), name)),
        (Some(name), []) => bail!(
            "the config names no [[interface]], so `{name}` is unknown; leave --iface out to judge the packet as arriving where its source is accepted"
        ),
        (Some(name), list) => bail!(
            "`{name}` is not an interface of this config; it names {}",
            list.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, []) => Ok((
            policy.without_source_validation(),
            ANY_INTERFACE.to_string(),
        )),
        (None, [only]) => Ok((policy.clone(), only.name.clone())),
        (None, list) => bail!(
            "the config names several interfaces: say which one the packet arrives on with --iface ({})",
            list.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::WouldDrop => "would drop (audit mode passes it)",
        other => other.name(),
    }
}

fn simulate_one(
    compiled: &Compiled,
    packet: Packet,
    iface: Option<String>,
    route_via: Option<String>,
) -> Result<ExitCode> {
    let Packet {
        src,
        dst,
        proto: p,
        port,
        syn,
    } = packet;
    if src.is_ipv6() != dst.is_ipv6() {
        bail!("--src {src} and --dst {dst} are of different address families");
    }
    let (policy, iface) = simulation_policy(compiled, iface)?;
    let number = match (p, src.is_ipv6()) {
        (SimProto::Tcp, _) => proto::TCP,
        (SimProto::Udp, _) => proto::UDP,
        (SimProto::Icmp, false) => proto::ICMP,
        (SimProto::Icmp, true) => proto::ICMPV6,
    };
    let port = match (port, number) {
        (Some(port), _) => port,
        (None, proto::ICMP) => 8,
        (None, proto::ICMPV6) => 128,
        (None, _) => bail!("--port is required for tcp and udp"),
    };
    let mut routes = simulation_routes(&policy);
    if let Some(via) = &route_via {
        if policy.interface(via).is_none() && via != &iface {
            bail!("--route-via {via} is not an interface of this config");
        }
        routes.add(ipnet::IpNet::from(src), via);
    }
    let frame = probe::frame(src, dst, number, port, syn);
    let mut reference = Reference::new(policy.clone(), routes);
    let outcome = reference.classify(&frame, &iface, 0);
    let p = &policy;
    println!("verdict:     {}", verdict_text(outcome.verdict));
    println!("reason:      {}", outcome.reason.name());
    if let Some(rule) = outcome.rule.and_then(|id| p.rule(id)) {
        let sources: Vec<&str> = rule.src_classes.iter().map(|c| p.class_name(*c)).collect();
        println!(
            "rule:        {} (rule {}): {}/{} from {} to {}",
            rule.service,
            rule.id,
            proto_name(rule.proto),
            ports_text(rule.proto, rule.ports),
            sources.join(","),
            p.class_name(rule.dst_class)
        );
        for why in compiled.provenance.get(&rule.id).into_iter().flatten() {
            println!("why:         {why}");
        }
    }
    if outcome.reason == Reason::Local {
        match compiled.host_rule(outcome.src_class, outcome.dst_class, number, port) {
            Some(host) => println!(
                "host:        the gateway's input chain (exfw export --format nft-gateway) accepts it by `{}`",
                host.rule.service
            ),
            None => println!(
                "host:        the gateway's input chain (exfw export --format nft-gateway) drops it: no rule to the gateway allows it"
            ),
        }
    }
    println!("source:      {src} ({})", p.class_name(outcome.src_class));
    println!("destination: {dst} ({})", p.class_name(outcome.dst_class));
    if let Some((_, i)) = p.interface(&iface) {
        let route = route_via.unwrap_or_else(|| iface.clone());
        println!(
            "interface:   {iface} (accepts {}; reverse path {})",
            accepts_text(p, &i.accepts),
            if i.reverse_path {
                format!("strict: the route back to {src} assumed via {route}")
            } else {
                "off".to_string()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate_scenario(compiled: &Compiled, file: &std::path::Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the scenario {}", file.display()))?;
    let steps = scenario::parse(&text).with_context(|| format!("{}", file.display()))?;
    let policy = if compiled.policy.interfaces.is_empty() {
        compiled.policy.without_source_validation()
    } else {
        compiled.policy.clone()
    };
    for step in &steps {
        if policy.interface(&step.iface).is_none() {
            bail!(
                "{}: line {}: `{}` is not an interface of this config ({})",
                file.display(),
                step.line,
                step.iface,
                policy
                    .interfaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut reference = Reference::new(policy.clone(), simulation_routes(&policy));
    let replayed = scenario::replay(&mut reference, &steps);
    let rows: Vec<[String; 5]> = replayed
        .iter()
        .map(|r| {
            let rule = r
                .outcome
                .rule
                .and_then(|id| policy.rule(id))
                .map_or("-".to_string(), |rule| rule.service.clone());
            [
                r.step.line.to_string(),
                r.step.text.clone(),
                verdict_text(r.outcome.verdict)
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                format!(
                    "{}{}",
                    r.outcome.reason.name(),
                    if r.outcome.confirmed {
                        " (confirmed)"
                    } else {
                        ""
                    }
                ),
                rule,
            ]
        })
        .collect();
    let header = ["LINE", "FRAME", "VERDICT", "REASON", "RULE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `simulate` knows of the gateway's routes: every route leads back through the interface
/// a packet arrived on, except to the gateway's own addresses (the config's and loopback), to
/// which the kernel has no forwarding route.
fn simulation_routes(policy: &Policy) -> Routes {
    let mut routes = Routes::assume_ingress();
    for class in policy.classes.iter().filter(|c| c.local) {
        for net in &class.prefixes {
            routes.add_local(*net);
        }
    }
    routes.add_local("127.0.0.0/8".parse().expect("a prefix"));
    routes
}

/// The group names an interface accepts, for people.
fn accepts_text(policy: &Policy, accepts: &Accepts) -> String {
    match accepts {
        Accepts::Any => "every group".into(),
        Accepts::Classes(set) => set
            .iter()
            .map(|c| policy.class_name(*c))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Loads and compiles a config; errors are printed by the caller.
pub fn load(path: &std::path::Path) -> Result<Compiled> {
    let config = config::load(path)?;
    Ok(compile(&config)?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A log that cannot be written (a full disk) must not stop the firewall: the default
        // reports the failed write with eprintln!, which panics when stderr is what failed.
        .log_internal_errors(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn status(pin_dir: &std::path::Path, format: StatusFormat) -> Result<ExitCode> {
    let dataplane = Dataplane::open_pinned(pin_dir)?;
    let state = dataplane.policy_state()?;
    let counters = dataplane.counters([])?;
    let events = dataplane.event_stats()?;
    let running = dataplane::daemon_running(pin_dir);
    // A pinned link filters only while its interface is the one of that name: deleting an
    // interface detaches the link in the kernel and leaves the pin.
    let links: Vec<(String, dataplane::AttachedMode, &str)> = dataplane
        .pinned_links()
        .into_iter()
        .map(|(iface, mode)| {
            let state = match (dataplane.pinned_link(&iface), dataplane::ifindex_of(&iface)) {
                (_, None) => "missing",
                (Some((_, Some(linked))), Some(index)) if linked != index => "dead link",
                _ => "attached",
            };
            (iface, mode, state)
        })
        .collect();
    let mut totals: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for ((verdict, reason), c) in &counters.reasons {
        let v = verdict.name();
        *totals.entry(v).or_default() += c.packets;
        reasons.push((format!("{v}/{}", reason.name()), c.packets));
    }
    let mode = state.mode.name();
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(state.applied_at);
    match format {
        StatusFormat::Json => {
            let value = serde_json::json!({
                "pin_dir": pin_dir.display().to_string(),
                "daemon_running": running,
                "mode": mode,
                "generation": state.generation,
                "policy_hash": format!("{:016x}", state.hash),
                "applied_at_unix": state.applied_at,
                "interfaces": links.iter().map(|(i, m, state)| serde_json::json!({"name": i, "mode": m.name(), "state": state})).collect::<Vec<_>>(),
                "packets": totals,
                "packets_by_reason": reasons.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "drop_events": {"sampled": events.sampled, "suppressed": events.suppressed, "lost": events.lost},
                "spoofed_by_interface": counters.spoofed.iter().map(|((iface, verdict), c)| (format!("{iface}/{}", verdict.name()), c.packets)).collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        StatusFormat::Text => {
            println!("exfw status ({})", pin_dir.display());
            println!(
                "  daemon:      {}",
                if running {
                    "running"
                } else {
                    "not running (the pinned policy is still enforced)"
                }
            );
            println!("  mode:        {mode}");
            println!("  generation:  {} (applied {age} s ago)", state.generation);
            println!("  policy hash: {:016x}", state.hash);
            let ifaces: Vec<String> = links
                .iter()
                .map(|(i, m, state)| format!("{i} ({}, {state})", m.name()))
                .collect();
            println!(
                "  interfaces:  {}",
                if ifaces.is_empty() {
                    "none".to_string()
                } else {
                    ifaces.join(", ")
                }
            );
            let totals: Vec<String> = totals.iter().map(|(v, n)| format!("{v} {n}")).collect();
            println!("  packets:     {}", totals.join(", "));
            for (reason, n) in &reasons {
                println!("    {reason:<32} {n}");
            }
            if !counters.spoofed.is_empty() {
                let spoofed: Vec<String> = counters
                    .spoofed
                    .iter()
                    .map(|((iface, verdict), c)| {
                        format!("{iface} {} {}", c.packets, verdict.name())
                    })
                    .collect();
                println!("  spoofed:     {}", spoofed.join(", "));
            }
            println!(
                "  drop events: sampled {}, suppressed {}, lost {}",
                events.sampled, events.suppressed, events.lost
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config: path,
            pin_dir,
            log_format,
        } => {
            init_logging(log_format);
            match reload::run(reload::RunOptions {
                config: path,
                pin_dir,
            }) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    tracing::error!("exfw could not start: {e:#}");
                    // A refused start is final: the unit does not restart it
                    // (RestartPreventExitStatus), the operator fixes the config.
                    let refused = e.chain().any(|e| e.is::<reload::Refusal>());
                    Ok(ExitCode::from(if refused {
                        reload::EXIT_REFUSED
                    } else {
                        1
                    }))
                }
            }
        }
        Command::Status { pin_dir, format } => status(&pin_dir, format),
        Command::Detach {
            pin_dir,
            interfaces,
        } if !interfaces.is_empty() => {
            for iface in &interfaces {
                if !dataplane::remove_pinned_link(&pin_dir, iface)? {
                    bail!(
                        "exfw is not attached to {iface} (no pinned link under {}); attached: {}",
                        pin_dir.display(),
                        dataplane::pinned_links(&pin_dir)
                            .into_iter()
                            .map(|(i, _)| i)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                println!("exfw detached from {iface}");
            }
            if dataplane::daemon_running(&pin_dir) {
                println!(
                    "the daemon leaves {} alone until its next reload: remove the [[interface]] entries and reload (systemctl reload exfw), or it attaches again",
                    interfaces.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Detach { pin_dir, .. } => {
            let detached = dataplane::remove_pinned(&pin_dir)?;
            println!(
                "exfw detached from {}; pinned maps removed from {}",
                if detached.is_empty() {
                    "no interface".to_string()
                } else {
                    detached.join(", ")
                },
                pin_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config: path } => {
            let cfg = match config::load(&path) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "{}: {} error(s); nothing was changed",
                        path.display(),
                        errors.0.len()
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let compiled = compile(&cfg)?;
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            let tables = encode::policy_table_use(&compiled.policy);
            let full: Vec<&encode::TableUse> = tables.iter().filter(|t| !t.fits()).collect();
            for t in &full {
                eprintln!(
                    "{}: the policy needs {} {}, more than the {} one generation may take (the kernel table holds the running policy and the new one during a reload): split the config or use wider prefixes",
                    path.display(),
                    t.used,
                    t.table,
                    t.room
                );
            }
            if !full.is_empty() {
                eprintln!(
                    "{}: does not fit the kernel tables; nothing was changed",
                    path.display()
                );
                return Ok(ExitCode::from(1));
            }
            println!("{}: valid", path.display());
            let mode = cfg.mode.name();
            println!(
                "  Exchange {}, mode {mode}, Edge subscribed: {}",
                cfg.organization.exchange.name(),
                cfg.organization.edge_subscribed
            );
            let mut roles = std::collections::BTreeMap::<&str, usize>::new();
            for s in &cfg.servers {
                for r in &s.roles {
                    *roles.entry(r.name()).or_default() += 1;
                }
            }
            let roles: Vec<String> = roles.iter().map(|(r, n)| format!("{n} {r}")).collect();
            println!(
                "  servers: {} ({}), domain controllers: {}, Lync/Skype: {}",
                cfg.servers.len(),
                roles.join(", "),
                cfg.domain_controllers.len(),
                cfg.lync_servers.len()
            );
            println!(
                "  client networks: {}, extra allow entries: {}",
                cfg.client_networks.len(),
                cfg.allows.len()
            );
            let p = &compiled.policy;
            let trusted: Vec<&str> = compiled
                .trusted_classes()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            println!(
                "  {} address classes, {} rules; trusted (any/any): {}",
                p.classes.len(),
                p.rules.len(),
                trusted.join(", ")
            );
            if cfg.interfaces.is_empty() {
                println!("  interfaces: none");
            }
            for (i, (slot, iface)) in cfg.interfaces.iter().zip(p.interfaces.iter().enumerate()) {
                println!(
                    "  interface {} (xdp {}, slot {slot}): reverse path {}, accepts sources from {}",
                    i.name,
                    i.mode.name(),
                    if iface.reverse_path { "strict" } else { "off" },
                    accepts_text(p, &iface.accepts)
                );
            }
            if !cfg.protected_networks.is_empty() {
                println!(
                    "  protected networks: {}",
                    cfg.protected_networks
                        .iter()
                        .map(|n| format!("{} ({} prefixes)", n.name, n.addresses.len()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "  kernel tables (used / room for one generation, half of each table: a reload writes the new policy beside the running one):"
            );
            for t in &tables {
                println!(
                    "    {:<26} {:>7} / {:<7} {:>5.1} % free",
                    t.table,
                    t.used,
                    t.room,
                    100.0 * (t.room - t.used) as f64 / t.room as f64
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            config: path,
            format,
        } => {
            print!("{}", render_explain(&load(&path)?, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            config: path,
            scenario,
            src,
            dst,
            proto: p,
            port,
            syn,
            iface,
            route_via,
        } => {
            let compiled = load(&path)?;
            match (scenario, src, dst, p) {
                (Some(file), ..) => simulate_scenario(&compiled, &file),
                (None, Some(src), Some(dst), Some(p)) => simulate_one(
                    &compiled,
                    Packet {
                        src,
                        dst,
                        proto: p,
                        port,
                        syn,
                    },
                    iface,
                    route_via,
                ),
                _ => bail!("give --src, --dst and --proto, or --scenario FILE"),
            }
        }
        Command::Export {
            config: path,
            format,
        } => {
            let chains = match format {
                ExportFormat::Nft => NftChains::All,
                ExportFormat::NftGateway => NftChains::Gateway,
            };
            print!(
                "{}",
                nftables_chains(&load(&path)?, &path.display().to_string(), chains)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
