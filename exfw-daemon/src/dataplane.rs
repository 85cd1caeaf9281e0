//! The kernel half through aya: load the embedded XDP object, write a policy generation and flip
//! to it, attach to interfaces, read every counter and drain the drop-event ring buffer.

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
    programs::{ProgramError, TestRun, TestRunOptions, TestRunResult, Xdp, XdpMode},
};
use exfw_common::{
    CLASS_PROTECTED, CLASS_TRUSTED, ClassKeyV4, ClassKeyV6, ClassValue, Counter, DropEvent,
    DropKey, GENERATION_BITS, MODE_AUDIT, MODE_ENFORCE, RULE_KEY_FIXED_BITS, Reason, RuleKey,
    RuleStats, RuleValue, Verdict, config, event_stat, limits, map_names, program_names,
    reason_index,
};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::policy::{Counters, Mode, Policy, PolicyError, PortRange, Rule};

/// Something the data plane could not do.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the object (verifier, missing map type, permissions).
    #[error("loading the XDP program failed (run as root on Linux 5.8 or later): {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// The policy is inconsistent; nothing was written.
    #[error("the policy was not applied: {0}")]
    Policy(#[from] PolicyError),
    /// The object lacks a map or program this daemon expects (a build mismatch).
    #[error("the XDP object has no {0}; rebuild with `cargo xtask build`")]
    Missing(&'static str),
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Program { what, source }
}

/// Sizes chosen at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Flow-table capacity.
    pub flow_entries: u32,
    /// Fragment-cache capacity.
    pub frag_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            flow_entries: limits::DEFAULT_FLOW_ENTRIES,
            frag_entries: limits::DEFAULT_FRAG_ENTRIES,
        }
    }
}

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver (native) mode, falling back to skb (generic) mode where the driver refuses.
    #[default]
    Auto,
    /// Driver mode or fail.
    Driver,
    /// Generic mode, which every interface supports at a higher cost.
    Skb,
}

/// The mode an attachment got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the network stack.
    Skb,
}

/// Counters of the drop-event sampler and of table pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events written to the ring buffer.
    pub sampled: u64,
    /// Events the per-CPU rate limit suppressed.
    pub suppressed: u64,
    /// Events lost to a full ring buffer.
    pub lost: u64,
    /// Drops not counted per port because the drop table was full.
    pub drop_stats_full: u64,
    /// Flow entries that could not be written.
    pub flow_insert_failed: u64,
}

/// The map entries that encode one policy generation.
#[derive(Clone, Default)]
pub struct MapEntries {
    /// IPv4 class prefixes.
    pub class_v4: Vec<(Key<ClassKeyV4>, ClassValue)>,
    /// IPv6 class prefixes.
    pub class_v6: Vec<(Key<ClassKeyV6>, ClassValue)>,
    /// Rule prefixes, disjoint within each (dst class, src class, proto).
    pub rules: Vec<(Key<RuleKey>, RuleValue)>,
}

/// Encodes `policy` as map entries under `generation`.
///
/// Rules that overlap on the same (destination, source, protocol) are split so the entries are
/// disjoint and each port maps to the narrowest matching rule (lowest id on a tie): the same
/// choice as [`Policy::matching_rule`].
pub fn encode(policy: &Policy, generation: u32) -> MapEntries {
    let gen_bytes = generation.to_be_bytes();
    let mut out = MapEntries::default();
    for class in &policy.classes {
        let value = ClassValue {
            class: class.id,
            flags: if class.protected { CLASS_PROTECTED } else { 0 }
                | if class.trusted { CLASS_TRUSTED } else { 0 },
        };
        for prefix in &class.prefixes {
            match prefix.trunc() {
                IpNet::V4(net) => out.class_v4.push((
                    Key::new(
                        GENERATION_BITS + u32::from(net.prefix_len()),
                        ClassKeyV4 {
                            generation: gen_bytes,
                            addr: net.addr().octets(),
                        },
                    ),
                    value,
                )),
                IpNet::V6(net) => out.class_v6.push((
                    Key::new(
                        GENERATION_BITS + u32::from(net.prefix_len()),
                        ClassKeyV6 {
                            generation: gen_bytes,
                            addr: net.addr().octets(),
                        },
                    ),
                    value,
                )),
            }
        }
    }
    let mut groups: BTreeMap<(u16, u16, u8), Vec<&Rule>> = BTreeMap::new();
    for rule in &policy.rules {
        for src in &rule.src_classes {
            groups
                .entry((rule.dst_class, *src, rule.proto))
                .or_default()
                .push(rule);
        }
    }
    for ((dst, src, proto), rules) in groups {
        for (range, rule) in disjoint_ranges(&rules) {
            for (port, len) in port_prefixes(range) {
                let key = RuleKey {
                    generation: gen_bytes,
                    dst_class: dst.to_be_bytes(),
                    src_class: src.to_be_bytes(),
                    proto,
                    port: port.to_be_bytes(),
                };
                out.rules
                    .push((Key::new(RULE_KEY_FIXED_BITS + len, key), RuleValue { rule }));
            }
        }
    }
    out
}

/// Splits overlapping rules into disjoint ranges, each owned by its narrowest rule.
fn disjoint_ranges(rules: &[&Rule]) -> Vec<(PortRange, u32)> {
    let mut bounds: Vec<u32> = rules
        .iter()
        .flat_map(|r| [u32::from(r.ports.first), u32::from(r.ports.last) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(PortRange, u32)> = Vec::new();
    for pair in bounds.windows(2) {
        let (first, last) = (pair[0] as u16, (pair[1] - 1) as u16);
        let winner = rules
            .iter()
            .filter(|r| r.ports.contains(first))
            .min_by_key(|r| (r.ports.width(), r.id));
        let Some(winner) = winner else { continue };
        match out.last_mut() {
            Some((range, id))
                if *id == winner.id && u32::from(range.last) + 1 == u32::from(first) =>
            {
                range.last = last;
            }
            _ => out.push((PortRange { first, last }, winner.id)),
        }
    }
    out
}

/// The minimal set of (port, prefix length) blocks covering `range`.
fn port_prefixes(range: PortRange) -> Vec<(u16, u32)> {
    let (mut lo, hi) = (u32::from(range.first), u32::from(range.last));
    let mut out = Vec::new();
    while lo <= hi {
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    generation: u32,
}

impl Dataplane {
    /// Loads the embedded object into the kernel (nothing is attached yet).
    pub fn load(options: LoadOptions) -> Result<Self, DataplaneError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::FLOWS, options.flow_entries)
            .map_max_entries(map_names::FRAGS, options.frag_entries)
            .load(crate::EBPF_OBJECT)?;
        for name in [program_names::FIREWALL, program_names::PASS] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing("XDP program"))?
                .try_into()
                .map_err(prog_err(format!("program {name}")))?;
            program
                .load()
                .map_err(prog_err(format!("the verifier rejected {name}")))?;
        }
        let events = ebpf
            .take_map(map_names::EVENTS)
            .ok_or(DataplaneError::Missing("event ring"))?;
        let events = RingBuf::try_from(events).map_err(map_err("event ring"))?;
        let mut dataplane = Dataplane {
            ebpf,
            events,
            generation: 0,
        };
        dataplane.set_event_rate(100, 100)?;
        Ok(dataplane)
    }

    /// The generation packets are judged by (0 before the first policy).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn config(&mut self) -> Result<Array<&mut MapData, u64>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(map_names::CONFIG)
            .ok_or(DataplaneError::Missing("config map"))?;
        Array::try_from(map).map_err(map_err("config map"))
    }

    /// Limits drop events to `per_sec` per CPU with bursts of `burst` (0 disables them).
    pub fn set_event_rate(&mut self, per_sec: u64, burst: u64) -> Result<(), DataplaneError> {
        let mut cfg = self.config()?;
        cfg.set(config::EVENTS_PER_SEC, per_sec, 0)
            .map_err(map_err("writing the event rate"))?;
        cfg.set(config::EVENTS_BURST, burst, 0)
            .map_err(map_err("writing the event burst"))
    }

    /// Writes `policy` as a new generation, flips to it and removes the old one. On any error
    /// the running generation stays in force and the partial new one is removed.
    pub fn apply(&mut self, policy: &Policy) -> Result<u32, DataplaneError> {
        policy.validate()?;
        let next = self.generation.wrapping_add(1).max(1);
        let entries = encode(policy, next);
        if let Err(e) = self.write_entries(&entries) {
            let _ = self.remove_generations(|g| g == next);
            return Err(e);
        }
        let t = &policy.timeouts;
        let mode = if policy.mode == Mode::Audit {
            MODE_AUDIT
        } else {
            MODE_ENFORCE
        };
        let mut cfg = self.config()?;
        for (slot, value) in [
            (config::TCP_TIMEOUT_NS, t.tcp.as_nanos() as u64),
            (config::UDP_TIMEOUT_NS, t.udp.as_nanos() as u64),
            (config::OTHER_TIMEOUT_NS, t.other.as_nanos() as u64),
            (config::FRAG_TIMEOUT_NS, t.fragment.as_nanos() as u64),
            (config::MODE, mode),
            // Last: the flip. A packet reads it once and sees one whole generation.
            (config::GENERATION, u64::from(next)),
        ] {
            cfg.set(slot, value, 0)
                .map_err(map_err("writing the config map"))?;
        }
        self.generation = next;
        self.remove_generations(|g| g != next)?;
        info!(
            generation = next,
            classes = policy.classes.len(),
            rules = policy.rules.len(),
            "policy applied"
        );
        Ok(next)
    }

    fn write_entries(&mut self, entries: &MapEntries) -> Result<(), DataplaneError> {
        fn write<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            items: &[(Key<K>, V)],
        ) -> Result<(), DataplaneError> {
            let map = ebpf
                .map_mut(name)
                .ok_or(DataplaneError::Missing("class or rule map"))?;
            let mut trie = LpmTrie::<_, K, V>::try_from(map).map_err(map_err(name))?;
            for (key, value) in items {
                trie.insert(key, value, 0)
                    .map_err(map_err(format!("writing {name} (is the table full?)")))?;
            }
            Ok(())
        }
        write(&mut self.ebpf, map_names::CLASS_V4, &entries.class_v4)?;
        write(&mut self.ebpf, map_names::CLASS_V6, &entries.class_v6)?;
        write(&mut self.ebpf, map_names::RULES, &entries.rules)
    }

    fn remove_generations(
        &mut self,
        doomed: impl Fn(u32) -> bool + Copy,
    ) -> Result<(), DataplaneError> {
        fn sweep<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            generation_of: impl Fn(&K) -> [u8; 4],
            doomed: impl Fn(u32) -> bool,
        ) -> Result<(), DataplaneError> {
            let map = ebpf
                .map_mut(name)
                .ok_or(DataplaneError::Missing("class or rule map"))?;
            let mut trie = LpmTrie::<_, K, V>::try_from(map).map_err(map_err(name))?;
            let keys: Vec<Key<K>> = trie.keys().filter_map(Result::ok).collect();
            for key in keys {
                let data = key.data();
                if doomed(u32::from_be_bytes(generation_of(&data))) {
                    trie.remove(&key)
                        .map_err(map_err(format!("removing an old entry of {name}")))?;
                }
            }
            Ok(())
        }
        sweep::<ClassKeyV4, ClassValue>(
            &mut self.ebpf,
            map_names::CLASS_V4,
            |k| k.generation,
            doomed,
        )?;
        sweep::<ClassKeyV6, ClassValue>(
            &mut self.ebpf,
            map_names::CLASS_V6,
            |k| k.generation,
            doomed,
        )?;
        sweep::<RuleKey, RuleValue>(&mut self.ebpf, map_names::RULES, |k| k.generation, doomed)
    }

    fn firewall(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(program_names::FIREWALL)
            .ok_or(DataplaneError::Missing("firewall program"))?
            .try_into()
            .map_err(prog_err("firewall program"))
    }

    /// Attaches the firewall to `iface` (in the calling thread's network namespace).
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let program = self.firewall()?;
        let attach = |program: &mut Xdp, m: XdpMode| program.attach(iface, m);
        match mode {
            AttachMode::Skb => {
                attach(program, XdpMode::Skb)
                    .map_err(prog_err(format!("attaching to {iface} in skb mode")))?;
                Ok(AttachedMode::Skb)
            }
            AttachMode::Driver => {
                attach(program, XdpMode::Driver).map_err(prog_err(format!(
                    "attaching to {iface} in driver mode (try mode = \"auto\" or \"skb\")"
                )))?;
                Ok(AttachedMode::Driver)
            }
            AttachMode::Auto => match attach(program, XdpMode::Driver) {
                Ok(_) => Ok(AttachedMode::Driver),
                Err(e) => {
                    warn!(%iface, error = %e, "driver-mode XDP refused; falling back to skb mode");
                    attach(program, XdpMode::Skb)
                        .map_err(prog_err(format!("attaching to {iface} in skb mode")))?;
                    Ok(AttachedMode::Skb)
                }
            },
        }
    }

    /// Runs a program once per `repeat` on `frame` through BPF_PROG_TEST_RUN.
    pub fn test_run(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(prog_err(format!("program {program}")))?;
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .map_err(prog_err(format!("test run of {program}")))
    }

    fn per_cpu_array<V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuArray<&MapData, V>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::Missing("counter map"))?;
        PerCpuArray::try_from(map).map_err(map_err(name))
    }

    /// One (verdict, reason) counter summed over CPUs.
    pub fn reason_counter(
        &self,
        verdict: Verdict,
        reason: Reason,
    ) -> Result<Counter, DataplaneError> {
        let map = self.per_cpu_array::<Counter>(map_names::REASON_STATS)?;
        let values = map
            .get(&reason_index(verdict, reason), 0)
            .map_err(map_err("reading reason counters"))?;
        Ok(sum_counters(values.iter()))
    }

    /// One rule's counters summed over CPUs.
    pub fn rule_counter(&self, rule: u32) -> Result<RuleStats, DataplaneError> {
        let map = self.per_cpu_array::<RuleStats>(map_names::RULE_STATS)?;
        let values = map
            .get(&rule, 0)
            .map_err(map_err("reading rule counters"))?;
        Ok(values
            .iter()
            .fold(RuleStats::default(), |acc, s| RuleStats {
                packets: acc.packets + s.packets,
                bytes: acc.bytes + s.bytes,
                new_connections: acc.new_connections + s.new_connections,
            }))
    }

    fn drop_map(&self) -> Result<PerCpuHashMap<&MapData, DropKey, Counter>, DataplaneError> {
        let map = self
            .ebpf
            .map(map_names::DROP_STATS)
            .ok_or(DataplaneError::Missing("drop map"))?;
        PerCpuHashMap::try_from(map).map_err(map_err("drop map"))
    }

    /// One per-port drop counter summed over CPUs (zero when absent).
    pub fn drop_counter(&self, key: &DropKey) -> Result<Counter, DataplaneError> {
        let drops = self.drop_map()?;
        match drops.get(key, 0) {
            Ok(values) => Ok(sum_counters(values.iter())),
            Err(MapError::KeyNotFound) => Ok(Counter::default()),
            Err(e) => Err(map_err("reading a drop counter")(e)),
        }
    }

    /// Every per-packet counter: reasons, the given rules, and per-port drops.
    pub fn counters(
        &self,
        rules: impl IntoIterator<Item = u32>,
    ) -> Result<Counters, DataplaneError> {
        let mut out = Counters::default();
        for verdict in [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop] {
            for reason in Reason::ALL {
                let c = self.reason_counter(verdict, reason)?;
                if c != Counter::default() {
                    out.reasons.insert((verdict, reason), c);
                }
            }
        }
        for rule in rules {
            let s = self.rule_counter(rule)?;
            if s != RuleStats::default() {
                out.rules.insert(rule, s);
            }
        }
        let drops = self.drop_map()?;
        for item in drops.iter() {
            let (key, values) = item.map_err(map_err("reading drop counters"))?;
            out.drops.insert(key, sum_counters(values.iter()));
        }
        out.drop_stats_full = self.event_stats()?.drop_stats_full;
        Ok(out)
    }

    /// The sampler and table-pressure counters.
    pub fn event_stats(&self) -> Result<EventStats, DataplaneError> {
        let map = self.per_cpu_array::<u64>(map_names::EVENT_STATS)?;
        let read = |slot: u32| -> Result<u64, DataplaneError> {
            Ok(map
                .get(&slot, 0)
                .map_err(map_err("reading event counters"))?
                .iter()
                .sum())
        };
        Ok(EventStats {
            sampled: read(event_stat::SAMPLED)?,
            suppressed: read(event_stat::SUPPRESSED)?,
            lost: read(event_stat::LOST)?,
            drop_stats_full: read(event_stat::DROP_STATS_FULL)?,
            flow_insert_failed: read(event_stat::FLOW_INSERT_FAILED)?,
        })
    }

    /// Takes every drop event waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<DropEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<DropEvent>() {
                // SAFETY: the kernel wrote a DropEvent; read_unaligned copes with any alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) });
            }
        }
        out
    }
}

fn sum_counters<'a>(values: impl Iterator<Item = &'a Counter>) -> Counter {
    values.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_prefixes_cover_exactly_the_range() {
        for (first, last) in [
            (0, 65535),
            (443, 443),
            (1024, 65535),
            (5065, 5068),
            (1, 2),
            (0, 0),
            (65535, 65535),
            (137, 139),
        ] {
            let blocks = port_prefixes(PortRange { first, last });
            let mut covered = Vec::new();
            for (port, len) in &blocks {
                let size = 1u32 << (16 - len);
                assert_eq!(
                    u32::from(*port) % size,
                    0,
                    "block {port}/{len} is not aligned"
                );
                covered.extend(u32::from(*port)..u32::from(*port) + size);
            }
            assert_eq!(
                covered,
                (u32::from(first)..=u32::from(last)).collect::<Vec<_>>()
            );
        }
        assert_eq!(port_prefixes(PortRange::ANY), vec![(0, 0)]);
    }

    #[test]
    fn overlapping_rules_split_to_the_narrowest() {
        let wide = Rule {
            id: 1,
            service: "wide".into(),
            dst_class: 1,
            src_classes: [0].into(),
            proto: 6,
            ports: PortRange {
                first: 10,
                last: 20,
            },
        };
        let narrow = Rule {
            id: 2,
            service: "narrow".into(),
            ports: PortRange::single(15),
            ..wide.clone()
        };
        let got = disjoint_ranges(&[&wide, &narrow]);
        assert_eq!(
            got,
            vec![
                (
                    PortRange {
                        first: 10,
                        last: 14
                    },
                    1
                ),
                (PortRange::single(15), 2),
                (
                    PortRange {
                        first: 16,
                        last: 20
                    },
                    1
                )
            ]
        );
    }
}
