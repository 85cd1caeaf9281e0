//! The exfw XDP program: parse -> classify -> decide -> count -> sample.
//!
//! It holds no policy of its own: every decision is a lookup in maps the daemon wrote. The
//! decision order and every reason code are mirrored by the daemon's reference classifier
//! (`exfw_daemon::policy::classify`), and the differential tests hold the two to each other.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
    },
    programs::XdpContext,
};
use exfw_common::{
    CLASS_PROTECTED, CLASS_TRUSTED, ClassKeyV4, ClassKeyV6, ClassValue, Counter, DropEvent,
    DropKey, FlowKey, FlowValue, FragKey, FragValue, GENERATION_BITS, MODE_AUDIT, PortKey,
    RULE_KEY_FIXED_BITS, Reason, RuleKey, RuleStats, RuleValue, SamplerState, Verdict, config,
    event_stat, family, limits, proto, reason_index, verdict_for,
};

#[map]
static EXFW_CONFIG: Array<u64> = Array::with_max_entries(config::SLOTS, 0);
#[map]
static EXFW_CLASS_V4: LpmTrie<ClassKeyV4, ClassValue> =
    LpmTrie::with_max_entries(limits::MAX_CLASS_PREFIXES, 0);
#[map]
static EXFW_CLASS_V6: LpmTrie<ClassKeyV6, ClassValue> =
    LpmTrie::with_max_entries(limits::MAX_CLASS_PREFIXES, 0);
#[map]
static EXFW_RULES: LpmTrie<RuleKey, RuleValue> =
    LpmTrie::with_max_entries(limits::MAX_RULE_ENTRIES, 0);
#[map]
static EXFW_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_FLOW_ENTRIES, 0);
#[map]
static EXFW_FRAGS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_FRAG_ENTRIES, 0);
#[map]
static EXFW_RULE_STATS: PerCpuArray<RuleStats> =
    PerCpuArray::with_max_entries(limits::MAX_RULES, 0);
#[map]
static EXFW_REASONS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(exfw_common::VERDICT_COUNT * exfw_common::REASON_SLOTS, 0);
#[map]
static EXFW_DROPS: PerCpuHashMap<DropKey, Counter> =
    PerCpuHashMap::with_max_entries(limits::MAX_DROP_KEYS, 0);
#[map]
static EXFW_EVSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event_stat::SLOTS, 0);
#[map]
static EXFW_SAMPLER: PerCpuArray<SamplerState> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EXFW_PORTS: HashMap<PortKey, u8> =
    HashMap::with_max_entries(limits::MAX_POLICY_PORTS * 2, 0);
/// Rule identity hash -> counter slot: written and read by the daemon only, pinned with the
/// other maps so counters keep their slot across reloads and restarts.
#[map]
static EXFW_RULE_IDS: HashMap<u64, u32> = HashMap::with_max_entries(limits::MAX_RULES * 2, 0);
#[map]
static EXFW_EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENT_RING_BYTES, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTS: u8 = 60;
const NS_PER_SEC: u64 = 1_000_000_000;
/// A flow entry younger than this is not rewritten by the packets that keep it alive.
const FLOW_REFRESH_NS: u64 = NS_PER_SEC;

/// Where a packet stands with respect to IP fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frag {
    None,
    First,
    Later,
}

/// What the parser learned of a packet.
struct Packet {
    family: u8,
    vlan: u16,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    /// Destination port, ICMP type, or 0: what rules match on.
    rule_port: u16,
    /// Flow-table ports (ICMP echo: the identifier on both sides).
    sport: u16,
    dport: u16,
    syn_only: bool,
    /// ICMP that must always pass (path-MTU discovery, neighbour discovery).
    icmp_essential: bool,
    frag: Frag,
    frag_id: u32,
    /// Protocol that identifies the datagram's fragments: the IPv4 protocol, or the next header
    /// named by the IPv6 fragment header (the same in every fragment).
    frag_proto: u8,
}

/// What the parser concluded before any policy lookup.
enum Parsed {
    NonIp,
    Ip,
}

#[xdp]
pub fn exfw_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let audit = config_get(config::MODE) == MODE_AUDIT;
    let generation = config_get(config::GENERATION) as u32;
    let mut pkt = Packet {
        family: 0,
        vlan: 0,
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
    let mut src_class = 0u16;
    let mut dst_class = 0u16;
    let mut rule: Option<u32> = None;
    let reason = match parse(&ctx, &mut pkt) {
        Err(reason) => reason,
        Ok(Parsed::NonIp) => Reason::NonIp,
        Ok(Parsed::Ip) if pkt.frag == Frag::Later => follow_fragment(&pkt, &mut rule),
        Ok(Parsed::Ip) => {
            let reason = decide(&pkt, generation, &mut src_class, &mut dst_class, &mut rule);
            if pkt.frag == Frag::First {
                remember_fragment(&pkt, reason, rule);
            }
            reason
        }
    };
    let verdict = verdict_for(reason, audit);
    count(&pkt, generation, reason, verdict, rule, dst_class, len);
    if verdict != Verdict::Pass {
        sample(&ctx, &pkt, reason, verdict, src_class, dst_class, len);
    }
    match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// The benchmark baseline: does nothing and passes.
#[xdp]
pub fn exfw_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn config_get(slot: u32) -> u64 {
    EXFW_CONFIG.get(slot).copied().unwrap_or(0)
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses L2, L3 and (for all but later fragments) L4 into `pkt`.
#[inline(always)]
fn parse(ctx: &XdpContext, pkt: &mut Packet) -> Result<Parsed, Reason> {
    let frame_len = ctx.data_end() - ctx.data();
    let mut ethertype = match load::<[u8; 2]>(ctx, 12) {
        Some(t) => be16(t),
        // Shorter than an Ethernet header: not IP.
        None => return Ok(Parsed::NonIp),
    };
    let mut off = ETH_HLEN;
    for depth in 0..=limits::MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        if depth == limits::MAX_VLAN_TAGS {
            return Err(Reason::VlanTooDeep);
        }
        let tag = load::<[u8; 4]>(ctx, off).ok_or(Reason::VlanTruncated)?;
        if depth == 0 {
            pkt.vlan = be16([tag[0], tag[1]]) & 0x0fff;
        }
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
    }
    let (l4, l4_end) = match ethertype {
        ETH_P_IP => parse_ipv4(ctx, pkt, off, frame_len)?,
        ETH_P_IPV6 => parse_ipv6(ctx, pkt, off, frame_len)?,
        _ => return Ok(Parsed::NonIp),
    };
    if pkt.frag != Frag::Later {
        parse_l4(ctx, pkt, l4, l4_end)?;
    }
    Ok(Parsed::Ip)
}

/// Returns the offsets of the transport header and of the end of the IP payload.
#[inline(always)]
fn parse_ipv4(
    ctx: &XdpContext,
    pkt: &mut Packet,
    l3: usize,
    frame_len: usize,
) -> Result<(usize, usize), Reason> {
    let h = load::<[u8; 20]>(ctx, l3).ok_or(Reason::Ipv4Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(Reason::Ipv4BadVersion);
    }
    let hlen = ((h[0] & 0x0f) as usize) * 4;
    if hlen < 20 || l3 + hlen > frame_len {
        return Err(Reason::Ipv4BadIhl);
    }
    let total = be16([h[2], h[3]]) as usize;
    if total < hlen || l3 + total > frame_len {
        return Err(Reason::Ipv4BadLength);
    }
    pkt.family = family::V4;
    pkt.proto = h[9];
    pkt.frag_proto = h[9];
    pkt.src[..4].copy_from_slice(&h[12..16]);
    pkt.dst[..4].copy_from_slice(&h[16..20]);
    let frag = be16([h[6], h[7]]);
    pkt.frag_id = be16([h[4], h[5]]) as u32;
    pkt.frag = if frag & 0x1fff != 0 {
        Frag::Later
    } else if frag & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::None
    };
    Ok((l3 + hlen, l3 + total))
}

/// Walks the bounded extension-header chain; returns the transport header and payload end.
#[inline(always)]
fn parse_ipv6(
    ctx: &XdpContext,
    pkt: &mut Packet,
    l3: usize,
    frame_len: usize,
) -> Result<(usize, usize), Reason> {
    let h = load::<[u8; 40]>(ctx, l3).ok_or(Reason::Ipv6Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(Reason::Ipv6BadVersion);
    }
    let payload = be16([h[4], h[5]]) as usize;
    let end = l3 + 40 + payload;
    if end > frame_len {
        return Err(Reason::Ipv6BadLength);
    }
    pkt.family = family::V6;
    pkt.src.copy_from_slice(&h[8..24]);
    pkt.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = l3 + 40;
    for i in 0..=limits::MAX_IPV6_EXT_HEADERS {
        let is_ext = matches!(
            next,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_FRAGMENT
        );
        if !is_ext {
            break;
        }
        if i == limits::MAX_IPV6_EXT_HEADERS {
            return Err(Reason::Ipv6ExtTooMany);
        }
        if next == IPV6_HOP_BY_HOP && i != 0 {
            return Err(Reason::Ipv6ExtOrder);
        }
        if next == IPV6_FRAGMENT {
            let f = load::<[u8; 8]>(ctx, off).ok_or(Reason::Ipv6ExtTruncated)?;
            if off + 8 > end {
                return Err(Reason::Ipv6ExtTruncated);
            }
            next = f[0];
            pkt.frag_proto = f[0];
            off += 8;
            let field = be16([f[2], f[3]]);
            if field & 0xfff8 != 0 {
                pkt.frag = Frag::Later;
                pkt.frag_id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                break;
            } else if field & 1 != 0 {
                pkt.frag = Frag::First;
                pkt.frag_id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
            }
        } else {
            let e = load::<[u8; 2]>(ctx, off).ok_or(Reason::Ipv6ExtTruncated)?;
            let elen = (e[1] as usize + 1) * 8;
            if off + elen > end {
                return Err(Reason::Ipv6ExtTruncated);
            }
            next = e[0];
            off += elen;
        }
    }
    pkt.proto = next;
    Ok((off, end))
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, pkt: &mut Packet, l4: usize, end: usize) -> Result<(), Reason> {
    let avail = end - l4;
    let short = if pkt.frag == Frag::First {
        Reason::FragmentTooShort
    } else {
        Reason::L4Truncated
    };
    match (pkt.proto, pkt.family) {
        (proto::TCP, _) => {
            if avail < 20 {
                return Err(short);
            }
            let t = load::<[u8; 20]>(ctx, l4).ok_or(short)?;
            pkt.sport = be16([t[0], t[1]]);
            pkt.dport = be16([t[2], t[3]]);
            pkt.rule_port = pkt.dport;
            let doff = ((t[12] >> 4) as usize) * 4;
            if doff < 20 {
                return Err(Reason::TcpBadHeader);
            }
            if doff > avail {
                return Err(if pkt.frag == Frag::First {
                    Reason::FragmentTooShort
                } else {
                    Reason::TcpBadHeader
                });
            }
            pkt.syn_only = t[13] & 0x12 == 0x02;
        }
        (proto::UDP, _) => {
            if avail < 8 {
                return Err(short);
            }
            let u = load::<[u8; 8]>(ctx, l4).ok_or(short)?;
            pkt.sport = be16([u[0], u[1]]);
            pkt.dport = be16([u[2], u[3]]);
            pkt.rule_port = pkt.dport;
            let ulen = be16([u[4], u[5]]) as usize;
            if ulen < 8 || (pkt.frag == Frag::None && ulen > avail) {
                return Err(Reason::UdpBadLength);
            }
        }
        (proto::ICMP, family::V4) | (proto::ICMPV6, family::V6) => {
            if avail < 8 {
                return Err(short);
            }
            let c = load::<[u8; 8]>(ctx, l4).ok_or(short)?;
            pkt.rule_port = c[0] as u16;
            let echo = if pkt.family == family::V4 {
                c[0] == 8 || c[0] == 0
            } else {
                c[0] == 128 || c[0] == 129
            };
            if echo {
                pkt.sport = be16([c[4], c[5]]);
                pkt.dport = pkt.sport;
            }
            pkt.icmp_essential = is_essential_icmp(pkt.family, c[0], c[1]);
        }
        _ => {}
    }
    Ok(())
}

/// ICMP fragmentation-needed, ICMPv6 packet-too-big and neighbour discovery.
#[inline(always)]
fn is_essential_icmp(fam: u8, icmp_type: u8, code: u8) -> bool {
    if fam == family::V4 {
        icmp_type == 3 && code == 4
    } else {
        icmp_type == 2 || (133..=137).contains(&icmp_type)
    }
}

#[inline(always)]
fn classify(fam: u8, generation: [u8; 4], addr: &[u8; 16]) -> ClassValue {
    let found = if fam == family::V4 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&addr[..4]);
        let key = Key::new(
            GENERATION_BITS + 32,
            ClassKeyV4 {
                generation,
                addr: a,
            },
        );
        EXFW_CLASS_V4.get(&key).copied()
    } else {
        let key = Key::new(
            GENERATION_BITS + 128,
            ClassKeyV6 {
                generation,
                addr: *addr,
            },
        );
        EXFW_CLASS_V6.get(&key).copied()
    };
    found.unwrap_or_default()
}

#[inline(always)]
fn timeout_for(p: u8) -> u64 {
    config_get(match p {
        proto::TCP => config::TCP_TIMEOUT_NS,
        proto::UDP => config::UDP_TIMEOUT_NS,
        _ => config::OTHER_TIMEOUT_NS,
    })
}

#[inline(always)]
fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        family: pkt.family,
        pad: [0; 2],
    }
}

/// The decision for a whole packet or a first fragment.
#[inline(always)]
fn decide(
    pkt: &Packet,
    generation: u32,
    src_class: &mut u16,
    dst_class: &mut u16,
    rule: &mut Option<u32>,
) -> Reason {
    if pkt.icmp_essential {
        return Reason::IcmpEssential;
    }
    let generation = generation.to_be_bytes();
    let src = classify(pkt.family, generation, &pkt.src);
    let dst = classify(pkt.family, generation, &pkt.dst);
    *src_class = src.class;
    *dst_class = dst.class;
    if src.flags & dst.flags & CLASS_TRUSTED != 0 {
        return Reason::Trusted;
    }
    let key = flow_key(pkt);
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a stale time.
    if let Some(flow) = unsafe { EXFW_FLOWS.get(&key) } {
        let seen = flow.last_seen_ns;
        if unsafe { bpf_ktime_get_ns() }.wrapping_sub(seen) < timeout_for(pkt.proto) {
            return Reason::Flow;
        }
    }
    let rule_key = Key::new(
        RULE_KEY_FIXED_BITS + 16,
        RuleKey {
            generation,
            dst_class: dst.class.to_be_bytes(),
            src_class: src.class.to_be_bytes(),
            proto: pkt.proto,
            port: pkt.rule_port.to_be_bytes(),
        },
    );
    if let Some(found) = EXFW_RULES.get(&rule_key) {
        let id = found.rule;
        *rule = Some(id);
        remember_flow(pkt, id);
        return Reason::Rule;
    }
    if (src.flags | dst.flags) & CLASS_PROTECTED == 0 {
        return Reason::Transit;
    }
    Reason::Policy
}

/// Records the tuple the reply to `pkt` will carry, unless a fresh entry is already there.
#[inline(always)]
fn remember_flow(pkt: &Packet, rule: u32) {
    let reply = FlowKey {
        src: pkt.dst,
        dst: pkt.src,
        sport: pkt.dport,
        dport: pkt.sport,
        proto: pkt.proto,
        family: pkt.family,
        pad: [0; 2],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: read-only copy of a u64.
    if let Some(existing) = unsafe { EXFW_FLOWS.get(&reply) } {
        if now.wrapping_sub(existing.last_seen_ns) < FLOW_REFRESH_NS {
            return;
        }
    }
    let value = FlowValue {
        last_seen_ns: now,
        rule,
        pad: 0,
    };
    if EXFW_FLOWS.insert(&reply, &value, 0).is_err() {
        bump_event_stat(event_stat::FLOW_INSERT_FAILED);
    }
}

#[inline(always)]
fn frag_key(pkt: &Packet) -> FragKey {
    FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.frag_proto,
        family: pkt.family,
        pad: [0; 2],
    }
}

#[inline(always)]
fn remember_fragment(pkt: &Packet, reason: Reason, rule: Option<u32>) {
    let value = FragValue {
        created_ns: unsafe { bpf_ktime_get_ns() },
        reason: reason as u8,
        has_rule: rule.is_some() as u8,
        pad: [0; 2],
        rule: rule.unwrap_or(0),
    };
    let _ = EXFW_FRAGS.insert(&frag_key(pkt), &value, 0);
}

#[inline(always)]
fn follow_fragment(pkt: &Packet, rule: &mut Option<u32>) -> Reason {
    // SAFETY: the value is copied out at once.
    let cached = match unsafe { EXFW_FRAGS.get(&frag_key(pkt)) } {
        Some(v) => *v,
        None => return Reason::FragmentNoEntry,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(cached.created_ns) >= config_get(config::FRAG_TIMEOUT_NS) {
        return Reason::FragmentNoEntry;
    }
    if cached.reason >= exfw_common::FIRST_DROP_REASON {
        return Reason::FragmentDropped;
    }
    if cached.has_rule != 0 {
        *rule = Some(cached.rule);
    }
    Reason::FragmentPass
}

#[inline(always)]
fn bump_event_stat(slot: u32) {
    if let Some(v) = EXFW_EVSTATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn count(
    pkt: &Packet,
    generation: u32,
    reason: Reason,
    verdict: Verdict,
    rule: Option<u32>,
    dst_class: u16,
    len: u64,
) {
    if let Some(c) = EXFW_REASONS.get_ptr_mut(reason_index(verdict, reason)) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    if let Some(id) = rule {
        if let Some(s) = EXFW_RULE_STATS.get_ptr_mut(id) {
            // SAFETY: per-CPU slot.
            unsafe {
                (*s).packets += 1;
                (*s).bytes += len;
                if pkt.syn_only && pkt.proto == proto::TCP && reason == Reason::Rule {
                    (*s).new_connections += 1;
                }
            }
        }
    }
    if reason == Reason::Policy {
        let named = PortKey {
            generation,
            port: pkt.rule_port,
            proto: pkt.proto,
            pad: 0,
        };
        // SAFETY: presence check only.
        let other = unsafe { EXFW_PORTS.get(&named) }.is_none();
        let key = DropKey {
            dst_class,
            port: if other { 0 } else { pkt.rule_port },
            proto: pkt.proto,
            verdict: verdict as u8,
            other: other as u8,
            pad: 0,
        };
        match EXFW_DROPS.get_ptr_mut(&key) {
            // SAFETY: per-CPU value.
            Some(c) => unsafe {
                (*c).packets += 1;
                (*c).bytes += len;
            },
            None => {
                let first = Counter {
                    packets: 1,
                    bytes: len,
                };
                if EXFW_DROPS.insert(&key, &first, BPF_NOEXIST as u64).is_err() {
                    bump_event_stat(event_stat::DROP_STATS_FULL);
                }
            }
        }
    }
}

/// Emits a drop event if this CPU's token bucket allows it.
#[inline(always)]
fn sample(
    ctx: &XdpContext,
    pkt: &Packet,
    reason: Reason,
    verdict: Verdict,
    src_class: u16,
    dst_class: u16,
    len: u64,
) {
    let rate = config_get(config::EVENTS_PER_SEC);
    if rate == 0 {
        return;
    }
    let burst = config_get(config::EVENTS_BURST).max(1).min(1_000_000) * NS_PER_SEC;
    let Some(state) = EXFW_SAMPLER.get_ptr_mut(0) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot.
    let st = unsafe { &mut *state };
    let elapsed = now.wrapping_sub(st.last_ns);
    let refill = if elapsed >= NS_PER_SEC {
        burst
    } else {
        elapsed * rate.min(1_000_000)
    };
    st.tokens = (st.tokens + refill).min(burst);
    st.last_ns = now;
    if st.tokens < NS_PER_SEC {
        bump_event_stat(event_stat::SUPPRESSED);
        return;
    }
    st.tokens -= NS_PER_SEC;
    match EXFW_EVENTS.reserve::<DropEvent>(0) {
        Some(mut entry) => {
            entry.write(DropEvent {
                timestamp_ns: now,
                src: pkt.src,
                dst: pkt.dst,
                sport: pkt.sport,
                dport: pkt.rule_port,
                proto: pkt.proto,
                family: pkt.family,
                reason: reason as u8,
                verdict: verdict as u8,
                src_class,
                dst_class,
                ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
                len: len as u32,
                vlan: pkt.vlan,
                pad: [0; 10],
            });
            entry.submit(0);
            bump_event_stat(event_stat::SAMPLED);
        }
        None => bump_event_stat(event_stat::LOST),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
