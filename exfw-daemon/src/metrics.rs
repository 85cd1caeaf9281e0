//! Prometheus metrics: a collector that reads the kernel counters at scrape time and encodes
//! them with bounded labels (ports outside the policy fold into `port="other"`).
//!
//! Counters live in pinned per-CPU maps keyed by stable rule slots, so they stay monotonic
//! across reloads and daemon restarts.

use std::{collections::BTreeMap, sync::Arc};

use exfw_common::{Counter, proto};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{TypedMetric, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    links::InterfaceState,
    policy::{Compiled, Verdict, export::proto_name},
    state::Shared,
};

/// Protocols with names keep them; the rest fold into "other".
fn proto_label(protocol: u8) -> String {
    match protocol {
        proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6 => proto_name(protocol),
        _ => "other".into(),
    }
}

type Labels = Vec<(&'static str, String)>;

/// Encodes one metric family from (labels, value) samples.
fn family<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

/// The collector registered with the registry.
#[derive(Debug)]
pub struct ExfwCollector(pub Arc<Shared>);

impl Collector for ExfwCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let compiled = shared.compiled.read().unwrap_or_else(|e| e.into_inner());
        let policy = &compiled.policy;
        let (counters, events, state) = {
            let dataplane = shared.reader.lock().unwrap_or_else(|e| e.into_inner());
            let counters = dataplane.counters(policy.rules.iter().map(|r| r.id));
            (counters, dataplane.event_stats(), dataplane.policy_state())
        };
        let (Ok(counters), Ok(events), Ok(state)) = (counters, events, state) else {
            tracing::error!("reading the kernel counters failed during a scrape");
            return Err(std::fmt::Error);
        };
        // Every rule and every (verdict, reason) has a series from the start, zero or not.
        let rule_stats: Vec<(u32, exfw_common::RuleStats)> = policy
            .rules
            .iter()
            .map(|r| (r.id, counters.rules.get(&r.id).copied().unwrap_or_default()))
            .collect();
        let reason_stats: Vec<((Verdict, exfw_common::Reason), Counter)> = exfw_common::Reason::ALL
            .iter()
            .flat_map(|r| {
                let verdicts: &[Verdict] = if r.drops() {
                    &[Verdict::Drop, Verdict::WouldDrop]
                } else {
                    &[Verdict::Pass]
                };
                verdicts.iter().map(move |v| (*v, *r))
            })
            .map(|k| (k, counters.reasons.get(&k).copied().unwrap_or_default()))
            .collect();
        let rule_labels = |id: u32| -> Labels {
            let rule = policy.rule(id).expect("counters are read for policy rules");
            vec![
                ("service", rule.service.clone()),
                ("dst_role", policy.class_name(rule.dst_class).to_string()),
                ("proto", proto_name(rule.proto)),
                ("port", rule.ports.to_string()),
                ("verdict", Verdict::Pass.name().into()),
            ]
        };
        family(
            &mut encoder,
            "exfw_rule_packets",
            "Packets each rule passed.",
            rule_stats
                .iter()
                .map(|(id, s)| (rule_labels(*id), counter(s.packets))),
        )?;
        family(
            &mut encoder,
            "exfw_rule_bytes",
            "Bytes each rule passed (whole frames).",
            rule_stats
                .iter()
                .map(|(id, s)| (rule_labels(*id), counter(s.bytes))),
        )?;
        family(
            &mut encoder,
            "exfw_rule_new_connections",
            "TCP connections each rule admitted (SYN without ACK).",
            rule_stats
                .iter()
                .map(|(id, s)| (rule_labels(*id), counter(s.new_connections))),
        )?;
        let reason_samples = |pick: fn(&Counter) -> u64| {
            reason_stats.iter().map(move |((v, r), c)| {
                (
                    vec![
                        ("verdict", v.name().to_string()),
                        ("reason", r.name().to_string()),
                    ],
                    counter(pick(c)),
                )
            })
        };
        family(
            &mut encoder,
            "exfw_packets",
            "Packets by verdict and reason (trusted, transit, flow, rule, policy, malformed ...).",
            reason_samples(|c| c.packets),
        )?;
        family(
            &mut encoder,
            "exfw_bytes",
            "Bytes by verdict and reason.",
            reason_samples(|c| c.bytes),
        )?;
        let mut folded: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
        for (key, c) in &counters.drops {
            // A class the policy no longer has (between a reload's flip and the removal of
            // its counters) is left out rather than reported under another role.
            if key.dst_class != exfw_common::CLASS_EXTERNAL && policy.class(key.dst_class).is_none()
            {
                continue;
            }
            let verdict = Verdict::of_drop(key.verdict).name();
            let entry = folded
                .entry((
                    policy.class_name(key.dst_class).to_string(),
                    proto_label(key.proto),
                    if key.other != 0 {
                        "other".to_string()
                    } else {
                        key.port.to_string()
                    },
                    verdict.to_string(),
                ))
                .or_default();
            *entry += c.packets;
        }
        family(
            &mut encoder,
            "exfw_port_drops",
            "Packets the policy dropped, by destination role, protocol and port (ports no rule names fold into \"other\").",
            folded.into_iter().map(|((role, p, port, verdict), n)| {
                (
                    vec![
                        ("dst_role", role),
                        ("proto", p),
                        ("port", port),
                        ("verdict", verdict),
                    ],
                    counter(n),
                )
            }),
        )?;
        // Every attached interface has its series from the start, zero or not.
        let mut spoofed: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for status in shared
            .interfaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for v in [Verdict::Drop, Verdict::WouldDrop] {
                spoofed.insert((status.name.clone(), v.name()), 0);
            }
        }
        for ((iface, verdict), c) in &counters.spoofed {
            *spoofed.entry((iface.clone(), verdict.name())).or_default() += c.packets;
        }
        family(
            &mut encoder,
            "exfw_spoofed_packets",
            "Packets dropped because their source could not have arrived on that interface (the interface does not accept the source's group, or the route back leaves elsewhere).",
            spoofed.into_iter().map(|((iface, verdict), n)| {
                (
                    vec![("iface", iface), ("verdict", verdict.to_string())],
                    counter(n),
                )
            }),
        )?;
        let none: Labels = Vec::new();
        family(
            &mut encoder,
            "exfw_drop_events_sampled",
            "Drop events written to the ring buffer.",
            [(none.clone(), counter(events.sampled))],
        )?;
        family(
            &mut encoder,
            "exfw_drop_events_suppressed",
            "Drop events the per-CPU rate limit suppressed.",
            [(none.clone(), counter(events.suppressed))],
        )?;
        family(
            &mut encoder,
            "exfw_drop_events_lost",
            "Drop events lost to a full ring buffer.",
            [(none.clone(), counter(events.lost))],
        )?;
        family(
            &mut encoder,
            "exfw_drop_stats_overflow",
            "Drops not counted per port because the per-port table was full.",
            [(none.clone(), counter(events.drop_stats_full))],
        )?;
        family(
            &mut encoder,
            "exfw_flow_insert_failures",
            "Confirmed connections the kernel could not write.",
            [(none.clone(), counter(events.flow_insert_failed))],
        )?;
        family(
            &mut encoder,
            "exfw_pending_insert_failures",
            "Unconfirmed connections the kernel could not write.",
            [(none.clone(), counter(events.pending_insert_failed))],
        )?;
        family(
            &mut encoder,
            "exfw_fragment_insert_failures",
            "First fragments whose verdict the kernel could not write (their later fragments drop).",
            [(none.clone(), counter(events.frag_insert_failed))],
        )?;
        let flows = shared
            .flow_entries
            .load(std::sync::atomic::Ordering::Relaxed) as f64;
        family(
            &mut encoder,
            "exfw_flow_table_entries",
            "Confirmed connections in the flow table (counted every 15 s).",
            [(none.clone(), gauge(flows))],
        )?;
        family(
            &mut encoder,
            "exfw_flow_table_capacity",
            "Capacity of the flow table.",
            [(none.clone(), gauge(shared.flow_capacity as f64))],
        )?;
        family(
            &mut encoder,
            "exfw_policy_generation",
            "Generation of the policy packets are judged by.",
            [(none.clone(), gauge(f64::from(state.generation)))],
        )?;
        family(
            &mut encoder,
            "exfw_policy_info",
            "The policy in force: its hash and mode.",
            [(
                vec![
                    ("hash", format!("{:016x}", state.hash)),
                    ("mode", state.mode.name().to_string()),
                ],
                gauge(1.0),
            )],
        )?;
        family(
            &mut encoder,
            "exfw_policy_rules",
            "Rules in the policy in force.",
            [(none.clone(), gauge(policy.rules.len() as f64))],
        )?;
        let reload = *shared.reload.lock().unwrap_or_else(|e| e.into_inner());
        family(
            &mut encoder,
            "exfw_config_last_reload_successful",
            "Whether the last config load succeeded (1) or failed (0).",
            [(
                none.clone(),
                gauge(if reload.last_successful { 1.0 } else { 0.0 }),
            )],
        )?;
        family(
            &mut encoder,
            "exfw_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
            [(none.clone(), gauge(reload.last_success_seconds))],
        )?;
        family(
            &mut encoder,
            "exfw_config_reloads",
            "Config loads by result.",
            [
                (
                    vec![("result", "success".to_string())],
                    counter(reload.successes),
                ),
                (
                    vec![("result", "failure".to_string())],
                    counter(reload.failures),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "exfw_config_reload_refusals",
            "Reloads refused because they would remove protection by accident (counted in the failures too).",
            [
                (
                    vec![("reason", "detaches_interface".to_string())],
                    counter(reload.refused_detach),
                ),
                (
                    vec![("reason", "removes_protected_addresses".to_string())],
                    counter(reload.refused_removal),
                ),
                (
                    vec![("reason", "opens_interface_sources".to_string())],
                    counter(reload.refused_opening),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "exfw_build_info",
            "The running exfw build.",
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                gauge(1.0),
            )],
        )?;
        let interfaces = shared
            .interfaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        family(
            &mut encoder,
            "exfw_interface_attached",
            "Configured interfaces: 1 while exfw filters them (with the XDP mode), 0 while missing, detached or failed (mode=\"none\").",
            interfaces.iter().map(|status| {
                let (mode, value) = match &status.state {
                    InterfaceState::Attached(mode) => (mode.name(), 1.0),
                    _ => ("none", 0.0),
                };
                (
                    vec![("iface", status.name.clone()), ("mode", mode.to_string())],
                    gauge(value),
                )
            }),
        )?;
        family(
            &mut encoder,
            "exfw_interface_state",
            "Configured interfaces by state: 1 for the current one of attached, missing, detached, failed.",
            interfaces.iter().flat_map(|status| {
                InterfaceState::NAMES.iter().map(|state| {
                    (
                        vec![("iface", status.name.clone()), ("state", state.to_string())],
                        gauge(if status.state.name() == *state {
                            1.0
                        } else {
                            0.0
                        }),
                    )
                })
            }),
        )?;
        Ok(())
    }
}

/// A registry holding the exfw collector.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExfwCollector(shared)));
    registry
}

/// Renders the registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// An upper bound on the number of series: what operators size Prometheus by.
///
/// Per rule 3 series; per (verdict, reason) 2; per (destination class, protocol, port label,
/// verdict) one, where port labels are the policy's single ports plus "other" and protocols are
/// tcp, udp, icmp, icmpv6, other; plus fixed gauges and three per interface.
pub fn series_bound(compiled: &Compiled, interfaces: usize) -> usize {
    let p = &compiled.policy;
    let single_ports = p.named_ports();
    let classes = p.classes.len() + 1;
    3 * p.rules.len()
        + 2 * exfw_common::Reason::ALL.len() * 2
        + classes * 2 * (single_ports.len() + 5)
        + 22
        + 3 * interfaces
}
