//! The reference classifier: the XDP program's decision, written as plain Rust over a byte slice.
//!
//! It is the oracle the kernel is tested against and the engine behind `exfw simulate`. It keeps
//! its own flow table, fragment cache and counters, with the same semantics as the kernel maps
//! (apart from LRU eviction, which tests keep out of reach).

use std::collections::{BTreeMap, HashMap};

use exfw_common::{
    CLASS_EXTERNAL, Counter, DropKey, FlowKey, FragKey, RuleStats, family, limits, proto,
    verdict_for,
};
use ipnet::IpNet;

use super::{Mode, Policy, Reason, Verdict};

/// A flow entry younger than this is not rewritten (mirrors the kernel's refresh interval).
const FLOW_REFRESH_NS: u64 = 1_000_000_000;

/// What happened to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Pass, drop or would-drop.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The rule counted for it, if any.
    pub rule: Option<u32>,
    /// Source class (0 when not classified).
    pub src_class: u16,
    /// Destination class (0 when not classified).
    pub dst_class: u16,
}

/// Totals of every counter the data plane keeps per packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets and bytes per (verdict, reason).
    pub reasons: BTreeMap<(Verdict, Reason), Counter>,
    /// Packets, bytes and new connections per rule id.
    pub rules: BTreeMap<u32, RuleStats>,
    /// Policy drops per (dst class, port, proto, verdict).
    pub drops: BTreeMap<DropKey, Counter>,
    /// Drops not counted per port because the table was full.
    pub drop_stats_full: u64,
}

impl Counters {
    /// What changed from `before` to `self`, leaving out entries that did not move.
    pub fn since(&self, before: &Counters) -> Counters {
        fn diff<K: Ord + Copy, V: Copy + PartialEq + Default>(
            now: &BTreeMap<K, V>,
            then: &BTreeMap<K, V>,
            sub: impl Fn(V, V) -> V,
        ) -> BTreeMap<K, V> {
            now.iter()
                .map(|(k, v)| (*k, sub(*v, then.get(k).copied().unwrap_or_default())))
                .filter(|(_, v)| *v != V::default())
                .collect()
        }
        let counter = |a: Counter, b: Counter| Counter {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
        };
        Counters {
            reasons: diff(&self.reasons, &before.reasons, counter),
            rules: diff(&self.rules, &before.rules, |a, b| RuleStats {
                packets: a.packets - b.packets,
                bytes: a.bytes - b.bytes,
                new_connections: a.new_connections - b.new_connections,
            }),
            drops: diff(&self.drops, &before.drops, counter),
            drop_stats_full: self.drop_stats_full - before.drop_stats_full,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frag {
    None,
    First,
    Later,
}

/// The header fields the decision needs.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    rule_port: u16,
    sport: u16,
    dport: u16,
    syn_only: bool,
    icmp_essential: bool,
    frag: Frag,
    frag_id: u32,
    frag_proto: u8,
}

#[derive(Clone, Copy, Debug)]
struct CachedFragment {
    created_ns: u64,
    reason: Reason,
    rule: Option<u32>,
}

/// The reference classifier with its state.
#[derive(Clone, Debug)]
pub struct Reference {
    policy: Policy,
    named_ports: std::collections::BTreeSet<(u8, u16)>,
    flows: HashMap<FlowKey, u64>,
    frags: HashMap<FragKey, CachedFragment>,
    counters: Counters,
    last_drop_key: Option<DropKey>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl Reference {
    /// A classifier with empty tables.
    pub fn new(policy: Policy) -> Self {
        Reference {
            named_ports: policy.named_ports(),
            policy,
            flows: HashMap::new(),
            frags: HashMap::new(),
            counters: Counters::default(),
            last_drop_key: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Swaps the policy, keeping flows, fragments and counters (as a generation flip does).
    pub fn set_policy(&mut self, policy: Policy) {
        self.named_ports = policy.named_ports();
        self.policy = policy;
    }

    /// Counter totals since creation.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The per-port drop counter the last classified packet moved, if any (a policy drop while
    /// the table had room).
    pub fn last_drop_key(&self) -> Option<DropKey> {
        self.last_drop_key
    }

    /// Judges one frame at monotonic time `now_ns` and updates tables and counters.
    pub fn classify(&mut self, frame: &[u8], now_ns: u64) -> Outcome {
        let audit = self.policy.mode == Mode::Audit;
        let mut out = Outcome {
            verdict: Verdict::Pass,
            reason: Reason::NonIp,
            rule: None,
            src_class: CLASS_EXTERNAL,
            dst_class: CLASS_EXTERNAL,
        };
        let parsed = parse(frame);
        out.reason = match &parsed {
            Err(reason) => *reason,
            Ok(None) => Reason::NonIp,
            Ok(Some(p)) if p.frag == Frag::Later => self.follow_fragment(p, now_ns, &mut out),
            Ok(Some(p)) => {
                let reason = self.decide(p, now_ns, &mut out);
                if p.frag == Frag::First {
                    let cached = CachedFragment {
                        created_ns: now_ns,
                        reason,
                        rule: out.rule,
                    };
                    self.frags.insert(frag_key(p), cached);
                }
                reason
            }
        };
        out.verdict = verdict_for(out.reason, audit);
        self.count(parsed.ok().flatten().as_ref(), &out, frame.len() as u64);
        out
    }

    fn decide(&mut self, p: &Parsed, now: u64, out: &mut Outcome) -> Reason {
        if p.icmp_essential {
            return Reason::IcmpEssential;
        }
        let (src, src_flags) = self.class_of(p.family, &p.src);
        let (dst, dst_flags) = self.class_of(p.family, &p.dst);
        out.src_class = src;
        out.dst_class = dst;
        if src_flags.trusted && dst_flags.trusted {
            return Reason::Trusted;
        }
        let own = FlowKey {
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            family: p.family,
            pad: [0; 2],
        };
        let timeout = self.flow_timeout(p.proto);
        if self
            .flows
            .get(&own)
            .is_some_and(|seen| now.wrapping_sub(*seen) < timeout)
        {
            return Reason::Flow;
        }
        if let Some(rule) = self.policy.matching_rule(src, dst, p.proto, p.rule_port) {
            out.rule = Some(rule.id);
            let reply = FlowKey {
                src: p.dst,
                dst: p.src,
                sport: p.dport,
                dport: p.sport,
                ..own
            };
            let fresh = self
                .flows
                .get(&reply)
                .is_some_and(|seen| now.wrapping_sub(*seen) < FLOW_REFRESH_NS);
            if !fresh {
                self.flows.insert(reply, now);
            }
            return Reason::Rule;
        }
        if !src_flags.protected && !dst_flags.protected {
            return Reason::Transit;
        }
        Reason::Policy
    }

    fn follow_fragment(&self, p: &Parsed, now: u64, out: &mut Outcome) -> Reason {
        let Some(cached) = self.frags.get(&frag_key(p)) else {
            return Reason::FragmentNoEntry;
        };
        if now.wrapping_sub(cached.created_ns) >= self.policy.timeouts.fragment.as_nanos() as u64 {
            return Reason::FragmentNoEntry;
        }
        if cached.reason.drops() {
            return Reason::FragmentDropped;
        }
        out.rule = cached.rule;
        Reason::FragmentPass
    }

    fn flow_timeout(&self, p: u8) -> u64 {
        let t = &self.policy.timeouts;
        match p {
            proto::TCP => t.tcp,
            proto::UDP => t.udp,
            _ => t.other,
        }
        .as_nanos() as u64
    }

    /// Longest-prefix match over every class; unlisted addresses are external.
    fn class_of(&self, fam: u8, addr: &[u8; 16]) -> (u16, Flags) {
        let ip: std::net::IpAddr = if fam == family::V4 {
            std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()
        } else {
            std::net::Ipv6Addr::from(*addr).into()
        };
        self.policy
            .classes
            .iter()
            .flat_map(|c| c.prefixes.iter().map(move |net| (c, net)))
            .filter(|(_, net)| net.contains(&ip))
            .max_by_key(|(_, net): &(_, &IpNet)| net.prefix_len())
            .map_or((CLASS_EXTERNAL, Flags::default()), |(c, _)| {
                (
                    c.id,
                    Flags {
                        protected: c.protected,
                        trusted: c.trusted,
                    },
                )
            })
    }

    fn count(&mut self, p: Option<&Parsed>, out: &Outcome, len: u64) {
        self.last_drop_key = None;
        let c = self
            .counters
            .reasons
            .entry((out.verdict, out.reason))
            .or_default();
        c.packets += 1;
        c.bytes += len;
        if let Some(id) = out.rule {
            let s = self.counters.rules.entry(id).or_default();
            s.packets += 1;
            s.bytes += len;
            if out.reason == Reason::Rule && p.is_some_and(|p| p.syn_only && p.proto == proto::TCP)
            {
                s.new_connections += 1;
            }
        }
        if let (Reason::Policy, Some(p)) = (out.reason, p) {
            let other = !self.named_ports.contains(&(p.proto, p.rule_port));
            let key = DropKey {
                dst_class: out.dst_class,
                port: if other { 0 } else { p.rule_port },
                proto: p.proto,
                verdict: out.verdict as u8,
                other: other as u8,
                pad: 0,
            };
            let full = self.counters.drops.len() >= limits::MAX_DROP_KEYS as usize;
            if !full || self.counters.drops.contains_key(&key) {
                self.last_drop_key = Some(key);
            }
            match self.counters.drops.get_mut(&key) {
                Some(c) => {
                    c.packets += 1;
                    c.bytes += len;
                }
                None if full => self.counters.drop_stats_full += 1,
                None => {
                    self.counters.drops.insert(
                        key,
                        Counter {
                            packets: 1,
                            bytes: len,
                        },
                    );
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    protected: bool,
    trusted: bool,
}

fn frag_key(p: &Parsed) -> FragKey {
    FragKey {
        src: p.src,
        dst: p.dst,
        id: p.frag_id,
        proto: p.frag_proto,
        family: p.family,
        pad: [0; 2],
    }
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const VLAN_TYPES: [u16; 2] = [0x8100, 0x88A8];
const IPV6_EXTENSIONS: [u8; 4] = [0, 43, 44, 60];

/// `Ok(None)` for frames that are not IP.
fn parse(frame: &[u8]) -> Result<Option<Parsed>, Reason> {
    if frame.len() < ETH_HLEN {
        return Ok(None);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3 = ETH_HLEN;
    let mut tags = 0;
    while VLAN_TYPES.contains(&ethertype) {
        if tags == limits::MAX_VLAN_TAGS {
            return Err(Reason::VlanTooDeep);
        }
        if frame.len() < l3 + 4 {
            return Err(Reason::VlanTruncated);
        }
        ethertype = be16(frame, l3 + 2);
        l3 += 4;
        tags += 1;
    }
    let mut p = Parsed {
        family: 0,
        src: [0; 16],
        dst: [0; 16],
        proto: 0,
        rule_port: 0,
        sport: 0,
        dport: 0,
        syn_only: false,
        icmp_essential: false,
        frag: Frag::None,
        frag_id: 0,
        frag_proto: 0,
    };
    let (l4, end) = match ethertype {
        ETH_P_IP => parse_ipv4(frame, l3, &mut p)?,
        ETH_P_IPV6 => parse_ipv6(frame, l3, &mut p)?,
        _ => return Ok(None),
    };
    if p.frag != Frag::Later {
        parse_transport(&frame[l4..end], &mut p)?;
    }
    Ok(Some(p))
}

fn parse_ipv4(frame: &[u8], l3: usize, p: &mut Parsed) -> Result<(usize, usize), Reason> {
    let h = frame.get(l3..l3 + 20).ok_or(Reason::Ipv4Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(Reason::Ipv4BadVersion);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if header_len < 20 || l3 + header_len > frame.len() {
        return Err(Reason::Ipv4BadIhl);
    }
    let total = usize::from(be16(h, 2));
    if total < header_len || l3 + total > frame.len() {
        return Err(Reason::Ipv4BadLength);
    }
    p.family = family::V4;
    p.proto = h[9];
    p.frag_proto = h[9];
    p.src[..4].copy_from_slice(&h[12..16]);
    p.dst[..4].copy_from_slice(&h[16..20]);
    p.frag_id = u32::from(be16(h, 4));
    let flags_offset = be16(h, 6);
    let more_fragments = flags_offset & 0x2000 != 0;
    p.frag = match (flags_offset & 0x1fff, more_fragments) {
        (0, false) => Frag::None,
        (0, true) => Frag::First,
        _ => Frag::Later,
    };
    Ok((l3 + header_len, l3 + total))
}

fn parse_ipv6(frame: &[u8], l3: usize, p: &mut Parsed) -> Result<(usize, usize), Reason> {
    let h = frame.get(l3..l3 + 40).ok_or(Reason::Ipv6Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(Reason::Ipv6BadVersion);
    }
    let end = l3 + 40 + usize::from(be16(h, 4));
    if end > frame.len() {
        return Err(Reason::Ipv6BadLength);
    }
    p.family = family::V6;
    p.src.copy_from_slice(&h[8..24]);
    p.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = l3 + 40;
    let mut walked = 0;
    while IPV6_EXTENSIONS.contains(&next) {
        if walked == limits::MAX_IPV6_EXT_HEADERS {
            return Err(Reason::Ipv6ExtTooMany);
        }
        if next == 0 && walked != 0 {
            return Err(Reason::Ipv6ExtOrder);
        }
        walked += 1;
        // Every extension header is at least 8 bytes and must lie inside the payload.
        let ext = frame
            .get(off..end.max(off))
            .filter(|e| e.len() >= 8)
            .ok_or(Reason::Ipv6ExtTruncated)?;
        if next == 44 {
            next = ext[0];
            p.frag_proto = ext[0];
            off += 8;
            let offset_flags = be16(ext, 2);
            let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
            if offset_flags & 0xfff8 != 0 {
                p.frag = Frag::Later;
                p.frag_id = id;
                break;
            }
            if offset_flags & 1 != 0 {
                p.frag = Frag::First;
                p.frag_id = id;
            }
        } else {
            let len = (usize::from(ext[1]) + 1) * 8;
            if off + len > end {
                return Err(Reason::Ipv6ExtTruncated);
            }
            next = ext[0];
            off += len;
        }
    }
    p.proto = next;
    Ok((off, end))
}

fn parse_transport(l4: &[u8], p: &mut Parsed) -> Result<(), Reason> {
    let short = if p.frag == Frag::First {
        Reason::FragmentTooShort
    } else {
        Reason::L4Truncated
    };
    let icmp = (p.family == family::V4 && p.proto == proto::ICMP)
        || (p.family == family::V6 && p.proto == proto::ICMPV6);
    match p.proto {
        proto::TCP => {
            if l4.len() < 20 {
                return Err(short);
            }
            p.sport = be16(l4, 0);
            p.dport = be16(l4, 2);
            p.rule_port = p.dport;
            let data_offset = usize::from(l4[12] >> 4) * 4;
            if data_offset < 20 {
                return Err(Reason::TcpBadHeader);
            }
            if data_offset > l4.len() {
                return Err(if p.frag == Frag::First {
                    short
                } else {
                    Reason::TcpBadHeader
                });
            }
            p.syn_only = l4[13] & 0x12 == 0x02;
        }
        proto::UDP => {
            if l4.len() < 8 {
                return Err(short);
            }
            p.sport = be16(l4, 0);
            p.dport = be16(l4, 2);
            p.rule_port = p.dport;
            let udp_len = usize::from(be16(l4, 4));
            if udp_len < 8 || (p.frag == Frag::None && udp_len > l4.len()) {
                return Err(Reason::UdpBadLength);
            }
        }
        _ if icmp => {
            if l4.len() < 8 {
                return Err(short);
            }
            let (kind, code) = (l4[0], l4[1]);
            p.rule_port = u16::from(kind);
            let echo = if p.family == family::V4 {
                matches!(kind, 0 | 8)
            } else {
                matches!(kind, 128 | 129)
            };
            if echo {
                p.sport = be16(l4, 4);
                p.dport = p.sport;
            }
            p.icmp_essential = if p.family == family::V4 {
                kind == 3 && code == 4
            } else {
                kind == 2 || (133..=137).contains(&kind)
            };
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Class, PortRange, Rule};

    fn frame_v4_tcp(src: [u8; 4], dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = proto::TCP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f
    }

    fn policy() -> Policy {
        Policy {
            classes: vec![Class {
                id: 1,
                name: "cas".into(),
                protected: true,
                trusted: true,
                prefixes: vec!["192.0.2.0/24".parse().unwrap()],
            }],
            rules: vec![Rule {
                id: 7,
                service: "https".into(),
                dst_class: 1,
                src_classes: [0].into(),
                proto: proto::TCP,
                ports: PortRange::single(443),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rule_passes_and_records_the_reply() {
        let mut r = Reference::new(policy());
        let syn = frame_v4_tcp([203, 0, 113, 9], [192, 0, 2, 1], 443, 0x02);
        let out = r.classify(&syn, 0);
        assert_eq!(
            (out.verdict, out.reason, out.rule),
            (Verdict::Pass, Reason::Rule, Some(7))
        );
        assert_eq!(r.counters().rules[&7].new_connections, 1);
        let mut reply = frame_v4_tcp([192, 0, 2, 1], [203, 0, 113, 9], 40000, 0x12);
        reply[34..36].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(r.classify(&reply, 1).reason, Reason::Flow);
        let other = frame_v4_tcp([203, 0, 113, 9], [192, 0, 2, 1], 3389, 0x02);
        let out = r.classify(&other, 2);
        assert_eq!((out.verdict, out.reason), (Verdict::Drop, Reason::Policy));
        assert_eq!(r.counters().drops.len(), 1);
    }

    #[test]
    fn audit_turns_drops_into_would_drops_and_transit_passes() {
        let mut p = policy();
        p.mode = Mode::Audit;
        let mut r = Reference::new(p);
        let out = r.classify(&frame_v4_tcp([203, 0, 113, 9], [192, 0, 2, 1], 22, 0x02), 0);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::WouldDrop, Reason::Policy)
        );
        let out = r.classify(
            &frame_v4_tcp([203, 0, 113, 9], [198, 51, 100, 1], 22, 0x02),
            0,
        );
        assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::Transit));
    }

    #[test]
    fn malformed_headers_get_their_own_reason() {
        let mut r = Reference::new(policy());
        let mut f = frame_v4_tcp([203, 0, 113, 9], [192, 0, 2, 1], 443, 0x02);
        f[14] = 0x44;
        assert_eq!(r.classify(&f, 0).reason, Reason::Ipv4BadIhl);
        f[14] = 0x65;
        assert_eq!(r.classify(&f, 0).reason, Reason::Ipv4BadVersion);
        f[14] = 0x45;
        f[46] = 0x40;
        assert_eq!(r.classify(&f, 0).reason, Reason::TcpBadHeader);
        assert_eq!(r.classify(&f[..30], 0).reason, Reason::Ipv4Truncated);
        assert_eq!(r.classify(&f[..40], 0).reason, Reason::Ipv4BadLength);
    }
}
