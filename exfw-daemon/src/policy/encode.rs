//! The policy as the kernel's maps hold it, computed without touching the kernel: the entries
//! of one generation ([`encode`]), the room they take ([`table_use`]), the hash that names what
//! a policy means ([`policy_hash`]) and the plan that keeps rule counter slots and class ids
//! stable across reloads ([`plan_ids`]). The data plane writes what this computes.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
};

use exfw_common::{
    CLASS_EXTERNAL, CLASS_LOCAL, CLASS_PROTECTED, CLASS_TRUSTED, ClassKeyV4, ClassKeyV6,
    ClassValue, GENERATION_BITS, IFACE_ACCEPTS_EXTERNAL, IFACE_REVERSE_PATH, IfaceKey, IfaceValue,
    PortKey, RULE_KEY_FIXED_BITS, RuleKey, RuleValue, limits,
};
use ipnet::IpNet;

use super::{Compiled, Policy, PortRange, Rule};

/// A key of an LPM trie with the number of its leading bits that match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefixed<K> {
    /// Leading bits of `key` that match.
    pub prefix_len: u32,
    /// The key.
    pub key: K,
}

impl<K> Prefixed<K> {
    /// `key` matching on its first `prefix_len` bits.
    pub fn new(prefix_len: u32, key: K) -> Self {
        Prefixed { prefix_len, key }
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn eat(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The 64-bit FNV-1a hash of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash = Fnv1a::new();
    hash.eat(data);
    hash.finish()
}

/// A stable 64-bit FNV-1a hash of what the policy means (same config, same hash, on any
/// gateway and any build): its encoding with interfaces by slot and name rather than index,
/// classes numbered in the order of their names and rules in the order of their content rather
/// than by the ids and counter slots a gateway's reload history gave them.
pub fn policy_hash(policy: &Policy) -> u64 {
    fn bytes<T: aya::Pod>(value: &T) -> &[u8] {
        // SAFETY: Pod types are plain bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
    }
    let mut canonical = policy.clone();
    // Classes numbered in the order of their names, not by the ids a gateway's history gave
    // them; then rules in the order of their content.
    let mut names: Vec<(&str, u16)> = policy
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    names.sort_unstable();
    let by_name: BTreeMap<u16, u16> = names
        .iter()
        .enumerate()
        .map(|(i, (_, id))| (*id, i as u16 + 1))
        .collect();
    canonical.renumber_classes(&by_name);
    canonical.rules.sort_by(|a, b| {
        (
            &a.service,
            a.dst_class,
            &a.src_classes,
            a.proto,
            a.ports.first,
            a.ports.last,
        )
            .cmp(&(
                &b.service,
                b.dst_class,
                &b.src_classes,
                b.proto,
                b.ports.first,
                b.ports.last,
            ))
    });
    for (id, rule) in canonical.rules.iter_mut().enumerate() {
        rule.id = id as u32;
    }
    let policy = &canonical;
    // Every interface present (index 0 would mean absent and leave it out).
    let slots: Vec<u32> = (1..=policy.interfaces.len() as u32).collect();
    let entries = encode(policy, 0, &slots);
    let mut hash = Fnv1a::new();
    let mut eat = |data: &[u8]| hash.eat(data);
    for (k, v) in &entries.class_v4 {
        eat(&k.prefix_len.to_le_bytes());
        eat(bytes(&k.key));
        eat(bytes(v));
    }
    for (k, v) in &entries.class_v6 {
        eat(&k.prefix_len.to_le_bytes());
        eat(bytes(&k.key));
        eat(bytes(v));
    }
    for (k, v) in &entries.rules {
        eat(&k.prefix_len.to_le_bytes());
        eat(bytes(&k.key));
        eat(bytes(v));
    }
    for ((k, v), iface) in entries.ifaces.iter().zip(&policy.interfaces) {
        eat(bytes(k));
        eat(bytes(v));
        eat(iface.name.as_bytes());
        eat(&[0]);
    }
    let t = &policy.timeouts;
    for d in [
        t.tcp, t.udp, t.other, t.fragment, t.pending, t.tcp_fin, t.tcp_rst,
    ] {
        eat(&d.as_nanos().to_le_bytes());
    }
    eat(&[policy.mode as u8]);
    hash.finish()
}

/// The map entries that encode one policy generation.
#[derive(Clone, Default)]
pub struct MapEntries {
    /// IPv4 class prefixes.
    pub class_v4: Vec<(Prefixed<ClassKeyV4>, ClassValue)>,
    /// IPv6 class prefixes.
    pub class_v6: Vec<(Prefixed<ClassKeyV6>, ClassValue)>,
    /// Rule prefixes, disjoint within each (dst class, src class, proto).
    pub rules: Vec<(Prefixed<RuleKey>, RuleValue)>,
    /// The (protocol, port) pairs rules name.
    pub ports: Vec<PortKey>,
    /// The interfaces, in the policy's order.
    pub ifaces: Vec<(IfaceKey, IfaceValue)>,
}

/// One kernel table's use by a policy, against the room one generation has there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableUse {
    /// What the table holds, as `exfw check` names it.
    pub table: &'static str,
    /// Entries the policy takes.
    pub used: usize,
    /// Entries one generation may take: half of the table, because the running generation
    /// stays until the new one is in force.
    pub room: usize,
}

impl TableUse {
    /// Whether the policy fits.
    pub fn fits(&self) -> bool {
        self.used <= self.room
    }
}

/// What `entries` (one generation of a policy with `rules` rules and `classes` classes) takes
/// in each kernel table, against the room each generation has.
pub fn table_use(entries: &MapEntries, rules: usize, classes: usize) -> Vec<TableUse> {
    let half = |n: u32| n as usize / 2;
    vec![
        TableUse {
            table: "IPv4 prefixes",
            used: entries.class_v4.len(),
            room: half(limits::MAX_CLASS_PREFIXES),
        },
        TableUse {
            table: "IPv6 prefixes",
            used: entries.class_v6.len(),
            room: half(limits::MAX_CLASS_PREFIXES),
        },
        TableUse {
            table: "rule entries",
            used: entries.rules.len(),
            room: half(limits::MAX_RULE_ENTRIES),
        },
        TableUse {
            table: "rule ids (counter slots)",
            used: rules,
            room: half(limits::MAX_RULES),
        },
        TableUse {
            table: "ports",
            used: entries.ports.len(),
            room: limits::MAX_POLICY_PORTS as usize,
        },
        TableUse {
            table: "interfaces",
            used: entries.ifaces.len(),
            room: limits::MAX_INTERFACES as usize,
        },
        TableUse {
            table: "address classes",
            used: classes,
            room: limits::MAX_CLASSES as usize,
        },
    ]
}

/// What `policy` takes in each kernel table (encoded as the data plane would, one interface
/// index per configured interface).
pub fn policy_table_use(policy: &Policy) -> Vec<TableUse> {
    let ifindexes: Vec<u32> = (1..=policy.interfaces.len() as u32).collect();
    table_use(
        &encode(policy, 1, &ifindexes),
        policy.rules.len(),
        policy.classes.len(),
    )
}

/// Encodes `policy` as map entries under `generation`; `ifindexes[i]` is the index of
/// `policy.interfaces[i]`, whose slot (bit in the classes' ingress masks) is `i`.
///
/// Rules that overlap on the same (destination, source, protocol) are split so the entries are
/// disjoint and each port maps to the narrowest matching rule (lowest id on a tie): the same
/// choice as [`Policy::matching_rule`].
pub fn encode(policy: &Policy, generation: u32, ifindexes: &[u32]) -> MapEntries {
    let gen_bytes = generation.to_be_bytes();
    let mut out = MapEntries::default();
    for (slot, (iface, ifindex)) in policy.interfaces.iter().zip(ifindexes).enumerate() {
        if *ifindex == 0 {
            // Not present now: nothing arrives there (re-encoded when it appears).
            continue;
        }
        let mut flags = 0;
        if iface.reverse_path {
            flags |= IFACE_REVERSE_PATH;
        }
        if iface.accepts.accepts(CLASS_EXTERNAL) {
            flags |= IFACE_ACCEPTS_EXTERNAL;
        }
        out.ifaces.push((
            IfaceKey {
                generation,
                ifindex: *ifindex,
            },
            IfaceValue {
                slot: slot as u8,
                flags,
                pad: [0; 2],
            },
        ));
    }
    for class in &policy.classes {
        let ingress = policy
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.accepts.accepts(class.id))
            .fold(0u64, |mask, (slot, _)| mask | (1 << slot));
        let value = ClassValue {
            class: class.id,
            flags: if class.protected { CLASS_PROTECTED } else { 0 }
                | if class.trusted { CLASS_TRUSTED } else { 0 }
                | if class.local { CLASS_LOCAL } else { 0 },
            pad: 0,
            ingress,
        };
        for prefix in &class.prefixes {
            match prefix.trunc() {
                IpNet::V4(net) => out.class_v4.push((
                    Prefixed::new(
                        GENERATION_BITS + u32::from(net.prefix_len()),
                        ClassKeyV4 {
                            generation: gen_bytes,
                            addr: net.addr().octets(),
                        },
                    ),
                    value,
                )),
                IpNet::V6(net) => out.class_v6.push((
                    Prefixed::new(
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
    out.ports = policy
        .named_ports()
        .into_iter()
        .map(|(proto, port)| PortKey {
            generation,
            port,
            proto,
            pad: 0,
        })
        .collect();
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
                out.rules.push((
                    Prefixed::new(RULE_KEY_FIXED_BITS + len, key),
                    RuleValue { rule },
                ));
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

/// The ids [`plan_ids`] hands out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdPlan {
    /// Each wanted identity's id.
    pub of: BTreeMap<u64, u32>,
    /// Ids handed to an identity new to them (their counters must start from zero).
    pub fresh: BTreeSet<u32>,
    /// Recorded identities to forget, to free their ids.
    pub forget: Vec<u64>,
    /// Nothing was recorded before (state pinned by a build without the table).
    pub was_empty: bool,
}

/// Ids that survive reloads and restarts, given the ids recorded so far (`known`, identity
/// hash to id): a known identity keeps its id; a new one gets its preferred id when that is
/// free, else the lowest free id in `range`. Identities not wanted are forgotten only when the
/// range is full (the running generation may still count under one until the flip: at most
/// one reload's worth goes to the identity that takes the id). `None`: more identities than
/// ids.
pub fn plan_ids(
    known: &BTreeMap<u64, u32>,
    wanted: &[(u64, Option<u32>)],
    range: Range<u32>,
) -> Option<IdPlan> {
    let wanted_set: BTreeSet<u64> = wanted.iter().map(|(h, _)| *h).collect();
    let mut known: BTreeMap<u64, u32> = known
        .iter()
        .filter(|(_, id)| range.contains(id))
        .map(|(h, id)| (*h, *id))
        .collect();
    let mut plan = IdPlan {
        was_empty: known.is_empty(),
        ..IdPlan::default()
    };
    let mut used: BTreeSet<u32> = known.values().copied().collect();
    for (hash, preferred) in wanted {
        if let Some(id) = known.get(hash).or(plan.of.get(hash)).copied() {
            plan.of.insert(*hash, id);
            continue;
        }
        if used.len() >= range.len() {
            for (old, id) in known.iter().filter(|(h, _)| !wanted_set.contains(h)) {
                plan.forget.push(*old);
                used.remove(id);
            }
            known.retain(|h, _| wanted_set.contains(h));
        }
        let id = match preferred {
            Some(p) if range.contains(p) && !used.contains(p) => *p,
            _ => range.clone().find(|id| !used.contains(id))?,
        };
        used.insert(id);
        plan.of.insert(*hash, id);
        plan.fresh.insert(id);
    }
    Some(plan)
}

/// Each rule's identity hash and compiled id: what [`plan_ids`] keeps counter slots by.
pub fn rule_identities(compiled: &Compiled) -> Vec<(u64, u32)> {
    compiled
        .policy
        .rules
        .iter()
        .map(|r| (fnv1a(compiled.rule_identity(r).as_bytes()), r.id))
        .collect()
}

/// Each class's compiled id and the hash of its name: what [`plan_ids`] keeps class ids by.
pub fn class_identities(compiled: &Compiled) -> Vec<(u16, u64)> {
    compiled
        .policy
        .classes
        .iter()
        .map(|c| (c.id, fnv1a(c.name.as_bytes())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

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

    #[test]
    fn the_policy_hash_does_not_depend_on_counter_slots_or_class_ids() {
        let config = crate::config::parse(
            include_str!("../../../examples/exchange2016-edge.toml"),
            "exchange2016-edge.toml",
        )
        .unwrap();
        let compiled = crate::policy::compile(&config).unwrap();
        let hash = policy_hash(&compiled.policy);
        // Another gateway's history: the same rules in other slots.
        let mut elsewhere = compiled.clone();
        elsewhere.renumber(|rule| 4000 - rule.id);
        assert_ne!(
            elsewhere
                .policy
                .rules
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            compiled
                .policy
                .rules
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        );
        assert_eq!(policy_hash(&elsewhere.policy), hash);
        // ... and the same classes under other ids.
        let classes = elsewhere.policy.classes.len() as u16;
        let shuffled: BTreeMap<u16, u16> = elsewhere
            .policy
            .classes
            .iter()
            .map(|c| (c.id, 900 + classes - c.id))
            .collect();
        elsewhere.renumber_classes(&shuffled);
        assert!(elsewhere.policy.classes.iter().all(|c| c.id >= 900));
        assert_ne!(
            elsewhere.policy.classes[0].name,
            compiled.policy.classes[0].name
        );
        elsewhere.policy.validate().unwrap();
        assert_eq!(policy_hash(&elsewhere.policy), hash);
        // What the policy means does change it.
        let mut audit = compiled.policy.clone();
        audit.mode = Mode::Audit;
        assert_ne!(policy_hash(&audit), hash);
        let mut fewer = compiled.policy.clone();
        fewer.rules.pop();
        assert_ne!(policy_hash(&fewer), hash);
        // Every interface counts, the first (the Internet's, in the examples) too.
        for slot in 0..compiled.policy.interfaces.len() {
            let mut open = compiled.policy.clone();
            open.interfaces[slot].reverse_path = !open.interfaces[slot].reverse_path;
            assert_ne!(policy_hash(&open), hash, "interface {slot}");
            let mut open = compiled.policy.clone();
            open.interfaces[slot].accepts = crate::policy::Accepts::Any;
            assert_ne!(policy_hash(&open), hash, "interface {slot}");
        }
    }

    #[test]
    fn known_identities_keep_their_ids_and_new_ones_take_free_ones() {
        let known: BTreeMap<u64, u32> = [(10, 0), (11, 1), (99, 500)].into();
        let plan = plan_ids(&known, &[(11, None), (12, None), (10, None)], 0..4).unwrap();
        assert_eq!(plan.of, [(10, 0), (11, 1), (12, 2)].into());
        assert_eq!(plan.fresh, [2].into());
        assert!(plan.forget.is_empty() && !plan.was_empty);
        // A preferred id is taken when free.
        let plan = plan_ids(&known, &[(12, Some(3))], 0..4).unwrap();
        assert_eq!(plan.of[&12], 3);
    }

    #[test]
    fn a_full_range_forgets_identities_no_longer_wanted_and_fails_past_that() {
        let known: BTreeMap<u64, u32> = [(10, 0), (11, 1)].into();
        let plan = plan_ids(&known, &[(11, None), (12, None)], 0..2).unwrap();
        assert_eq!(plan.forget, vec![10]);
        assert_eq!(plan.of, [(11, 1), (12, 0)].into());
        assert_eq!(
            plan_ids(&known, &[(1, None), (2, None), (3, None)], 0..2),
            None
        );
        assert!(plan_ids(&BTreeMap::new(), &[], 0..2).unwrap().was_empty);
    }
}
