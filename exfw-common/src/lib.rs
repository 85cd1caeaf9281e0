//! The contract between the exfw XDP program and its daemon: map names, limits, key and value
//! layouts, verdict and reason codes. Nothing else lives here.
//!
//! Every type is `#[repr(C)]` with explicit padding so the kernel and userspace agree byte for
//! byte. Multi-byte fields of LPM keys are big-endian byte arrays because the trie matches bits
//! from the first byte on; everything else is in host order.
#![no_std]

/// Names of the maps in the eBPF object (the daemon looks them up by these names).
pub mod map_names {
    /// `Array<u64>` of [`crate::config`] slots: active generation, mode, timeouts, sampling.
    pub const CONFIG: &str = "EXFW_CONFIG";
    /// `LpmTrie<ClassKeyV4, ClassValue>`: IPv4 prefix -> address class, per generation.
    pub const CLASS_V4: &str = "EXFW_CLASS_V4";
    /// `LpmTrie<ClassKeyV6, ClassValue>`: IPv6 prefix -> address class, per generation.
    pub const CLASS_V6: &str = "EXFW_CLASS_V6";
    /// `LpmTrie<RuleKey, RuleValue>`: (generation, dst class, src class, proto, port prefix) -> rule.
    pub const RULES: &str = "EXFW_RULES";
    /// `LruHashMap<FlowKey, FlowValue>`: the expected reply tuples of allowed flows.
    pub const FLOWS: &str = "EXFW_FLOWS";
    /// `LruHashMap<FragKey, FragValue>`: verdicts of first fragments, for the later ones.
    pub const FRAGS: &str = "EXFW_FRAGS";
    /// `PerCpuArray<RuleStats>` indexed by rule id.
    pub const RULE_STATS: &str = "EXFW_RULE_STATS";
    /// `PerCpuArray<Counter>` indexed by [`crate::reason_index`].
    pub const REASON_STATS: &str = "EXFW_REASONS";
    /// `PerCpuHashMap<DropKey, Counter>`: drops by (dst class, proto, port, verdict).
    pub const DROP_STATS: &str = "EXFW_DROPS";
    /// `PerCpuArray<u64>` indexed by [`crate::event_stat`]: sampling and map-pressure counters.
    pub const EVENT_STATS: &str = "EXFW_EVSTATS";
    /// `PerCpuArray<SamplerState>`: the per-CPU token bucket that rate-limits drop events.
    pub const SAMPLER: &str = "EXFW_SAMPLER";
    /// `RingBuf` of [`crate::DropEvent`].
    pub const EVENTS: &str = "EXFW_EVENTS";
    /// `HashMap<u64, u32>`: rule identity hash -> counter slot (userspace only).
    pub const RULE_IDS: &str = "EXFW_RULE_IDS";
    /// `HashMap<PortKey, u8>`: the (protocol, port) pairs rules name, per generation; drops to
    /// other ports are counted under "other".
    pub const PORTS: &str = "EXFW_PORTS";
    /// Every map, for pinning.
    pub const ALL: [&str; 14] = [
        RULE_IDS,
        PORTS,
        CONFIG,
        CLASS_V4,
        CLASS_V6,
        RULES,
        FLOWS,
        FRAGS,
        RULE_STATS,
        REASON_STATS,
        DROP_STATS,
        EVENT_STATS,
        SAMPLER,
        EVENTS,
    ];
}

/// Names of the XDP programs in the eBPF object.
pub mod program_names {
    /// The firewall.
    pub const FIREWALL: &str = "exfw_xdp";
    /// An empty program returning XDP_PASS: the baseline for benchmarks.
    pub const PASS: &str = "exfw_pass";
}

/// Compiled-in map capacities (the daemon may raise the flow and fragment tables at load time).
pub mod limits {
    /// Address prefixes per family, both generations together.
    pub const MAX_CLASS_PREFIXES: u32 = 65_536;
    /// Rule trie entries (port prefixes x source classes), both generations together.
    pub const MAX_RULE_ENTRIES: u32 = 131_072;
    /// Rule ids are counter slots: `0..MAX_RULES`.
    pub const MAX_RULES: u32 = 4_096;
    /// Address classes: `0..MAX_CLASSES` (0 is "external").
    pub const MAX_CLASSES: u32 = 65_535;
    /// Default flow-table size.
    pub const DEFAULT_FLOW_ENTRIES: u32 = 262_144;
    /// Default fragment-cache size.
    pub const DEFAULT_FRAG_ENTRIES: u32 = 16_384;
    /// Distinct (dst class, proto, port, verdict) drop counters; more go to `DROP_STATS_FULL`.
    /// Ports no rule names fold into one "other" key, so the table stays far below this.
    pub const MAX_DROP_KEYS: u32 = 16_384;
    /// (protocol, port) pairs per generation in `EXFW_PORTS`.
    pub const MAX_POLICY_PORTS: u32 = 8_192;
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub const EVENT_RING_BYTES: u32 = 1 << 20;
    /// IPv6 extension headers walked before the packet is dropped as `Ipv6ExtTooMany`.
    pub const MAX_IPV6_EXT_HEADERS: usize = 6;
    /// VLAN tags parsed (802.1Q and 802.1ad); a deeper stack drops as `VlanTooDeep`.
    pub const MAX_VLAN_TAGS: usize = 2;
}

/// Slots of the `EXFW_CONFIG` array. Each is one u64 so a write of one slot is atomic.
pub mod config {
    /// The active policy generation: packets look up keys carrying this value.
    pub const GENERATION: u32 = 0;
    /// [`crate::MODE_ENFORCE`] or [`crate::MODE_AUDIT`].
    pub const MODE: u32 = 1;
    /// Idle lifetime of a TCP flow entry, nanoseconds.
    pub const TCP_TIMEOUT_NS: u32 = 2;
    /// Idle lifetime of a UDP flow entry, nanoseconds.
    pub const UDP_TIMEOUT_NS: u32 = 3;
    /// Idle lifetime of any other flow entry (ICMP echo, other protocols), nanoseconds.
    pub const OTHER_TIMEOUT_NS: u32 = 4;
    /// Lifetime of a first fragment's cached verdict, nanoseconds.
    pub const FRAG_TIMEOUT_NS: u32 = 5;
    /// Drop events each CPU may emit per second (0 disables events).
    pub const EVENTS_PER_SEC: u32 = 6;
    /// Burst of drop events each CPU may emit at once.
    pub const EVENTS_BURST: u32 = 7;
    /// Hash of the policy in force (written by the daemon, read by `exfw status`).
    pub const POLICY_HASH: u32 = 8;
    /// Unix time in seconds of the last successful policy write.
    pub const APPLIED_AT: u32 = 9;
    /// Number of slots.
    pub const SLOTS: u32 = 16;
}

/// `config::MODE` value: drop what the policy denies.
pub const MODE_ENFORCE: u64 = 0;
/// `config::MODE` value: pass everything, count what would have dropped.
pub const MODE_AUDIT: u64 = 1;

/// The class of every address no prefix matches: the Internet and anything unlisted.
pub const CLASS_EXTERNAL: u16 = 0;
/// Class flag: a host exfw protects; traffic to or from it is subject to the policy.
pub const CLASS_PROTECTED: u16 = 1;
/// Class flag: trusted hosts pass to each other on every port and protocol.
pub const CLASS_TRUSTED: u16 = 2;

/// IP protocol numbers the program understands.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Address family tags used in flow and fragment keys and events.
pub mod family {
    /// IPv4: the address is in the first 4 bytes, the rest are zero.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// What happened to a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Passed (XDP_PASS).
    Pass = 0,
    /// Dropped (XDP_DROP).
    Drop = 1,
    /// Would have been dropped, passed because the mode is audit.
    WouldDrop = 2,
}

/// Number of verdicts.
pub const VERDICT_COUNT: u32 = 3;

/// Why a packet got its verdict. Codes below [`FIRST_DROP_REASON`] pass; the others drop (or,
/// in audit mode, would drop). The numbers are stable: they are counter indices.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): the gateway needs its neighbours.
    NonIp = 0,
    /// ICMP "fragmentation needed", ICMPv6 "packet too big" and neighbour discovery.
    IcmpEssential = 1,
    /// Both ends are trusted (Exchange, domain controllers, Lync/Skype).
    Trusted = 2,
    /// A reply to a flow that was allowed.
    Flow = 3,
    /// A rule allows it.
    Rule = 4,
    /// Neither end is protected: not ours to judge.
    Transit = 5,
    /// A later fragment whose first fragment passed.
    FragmentPass = 6,
    /// No rule allows it.
    Policy = 16,
    /// A later fragment with no cached first-fragment verdict (out of order, expired, forged).
    FragmentNoEntry = 17,
    /// A later fragment whose first fragment was dropped.
    FragmentDropped = 18,
    /// A first fragment too short to hold the transport header.
    FragmentTooShort = 19,
    /// A VLAN tag cut short.
    VlanTruncated = 20,
    /// More VLAN tags than `limits::MAX_VLAN_TAGS`.
    VlanTooDeep = 21,
    /// Shorter than an IPv4 header.
    Ipv4Truncated = 22,
    /// Ethertype IPv4 but the version field is not 4.
    Ipv4BadVersion = 23,
    /// IHL below 5 or the header longer than the frame.
    Ipv4BadIhl = 24,
    /// Total length below the header length or beyond the frame.
    Ipv4BadLength = 25,
    /// Shorter than an IPv6 header.
    Ipv6Truncated = 26,
    /// Ethertype IPv6 but the version field is not 6.
    Ipv6BadVersion = 27,
    /// Payload length beyond the frame.
    Ipv6BadLength = 28,
    /// An extension header cut short by the frame or the payload length.
    Ipv6ExtTruncated = 29,
    /// A hop-by-hop options header that is not the first extension header.
    Ipv6ExtOrder = 30,
    /// More extension headers than `limits::MAX_IPV6_EXT_HEADERS`.
    Ipv6ExtTooMany = 31,
    /// The transport header (TCP 20, UDP 8, ICMP 8 bytes) does not fit in the IP payload.
    L4Truncated = 32,
    /// TCP data offset below 5 or beyond the IP payload.
    TcpBadHeader = 33,
    /// UDP length below 8 or beyond the IP payload.
    UdpBadLength = 34,
}

/// The first reason code that drops.
pub const FIRST_DROP_REASON: u8 = 16;
/// Reason slots per verdict in `EXFW_REASONS`.
pub const REASON_SLOTS: u32 = 64;

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 26] = [
        Reason::NonIp,
        Reason::IcmpEssential,
        Reason::Trusted,
        Reason::Flow,
        Reason::Rule,
        Reason::Transit,
        Reason::FragmentPass,
        Reason::Policy,
        Reason::FragmentNoEntry,
        Reason::FragmentDropped,
        Reason::FragmentTooShort,
        Reason::VlanTruncated,
        Reason::VlanTooDeep,
        Reason::Ipv4Truncated,
        Reason::Ipv4BadVersion,
        Reason::Ipv4BadIhl,
        Reason::Ipv4BadLength,
        Reason::Ipv6Truncated,
        Reason::Ipv6BadVersion,
        Reason::Ipv6BadLength,
        Reason::Ipv6ExtTruncated,
        Reason::Ipv6ExtOrder,
        Reason::Ipv6ExtTooMany,
        Reason::L4Truncated,
        Reason::TcpBadHeader,
        Reason::UdpBadLength,
    ];

    /// True when the policy says drop (audit mode turns these into would-drop).
    #[inline(always)]
    pub const fn drops(self) -> bool {
        self as u8 >= FIRST_DROP_REASON
    }

    /// The reason with this code, if any.
    pub fn from_code(code: u8) -> Option<Reason> {
        Self::ALL.iter().copied().find(|r| *r as u8 == code)
    }

    /// A stable snake_case name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NonIp => "non_ip",
            Reason::IcmpEssential => "icmp_essential",
            Reason::Trusted => "trusted",
            Reason::Flow => "flow",
            Reason::Rule => "rule",
            Reason::Transit => "transit",
            Reason::FragmentPass => "fragment_pass",
            Reason::Policy => "policy",
            Reason::FragmentNoEntry => "fragment_no_entry",
            Reason::FragmentDropped => "fragment_dropped",
            Reason::FragmentTooShort => "fragment_too_short",
            Reason::VlanTruncated => "vlan_truncated",
            Reason::VlanTooDeep => "vlan_too_deep",
            Reason::Ipv4Truncated => "ipv4_truncated",
            Reason::Ipv4BadVersion => "ipv4_bad_version",
            Reason::Ipv4BadIhl => "ipv4_bad_ihl",
            Reason::Ipv4BadLength => "ipv4_bad_length",
            Reason::Ipv6Truncated => "ipv6_truncated",
            Reason::Ipv6BadVersion => "ipv6_bad_version",
            Reason::Ipv6BadLength => "ipv6_bad_length",
            Reason::Ipv6ExtTruncated => "ipv6_ext_truncated",
            Reason::Ipv6ExtOrder => "ipv6_ext_order",
            Reason::Ipv6ExtTooMany => "ipv6_ext_too_many",
            Reason::L4Truncated => "l4_truncated",
            Reason::TcpBadHeader => "tcp_bad_header",
            Reason::UdpBadLength => "udp_bad_length",
        }
    }
}

/// The verdict a reason gives under a mode.
#[inline(always)]
pub const fn verdict_for(reason: Reason, audit: bool) -> Verdict {
    if !reason.drops() {
        Verdict::Pass
    } else if audit {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    }
}

/// Index of the (verdict, reason) counter in `EXFW_REASONS`.
#[inline(always)]
pub const fn reason_index(verdict: Verdict, reason: Reason) -> u32 {
    verdict as u32 * REASON_SLOTS + reason as u32
}

/// Slots of `EXFW_EVSTATS`.
pub mod event_stat {
    /// Drop events written to the ring buffer.
    pub const SAMPLED: u32 = 0;
    /// Drop events suppressed by the per-CPU rate limit.
    pub const SUPPRESSED: u32 = 1;
    /// Drop events lost because the ring buffer was full.
    pub const LOST: u32 = 2;
    /// Drops not counted per port because `EXFW_DROPS` was full.
    pub const DROP_STATS_FULL: u32 = 3;
    /// Flow entries that could not be written.
    pub const FLOW_INSERT_FAILED: u32 = 4;
    /// Number of slots.
    pub const SLOTS: u32 = 8;
}

/// LPM data of an IPv4 class entry: prefix length = 32 + address prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClassKeyV4 {
    /// Policy generation, big-endian.
    pub generation: [u8; 4],
    /// Address, network order.
    pub addr: [u8; 4],
}

/// LPM data of an IPv6 class entry: prefix length = 32 + address prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClassKeyV6 {
    /// Policy generation, big-endian.
    pub generation: [u8; 4],
    /// Address, network order.
    pub addr: [u8; 16],
}

/// Bits of an LPM class or rule key taken by the generation.
pub const GENERATION_BITS: u32 = 32;

/// An address class: what a prefix belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClassValue {
    /// Class id (`CLASS_EXTERNAL` is never stored).
    pub class: u16,
    /// `CLASS_PROTECTED` | `CLASS_TRUSTED`.
    pub flags: u16,
}

/// LPM data of a rule entry. Prefix length = [`RULE_KEY_FIXED_BITS`] + port prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RuleKey {
    /// Policy generation, big-endian.
    pub generation: [u8; 4],
    /// Destination class, big-endian.
    pub dst_class: [u8; 2],
    /// Source class, big-endian.
    pub src_class: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (TCP, UDP), ICMP type, or 0; big-endian.
    pub port: [u8; 2],
}

/// Bits of a [`RuleKey`] before the port.
pub const RULE_KEY_FIXED_BITS: u32 = 72;

/// What a rule entry holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RuleValue {
    /// The rule's counter slot in `EXFW_RULE_STATS`.
    pub rule: u32,
}

/// A 5-tuple. In `EXFW_FLOWS` it is the tuple a reply will carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: the identifier).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// A flow entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowValue {
    /// `bpf_ktime_get_ns` when the flow last passed a rule.
    pub last_seen_ns: u64,
    /// The rule that allowed it.
    pub rule: u32,
    /// Zero.
    pub pad: u32,
}

/// Identifies the fragments of one datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// IP identification (IPv4: 16 bits; IPv6: 32 bits).
    pub id: u32,
    /// Upper-layer protocol.
    pub proto: u8,
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// The cached judgement of a first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragValue {
    /// When the first fragment was seen.
    pub created_ns: u64,
    /// `Reason` code of the first fragment.
    pub reason: u8,
    /// 1 when `rule` is meaningful.
    pub has_rule: u8,
    /// Zero.
    pub pad: [u8; 2],
    /// The rule that passed the first fragment.
    pub rule: u32,
}

/// Packet and byte counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes, whole frames.
    pub bytes: u64,
}

/// Per-rule counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RuleStats {
    /// Packets the rule passed (fragments of a passed datagram included).
    pub packets: u64,
    /// Bytes the rule passed.
    pub bytes: u64,
    /// TCP SYNs without ACK the rule passed.
    pub new_connections: u64,
}

/// Key of the per-port drop counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct DropKey {
    /// Destination class.
    pub dst_class: u16,
    /// Destination port, ICMP type or 0; 0 when `other` is set.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `Verdict::Drop` or `Verdict::WouldDrop`.
    pub verdict: u8,
    /// 1 when no rule names the port: all such ports share this key.
    pub other: u8,
    /// Zero.
    pub pad: u8,
}

/// An entry of `EXFW_PORTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct PortKey {
    /// Policy generation.
    pub generation: u32,
    /// Port (ICMP: type).
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Zero.
    pub pad: u8,
}

/// Per-CPU token bucket of the drop-event sampler.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SamplerState {
    /// Tokens left, scaled by 1e9 (one event = 1e9).
    pub tokens: u64,
    /// When the bucket was last refilled.
    pub last_ns: u64,
}

/// A sampled drop, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns` at the drop.
    pub timestamp_ns: u64,
    /// Source address (zero when the packet was too malformed to tell).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port, ICMP type or 0.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `family::V4`, `family::V6` or 0 when unknown.
    pub family: u8,
    /// `Reason` code.
    pub reason: u8,
    /// `Verdict` code.
    pub verdict: u8,
    /// Source class.
    pub src_class: u16,
    /// Destination class.
    pub dst_class: u16,
    /// Interface index the frame arrived on.
    pub ifindex: u32,
    /// Frame length.
    pub len: u32,
    /// Outer VLAN id, or 0 when untagged.
    pub vlan: u16,
    /// Zero.
    pub pad: [u8; 10],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for ClassKeyV4 {}
    unsafe impl aya::Pod for ClassKeyV6 {}
    unsafe impl aya::Pod for ClassValue {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for RuleStats {}
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for SamplerState {}
    unsafe impl aya::Pod for DropEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ClassKeyV4>(), 8);
        assert_eq!(size_of::<ClassKeyV6>(), 20);
        assert_eq!(size_of::<RuleKey>(), 11);
        assert_eq!(RULE_KEY_FIXED_BITS as usize, (size_of::<RuleKey>() - 2) * 8);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 16);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(size_of::<FragValue>(), 16);
        assert_eq!(size_of::<DropKey>(), 8);
        assert_eq!(size_of::<PortKey>(), 8);
        assert_eq!(size_of::<DropEvent>(), 8 + 32 + 4 + 4 + 4 + 4 + 4 + 2 + 10);
    }

    #[test]
    fn reason_codes_round_trip_and_split_at_first_drop() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u8), Some(r));
            assert_eq!(r.drops(), r as u8 >= FIRST_DROP_REASON);
            assert!((r as u32) < REASON_SLOTS);
        }
        assert_eq!(verdict_for(Reason::Policy, true), Verdict::WouldDrop);
        assert_eq!(verdict_for(Reason::Policy, false), Verdict::Drop);
        assert_eq!(verdict_for(Reason::Rule, true), Verdict::Pass);
    }
}
