//! The contract between the exfw XDP program and its daemon, and the vocabulary every layer
//! above shares: map names, limits, key and value layouts, verdict and reason codes, the
//! protocol constants both halves read packets by, and (in [`vocabulary`]) modes, roles and port
//! ranges with their one spelling. Nothing else lives here.
//!
//! Every type is `#[repr(C)]` with explicit padding so the kernel and userspace agree byte for
//! byte. Multi-byte fields of LPM keys are big-endian byte arrays because the trie matches bits
//! from the first byte on; everything else is in host order.
#![no_std]

pub mod vocabulary;
pub use vocabulary::{AttachMode, AttachedMode, Mode, PortRange, Role};

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
    /// `HashMap<IfaceKey, IfaceValue>`: (generation, ifindex) -> what may arrive on the interface.
    pub const IFACES: &str = "EXFW_IFACES";
    /// `LruHashMap<FlowKey, FlowValue>`: confirmed connections (the handshake completed).
    pub const FLOWS: &str = "EXFW_FLOWS";
    /// `LruHashMap<FlowKey, FlowValue>`: connections opened but not yet confirmed. A separate
    /// table, so a flood of openers can never evict a confirmed connection.
    pub const PENDING: &str = "EXFW_PENDING";
    /// `LruHashMap<FragKey, FragValue>`: verdicts of first fragments, for the later ones.
    pub const FRAGS: &str = "EXFW_FRAGS";
    /// `PerCpuArray<RuleStats>` indexed by rule id.
    pub const RULE_STATS: &str = "EXFW_RULE_STATS";
    /// `PerCpuArray<Counter>` indexed by [`crate::reason_index`].
    pub const REASON_STATS: &str = "EXFW_REASONS";
    /// `PerCpuHashMap<DropKey, Counter>`: drops by (dst class, proto, port, verdict).
    pub const DROP_STATS: &str = "EXFW_DROPS";
    /// `PerCpuHashMap<SpoofKey, Counter>`: spoofed-source drops by ingress interface.
    pub const SPOOFED: &str = "EXFW_SPOOFED";
    /// `PerCpuArray<u64>` indexed by [`crate::event_stat`]: sampling and map-pressure counters.
    pub const EVENT_STATS: &str = "EXFW_EVSTATS";
    /// `PerCpuArray<SamplerState>`: the per-CPU token bucket that rate-limits drop events.
    pub const SAMPLER: &str = "EXFW_SAMPLER";
    /// `RingBuf` of [`crate::DropEvent`].
    pub const EVENTS: &str = "EXFW_EVENTS";
    /// `HashMap<u64, u32>`: rule identity hash -> counter slot (userspace only).
    pub const RULE_IDS: &str = "EXFW_RULE_IDS";
    /// `HashMap<u64, u32>`: class name hash -> class id (userspace only), so a class keeps its
    /// id, and its per-role drop counters their meaning, across reloads.
    pub const CLASS_IDS: &str = "EXFW_CLASS_IDS";
    /// `HashMap<PortKey, u8>`: the (protocol, port) pairs rules name, per generation; drops to
    /// other ports are counted under "other".
    pub const PORTS: &str = "EXFW_PORTS";
    /// Every map, for pinning.
    pub const ALL: [&str; 18] = [
        RULE_IDS,
        CLASS_IDS,
        PORTS,
        CONFIG,
        CLASS_V4,
        CLASS_V6,
        RULES,
        IFACES,
        FLOWS,
        PENDING,
        FRAGS,
        RULE_STATS,
        REASON_STATS,
        DROP_STATS,
        SPOOFED,
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

/// Compiled-in map capacities (the daemon may raise the flow tables at load time).
pub mod limits {
    /// Address prefixes per family, both generations together.
    pub const MAX_CLASS_PREFIXES: u32 = 65_536;
    /// Rule trie entries (port prefixes x source classes), both generations together.
    pub const MAX_RULE_ENTRIES: u32 = 131_072;
    /// Rule ids are counter slots: `0..MAX_RULES`.
    pub const MAX_RULES: u32 = 4_096;
    /// Address classes: `0..MAX_CLASSES` (0 is "external").
    pub const MAX_CLASSES: u32 = 65_535;
    /// Interfaces one policy can name (the width of [`crate::ClassValue::ingress`]).
    pub const MAX_INTERFACES: u32 = 64;
    /// Default size of the confirmed-connection table.
    pub const DEFAULT_FLOW_ENTRIES: u32 = 262_144;
    /// Default size of the unconfirmed-connection table.
    pub const DEFAULT_PENDING_ENTRIES: u32 = 65_536;
    /// Default fragment-cache size.
    pub const DEFAULT_FRAG_ENTRIES: u32 = 16_384;
    /// Distinct (dst class, proto, port, verdict) drop counters; more go to `DROP_STATS_FULL`.
    /// Ports no rule names fold into one "other" key, so the table stays far below this.
    pub const MAX_DROP_KEYS: u32 = 16_384;
    /// Distinct (interface, verdict) spoofed-source counters.
    pub const MAX_SPOOF_KEYS: u32 = 1_024;
    /// (protocol, port) pairs per generation in `EXFW_PORTS`.
    pub const MAX_POLICY_PORTS: u32 = 8_192;
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub const EVENT_RING_BYTES: u32 = 1 << 20;
    /// IPv6 extension headers walked before the packet is dropped as `Ipv6ExtTooMany`.
    pub const MAX_IPV6_EXT_HEADERS: usize = 6;
    /// VLAN tags parsed (802.1Q and 802.1ad); a deeper stack drops as `VlanTooDeep`.
    pub const MAX_VLAN_TAGS: usize = 2;
    /// IPv4 options walked; a header with more drops as `Ipv4BadOptions` (options are rare,
    /// and a longer walk costs the verifier more than it is worth).
    pub const MAX_IPV4_OPTIONS: usize = 8;
    /// An ICMP error whose header starts further into the frame than this cannot be matched
    /// (driver-mode XDP frames are one page; only crafted test frames go further).
    pub const MAX_EMBEDDED_OFFSET: usize = 4095;
}

/// Slots of the `EXFW_CONFIG` array. Each is one u64 so a write of one slot is atomic.
pub mod config {
    /// The active policy generation: packets look up keys carrying this value.
    pub const GENERATION: u32 = 0;
    /// [`crate::MODE_ENFORCE`] or [`crate::MODE_AUDIT`].
    pub const MODE: u32 = 1;
    /// Idle lifetime of a confirmed TCP connection, nanoseconds.
    pub const TCP_TIMEOUT_NS: u32 = 2;
    /// Idle lifetime of a confirmed UDP flow, nanoseconds.
    pub const UDP_TIMEOUT_NS: u32 = 3;
    /// Idle lifetime of any other confirmed flow (ICMP echo, other protocols), nanoseconds.
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
    /// Lifetime of an unconfirmed connection, nanoseconds.
    pub const PENDING_TIMEOUT_NS: u32 = 10;
    /// Lifetime of a TCP connection after a FIN, nanoseconds.
    pub const TCP_FIN_TIMEOUT_NS: u32 = 11;
    /// Lifetime of a TCP connection after a RST, nanoseconds.
    pub const TCP_RST_TIMEOUT_NS: u32 = 12;
    /// 1 when the kernel's `bpf_fib_lookup` names the route's interface also when the next hop
    /// has no neighbour entry (Linux 6.2, 6.1.13, 5.15.95, 5.10.169 and later); 0 makes such an
    /// answer fail the reverse-path check. Written by the loader from the kernel release.
    pub const FIB_NO_NEIGH_NAMES_IFINDEX: u32 = 13;
    /// The [`crate::PINNED_LAYOUT`] of the build that pinned the maps (0: a build before the
    /// stamp); the kernel program never reads it.
    pub const PINNED_LAYOUT: u32 = 14;
    /// Number of slots.
    pub const SLOTS: u32 = 16;
}

/// `config::MODE` value: drop what the policy denies.
pub const MODE_ENFORCE: u64 = 0;
/// `config::MODE` value: pass everything, count what would have dropped.
pub const MODE_AUDIT: u64 = 1;

/// The meaning of the pinned maps' entries: raise it whenever a pinned map keeps its sizes
/// but its keys or values change meaning (a field reordered, a code renumbered), so a daemon
/// replaces state pinned by another build instead of misreading it. Sizes are checked apart.
pub const PINNED_LAYOUT: u64 = 1;

/// The class of every address no prefix matches: the Internet and anything unlisted.
pub const CLASS_EXTERNAL: u16 = 0;
/// Class flag: a host exfw protects; traffic to or from it is subject to the policy.
pub const CLASS_PROTECTED: u16 = 1;
/// Class flag: trusted hosts pass to each other on every port and protocol.
pub const CLASS_TRUSTED: u16 = 2;
/// Class flag: the gateway's own addresses; traffic to them is the host's to judge.
pub const CLASS_LOCAL: u16 = 4;

/// Interface flag: the route back to a packet's source must leave through the interface it
/// arrived on (strict reverse-path check through the kernel's routing table).
pub const IFACE_REVERSE_PATH: u8 = 1;
/// Interface flag: unlisted (external) addresses may arrive here as sources.
pub const IFACE_ACCEPTS_EXTERNAL: u8 = 2;

/// A TCP segment within this many bytes after the direction's recorded sequence number may
/// close a connection (FIN, RST); outside it, it passes but changes nothing. A blind attacker
/// must guess the window among 4,096 for every port it tries.
pub const TCP_CLOSE_WINDOW_AHEAD: u32 = 1 << 20;
/// ... and within this many bytes before it.
pub const TCP_CLOSE_WINDOW_BEHIND: u32 = 1 << 16;
/// A segment inside the window at least this far ahead moves the recorded sequence number to
/// its own, so the record follows a busy connection (one write per 256 KiB) and only a sender
/// that knows the window can move it.
pub const TCP_SEQ_TRACK_STEP: u32 = 1 << 18;
/// A flow entry younger than this is not rewritten by the packets that keep it alive.
pub const FLOW_REFRESH_NS: u64 = 1_000_000_000;

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

    /// The protocol's name in configs, explanations and metric labels (a number when unnamed).
    pub fn name(p: u8) -> Option<&'static str> {
        match p {
            ICMP => Some("icmp"),
            TCP => Some("tcp"),
            UDP => Some("udp"),
            ICMPV6 => Some("icmpv6"),
            _ => None,
        }
    }

    /// The protocol number of a name `name` gives.
    pub fn by_name(name: &str) -> Option<u8> {
        [ICMP, TCP, UDP, ICMPV6]
            .into_iter()
            .find(|p| self::name(*p) == Some(name))
    }

    /// A protocol as configs and `simulate` take it: a name or a number.
    pub fn parse(text: &str) -> Option<u8> {
        by_name(text).or_else(|| text.parse().ok())
    }
}

/// Address family tags used in flow and fragment keys and events.
pub mod family {
    /// IPv4: the address is in the first 4 bytes, the rest are zero.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// Header constants both the kernel and the reference classifier parse by.
pub mod wire {
    /// Ethernet header length.
    pub const ETH_HLEN: usize = 14;
    /// Ethertype IPv4.
    pub const ETH_P_IP: u16 = 0x0800;
    /// Ethertype IPv6.
    pub const ETH_P_IPV6: u16 = 0x86DD;
    /// Ethertype 802.1Q VLAN tag.
    pub const ETH_P_8021Q: u16 = 0x8100;
    /// Ethertype 802.1ad (QinQ) service tag.
    pub const ETH_P_8021AD: u16 = 0x88A8;
    /// IPv6 hop-by-hop options header.
    pub const IPV6_HOP_BY_HOP: u8 = 0;
    /// IPv6 routing header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// IPv6 destination options header.
    pub const IPV6_DEST_OPTS: u8 = 60;
    /// IPv4 option: end of option list.
    pub const IPV4_OPT_END: u8 = 0;
    /// IPv4 option: no operation (one byte).
    pub const IPV4_OPT_NOP: u8 = 1;
    /// IPv4 option: loose source and record route.
    pub const IPV4_OPT_LSRR: u8 = 0x83;
    /// IPv4 option: strict source and record route.
    pub const IPV4_OPT_SSRR: u8 = 0x89;
    /// TCP FIN flag.
    pub const TCP_FIN: u8 = 0x01;
    /// TCP SYN flag.
    pub const TCP_SYN: u8 = 0x02;
    /// TCP RST flag.
    pub const TCP_RST: u8 = 0x04;
    /// TCP ACK flag.
    pub const TCP_ACK: u8 = 0x10;
}

/// What an ICMP or ICMPv6 type means to the firewall.
pub mod icmp {
    use crate::family;

    /// Echo request (ping): opens a flow when a rule allows it.
    pub const fn is_echo_request(fam: u8, kind: u8) -> bool {
        if fam == family::V4 {
            kind == 8
        } else {
            kind == 128
        }
    }

    /// Echo reply: answers an echo request's flow.
    pub const fn is_echo_reply(fam: u8, kind: u8) -> bool {
        if fam == family::V4 {
            kind == 0
        } else {
            kind == 129
        }
    }

    /// An error that carries the header of the packet it is about: destination unreachable
    /// (fragmentation needed included), time exceeded, parameter problem, packet too big.
    pub const fn is_error(fam: u8, kind: u8) -> bool {
        if fam == family::V4 {
            matches!(kind, 3 | 11 | 12)
        } else {
            matches!(kind, 1..=4)
        }
    }

    /// IPv6 neighbour discovery: router solicitation and advertisement, neighbour solicitation
    /// and advertisement, redirect (RFC 4861).
    pub const fn is_neighbour_discovery(fam: u8, kind: u8) -> bool {
        fam == family::V6 && matches!(kind, 133..=137)
    }

    /// Neighbour discovery messages whose source must be link-local: router advertisement and
    /// redirect (RFC 4861 sections 6.1.2 and 8.1).
    pub const fn needs_link_local_source(kind: u8) -> bool {
        matches!(kind, 134 | 137)
    }
}

/// True for source addresses that are only valid on the link they arrive on and that the
/// kernel never forwards: IPv6 link-local (fe80::/10) and unspecified (::), IPv4 0.0.0.0.
/// They are exempt from source validation (routing cannot place them).
#[inline(always)]
pub fn is_on_link_only_source(fam: u8, addr: &[u8; 16]) -> bool {
    if fam == family::V4 {
        addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 0
    } else {
        is_link_local_v6(addr)
            || u64::from_ne_bytes(first8(addr)) | u64::from_ne_bytes(last8(addr)) == 0
    }
}

/// True for destinations that never leave the link: IPv6 link-local (fe80::/10) and
/// interface- and link-local multicast (ff01::/16, ff02::/16). The gateway cannot forward such
/// a packet, so its source is not checked against the routing table (the groups the interface
/// accepts still are).
#[inline(always)]
pub fn is_link_scoped_destination(fam: u8, addr: &[u8; 16]) -> bool {
    fam == family::V6
        && (is_link_local_v6(addr) || (addr[0] == 0xff && (addr[1] == 0x01 || addr[1] == 0x02)))
}

/// True for an IPv6 link-local address (fe80::/10).
#[inline(always)]
pub fn is_link_local_v6(addr: &[u8; 16]) -> bool {
    addr[0] == 0xfe && addr[1] & 0xc0 == 0x80
}

#[inline(always)]
fn first8(a: &[u8; 16]) -> [u8; 8] {
    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]
}

#[inline(always)]
fn last8(a: &[u8; 16]) -> [u8; 8] {
    [a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]
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

impl Verdict {
    /// Every verdict.
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop];

    /// A stable snake_case name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
        }
    }

    /// The verdict a drop record (counter key or event) carries: would-drop under audit, drop
    /// otherwise.
    pub const fn of_drop(code: u8) -> Verdict {
        if code == Verdict::WouldDrop as u8 {
            Verdict::WouldDrop
        } else {
            Verdict::Drop
        }
    }
}

/// Number of verdicts.
pub const VERDICT_COUNT: u32 = 3;

/// Declares [`Reason`] once: code, name and documentation of every reason.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal => $name:literal, )*) => {
        /// Why a packet got its verdict. Codes below [`FIRST_DROP_REASON`] pass; the others
        /// drop (or, in audit mode, would drop). The numbers are stable: they are counter
        /// indices.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $code, )*
        }

        /// Number of reasons.
        pub const REASON_COUNT: usize = [$($code),*].len();

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: [Reason; REASON_COUNT] = [$(Reason::$variant),*];

            /// A stable snake_case name for logs and metric labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): the gateway needs its neighbours.
    NonIp = 0 => "non_ip",
    /// An ICMP error (unreachable, fragmentation needed, time exceeded, parameter problem,
    /// packet too big) carrying the header of a known connection, a trusted pair or a rule,
    /// travelling back to that packet's sender.
    IcmpRelated = 1 => "icmp_related",
    /// Both ends are trusted (Exchange, domain controllers, Lync/Skype).
    Trusted = 2 => "trusted",
    /// A packet of a connection a rule admitted (either direction, or a handshake step).
    Flow = 3 => "flow",
    /// A rule allows it.
    Rule = 4 => "rule",
    /// Neither end is protected: not ours to judge.
    Transit = 5 => "transit",
    /// A later fragment whose first fragment passed.
    FragmentPass = 6 => "fragment_pass",
    /// IPv6 neighbour discovery sent on the link (hop limit 255, RFC 4861).
    NeighbourDiscovery = 7 => "neighbour_discovery",
    /// Addressed to the gateway itself: the host's own firewall judges it.
    Local = 8 => "local",
    /// No rule allows it.
    Policy = 16 => "policy",
    /// A later fragment with no cached first-fragment verdict (out of order, expired, forged,
    /// or arriving on another interface than the first).
    FragmentNoEntry = 17 => "fragment_no_entry",
    /// A later fragment whose first fragment was dropped.
    FragmentDropped = 18 => "fragment_dropped",
    /// A first fragment too short to hold the transport header.
    FragmentTooShort = 19 => "fragment_too_short",
    /// A VLAN tag cut short.
    VlanTruncated = 20 => "vlan_truncated",
    /// More VLAN tags than `limits::MAX_VLAN_TAGS`.
    VlanTooDeep = 21 => "vlan_too_deep",
    /// Shorter than an IPv4 header.
    Ipv4Truncated = 22 => "ipv4_truncated",
    /// Ethertype IPv4 but the version field is not 4.
    Ipv4BadVersion = 23 => "ipv4_bad_version",
    /// IHL below 5 or the header longer than the frame.
    Ipv4BadIhl = 24 => "ipv4_bad_ihl",
    /// Total length below the header length or beyond the frame.
    Ipv4BadLength = 25 => "ipv4_bad_length",
    /// Shorter than an IPv6 header.
    Ipv6Truncated = 26 => "ipv6_truncated",
    /// Ethertype IPv6 but the version field is not 6.
    Ipv6BadVersion = 27 => "ipv6_bad_version",
    /// Payload length beyond the frame.
    Ipv6BadLength = 28 => "ipv6_bad_length",
    /// An extension header cut short by the frame or the payload length.
    Ipv6ExtTruncated = 29 => "ipv6_ext_truncated",
    /// A hop-by-hop options header that is not the first extension header.
    Ipv6ExtOrder = 30 => "ipv6_ext_order",
    /// More extension headers than `limits::MAX_IPV6_EXT_HEADERS`.
    Ipv6ExtTooMany = 31 => "ipv6_ext_too_many",
    /// The transport header (TCP 20, UDP 8, ICMP 8 bytes) does not fit in the IP payload.
    L4Truncated = 32 => "l4_truncated",
    /// TCP data offset below 5 or beyond the IP payload.
    TcpBadHeader = 33 => "tcp_bad_header",
    /// UDP length below 8 or beyond the IP payload.
    UdpBadLength = 34 => "udp_bad_length",
    /// The source could not have arrived on this interface: the interface does not accept the
    /// source's group, or the route back to the source leaves through another interface.
    SpoofedSource = 35 => "spoofed_source",
    /// Arrived on an interface the policy in force does not name.
    UnknownInterface = 36 => "unknown_interface",
    /// An IPv4 loose or strict source-route option (LSRR, SSRR).
    Ipv4SourceRoute = 37 => "ipv4_source_route",
    /// IPv4 options that run past the header or have an impossible length.
    Ipv4BadOptions = 38 => "ipv4_bad_options",
    /// An IPv6 routing header of type 0 (deprecated by RFC 5095).
    Ipv6RoutingType0 = 39 => "ipv6_routing_type0",
    /// An ICMP error whose embedded header belongs to no known connection, trusted pair or
    /// rule, travels the wrong way, or cannot be read.
    IcmpErrorUnmatched = 40 => "icmp_error_unmatched",
    /// Neighbour discovery that was not sent on the link (hop limit below 255), has a nonzero
    /// code, a non-link-local source where one is required, or is fragmented.
    NeighbourDiscoveryInvalid = 41 => "neighbour_discovery_invalid",
}

/// The first reason code that drops.
pub const FIRST_DROP_REASON: u8 = 16;
/// Reason slots per verdict in `EXFW_REASONS`.
pub const REASON_SLOTS: u32 = 64;

impl Reason {
    /// True when the policy says drop (audit mode turns these into would-drop).
    #[inline(always)]
    pub const fn drops(self) -> bool {
        self as u8 >= FIRST_DROP_REASON
    }

    /// The reason with this code, if any.
    pub fn from_code(code: u8) -> Option<Reason> {
        Self::ALL.iter().copied().find(|r| *r as u8 == code)
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
    /// Confirmed connections that could not be written.
    pub const FLOW_INSERT_FAILED: u32 = 4;
    /// Unconfirmed connections that could not be written.
    pub const PENDING_INSERT_FAILED: u32 = 5;
    /// Spoofed-source drops not counted per interface because `EXFW_SPOOFED` was full.
    pub const SPOOF_STATS_FULL: u32 = 6;
    /// First fragments whose verdict could not be written to `EXFW_FRAGS`.
    pub const FRAG_INSERT_FAILED: u32 = 7;
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

/// An address class: what a prefix belongs to and where its addresses may come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ClassValue {
    /// Class id (`CLASS_EXTERNAL` is never stored).
    pub class: u16,
    /// `CLASS_PROTECTED` | `CLASS_TRUSTED` | `CLASS_LOCAL`.
    pub flags: u16,
    /// Zero.
    pub pad: u32,
    /// Bit `n` set: the class's addresses may arrive as sources on the interface whose
    /// [`IfaceValue::slot`] is `n`.
    pub ingress: u64,
}

/// Key of `EXFW_IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct IfaceKey {
    /// Policy generation.
    pub generation: u32,
    /// Interface index (in the gateway's network namespace).
    pub ifindex: u32,
}

/// What the policy says about an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IfaceValue {
    /// The interface's bit in [`ClassValue::ingress`], `0..MAX_INTERFACES`.
    pub slot: u8,
    /// `IFACE_REVERSE_PATH` | `IFACE_ACCEPTS_EXTERNAL`.
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 2],
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

/// A connection, the same for both directions: the two (address, port) ends ordered so the
/// lower one comes first. ICMP echo uses the identifier as both ports; other protocols 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FlowKey {
    /// The lower end's address (IPv4 in the first 4 bytes).
    pub lo: [u8; 16],
    /// The higher end's address.
    pub hi: [u8; 16],
    /// The lower end's port.
    pub lo_port: u16,
    /// The higher end's port.
    pub hi_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// `family::V4` or `family::V6`.
    pub family: u8,
    /// Zero.
    pub pad: [u8; 2],
}

/// Which end of a [`FlowKey`] a packet's source is.
pub mod side {
    /// The source is the key's `lo` end.
    pub const LO: u8 = 0;
    /// The source is the key's `hi` end.
    pub const HI: u8 = 1;
}

/// Index into [`FlowValue::ifindex`] and [`FlowValue::seq`].
pub mod direction {
    /// From the end that opened the connection.
    pub const ORIGINAL: usize = 0;
    /// From the end that answered.
    pub const REPLY: usize = 1;
}

/// [`FlowValue::state`] values.
pub mod flow_state {
    /// Unconfirmed: the opener passed a rule (TCP SYN, first UDP datagram, echo request).
    pub const OPENED: u8 = 1;
    /// Unconfirmed TCP: the responder's SYN-ACK acknowledged the opener's SYN.
    pub const ANSWERED: u8 = 2;
    /// Confirmed: the handshake completed (TCP: the opener acknowledged the SYN-ACK; others:
    /// the responder replied).
    pub const OPEN: u8 = 3;
    /// Confirmed TCP after a FIN inside the window: lives at most the FIN lifetime.
    pub const CLOSING: u8 = 4;
    /// Confirmed TCP after a RST inside the window: lives at most the RST lifetime.
    pub const RESET: u8 = 5;
}

/// A connection's state, in `EXFW_PENDING` (unconfirmed) or `EXFW_FLOWS` (confirmed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowValue {
    /// `bpf_ktime_get_ns` when the entry was last refreshed.
    pub last_seen_ns: u64,
    /// The rule that admitted the connection.
    pub rule: u32,
    /// A [`flow_state`] value.
    pub state: u8,
    /// The [`side`] of the key that opened the connection.
    pub opener: u8,
    /// Zero.
    pub pad: [u8; 2],
    /// Interface each [`direction`] arrives on (the reply's is 0 until it arrived).
    pub ifindex: [u32; 2],
    /// TCP sequence numbers per [`direction`]: while unconfirmed the initial ones (ISNs); once
    /// confirmed, the last recorded one, which FIN and RST are checked against.
    pub seq: [u32; 2],
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
    /// The interface the first fragment arrived on: later ones must arrive there too.
    pub ifindex: u32,
    /// Zero.
    pub pad2: u32,
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
    /// Packets the rule passed, and packets of the connections it admitted (both directions;
    /// fragments of a passed datagram included).
    pub packets: u64,
    /// Bytes of the same packets.
    pub bytes: u64,
    /// Connections the rule admitted that completed their handshake (TCP: SYN, SYN-ACK, ACK;
    /// UDP, ICMP echo and other protocols: the first reply).
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

/// Key of the per-interface spoofed-source counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SpoofKey {
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// `Verdict::Drop` or `Verdict::WouldDrop`.
    pub verdict: u8,
    /// Zero.
    pub pad: [u8; 3],
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

/// The connection key of a packet from (`src`, `sport`) to (`dst`, `dport`), and which side
/// of the key its source is.
#[inline(always)]
pub fn flow_key(
    fam: u8,
    proto: u8,
    src: &[u8; 16],
    sport: u16,
    dst: &[u8; 16],
    dport: u16,
) -> (FlowKey, u8) {
    let (s_hi, s_lo) = (
        u64::from_be_bytes(first8(src)),
        u64::from_be_bytes(last8(src)),
    );
    let (d_hi, d_lo) = (
        u64::from_be_bytes(first8(dst)),
        u64::from_be_bytes(last8(dst)),
    );
    let src_first =
        s_hi < d_hi || (s_hi == d_hi && (s_lo < d_lo || (s_lo == d_lo && sport <= dport)));
    if src_first {
        (
            FlowKey {
                lo: *src,
                hi: *dst,
                lo_port: sport,
                hi_port: dport,
                proto,
                family: fam,
                pad: [0; 2],
            },
            side::LO,
        )
    } else {
        (
            FlowKey {
                lo: *dst,
                hi: *src,
                lo_port: dport,
                hi_port: sport,
                proto,
                family: fam,
                pad: [0; 2],
            },
            side::HI,
        )
    }
}

/// True when a TCP FIN or RST with sequence number `seq` lies in the window around the
/// direction's recorded sequence number `recorded`.
#[inline(always)]
pub const fn in_close_window(seq: u32, recorded: u32) -> bool {
    let ahead = seq.wrapping_sub(recorded);
    ahead < TCP_CLOSE_WINDOW_AHEAD || recorded.wrapping_sub(seq) <= TCP_CLOSE_WINDOW_BEHIND
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for ClassKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ClassKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ClassValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RuleValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RuleStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SpoofKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SamplerState {}
    // SAFETY: as above.
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
        assert_eq!(size_of::<ClassValue>(), 16);
        assert_eq!(size_of::<IfaceKey>(), 8);
        assert_eq!(size_of::<IfaceValue>(), 4);
        assert_eq!(size_of::<RuleKey>(), 11);
        assert_eq!(RULE_KEY_FIXED_BITS as usize, (size_of::<RuleKey>() - 2) * 8);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 32);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(size_of::<FragValue>(), 24);
        assert_eq!(size_of::<DropKey>(), 8);
        assert_eq!(size_of::<SpoofKey>(), 8);
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
        let mut names: [&str; REASON_COUNT] = [""; REASON_COUNT];
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert!(!names.contains(&r.name()), "{} twice", r.name());
            names[i] = r.name();
        }
        assert_eq!(verdict_for(Reason::Policy, true), Verdict::WouldDrop);
        assert_eq!(verdict_for(Reason::Policy, false), Verdict::Drop);
        assert_eq!(verdict_for(Reason::Rule, true), Verdict::Pass);
    }

    #[test]
    fn both_directions_share_one_flow_key() {
        let a = [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b = [203, 0, 113, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (k1, s1) = flow_key(family::V4, proto::TCP, &b, 40000, &a, 443);
        let (k2, s2) = flow_key(family::V4, proto::TCP, &a, 443, &b, 40000);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        assert_eq!((k1.lo, k1.lo_port), (a, 443));
        // Same address: the port orders the ends.
        let (k3, s3) = flow_key(family::V4, proto::UDP, &a, 53, &a, 5353);
        let (k4, s4) = flow_key(family::V4, proto::UDP, &a, 5353, &a, 53);
        assert_eq!((k3, s3, s4), (k4, side::LO, side::HI));
    }

    #[test]
    fn close_window_accepts_near_sequence_numbers_only() {
        assert!(in_close_window(1000, 1000));
        assert!(in_close_window(1000 + (1 << 19), 1000));
        assert!(!in_close_window(1000 + (1 << 20), 1000));
        assert!(in_close_window(500, 1000));
        assert!(in_close_window(5, u32::MAX - 5));
        assert!(!in_close_window(1000 + (1 << 30), 1000));
        assert!(!in_close_window(1000u32.wrapping_sub(1 << 20), 1000));
    }

    #[test]
    fn on_link_only_sources() {
        let mut a = [0u8; 16];
        assert!(is_on_link_only_source(family::V4, &a));
        assert!(is_on_link_only_source(family::V6, &a));
        a[0] = 0xfe;
        a[1] = 0x80;
        assert!(is_on_link_only_source(family::V6, &a));
        a[1] = 0xc0;
        assert!(!is_on_link_only_source(family::V6, &a));
        assert!(!is_on_link_only_source(family::V4, &a));
    }

    #[test]
    fn protocol_names_round_trip() {
        for p in [proto::ICMP, proto::TCP, proto::UDP, proto::ICMPV6] {
            assert_eq!(proto::by_name(proto::name(p).unwrap()), Some(p));
        }
        assert_eq!(proto::name(47), None);
    }
}
