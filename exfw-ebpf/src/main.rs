//! The exfw XDP program: parse -> classify -> validate the source -> decide -> count -> sample.
//!
//! It holds no policy of its own: every decision is a lookup in maps the daemon wrote. The
//! decision order and every reason code are mirrored by the daemon's reference classifier
//! (`exfw_daemon::policy::classify`), and the differential tests hold the two to each other.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_NOEXIST, bpf_fib_lookup as FibParams,
        xdp_action, xdp_md,
    },
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key,
    },
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use exfw_common::{
    CLASS_LOCAL, CLASS_PROTECTED, CLASS_TRUSTED, ClassKeyV4, ClassKeyV6, ClassValue, Counter,
    DropEvent, DropKey, FLOW_REFRESH_NS, FlowKey, FlowValue, FragKey, FragValue, GENERATION_BITS,
    IFACE_ACCEPTS_EXTERNAL, IFACE_REVERSE_PATH, IfaceKey, IfaceValue, MODE_AUDIT, PortKey,
    RULE_KEY_FIXED_BITS, Reason, RuleKey, RuleStats, RuleValue, SamplerState, SpoofKey,
    TCP_CLOSE_WINDOW_AHEAD, TCP_SEQ_TRACK_STEP, Verdict, config, direction, event_stat, family,
    flow_state, icmp, in_close_window, is_link_local_v6, is_link_scoped_destination,
    is_on_link_only_source, limits, proto, reason_index, verdict_for, wire,
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
static EXFW_IFACES: HashMap<IfaceKey, IfaceValue> =
    HashMap::with_max_entries(limits::MAX_INTERFACES * 2, 0);
#[map]
static EXFW_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_FLOW_ENTRIES, 0);
#[map]
static EXFW_PENDING: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_PENDING_ENTRIES, 0);
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
static EXFW_SPOOFED: PerCpuHashMap<SpoofKey, Counter> =
    PerCpuHashMap::with_max_entries(limits::MAX_SPOOF_KEYS, 0);
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
/// Class name hash -> class id: written and read by the daemon only, pinned so a class keeps
/// its id (and its drop counters their meaning) across reloads and restarts. Allocated as
/// used: most policies have a handful of classes.
#[map]
static EXFW_CLASS_IDS: HashMap<u64, u32> =
    HashMap::with_max_entries(limits::MAX_CLASSES, BPF_F_NO_PREALLOC);
/// Per-CPU scratch space for the parsed packet and an ICMP error's embedded header (not
/// pinned, never read by the daemon).
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What does not fit on the BPF stack (512 bytes for the whole call chain).
struct Scratch {
    pkt: Packet,
    inner: Embedded,
    /// The route query of the reverse-path and ICMP-direction checks.
    fib: FibParams,
}
#[map]
static EXFW_EVENTS: RingBuf = RingBuf::with_byte_size(limits::EVENT_RING_BYTES, 0);

const NS_PER_SEC: u64 = 1_000_000_000;
/// [`Decision::rule`] when no rule is counted.
const NO_RULE: u32 = u32::MAX;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

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
    /// IPv4 TTL or IPv6 hop limit.
    hop_limit: u8,
    /// Destination port, ICMP type, or 0: what rules match on.
    rule_port: u16,
    /// Connection ports (ICMP echo: the identifier on both sides).
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    seq: u32,
    ack: u32,
    icmp_type: u8,
    icmp_code: u8,
    /// Offset of the ICMP header and end of the IP payload (for an error's embedded header).
    l4: usize,
    l4_end: usize,
    frag: Frag,
    frag_id: u32,
    /// Protocol that identifies the datagram's fragments: the IPv4 protocol, or the next header
    /// named by the IPv6 fragment header (the same in every fragment).
    frag_proto: u8,
    /// The interface the frame arrived on.
    ifindex: u32,
}

impl Packet {
    fn is_icmp(&self) -> bool {
        (self.family == family::V4 && self.proto == proto::ICMP)
            || (self.family == family::V6 && self.proto == proto::ICMPV6)
    }
}

/// What the parser concluded before any policy lookup.
enum Parsed {
    NonIp,
    Ip,
}

/// The decision with what it is counted against.
struct Decision {
    reason: Reason,
    verdict: Verdict,
    src_class: u16,
    dst_class: u16,
    /// The rule counted for the packet, or [`NO_RULE`]. Not an `Option`: its payload would be
    /// left uninitialised on the stack, which verifiers before Linux 5.12 refuse to read.
    rule: u32,
    /// The packet completed a connection's handshake.
    confirmed: bool,
    ifindex: u32,
    generation: u32,
    len: u64,
}

#[xdp]
pub fn exfw_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let audit = config_get(config::MODE) == MODE_AUDIT;
    let generation = config_get(config::GENERATION) as u32;
    // SAFETY: the context the kernel passed.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // The parsed packet lives in a per-CPU scratch slot: the BPF stack (512 bytes for the
    // whole call chain) cannot hold it beside the decision's keys. XDP never nests on a CPU.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's slot, used by this invocation only.
    let scratch = unsafe { &mut *scratch };
    let pkt = &mut scratch.pkt;
    *pkt = Packet {
        family: 0,
        vlan: 0,
        src: [0; 16],
        dst: [0; 16],
        proto: 0,
        hop_limit: 0,
        rule_port: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        seq: 0,
        ack: 0,
        icmp_type: 0,
        icmp_code: 0,
        l4: 0,
        l4_end: 0,
        frag: Frag::None,
        frag_id: 0,
        frag_proto: 0,
        ifindex,
    };
    let mut d = Decision {
        reason: Reason::NonIp,
        verdict: Verdict::Pass,
        src_class: 0,
        dst_class: 0,
        rule: NO_RULE,
        confirmed: false,
        ifindex,
        generation,
        len,
    };
    let reason = match parse(ctx.ctx, pkt) {
        Err(reason) => reason,
        Ok(Parsed::NonIp) => Reason::NonIp,
        Ok(Parsed::Ip) => match interface(generation, ifindex) {
            None => Reason::UnknownInterface,
            Some(_) if pkt.frag == Frag::Later => follow_fragment(pkt, ifindex, &mut d),
            Some(iface) => {
                let reason = decide(&ctx, scratch, generation, iface, ifindex, &mut d);
                if scratch.pkt.frag == Frag::First {
                    remember_fragment(&scratch.pkt, reason, d.rule, ifindex);
                }
                reason
            }
        },
    };
    d.reason = reason;
    d.verdict = verdict_for(reason, audit);
    count(&scratch.pkt, &d);
    if d.verdict != Verdict::Pass {
        sample(&scratch.pkt, &d);
    }
    match d.verdict {
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
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The packet's bounds, read from the context inside the subprogram that uses them: a packet
/// pointer handed across a BPF-to-BPF call would be widened with shifts the verifier refuses.
struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    fn of(raw: *mut xdp_md) -> Frame {
        // SAFETY: the context the kernel passed; volatile keeps the loads in this function.
        unsafe {
            Frame {
                start: core::ptr::read_volatile(core::ptr::addr_of!((*raw).data)) as usize,
                end: core::ptr::read_volatile(core::ptr::addr_of!((*raw).data_end)) as usize,
            }
        }
    }
}

#[inline(always)]
fn load<T: Copy>(f: &Frame, off: usize) -> Option<T> {
    if f.start + off + size_of::<T>() > f.end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { core::ptr::read_unaligned((f.start + off) as *const T) })
}

/// One byte at `off` (at least 1), checked as `base + 2 > end` with `base = off - 1` hidden
/// from the optimiser: it would turn `off + 1 > end` into `off >= end`, a form from which the
/// verifier learns no readable range when the offset is variable.
#[inline(always)]
fn load_byte(f: &Frame, off: usize) -> Option<u8> {
    let base = core::hint::black_box(f.start + off - 1);
    if base + 2 > f.end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { *((base + 1) as *const u8) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// Parses L2, L3 and (for all but later fragments) L4 into `pkt`. A subprogram of its own
/// (not inlined) so its stack frame is not added to the decision's.
#[inline(never)]
fn parse(raw: *mut xdp_md, pkt: &mut Packet) -> Result<Parsed, Reason> {
    let ctx = &Frame::of(raw);
    let frame_len = ctx.end - ctx.start;
    let mut ethertype = match load::<[u8; 2]>(ctx, 12) {
        Some(t) => be16(t),
        // Shorter than an Ethernet header: not IP.
        None => return Ok(Parsed::NonIp),
    };
    let mut off = wire::ETH_HLEN;
    for depth in 0..=limits::MAX_VLAN_TAGS {
        if ethertype != wire::ETH_P_8021Q && ethertype != wire::ETH_P_8021AD {
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
        wire::ETH_P_IP => parse_ipv4(raw, ctx, pkt, off, frame_len)?,
        wire::ETH_P_IPV6 => parse_ipv6(ctx, pkt, off, frame_len)?,
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
    raw: *mut xdp_md,
    ctx: &Frame,
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
    if hlen > 20 {
        pkt.l4 = l3 + hlen;
        check_ipv4_options(raw, pkt, l3 + 20)?;
    }
    pkt.family = family::V4;
    pkt.proto = h[9];
    pkt.frag_proto = h[9];
    pkt.hop_limit = h[8];
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

/// Walks the IPv4 options from `start` to the header's end (`pkt.l4`): source routes and
/// malformed lengths drop, and so does a header with more options than
/// `limits::MAX_IPV4_OPTIONS`. A subprogram of its own, so the verifier walks its loop once per
/// call rather than once per path through the parser.
#[inline(never)]
fn check_ipv4_options(raw: *mut xdp_md, pkt: &Packet, start: usize) -> Result<(), Reason> {
    let ctx = &Frame::of(raw);
    // The header's end is read back from the scratch map, not passed in a register: the
    // verifier then knows only its range, not that it is a multiple of four plus the L2
    // length. With that knowledge 6.12's verifier follows the impossible branches of the
    // byte-wise walk below (an end of 43, say) with corrupted bounds and rejects the program.
    // SAFETY: a field of the per-CPU scratch value; volatile keeps the load.
    let end = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(pkt.l4)) };
    // Offsets of one header: the verifier needs them bounded.
    if end > 512 {
        return Err(Reason::Ipv4BadOptions);
    }
    let mut off = start;
    for _ in 0..limits::MAX_IPV4_OPTIONS {
        if off >= end {
            return Ok(());
        }
        let kind = load_byte(ctx, off).ok_or(Reason::Ipv4BadOptions)?;
        match kind {
            wire::IPV4_OPT_END => return Ok(()),
            wire::IPV4_OPT_NOP => off += 1,
            wire::IPV4_OPT_LSRR | wire::IPV4_OPT_SSRR => return Err(Reason::Ipv4SourceRoute),
            _ => {
                if off + 1 >= end {
                    return Err(Reason::Ipv4BadOptions);
                }
                let len = load_byte(ctx, off + 1).ok_or(Reason::Ipv4BadOptions)? as usize;
                if len < 2 || off + len > end {
                    return Err(Reason::Ipv4BadOptions);
                }
                off += len;
            }
        }
    }
    if off >= end {
        Ok(())
    } else {
        Err(Reason::Ipv4BadOptions)
    }
}

/// Walks the bounded extension-header chain; returns the transport header and payload end.
#[inline(always)]
fn parse_ipv6(
    ctx: &Frame,
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
    pkt.hop_limit = h[7];
    pkt.src.copy_from_slice(&h[8..24]);
    pkt.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = l3 + 40;
    for i in 0..=limits::MAX_IPV6_EXT_HEADERS {
        let is_ext = matches!(
            next,
            wire::IPV6_HOP_BY_HOP | wire::IPV6_ROUTING | wire::IPV6_DEST_OPTS | wire::IPV6_FRAGMENT
        );
        if !is_ext {
            break;
        }
        if i == limits::MAX_IPV6_EXT_HEADERS {
            return Err(Reason::Ipv6ExtTooMany);
        }
        if next == wire::IPV6_HOP_BY_HOP && i != 0 {
            return Err(Reason::Ipv6ExtOrder);
        }
        if next == wire::IPV6_FRAGMENT {
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
                pkt.frag_id = be32([f[4], f[5], f[6], f[7]]);
                break;
            } else if field & 1 != 0 {
                pkt.frag = Frag::First;
                pkt.frag_id = be32([f[4], f[5], f[6], f[7]]);
            }
        } else {
            let e = load::<[u8; 4]>(ctx, off).ok_or(Reason::Ipv6ExtTruncated)?;
            let elen = (e[1] as usize + 1) * 8;
            if off + elen > end {
                return Err(Reason::Ipv6ExtTruncated);
            }
            if next == wire::IPV6_ROUTING && e[2] == 0 {
                return Err(Reason::Ipv6RoutingType0);
            }
            next = e[0];
            off += elen;
        }
    }
    pkt.proto = next;
    Ok((off, end))
}

#[inline(always)]
fn parse_l4(ctx: &Frame, pkt: &mut Packet, l4: usize, end: usize) -> Result<(), Reason> {
    let avail = end - l4;
    let short = if pkt.frag == Frag::First {
        Reason::FragmentTooShort
    } else {
        Reason::L4Truncated
    };
    pkt.l4 = l4;
    pkt.l4_end = end;
    match pkt.proto {
        proto::TCP => {
            if avail < 20 {
                return Err(short);
            }
            let t = load::<[u8; 20]>(ctx, l4).ok_or(short)?;
            pkt.sport = be16([t[0], t[1]]);
            pkt.dport = be16([t[2], t[3]]);
            pkt.rule_port = pkt.dport;
            pkt.seq = be32([t[4], t[5], t[6], t[7]]);
            pkt.ack = be32([t[8], t[9], t[10], t[11]]);
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
            pkt.tcp_flags = t[13];
        }
        proto::UDP => {
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
        _ if pkt.is_icmp() => {
            if avail < 8 {
                return Err(short);
            }
            let c = load::<[u8; 8]>(ctx, l4).ok_or(short)?;
            pkt.icmp_type = c[0];
            pkt.icmp_code = c[1];
            pkt.rule_port = c[0] as u16;
            if icmp::is_echo_request(pkt.family, c[0]) || icmp::is_echo_reply(pkt.family, c[0]) {
                pkt.sport = be16([c[4], c[5]]);
                pkt.dport = pkt.sport;
            }
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn interface(generation: u32, ifindex: u32) -> Option<IfaceValue> {
    // SAFETY: the value is copied out at once.
    unsafe {
        EXFW_IFACES.get(&IfaceKey {
            generation,
            ifindex,
        })
    }
    .copied()
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
fn rule_lookup(generation: [u8; 4], dst: u16, src: u16, protocol: u8, port: u16) -> Option<u32> {
    let key = Key::new(
        RULE_KEY_FIXED_BITS + 16,
        RuleKey {
            generation,
            dst_class: dst.to_be_bytes(),
            src_class: src.to_be_bytes(),
            proto: protocol,
            port: port.to_be_bytes(),
        },
    );
    EXFW_RULES.get(&key).map(|v| v.rule)
}

/// How long an entry in `state` lives without traffic.
#[inline(always)]
fn lifetime(state: u8, p: u8) -> u64 {
    if state < flow_state::OPEN {
        return config_get(config::PENDING_TIMEOUT_NS);
    }
    let idle = config_get(match p {
        proto::TCP => config::TCP_TIMEOUT_NS,
        proto::UDP => config::UDP_TIMEOUT_NS,
        _ => config::OTHER_TIMEOUT_NS,
    });
    let closing = match state {
        flow_state::CLOSING => config_get(config::TCP_FIN_TIMEOUT_NS),
        flow_state::RESET => config_get(config::TCP_RST_TIMEOUT_NS),
        _ => idle,
    };
    if closing < idle { closing } else { idle }
}

/// The decision for a whole packet or a first fragment, in the documented order.
#[inline(always)]
fn decide(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    generation: u32,
    iface: IfaceValue,
    ifindex: u32,
    d: &mut Decision,
) -> Reason {
    let pkt = &scratch.pkt;
    let generation = generation.to_be_bytes();
    let src = classify(pkt.family, generation, &pkt.src);
    let dst = classify(pkt.family, generation, &pkt.dst);
    d.src_class = src.class;
    d.dst_class = dst.class;
    if pkt.is_icmp() && icmp::is_neighbour_discovery(pkt.family, pkt.icmp_type) {
        return neighbour_discovery(pkt, dst.flags & CLASS_LOCAL != 0);
    }
    let validate = !is_on_link_only_source(pkt.family, &pkt.src);
    if validate && !accepted(&src, iface) {
        return Reason::SpoofedSource;
    }
    let now = now_ns();
    let (key, side) = exfw_common::flow_key(
        pkt.family, pkt.proto, &pkt.src, pkt.sport, &pkt.dst, pkt.dport,
    );
    // A confirmed connection on the interfaces it was confirmed on: its source was validated
    // when the connection opened, so the reverse-path lookup is not repeated.
    if let Some(flow) = EXFW_FLOWS.get_ptr_mut(&key) {
        // SAFETY: a pointer into the map's value; concurrent updates can at worst lose a refresh.
        let flow = unsafe { &mut *flow };
        if follow_flow(flow, pkt, side, ifindex, now) {
            d.rule = flow.rule;
            return Reason::Flow;
        }
        // A new connection on the 4-tuple of one that is closing replaces it: otherwise its
        // handshake would ride the old entry and live only as long as a closing connection.
        if opens(pkt)
            && pkt.proto == proto::TCP
            && flow.state >= flow_state::CLOSING
            && direction_of(flow.opener, side) == direction::ORIGINAL
        {
            let _ = EXFW_FLOWS.remove(&key);
        }
    }
    if validate
        && iface.flags & IFACE_REVERSE_PATH != 0
        && !is_link_scoped_destination(pkt.family, &pkt.dst)
    {
        // The route back to the source: from the destination, ports swapped.
        let p = &scratch.pkt;
        fill_route_query(
            &mut scratch.fib,
            p.family,
            p.proto,
            &p.src,
            &p.dst,
            p.sport,
            p.dport,
        );
        if !route_leaves_via(ctx.ctx, &mut scratch.fib, ifindex) {
            return Reason::SpoofedSource;
        }
    }
    let pkt = &scratch.pkt;
    if dst.flags & CLASS_LOCAL != 0 {
        return Reason::Local;
    }
    if src.flags & dst.flags & CLASS_TRUSTED != 0 {
        return Reason::Trusted;
    }
    if may_advance(pkt) {
        if let Some(pending) = EXFW_PENDING.get_ptr_mut(&key) {
            // SAFETY: as above.
            let pending = unsafe { &mut *pending };
            let step = advance(pending, pkt, side, ifindex, now);
            if step != Step::None {
                d.rule = pending.rule;
                if step == Step::Confirmed {
                    confirm(&key, pending, pkt, ifindex, now);
                    d.confirmed = true;
                }
                return Reason::Flow;
            }
        }
    }
    if let Some(rule) = rule_lookup(generation, dst.class, src.class, pkt.proto, pkt.rule_port) {
        d.rule = rule;
        if opens(pkt) {
            open(&key, side, pkt, rule, ifindex, now);
        }
        return Reason::Rule;
    }
    if (src.flags | dst.flags) & CLASS_PROTECTED == 0 {
        return Reason::Transit;
    }
    if pkt.is_icmp() && icmp::is_error(pkt.family, pkt.icmp_type) {
        let reverse_path = iface.flags & IFACE_REVERSE_PATH != 0;
        return if icmp_error_related(ctx.ctx, scratch, generation, now, reverse_path) {
            Reason::IcmpRelated
        } else {
            Reason::IcmpErrorUnmatched
        };
    }
    Reason::Policy
}

/// RFC 4861: sent on the link (hop limit 255), code 0, not fragmented, router advertisements
/// and redirects only from link-local addresses, and addressed to something on the link (a
/// link-scoped address) or to the gateway itself: neighbour discovery is never forwarded.
#[inline(always)]
fn neighbour_discovery(pkt: &Packet, to_gateway: bool) -> Reason {
    let valid = pkt.hop_limit == 255
        && pkt.icmp_code == 0
        && pkt.frag == Frag::None
        && (!icmp::needs_link_local_source(pkt.icmp_type) || is_link_local_v6(&pkt.src))
        && (to_gateway || is_link_scoped_destination(pkt.family, &pkt.dst));
    if valid {
        Reason::NeighbourDiscovery
    } else {
        Reason::NeighbourDiscoveryInvalid
    }
}

/// The interface accepts the source's group.
#[inline(always)]
fn accepted(src: &ClassValue, iface: IfaceValue) -> bool {
    if src.class == exfw_common::CLASS_EXTERNAL {
        iface.flags & IFACE_ACCEPTS_EXTERNAL != 0
    } else {
        (src.ingress >> (iface.slot & 63)) & 1 != 0
    }
}

/// Fills `q` with the query for the route a packet from (`from`, `from_port`) to (`to`,
/// `to_port`) takes: what the reverse-path check (the route back to a source) and the ICMP
/// direction check (the route towards an error's embedded destination) ask.
#[inline(always)]
fn fill_route_query(
    q: &mut FibParams,
    fam: u8,
    protocol: u8,
    to: &[u8; 16],
    from: &[u8; 16],
    to_port: u16,
    from_port: u16,
) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid request to fill in.
    *q = unsafe { core::mem::zeroed() };
    q.l4_protocol = protocol;
    q.sport = from_port.to_be();
    q.dport = to_port.to_be();
    if fam == family::V4 {
        q.family = AF_INET;
        q.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([from[0], from[1], from[2], from[3]]);
        q.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([to[0], to[1], to[2], to[3]]);
    } else {
        q.family = AF_INET6;
        // SAFETY: [u8; 16] and [u32; 4] have the same size; the kernel reads network order.
        q.__bindgen_anon_3.ipv6_src = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*from) };
        // SAFETY: as above.
        q.__bindgen_anon_4.ipv6_dst = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*to) };
    }
}

/// The kernel's forwarding route for the query in `q`, as a packet arriving on `ifindex`,
/// leaves through `ifindex` (success, or no neighbour entry yet). A subprogram of its own.
#[inline(never)]
fn route_leaves_via(raw: *mut xdp_md, q: &mut FibParams, ifindex: u32) -> bool {
    q.ifindex = ifindex;
    let size = size_of::<FibParams>() as i32;
    // Only the route matters, not the next hop's MAC address: skipping the neighbour lookup
    // halves the helper's cost (measured: 300 to 150 ns; Linux 6.5 and later).
    // SAFETY: raw is the XDP context; q points into this CPU's scratch slot.
    let mut rc = unsafe { bpf_fib_lookup(raw as *mut _, q, size, BPF_FIB_LOOKUP_SKIP_NEIGH) };
    if rc < 0 {
        // Older kernels refuse the flag (-EINVAL, before reading the query): ask without it.
        diagnose(DIAG_FIB_FALLBACK);
        q.ifindex = ifindex;
        // SAFETY: as above.
        rc = unsafe { bpf_fib_lookup(raw as *mut _, q, size, 0) };
    }
    // Kernels before "bpf: Always return target ifindex in bpf_fib_lookup" leave the query's
    // interface (the ingress) in place when the next hop has no neighbour entry: that answer
    // would pass any source, so there it fails the check.
    let named = rc == FIB_SUCCESS
        || (rc == FIB_NO_NEIGH && config_get(config::FIB_NO_NEIGH_NAMES_IFINDEX) != 0);
    named && q.ifindex == ifindex
}

/// Which way a packet travels in a connection `opener` started.
#[inline(always)]
fn direction_of(opener: u8, side: u8) -> usize {
    if side == opener {
        direction::ORIGINAL
    } else {
        direction::REPLY
    }
}

/// True when the packet belongs to the confirmed connection `flow`; refreshes it and follows
/// FIN and RST.
#[inline(always)]
fn follow_flow(flow: &mut FlowValue, pkt: &Packet, side: u8, ifindex: u32, now: u64) -> bool {
    let dir = direction_of(flow.opener, side) & 1;
    if now.wrapping_sub(flow.last_seen_ns) >= lifetime(flow.state, pkt.proto) {
        return false;
    }
    if flow.ifindex[dir] != ifindex {
        return false;
    }
    if pkt.proto == proto::TCP {
        let f = pkt.tcp_flags;
        // A SYN never rides a connection: only the responder's repeated SYN-ACK does.
        if f & wire::TCP_SYN != 0 && (f & wire::TCP_ACK == 0 || dir != direction::REPLY) {
            return false;
        }
        let ahead = pkt.seq.wrapping_sub(flow.seq[dir]);
        if f & wire::TCP_RST == 0 && (TCP_SEQ_TRACK_STEP..TCP_CLOSE_WINDOW_AHEAD).contains(&ahead) {
            // Keep the recorded sequence number near the connection's: only packets already
            // inside the window move it, so a blind sender cannot.
            flow.seq[dir] = pkt.seq;
        }
        if f & (wire::TCP_RST | wire::TCP_FIN) != 0 && in_close_window(pkt.seq, flow.seq[dir]) {
            let next = if f & wire::TCP_RST != 0 {
                flow_state::RESET
            } else if flow.state == flow_state::OPEN {
                flow_state::CLOSING
            } else {
                flow.state
            };
            if next != flow.state {
                flow.state = next;
                flow.last_seen_ns = now;
            }
        }
    } else if pkt.is_icmp() {
        let request = icmp::is_echo_request(pkt.family, pkt.icmp_type);
        let reply = icmp::is_echo_reply(pkt.family, pkt.icmp_type);
        if !((request && dir == direction::ORIGINAL) || (reply && dir == direction::REPLY)) {
            return false;
        }
    }
    if now.wrapping_sub(flow.last_seen_ns) >= FLOW_REFRESH_NS {
        flow.last_seen_ns = now;
    }
    true
}

/// A step of an unconfirmed connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Not a step of this connection.
    None,
    /// A valid step that does not yet confirm it (SYN-ACK, refusal).
    Advanced,
    /// The step that confirms it.
    Confirmed,
}

/// Packets that can answer or complete an unconfirmed connection.
#[inline(always)]
fn may_advance(pkt: &Packet) -> bool {
    match pkt.proto {
        proto::TCP => pkt.tcp_flags & (wire::TCP_ACK | wire::TCP_RST) != 0,
        proto::UDP => true,
        _ if pkt.is_icmp() => icmp::is_echo_reply(pkt.family, pkt.icmp_type),
        _ => true,
    }
}

/// Advances an unconfirmed connection: TCP SYN-ACK acknowledging the opener's SYN, then the
/// opener's ACK of the SYN-ACK confirms; for the others, the responder's reply confirms.
#[inline(always)]
fn advance(p: &mut FlowValue, pkt: &Packet, side: u8, ifindex: u32, now: u64) -> Step {
    let dir = direction_of(p.opener, side);
    if now.wrapping_sub(p.last_seen_ns) >= lifetime(p.state, pkt.proto) {
        return Step::None;
    }
    if pkt.proto != proto::TCP {
        return if dir == direction::REPLY {
            Step::Confirmed
        } else {
            Step::None
        };
    }
    let f = pkt.tcp_flags;
    let syn = f & wire::TCP_SYN != 0;
    let ack = f & wire::TCP_ACK != 0;
    let rst = f & wire::TCP_RST != 0;
    if dir == direction::REPLY {
        let acks_syn = ack && pkt.ack == p.seq[direction::ORIGINAL].wrapping_add(1);
        let same_way = p.state == flow_state::OPENED || p.ifindex[direction::REPLY] == ifindex;
        if syn && acks_syn && !rst && same_way {
            p.state = flow_state::ANSWERED;
            p.seq[direction::REPLY] = pkt.seq;
            p.ifindex[direction::REPLY] = ifindex;
            p.last_seen_ns = now;
            return Step::Advanced;
        }
        if rst && acks_syn && !syn && p.state == flow_state::OPENED {
            // The responder refuses the connection: the opener must hear it.
            return Step::Advanced;
        }
        return Step::None;
    }
    let acks_syn_ack = ack && pkt.ack == p.seq[direction::REPLY].wrapping_add(1);
    if p.state == flow_state::ANSWERED
        && !syn
        && !rst
        && acks_syn_ack
        && p.ifindex[direction::ORIGINAL] == ifindex
    {
        return Step::Confirmed;
    }
    Step::None
}

/// Moves a connection from the unconfirmed table to the confirmed one.
#[inline(always)]
fn confirm(key: &FlowKey, p: &FlowValue, pkt: &Packet, ifindex: u32, now: u64) {
    let mut value = FlowValue {
        last_seen_ns: now,
        rule: p.rule,
        state: flow_state::OPEN,
        opener: p.opener,
        pad: [0; 2],
        ifindex: p.ifindex,
        seq: [0; 2],
    };
    if pkt.proto == proto::TCP {
        value.seq = [pkt.seq, p.seq[direction::REPLY].wrapping_add(1)];
    } else {
        value.ifindex[direction::REPLY] = ifindex;
    }
    if EXFW_FLOWS.insert(key, &value, 0).is_err() {
        let slot = event_stat::FLOW_INSERT_FAILED;
        bump_event_stat(slot);
        diagnose(slot);
    }
    let _ = EXFW_PENDING.remove(key);
}

/// Packets that open a connection when a rule admits them: TCP SYN without ACK, UDP and other
/// protocols' datagrams, ICMP echo requests.
#[inline(always)]
fn opens(pkt: &Packet) -> bool {
    match pkt.proto {
        proto::TCP => {
            pkt.tcp_flags & (wire::TCP_SYN | wire::TCP_ACK | wire::TCP_RST | wire::TCP_FIN)
                == wire::TCP_SYN
        }
        _ if pkt.is_icmp() => icmp::is_echo_request(pkt.family, pkt.icmp_type),
        _ => true,
    }
}

/// Records an unconfirmed connection (a SYN always; a datagram unless a fresh one is there).
#[inline(always)]
fn open(key: &FlowKey, side: u8, pkt: &Packet, rule: u32, ifindex: u32, now: u64) {
    if pkt.proto != proto::TCP {
        // SAFETY: the value is copied out at once.
        if let Some(existing) = unsafe { EXFW_PENDING.get(key) } {
            if existing.opener == side
                && existing.ifindex[direction::ORIGINAL] == ifindex
                && now.wrapping_sub(existing.last_seen_ns) < FLOW_REFRESH_NS
            {
                return;
            }
        }
    }
    let value = FlowValue {
        last_seen_ns: now,
        rule,
        state: flow_state::OPENED,
        opener: side,
        pad: [0; 2],
        ifindex: [ifindex, 0],
        seq: [pkt.seq, 0],
    };
    if EXFW_PENDING.insert(key, &value, 0).is_err() {
        let slot = event_stat::PENDING_INSERT_FAILED;
        bump_event_stat(slot);
        diagnose(slot);
    }
}

/// The header an ICMP error carries: what the error is about.
struct Embedded {
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    sport: u16,
    dport: u16,
    rule_port: u16,
}

/// Reads the header an ICMP error carries (IP header and the first 8 bytes of its transport)
/// into `e`; false when it cannot be read.
#[inline(always)]
fn embedded(ctx: &Frame, pkt: &Packet, e: &mut Embedded) -> bool {
    // The offset comes back from the scratch map unbounded; the verifier needs a bound.
    if pkt.l4 > limits::MAX_EMBEDDED_OFFSET {
        return false;
    }
    let at = pkt.l4 + 8;
    let l4 = if pkt.family == family::V4 {
        let Some(h) = load::<[u8; 12]>(ctx, at) else {
            return false;
        };
        let hlen = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 != 4 || hlen < 20 || be16([h[6], h[7]]) & 0x1fff != 0 {
            return false;
        }
        let (Some(src), Some(dst)) = (load::<[u8; 4]>(ctx, at + 12), load::<[u8; 4]>(ctx, at + 16))
        else {
            return false;
        };
        e.proto = h[9];
        e.src[..4].copy_from_slice(&src);
        e.dst[..4].copy_from_slice(&dst);
        at + hlen
    } else {
        let Some(h) = load::<[u8; 8]>(ctx, at) else {
            return false;
        };
        let (Some(src), Some(dst)) = (
            load::<[u8; 16]>(ctx, at + 8),
            load::<[u8; 16]>(ctx, at + 24),
        ) else {
            return false;
        };
        if h[0] >> 4 != 6 {
            return false;
        }
        e.proto = h[6];
        e.src = src;
        e.dst = dst;
        at + 40
    };
    if l4 + 8 > pkt.l4_end {
        return false;
    }
    let Some(t) = load::<[u8; 8]>(ctx, l4) else {
        return false;
    };
    match e.proto {
        proto::TCP | proto::UDP => {
            e.sport = be16([t[0], t[1]]);
            e.dport = be16([t[2], t[3]]);
            e.rule_port = e.dport;
        }
        p if (p == proto::ICMP && pkt.family == family::V4)
            || (p == proto::ICMPV6 && pkt.family == family::V6) =>
        {
            // Errors about errors are never sent (RFC 792, RFC 4443).
            if !icmp::is_echo_request(pkt.family, t[0]) && !icmp::is_echo_reply(pkt.family, t[0]) {
                return false;
            }
            e.sport = be16([t[4], t[5]]);
            e.dport = e.sport;
            e.rule_port = t[0] as u16;
        }
        _ => {}
    }
    true
}

/// An ICMP error goes back to the sender of the packet it carries, that packet belongs to a
/// fresh connection (confirmed or not) or a trusted pair, and (where the interface checks the
/// reverse path) the error arrives from the direction that packet was going.
#[inline(never)]
fn icmp_error_related(
    raw: *mut xdp_md,
    scratch: &mut Scratch,
    generation: [u8; 4],
    now: u64,
    reverse_path: bool,
) -> bool {
    let (pkt, e) = (&scratch.pkt, &mut scratch.inner);
    *e = Embedded {
        src: [0; 16],
        dst: [0; 16],
        proto: 0,
        sport: 0,
        dport: 0,
        rule_port: 0,
    };
    if !embedded(&Frame::of(raw), pkt, e) || e.src != pkt.dst {
        return false;
    }
    if !known_connection(e, pkt.family, now) && !trusted_pair(e, pkt.family, generation) {
        return false;
    }
    if !reverse_path {
        return true;
    }
    if is_link_scoped_destination(pkt.family, &e.dst) {
        return false;
    }
    let (fam, ifindex) = (pkt.family, pkt.ifindex);
    fill_route_query(
        &mut scratch.fib,
        fam,
        scratch.inner.proto,
        &scratch.inner.dst,
        &scratch.inner.src,
        scratch.inner.dport,
        scratch.inner.sport,
    );
    route_leaves_via(raw, &mut scratch.fib, ifindex)
}

/// The embedded packet belongs to a fresh connection, confirmed or not.
#[inline(never)]
fn known_connection(e: &Embedded, fam: u8, now: u64) -> bool {
    let (key, _) = exfw_common::flow_key(fam, e.proto, &e.src, e.sport, &e.dst, e.dport);
    // SAFETY: the values are read at once.
    if let Some(flow) = unsafe { EXFW_FLOWS.get(&key) } {
        if now.wrapping_sub(flow.last_seen_ns) < lifetime(flow.state, e.proto) {
            return true;
        }
    }
    // SAFETY: as above.
    match unsafe { EXFW_PENDING.get(&key) } {
        Some(p) => now.wrapping_sub(p.last_seen_ns) < lifetime(p.state, e.proto),
        None => false,
    }
}

/// The embedded packet is between trusted hosts.
#[inline(never)]
fn trusted_pair(e: &Embedded, fam: u8, generation: [u8; 4]) -> bool {
    let src = classify(fam, generation, &e.src);
    let dst = classify(fam, generation, &e.dst);
    src.flags & dst.flags & CLASS_TRUSTED != 0
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
fn remember_fragment(pkt: &Packet, reason: Reason, rule: u32, ifindex: u32) {
    let now = now_ns();
    let key = frag_key(pkt);
    if reason.drops() {
        // A dropped first fragment (forged, or from elsewhere) never replaces a fresh pass:
        // later fragments without an entry drop anyway.
        // SAFETY: the value is copied out at once.
        if let Some(existing) = unsafe { EXFW_FRAGS.get(&key) } {
            if existing.reason < exfw_common::FIRST_DROP_REASON
                && now.wrapping_sub(existing.created_ns) < config_get(config::FRAG_TIMEOUT_NS)
            {
                return;
            }
        }
    }
    let value = FragValue {
        created_ns: now,
        reason: reason as u8,
        has_rule: (rule != NO_RULE) as u8,
        pad: [0; 2],
        rule: if rule == NO_RULE { 0 } else { rule },
        ifindex,
        pad2: 0,
    };
    if EXFW_FRAGS.insert(&key, &value, 0).is_err() {
        let slot = event_stat::FRAG_INSERT_FAILED;
        bump_event_stat(slot);
        diagnose(slot);
    }
}

#[inline(always)]
fn follow_fragment(pkt: &Packet, ifindex: u32, d: &mut Decision) -> Reason {
    // SAFETY: the value is copied out at once.
    let cached = match unsafe { EXFW_FRAGS.get(&frag_key(pkt)) } {
        Some(v) => *v,
        None => return Reason::FragmentNoEntry,
    };
    if now_ns().wrapping_sub(cached.created_ns) >= config_get(config::FRAG_TIMEOUT_NS)
        || cached.ifindex != ifindex
    {
        return Reason::FragmentNoEntry;
    }
    if cached.reason >= exfw_common::FIRST_DROP_REASON {
        return Reason::FragmentDropped;
    }
    if cached.has_rule != 0 {
        d.rule = cached.rule;
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

/// Per-CPU counts of each diagnostic since this program was loaded (not pinned: each load
/// starts from zero), indexed by `event_stat` slot; slot 0 (sampled drops, never diagnosed)
/// counts route lookups that fell back.
#[map]
static EXFW_DIAG: PerCpuArray<u64> = PerCpuArray::with_max_entries(event_stat::SLOTS, 0);

/// Route lookups that had to ask without `BPF_FIB_LOOKUP_SKIP_NEIGH` (kernels before 6.5
/// refuse the flag).
const DIAG_FIB_FALLBACK: u32 = event_stat::SAMPLED;

/// Reports a rare event through aya-log at debug level, at its 1st, 2nd, 4th, 8th...
/// occurrence on this CPU since the program was loaded, so a flood logs a handful of lines
/// and the counters in EXFW_EVSTATS have the rest. The daemon turns the kernel's logging on
/// only when its own log shows debug for `exfw::kernel`; otherwise the level is a constant 0
/// and the verifier removes everything after the first test. A subprogram of its own.
#[inline(never)]
fn diagnose(what: u32) {
    if !aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Debug) {
        return;
    }
    let n = match EXFW_DIAG.get_ptr_mut(what) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        Some(v) => unsafe {
            *v += 1;
            *v
        },
        None => return,
    };
    if n & (n - 1) != 0 {
        return;
    }
    match what {
        event_stat::FLOW_INSERT_FAILED => debug!(
            &(),
            "exfw: a confirmed connection could not be written to the connection table (EXFW_FLOWS): its later packets are judged as new ({} on this CPU)",
            n
        ),
        event_stat::PENDING_INSERT_FAILED => debug!(
            &(),
            "exfw: a new connection could not be written to the table of unconfirmed connections (EXFW_PENDING): its replies drop ({} on this CPU)",
            n
        ),
        event_stat::FRAG_INSERT_FAILED => debug!(
            &(),
            "exfw: a first fragment's verdict could not be written (EXFW_FRAGS): its later fragments drop ({} on this CPU)",
            n
        ),
        event_stat::DROP_STATS_FULL => debug!(
            &(),
            "exfw: the per-port drop counters are full (EXFW_DROPS): a drop was counted by reason only ({} on this CPU)",
            n
        ),
        event_stat::SPOOF_STATS_FULL => debug!(
            &(),
            "exfw: the per-interface spoofed-source counters are full (EXFW_SPOOFED): a drop was counted by reason only ({} on this CPU)",
            n
        ),
        DIAG_FIB_FALLBACK => debug!(
            &(),
            "exfw: the kernel refused a route lookup without the neighbour lookup (BPF_FIB_LOOKUP_SKIP_NEIGH, Linux 6.5 and later): asking with it, at about twice the cost ({} times)",
            n
        ),
        _ => {}
    }
}

/// Adds one packet of `len` bytes to a per-CPU hash counter, creating it when absent.
#[inline(always)]
fn add_to<K>(map: &PerCpuHashMap<K, Counter>, key: &K, len: u64, full_slot: u32) {
    match map.get_ptr_mut(key) {
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
            if map.insert(key, &first, BPF_NOEXIST as u64).is_err() {
                bump_event_stat(full_slot);
                diagnose(full_slot);
            }
        }
    }
}

#[inline(never)]
fn count(pkt: &Packet, d: &Decision) {
    let (reason, verdict, len) = (d.reason, d.verdict, d.len);
    if let Some(c) = EXFW_REASONS.get_ptr_mut(reason_index(verdict, reason)) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
    if d.rule != NO_RULE {
        let id = d.rule;
        if let Some(s) = EXFW_RULE_STATS.get_ptr_mut(id) {
            // SAFETY: per-CPU slot.
            unsafe {
                (*s).packets += 1;
                (*s).bytes += len;
                if d.confirmed {
                    (*s).new_connections += 1;
                }
            }
        }
    }
    match reason {
        Reason::Policy => {
            let named = PortKey {
                generation: d.generation,
                port: pkt.rule_port,
                proto: pkt.proto,
                pad: 0,
            };
            // SAFETY: presence check only.
            let other = unsafe { EXFW_PORTS.get(&named) }.is_none();
            let key = DropKey {
                dst_class: d.dst_class,
                port: if other { 0 } else { pkt.rule_port },
                proto: pkt.proto,
                verdict: verdict as u8,
                other: other as u8,
                pad: 0,
            };
            add_to(&EXFW_DROPS, &key, len, event_stat::DROP_STATS_FULL);
        }
        Reason::SpoofedSource => {
            let key = SpoofKey {
                ifindex: d.ifindex,
                verdict: verdict as u8,
                pad: [0; 3],
            };
            add_to(&EXFW_SPOOFED, &key, len, event_stat::SPOOF_STATS_FULL);
        }
        _ => {}
    }
}

/// Emits a drop event if this CPU's token bucket allows it.
#[inline(never)]
fn sample(pkt: &Packet, d: &Decision) {
    let (reason, verdict, len) = (d.reason, d.verdict, d.len);
    let rate = config_get(config::EVENTS_PER_SEC);
    if rate == 0 {
        return;
    }
    let burst = config_get(config::EVENTS_BURST).max(1).min(1_000_000) * NS_PER_SEC;
    let Some(state) = EXFW_SAMPLER.get_ptr_mut(0) else {
        return;
    };
    let now = now_ns();
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
                src_class: d.src_class,
                dst_class: d.dst_class,
                ifindex: d.ifindex,
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
