//! The reference classifier: the XDP program's decision, written as plain Rust over a byte slice.
//!
//! It is the oracle the kernel is tested against and the engine behind `exfw simulate`. It is
//! stateful like the kernel: it keeps confirmed and unconfirmed connections, a fragment cache and
//! counters with the same semantics as the kernel maps (apart from LRU eviction, which tests keep
//! out of reach), and judges a sequence of frames, each with its ingress interface and time. The
//! kernel's routing table, which the reverse-path check consults, is a [`Routes`] value here.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use exfw_common::{
    CLASS_EXTERNAL, Counter, DropKey, FLOW_REFRESH_NS, FlowKey, FlowValue, FragKey, RuleStats,
    TCP_CLOSE_WINDOW_AHEAD, TCP_SEQ_TRACK_STEP, direction, family, flow_key, flow_state, icmp,
    in_close_window, is_link_local_v6, is_link_scoped_destination, is_on_link_only_source, limits,
    proto, verdict_for, wire,
};
use ipnet::IpNet;

use super::{Mode, Policy, Reason, Verdict};

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
    /// The packet completed a connection's handshake.
    pub confirmed: bool,
}

/// Totals of every counter the data plane keeps per packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets and bytes per (verdict, reason).
    pub reasons: BTreeMap<(Verdict, Reason), Counter>,
    /// Packets, bytes and confirmed connections per rule id.
    pub rules: BTreeMap<u32, RuleStats>,
    /// Policy drops per (dst class, port, proto, verdict).
    pub drops: BTreeMap<DropKey, Counter>,
    /// Spoofed-source drops per (ingress interface, verdict).
    pub spoofed: BTreeMap<(String, Verdict), Counter>,
    /// Drops not counted per port because the table was full.
    pub drop_stats_full: u64,
}

impl Counters {
    /// What changed from `before` to `self`, leaving out entries that did not move.
    pub fn since(&self, before: &Counters) -> Counters {
        fn diff<K: Ord + Clone, V: Copy + PartialEq + Default>(
            now: &BTreeMap<K, V>,
            then: &BTreeMap<K, V>,
            sub: impl Fn(V, V) -> V,
        ) -> BTreeMap<K, V> {
            now.iter()
                .map(|(k, v)| (k.clone(), sub(*v, then.get(k).copied().unwrap_or_default())))
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
            spoofed: diff(&self.spoofed, &before.spoofed, counter),
            drop_stats_full: self.drop_stats_full - before.drop_stats_full,
        }
    }
}

/// The routes the reverse-path check consults: where the gateway would send a packet to an
/// address. The kernel asks its routing table; the reference asks this.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// (prefix, interface), longest prefix wins.
    entries: Vec<(IpNet, String)>,
    /// Addresses of the gateway itself: no forwardable route leads there.
    local: Vec<IpNet>,
    /// With no matching entry, assume the route leaves through the ingress interface (what
    /// `exfw simulate` does when told nothing about routing).
    assume_ingress: bool,
}

impl Routes {
    /// Routes that always lead back through the interface a packet arrived on, unless told
    /// otherwise with [`Routes::add`]: every reverse-path check passes.
    pub fn assume_ingress() -> Routes {
        Routes {
            assume_ingress: true,
            ..Default::default()
        }
    }

    /// An explicit table: `entries` of (prefix, interface) and the gateway's own addresses
    /// (loopback included). Addresses no entry covers have no route.
    pub fn table(entries: Vec<(IpNet, String)>, local: impl IntoIterator<Item = IpNet>) -> Routes {
        Routes {
            entries,
            local: local.into_iter().collect(),
            assume_ingress: false,
        }
    }

    /// Marks `net` as the gateway's own: no forwarding route leads there.
    pub fn add_local(&mut self, net: IpNet) {
        self.local.push(net);
    }

    /// Adds a route: packets to `net` leave through `iface`.
    pub fn add(&mut self, net: IpNet, iface: &str) {
        self.entries.push((net, iface.to_string()));
    }

    /// The interface a packet to `addr` from `from` leaves through, if the gateway forwards it.
    /// IPv6 multicast, link-local and loopback addresses at either end are never forwarded.
    fn egress<'a>(&'a self, addr: IpAddr, from: IpAddr, ingress: &'a str) -> Option<&'a str> {
        let strict = |a: IpAddr| match a {
            IpAddr::V6(v6) => {
                v6.is_multicast() || v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
            IpAddr::V4(_) => false,
        };
        if strict(addr) || strict(from) || self.local.iter().any(|n| n.contains(&addr)) {
            return None;
        }
        let best = self
            .entries
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len());
        match best {
            Some((_, iface)) => Some(iface.as_str()),
            None if self.assume_ingress => Some(ingress),
            None => None,
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
    hop_limit: u8,
    rule_port: u16,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    seq: u32,
    ack: u32,
    icmp_type: u8,
    icmp_code: u8,
    /// Offsets of the transport header and of the end of the IP payload.
    l4: usize,
    l4_end: usize,
    frag: Frag,
    frag_id: u32,
    frag_proto: u8,
}

impl Parsed {
    fn is_icmp(&self) -> bool {
        (self.family == family::V4 && self.proto == proto::ICMP)
            || (self.family == family::V6 && self.proto == proto::ICMPV6)
    }

    fn addr(&self, bytes: &[u8; 16]) -> IpAddr {
        addr_of(self.family, bytes)
    }
}

fn addr_of(fam: u8, bytes: &[u8; 16]) -> IpAddr {
    if fam == family::V4 {
        std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    } else {
        std::net::Ipv6Addr::from(*bytes).into()
    }
}

#[derive(Clone, Copy, Debug)]
struct CachedFragment {
    created_ns: u64,
    reason: Reason,
    rule: Option<u32>,
    ifindex: u32,
}

/// Where an interface stands in the policy in force.
#[derive(Clone, Copy, Debug)]
struct Ingress {
    slot: usize,
    reverse_path: bool,
    accepts_external: bool,
}

/// A class's flags and the interfaces its addresses may arrive on.
#[derive(Clone, Copy, Debug, Default)]
struct ClassInfo {
    id: u16,
    protected: bool,
    trusted: bool,
    local: bool,
    ingress: u64,
}

/// A step of an unconfirmed connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    None,
    Advanced,
    Confirmed,
}

/// The reference classifier with its state.
#[derive(Clone, Debug)]
pub struct Reference {
    policy: Policy,
    routes: Routes,
    named_ports: BTreeSet<(u8, u16)>,
    /// Interface name -> index, stable for the classifier's life (the kernel's ifindex).
    ifindex: BTreeMap<String, u32>,
    flows: HashMap<FlowKey, FlowValue>,
    pending: HashMap<FlowKey, FlowValue>,
    frags: HashMap<FragKey, CachedFragment>,
    counters: Counters,
    last_drop_key: Option<DropKey>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Reference {
    /// A classifier with empty tables whose reverse-path checks consult `routes`.
    pub fn new(policy: Policy, routes: Routes) -> Self {
        let mut r = Reference {
            named_ports: policy.named_ports(),
            policy: Policy::default(),
            routes,
            ifindex: BTreeMap::new(),
            flows: HashMap::new(),
            pending: HashMap::new(),
            frags: HashMap::new(),
            counters: Counters::default(),
            last_drop_key: None,
        };
        r.set_policy(policy);
        r
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Swaps the policy, keeping connections, fragments and counters (as a generation flip
    /// does), except the per-port drop counters of destination classes the new policy no
    /// longer has, which the data plane removes once the old generation is gone.
    pub fn set_policy(&mut self, policy: Policy) {
        self.counters.drops.retain(|key, _| {
            key.dst_class == CLASS_EXTERNAL || policy.class(key.dst_class).is_some()
        });
        self.named_ports = policy.named_ports();
        for iface in &policy.interfaces {
            let next = self.ifindex.len() as u32 + 1;
            self.ifindex.entry(iface.name.clone()).or_insert(next);
        }
        self.policy = policy;
    }

    /// Replaces the routes the reverse-path check consults.
    pub fn routes_mut(&mut self) -> &mut Routes {
        &mut self.routes
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

    /// Confirmed connections that are fresh at `now_ns`.
    pub fn confirmed_connections(&self, now_ns: u64) -> usize {
        let t = &self.policy.timeouts;
        self.flows
            .iter()
            .filter(|(k, f)| now_ns.wrapping_sub(f.last_seen_ns) < lifetime(t, f.state, k.proto))
            .count()
    }

    /// Every confirmed connection held (fresh or not: what the kernel's table holds).
    pub fn confirmed_keys(&self) -> BTreeSet<FlowKey> {
        self.flows.keys().copied().collect()
    }

    /// Unconfirmed connections held (fresh or not: what the kernel's table holds).
    pub fn pending_entries(&self) -> usize {
        self.pending.len()
    }

    /// Judges one frame that arrived on `iface` at monotonic time `now_ns`, and updates
    /// tables and counters.
    pub fn classify(&mut self, frame: &[u8], iface: &str, now_ns: u64) -> Outcome {
        let audit = self.policy.mode == Mode::Audit;
        let mut out = Outcome {
            verdict: Verdict::Pass,
            reason: Reason::NonIp,
            rule: None,
            src_class: CLASS_EXTERNAL,
            dst_class: CLASS_EXTERNAL,
            confirmed: false,
        };
        let ingress = self.ingress(iface);
        let ifindex = self.ifindex.get(iface).copied().unwrap_or(u32::MAX);
        let parsed = parse(frame);
        out.reason = match (&parsed, ingress) {
            (Err(reason), _) => *reason,
            (Ok(None), _) => Reason::NonIp,
            (Ok(Some(_)), None) => Reason::UnknownInterface,
            (Ok(Some(p)), Some(_)) if p.frag == Frag::Later => {
                self.follow_fragment(p, ifindex, now_ns, &mut out)
            }
            (Ok(Some(p)), Some(ingress)) => {
                let reason = self.decide(frame, p, ingress, iface, ifindex, now_ns, &mut out);
                if p.frag == Frag::First {
                    let fragment_lifetime = self.policy.timeouts.fragment.as_nanos() as u64;
                    // A dropped first fragment never replaces a fresh pass.
                    let keep = reason.drops()
                        && self.frags.get(&frag_key(p)).is_some_and(|c| {
                            !c.reason.drops()
                                && now_ns.wrapping_sub(c.created_ns) < fragment_lifetime
                        });
                    if !keep {
                        let cached = CachedFragment {
                            created_ns: now_ns,
                            reason,
                            rule: out.rule,
                            ifindex,
                        };
                        self.frags.insert(frag_key(p), cached);
                    }
                }
                reason
            }
        };
        out.verdict = verdict_for(out.reason, audit);
        self.count(
            parsed.ok().flatten().as_ref(),
            iface,
            &out,
            frame.len() as u64,
        );
        out
    }

    fn ingress(&self, iface: &str) -> Option<Ingress> {
        self.policy.interface(iface).map(|(slot, i)| Ingress {
            slot,
            reverse_path: i.reverse_path,
            accepts_external: i.accepts.accepts(CLASS_EXTERNAL),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        frame: &[u8],
        p: &Parsed,
        ingress: Ingress,
        iface: &str,
        ifindex: u32,
        now: u64,
        out: &mut Outcome,
    ) -> Reason {
        let src = self.class_of(p.addr(&p.src));
        let dst = self.class_of(p.addr(&p.dst));
        out.src_class = src.id;
        out.dst_class = dst.id;
        if p.is_icmp() && icmp::is_neighbour_discovery(p.family, p.icmp_type) {
            let valid = p.hop_limit == 255
                && p.icmp_code == 0
                && p.frag == Frag::None
                && (!icmp::needs_link_local_source(p.icmp_type) || is_link_local_v6(&p.src))
                && (dst.local || is_link_scoped_destination(p.family, &p.dst));
            return if valid {
                Reason::NeighbourDiscovery
            } else {
                Reason::NeighbourDiscoveryInvalid
            };
        }
        let validate = !is_on_link_only_source(p.family, &p.src);
        let accepted = if src.id == CLASS_EXTERNAL {
            ingress.accepts_external
        } else {
            (src.ingress >> ingress.slot) & 1 != 0
        };
        if validate && !accepted {
            return Reason::SpoofedSource;
        }
        let (key, side) = flow_key(p.family, p.proto, &p.src, p.sport, &p.dst, p.dport);
        let timeouts = self.policy.timeouts;
        if let Some(flow) = self.flows.get_mut(&key) {
            if follow_flow(&timeouts, flow, p, side, ifindex, now) {
                out.rule = Some(flow.rule);
                return Reason::Flow;
            }
            // A new connection on the 4-tuple of a closing one replaces it.
            if opens(p)
                && p.proto == proto::TCP
                && flow.state >= flow_state::CLOSING
                && direction_of(flow.opener, side) == direction::ORIGINAL
            {
                self.flows.remove(&key);
            }
        }
        if validate
            && ingress.reverse_path
            && !is_link_scoped_destination(p.family, &p.dst)
            && self.routes.egress(p.addr(&p.src), p.addr(&p.dst), iface) != Some(iface)
        {
            return Reason::SpoofedSource;
        }
        if dst.local {
            return Reason::Local;
        }
        if src.trusted && dst.trusted {
            return Reason::Trusted;
        }
        if may_advance(p)
            && let Some(pending) = self.pending.get_mut(&key)
        {
            let step = advance(&timeouts, pending, p, side, ifindex, now);
            if step != Step::None {
                out.rule = Some(pending.rule);
                if step == Step::Confirmed {
                    let pending = *pending;
                    let mut value = FlowValue {
                        last_seen_ns: now,
                        state: flow_state::OPEN,
                        seq: [0; 2],
                        ..pending
                    };
                    if p.proto == proto::TCP {
                        value.seq = [p.seq, pending.seq[direction::REPLY].wrapping_add(1)];
                    } else {
                        value.ifindex[direction::REPLY] = ifindex;
                    }
                    self.flows.insert(key, value);
                    self.pending.remove(&key);
                    out.confirmed = true;
                }
                return Reason::Flow;
            }
        }
        if let Some(rule) = self
            .policy
            .matching_rule(src.id, dst.id, p.proto, p.rule_port)
        {
            let rule = rule.id;
            out.rule = Some(rule);
            if opens(p) {
                self.open(key, side, p, rule, ifindex, now);
            }
            return Reason::Rule;
        }
        if !src.protected && !dst.protected {
            return Reason::Transit;
        }
        if p.is_icmp() && icmp::is_error(p.family, p.icmp_type) {
            return if self.icmp_error_related(frame, p, ingress.reverse_path, iface, now) {
                Reason::IcmpRelated
            } else {
                Reason::IcmpErrorUnmatched
            };
        }
        Reason::Policy
    }

    /// Records an unconfirmed connection (a SYN always; a datagram unless a fresh one is there).
    fn open(&mut self, key: FlowKey, side: u8, p: &Parsed, rule: u32, ifindex: u32, now: u64) {
        if p.proto != proto::TCP
            && self.pending.get(&key).is_some_and(|e| {
                e.opener == side
                    && e.ifindex[direction::ORIGINAL] == ifindex
                    && now.wrapping_sub(e.last_seen_ns) < FLOW_REFRESH_NS
            })
        {
            return;
        }
        self.pending.insert(
            key,
            FlowValue {
                last_seen_ns: now,
                rule,
                state: flow_state::OPENED,
                opener: side,
                pad: [0; 2],
                ifindex: [ifindex, 0],
                seq: [p.seq, 0],
            },
        );
    }

    /// The ICMP error goes back to the sender of the packet it carries, that packet belongs to a
    /// fresh connection (confirmed or not) or a trusted pair, and (where the interface checks
    /// the reverse path) the error arrives from the direction that packet was going.
    fn icmp_error_related(
        &self,
        frame: &[u8],
        p: &Parsed,
        reverse_path: bool,
        iface: &str,
        now: u64,
    ) -> bool {
        let Some(e) = embedded(frame, p) else {
            return false;
        };
        if e.src != p.dst {
            return false;
        }
        let (key, _) = flow_key(p.family, e.proto, &e.src, e.sport, &e.dst, e.dport);
        let t = &self.policy.timeouts;
        let fresh = |entry: &FlowValue| {
            now.wrapping_sub(entry.last_seen_ns) < lifetime(t, entry.state, e.proto)
        };
        let known =
            self.flows.get(&key).is_some_and(fresh) || self.pending.get(&key).is_some_and(fresh);
        let trusted = || {
            self.class_of(addr_of(p.family, &e.src)).trusted
                && self.class_of(addr_of(p.family, &e.dst)).trusted
        };
        if !known && !trusted() {
            return false;
        }
        if !reverse_path {
            return true;
        }
        !is_link_scoped_destination(p.family, &e.dst)
            && self
                .routes
                .egress(addr_of(p.family, &e.dst), addr_of(p.family, &e.src), iface)
                == Some(iface)
    }

    fn follow_fragment(&self, p: &Parsed, ifindex: u32, now: u64, out: &mut Outcome) -> Reason {
        let Some(cached) = self.frags.get(&frag_key(p)) else {
            return Reason::FragmentNoEntry;
        };
        if now.wrapping_sub(cached.created_ns) >= self.policy.timeouts.fragment.as_nanos() as u64
            || cached.ifindex != ifindex
        {
            return Reason::FragmentNoEntry;
        }
        if cached.reason.drops() {
            return Reason::FragmentDropped;
        }
        out.rule = cached.rule;
        Reason::FragmentPass
    }

    /// Longest-prefix match over every class; unlisted addresses are external.
    fn class_of(&self, ip: IpAddr) -> ClassInfo {
        let Some(class) = self
            .policy
            .classes
            .iter()
            .flat_map(|c| c.prefixes.iter().map(move |net| (c, net)))
            .filter(|(_, net)| net.contains(&ip))
            .max_by_key(|(_, net): &(_, &IpNet)| net.prefix_len())
            .map(|(c, _)| c)
        else {
            return ClassInfo::default();
        };
        let ingress = self
            .policy
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.accepts.accepts(class.id))
            .fold(0u64, |mask, (slot, _)| mask | (1 << slot));
        ClassInfo {
            id: class.id,
            protected: class.protected,
            trusted: class.trusted,
            local: class.local,
            ingress,
        }
    }

    fn count(&mut self, p: Option<&Parsed>, iface: &str, out: &Outcome, len: u64) {
        self.last_drop_key = None;
        let one = |c: &mut Counter| {
            c.packets += 1;
            c.bytes += len;
        };
        one(self
            .counters
            .reasons
            .entry((out.verdict, out.reason))
            .or_default());
        if let Some(id) = out.rule {
            let s = self.counters.rules.entry(id).or_default();
            s.packets += 1;
            s.bytes += len;
            if out.confirmed {
                s.new_connections += 1;
            }
        }
        if out.reason == Reason::SpoofedSource {
            one(self
                .counters
                .spoofed
                .entry((iface.to_string(), out.verdict))
                .or_default());
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
                Some(c) => one(c),
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

/// How long an entry in `state` lives without traffic (`proto` picks the idle lifetime).
fn lifetime(t: &super::Timeouts, state: u8, p: u8) -> u64 {
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    if state < flow_state::OPEN {
        return ns(t.pending);
    }
    let idle = ns(match p {
        proto::TCP => t.tcp,
        proto::UDP => t.udp,
        _ => t.other,
    });
    match state {
        flow_state::CLOSING => ns(t.tcp_fin).min(idle),
        flow_state::RESET => ns(t.tcp_rst).min(idle),
        _ => idle,
    }
}

fn direction_of(opener: u8, side: u8) -> usize {
    if side == opener {
        direction::ORIGINAL
    } else {
        direction::REPLY
    }
}

/// True when the packet belongs to the confirmed connection `flow`; refreshes it and follows
/// FIN and RST.
fn follow_flow(
    t: &super::Timeouts,
    flow: &mut FlowValue,
    p: &Parsed,
    side: u8,
    ifindex: u32,
    now: u64,
) -> bool {
    let dir = direction_of(flow.opener, side);
    if now.wrapping_sub(flow.last_seen_ns) >= lifetime(t, flow.state, p.proto)
        || flow.ifindex[dir] != ifindex
    {
        return false;
    }
    if p.proto == proto::TCP {
        let f = p.tcp_flags;
        let syn = f & wire::TCP_SYN != 0;
        if syn && (f & wire::TCP_ACK == 0 || dir != direction::REPLY) {
            return false;
        }
        let ahead = p.seq.wrapping_sub(flow.seq[dir]);
        if f & wire::TCP_RST == 0 && (TCP_SEQ_TRACK_STEP..TCP_CLOSE_WINDOW_AHEAD).contains(&ahead) {
            flow.seq[dir] = p.seq;
        }
        if f & (wire::TCP_RST | wire::TCP_FIN) != 0 && in_close_window(p.seq, flow.seq[dir]) {
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
    } else if p.is_icmp() {
        let request = icmp::is_echo_request(p.family, p.icmp_type);
        let reply = icmp::is_echo_reply(p.family, p.icmp_type);
        if !((request && dir == direction::ORIGINAL) || (reply && dir == direction::REPLY)) {
            return false;
        }
    }
    if now.wrapping_sub(flow.last_seen_ns) >= FLOW_REFRESH_NS {
        flow.last_seen_ns = now;
    }
    true
}

/// Packets that can answer or complete an unconfirmed connection.
fn may_advance(p: &Parsed) -> bool {
    match p.proto {
        proto::TCP => p.tcp_flags & (wire::TCP_ACK | wire::TCP_RST) != 0,
        proto::UDP => true,
        _ if p.is_icmp() => icmp::is_echo_reply(p.family, p.icmp_type),
        _ => true,
    }
}

/// Advances an unconfirmed connection (see the kernel's `advance`).
fn advance(
    t: &super::Timeouts,
    e: &mut FlowValue,
    p: &Parsed,
    side: u8,
    ifindex: u32,
    now: u64,
) -> Step {
    let dir = direction_of(e.opener, side);
    if now.wrapping_sub(e.last_seen_ns) >= lifetime(t, e.state, p.proto) {
        return Step::None;
    }
    if p.proto != proto::TCP {
        return if dir == direction::REPLY {
            Step::Confirmed
        } else {
            Step::None
        };
    }
    let f = p.tcp_flags;
    let (syn, ack, rst) = (
        f & wire::TCP_SYN != 0,
        f & wire::TCP_ACK != 0,
        f & wire::TCP_RST != 0,
    );
    if dir == direction::REPLY {
        let acks_syn = ack && p.ack == e.seq[direction::ORIGINAL].wrapping_add(1);
        let same_way = e.state == flow_state::OPENED || e.ifindex[direction::REPLY] == ifindex;
        if syn && acks_syn && !rst && same_way {
            e.state = flow_state::ANSWERED;
            e.seq[direction::REPLY] = p.seq;
            e.ifindex[direction::REPLY] = ifindex;
            e.last_seen_ns = now;
            return Step::Advanced;
        }
        if rst && acks_syn && !syn && e.state == flow_state::OPENED {
            return Step::Advanced;
        }
        return Step::None;
    }
    let acks_syn_ack = ack && p.ack == e.seq[direction::REPLY].wrapping_add(1);
    if e.state == flow_state::ANSWERED
        && !syn
        && !rst
        && acks_syn_ack
        && e.ifindex[direction::ORIGINAL] == ifindex
    {
        return Step::Confirmed;
    }
    Step::None
}

/// Packets that open a connection when a rule admits them.
fn opens(p: &Parsed) -> bool {
    match p.proto {
        proto::TCP => {
            p.tcp_flags & (wire::TCP_SYN | wire::TCP_ACK | wire::TCP_RST | wire::TCP_FIN)
                == wire::TCP_SYN
        }
        _ if p.is_icmp() => icmp::is_echo_request(p.family, p.icmp_type),
        _ => true,
    }
}

/// The header an ICMP error carries.
struct Embedded {
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    sport: u16,
    dport: u16,
    rule_port: u16,
}

/// Reads the header an ICMP error carries: its IP header and the first 8 bytes of its
/// transport must lie inside the error's IP payload. IPv6 extension headers are not walked
/// (the next header is taken as the protocol); IPv4 later fragments and errors about errors
/// cannot be matched.
fn embedded(frame: &[u8], p: &Parsed) -> Option<Embedded> {
    if p.l4 > limits::MAX_EMBEDDED_OFFSET {
        return None;
    }
    let inner = frame.get(p.l4 + 8..p.l4_end)?;
    let mut e = Embedded {
        src: [0; 16],
        dst: [0; 16],
        proto: 0,
        sport: 0,
        dport: 0,
        rule_port: 0,
    };
    let l4 = if p.family == family::V4 {
        let h = inner.get(..20)?;
        let header_len = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || header_len < 20 || be16(h, 6) & 0x1fff != 0 {
            return None;
        }
        e.proto = h[9];
        e.src[..4].copy_from_slice(&h[12..16]);
        e.dst[..4].copy_from_slice(&h[16..20]);
        header_len
    } else {
        let h = inner.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        e.proto = h[6];
        e.src.copy_from_slice(&h[8..24]);
        e.dst.copy_from_slice(&h[24..40]);
        40
    };
    let t = inner.get(l4..l4 + 8)?;
    let icmp_inner = (e.proto == proto::ICMP && p.family == family::V4)
        || (e.proto == proto::ICMPV6 && p.family == family::V6);
    match e.proto {
        proto::TCP | proto::UDP => {
            e.sport = be16(t, 0);
            e.dport = be16(t, 2);
            e.rule_port = e.dport;
        }
        _ if icmp_inner => {
            if !icmp::is_echo_request(p.family, t[0]) && !icmp::is_echo_reply(p.family, t[0]) {
                return None;
            }
            e.sport = be16(t, 4);
            e.dport = e.sport;
            e.rule_port = u16::from(t[0]);
        }
        _ => {}
    }
    Some(e)
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

const VLAN_TYPES: [u16; 2] = [wire::ETH_P_8021Q, wire::ETH_P_8021AD];
const IPV6_EXTENSIONS: [u8; 4] = [
    wire::IPV6_HOP_BY_HOP,
    wire::IPV6_ROUTING,
    wire::IPV6_FRAGMENT,
    wire::IPV6_DEST_OPTS,
];

/// `Ok(None)` for frames that are not IP.
fn parse(frame: &[u8]) -> Result<Option<Parsed>, Reason> {
    if frame.len() < wire::ETH_HLEN {
        return Ok(None);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3 = wire::ETH_HLEN;
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
    };
    let (l4, end) = match ethertype {
        wire::ETH_P_IP => parse_ipv4(frame, l3, &mut p)?,
        wire::ETH_P_IPV6 => parse_ipv6(frame, l3, &mut p)?,
        _ => return Ok(None),
    };
    if p.frag != Frag::Later {
        p.l4 = l4;
        p.l4_end = end;
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
    check_ipv4_options(&frame[l3 + 20..l3 + header_len])?;
    p.family = family::V4;
    p.proto = h[9];
    p.frag_proto = h[9];
    p.hop_limit = h[8];
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

/// Source routes drop; an option that claims more than is left, or more options than
/// `limits::MAX_IPV4_OPTIONS`, drops as malformed.
fn check_ipv4_options(options: &[u8]) -> Result<(), Reason> {
    let mut at = 0;
    for _ in 0..limits::MAX_IPV4_OPTIONS {
        let Some(&kind) = options.get(at) else {
            return Ok(());
        };
        match kind {
            wire::IPV4_OPT_END => return Ok(()),
            wire::IPV4_OPT_NOP => at += 1,
            wire::IPV4_OPT_LSRR | wire::IPV4_OPT_SSRR => return Err(Reason::Ipv4SourceRoute),
            _ => {
                let len = usize::from(*options.get(at + 1).ok_or(Reason::Ipv4BadOptions)?);
                if len < 2 || at + len > options.len() {
                    return Err(Reason::Ipv4BadOptions);
                }
                at += len;
            }
        }
    }
    if at >= options.len() {
        Ok(())
    } else {
        Err(Reason::Ipv4BadOptions)
    }
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
    p.hop_limit = h[7];
    p.src.copy_from_slice(&h[8..24]);
    p.dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = l3 + 40;
    let mut walked = 0;
    while IPV6_EXTENSIONS.contains(&next) {
        if walked == limits::MAX_IPV6_EXT_HEADERS {
            return Err(Reason::Ipv6ExtTooMany);
        }
        if next == wire::IPV6_HOP_BY_HOP && walked != 0 {
            return Err(Reason::Ipv6ExtOrder);
        }
        walked += 1;
        // Every extension header is at least 8 bytes and must lie inside the payload.
        let ext = frame
            .get(off..end.max(off))
            .filter(|e| e.len() >= 8)
            .ok_or(Reason::Ipv6ExtTruncated)?;
        if next == wire::IPV6_FRAGMENT {
            next = ext[0];
            p.frag_proto = ext[0];
            off += 8;
            let offset_flags = be16(ext, 2);
            let id = be32(ext, 4);
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
            if next == wire::IPV6_ROUTING && ext[2] == 0 {
                return Err(Reason::Ipv6RoutingType0);
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
    match p.proto {
        proto::TCP => {
            if l4.len() < 20 {
                return Err(short);
            }
            p.sport = be16(l4, 0);
            p.dport = be16(l4, 2);
            p.rule_port = p.dport;
            p.seq = be32(l4, 4);
            p.ack = be32(l4, 8);
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
            p.tcp_flags = l4[13];
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
        _ if p.is_icmp() => {
            if l4.len() < 8 {
                return Err(short);
            }
            let (kind, code) = (l4[0], l4[1]);
            p.icmp_type = kind;
            p.icmp_code = code;
            p.rule_port = u16::from(kind);
            if icmp::is_echo_request(p.family, kind) || icmp::is_echo_reply(p.family, kind) {
                p.sport = be16(l4, 4);
                p.dport = p.sport;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Accepts, Class, Interface, PortRange, Rule};

    const EXT: &str = "ext0";
    const INT: &str = "int0";

    /// A TCP frame with flags, sequence and acknowledgement numbers.
    fn tcp(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    ) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&wire::ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = proto::TCP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f
    }

    const CLIENT: [u8; 4] = [203, 0, 113, 9];
    const CAS: [u8; 4] = [192, 0, 2, 1];
    const SYN: u8 = wire::TCP_SYN;
    const SYN_ACK: u8 = wire::TCP_SYN | wire::TCP_ACK;
    const ACK: u8 = wire::TCP_ACK;

    fn policy() -> Policy {
        Policy {
            classes: vec![Class {
                id: 1,
                name: "cas".into(),
                protected: true,
                trusted: true,
                prefixes: vec!["192.0.2.0/24".parse().unwrap()],
                ..Default::default()
            }],
            rules: vec![Rule {
                id: 7,
                service: "https".into(),
                dst_class: 1,
                src_classes: [0].into(),
                proto: proto::TCP,
                ports: PortRange::single(443),
            }],
            interfaces: vec![
                Interface {
                    name: EXT.into(),
                    reverse_path: true,
                    accepts: Accepts::Classes([0].into()),
                },
                Interface {
                    name: INT.into(),
                    reverse_path: true,
                    accepts: Accepts::Classes([1].into()),
                },
            ],
            ..Default::default()
        }
    }

    fn reference() -> Reference {
        let routes = Routes::table(
            vec![
                ("0.0.0.0/0".parse().unwrap(), EXT.into()),
                ("192.0.2.0/24".parse().unwrap(), INT.into()),
            ],
            [],
        );
        Reference::new(policy(), routes)
    }

    #[test]
    fn a_handshake_opens_a_connection_that_passes_both_ways() {
        let mut r = reference();
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, 0);
        assert_eq!(
            (out.verdict, out.reason, out.rule),
            (Verdict::Pass, Reason::Rule, Some(7))
        );
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 101), INT, 1);
        assert_eq!(out.reason, Reason::Flow);
        assert_eq!(r.confirmed_connections(1), 0, "a SYN-ACK does not confirm");
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, ACK, 101, 901), EXT, 2);
        assert!(out.confirmed);
        assert_eq!(r.confirmed_connections(2), 1);
        assert_eq!(r.counters().rules[&7].new_connections, 1);
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101), INT, 3);
        assert_eq!((out.reason, out.rule), (Reason::Flow, Some(7)));
        // The reply on the wrong interface is not the connection's.
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101), EXT, 4);
        assert_eq!(out.reason, Reason::SpoofedSource);
    }

    #[test]
    fn a_syn_ack_that_does_not_acknowledge_the_syn_drops() {
        let mut r = reference();
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, 0);
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 555), INT, 1);
        assert_eq!((out.verdict, out.reason), (Verdict::Drop, Reason::Policy));
    }

    #[test]
    fn a_syn_never_rides_a_connection_in_reverse() {
        let mut r = reference();
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, 0);
        r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 101), INT, 1);
        r.classify(&tcp(CLIENT, 40000, CAS, 443, ACK, 101, 901), EXT, 2);
        // The server's end opening a connection back to the client's port.
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN, 5, 0), INT, 3);
        assert_eq!(out.reason, Reason::Policy);
    }

    #[test]
    fn spoofed_sources_drop_and_are_counted_per_interface() {
        let mut r = reference();
        // A CAS address arriving from the Internet side.
        let out = r.classify(&tcp(CAS, 445, [192, 0, 2, 2], 443, SYN, 1, 0), EXT, 0);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::Drop, Reason::SpoofedSource)
        );
        // An external address the routes say lives inside is refused on the outside.
        r.routes_mut().add("203.0.113.0/24".parse().unwrap(), INT);
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 1, 0), EXT, 1);
        assert_eq!(out.reason, Reason::SpoofedSource);
        assert_eq!(
            r.counters().spoofed[&(EXT.to_string(), Verdict::Drop)].packets,
            2
        );
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 1, 0), "eth9", 2);
        assert_eq!(out.reason, Reason::UnknownInterface);
    }

    #[test]
    fn rst_inside_the_window_shortens_the_connection() {
        let mut r = reference();
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, 0);
        r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 101), INT, 1);
        r.classify(&tcp(CLIENT, 40000, CAS, 443, ACK, 101, 901), EXT, 2);
        let rst_window = r.policy().timeouts.tcp_rst.as_nanos() as u64;
        // Far outside the window: passes, changes nothing.
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, 101 + (1 << 30), 0),
            EXT,
            3,
        );
        let later = 3 + rst_window;
        assert_eq!(
            r.classify(&tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101), INT, later)
                .reason,
            Reason::Flow
        );
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, 102, 0),
            EXT,
            later + 1,
        );
        let out = r.classify(
            &tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101),
            INT,
            later + 1 + rst_window,
        );
        assert_eq!(out.reason, Reason::Policy);
    }

    /// The handshake of `tcp`'s connection between CLIENT:40000 and CAS:443, ISNs 100 and 900.
    fn handshake(r: &mut Reference, at: u64) {
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, at);
        r.classify(
            &tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 101),
            INT,
            at + 1,
        );
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, ACK, 101, 901), EXT, at + 2);
        assert!(out.confirmed);
    }

    #[test]
    fn a_blind_rst_cannot_move_the_window_it_is_checked_against() {
        let mut r = reference();
        handshake(&mut r, 0);
        let second = 1_000_000_000;
        // Out of the window, a second apart (a refresh in between): nothing changes.
        let far = 101u32.wrapping_add(0xdead_0000);
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, far, 0),
            EXT,
            5 * second,
        );
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, far, 0),
            EXT,
            6 * second,
        );
        let out = r.classify(
            &tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101),
            INT,
            30 * second,
        );
        assert_eq!(
            out.reason,
            Reason::Flow,
            "a blind RST shortened the connection"
        );
        // The connection's own data moves the record along, so its RST still counts.
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, ACK, 101 + 600_000, 901),
            EXT,
            31 * second,
        );
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, 101 + 1_500_000, 0),
            EXT,
            32 * second,
        );
        let rst = r.policy().timeouts.tcp_rst.as_nanos() as u64;
        let out = r.classify(
            &tcp(CAS, 443, CLIENT, 40000, ACK, 901, 101),
            INT,
            32 * second + rst,
        );
        assert_eq!(out.reason, Reason::Policy);
    }

    #[test]
    fn a_new_connection_replaces_a_closing_one_on_the_same_ports() {
        let mut r = reference();
        handshake(&mut r, 0);
        r.classify(
            &tcp(CLIENT, 40000, CAS, 443, wire::TCP_RST, 101, 0),
            EXT,
            10,
        );
        // The client reuses its port at once: the new handshake confirms a new connection.
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 5000, 0), EXT, 20);
        r.classify(&tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 7000, 5001), INT, 21);
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 443, ACK, 5001, 7001), EXT, 22);
        assert!(out.confirmed, "{out:?}");
        let idle = 20 * r.policy().timeouts.tcp_rst.as_nanos() as u64;
        let out = r.classify(&tcp(CAS, 443, CLIENT, 40000, ACK, 7001, 5001), INT, idle);
        assert_eq!(
            out.reason,
            Reason::Flow,
            "the new connection lives as an open one"
        );
    }

    /// An ICMPv4 error from `src` to `dst` carrying the first 28 bytes of `inner`'s IP packet.
    fn icmp_error(src: [u8; 4], dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let carried = &inner[14..14 + 28];
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&wire::ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + 8 + carried.len()) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = proto::ICMP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34] = 3;
        f[35] = 4;
        f.extend_from_slice(carried);
        f
    }

    #[test]
    fn icmp_errors_need_state_or_trust_and_the_right_direction() {
        let mut p = policy();
        // Untrusted, so errors between its hosts are judged rather than passed as trusted.
        p.classes[0].trusted = false;
        let mut r = reference();
        r.set_policy(p);
        let router = [203, 0, 113, 1];
        // About a packet the CAS sent that no connection knows: unmatched.
        let reply = tcp(CAS, 443, CLIENT, 40000, SYN_ACK, 900, 101);
        let out = r.classify(&icmp_error(router, CAS, &reply), EXT, 0);
        assert_eq!(out.reason, Reason::IcmpErrorUnmatched);
        // Once the client opened the connection, the same error, from the Internet side where
        // the packet was going: related.
        r.classify(&tcp(CLIENT, 40000, CAS, 443, SYN, 100, 0), EXT, 1);
        let out = r.classify(&icmp_error(router, CAS, &reply), EXT, 2);
        assert_eq!(out.reason, Reason::IcmpRelated);
        // The same error from the inside, where the packet was not going: unmatched.
        let out = r.classify(&icmp_error([192, 0, 2, 9], CAS, &reply), INT, 3);
        assert_eq!(out.reason, Reason::IcmpErrorUnmatched);
    }

    #[test]
    fn neighbour_discovery_is_for_the_link_or_the_gateway() {
        let mut p = policy();
        p.interfaces[0].accepts = Accepts::Any;
        p.classes.push(Class {
            id: 2,
            name: "gateway".into(),
            local: true,
            prefixes: vec!["2001:db8:1::1/128".parse().unwrap()],
            ..Default::default()
        });
        let mut r = Reference::new(p, Routes::assume_ingress());
        let advert = |dst: &str| {
            let mut f = vec![0u8; 14 + 40 + 24];
            f[12..14].copy_from_slice(&wire::ETH_P_IPV6.to_be_bytes());
            f[14] = 0x60;
            f[18..20].copy_from_slice(&24u16.to_be_bytes());
            f[20] = proto::ICMPV6;
            f[21] = 255;
            let src: std::net::Ipv6Addr = "2001:db8:1::7".parse().unwrap();
            let dst: std::net::Ipv6Addr = dst.parse().unwrap();
            f[22..38].copy_from_slice(&src.octets());
            f[38..54].copy_from_slice(&dst.octets());
            f[54] = 136;
            f
        };
        for (dst, reason) in [
            ("ff02::1", Reason::NeighbourDiscovery),
            ("fe80::1", Reason::NeighbourDiscovery),
            ("2001:db8:1::1", Reason::NeighbourDiscovery),
            ("2001:db8:9::9", Reason::NeighbourDiscoveryInvalid),
        ] {
            assert_eq!(r.classify(&advert(dst), EXT, 0).reason, reason, "to {dst}");
        }
    }

    #[test]
    fn audit_turns_drops_into_would_drops_and_transit_passes() {
        let mut p = policy();
        p.mode = Mode::Audit;
        let mut r = Reference::new(p, Routes::assume_ingress());
        let out = r.classify(&tcp(CLIENT, 40000, CAS, 22, SYN, 1, 0), EXT, 0);
        assert_eq!(
            (out.verdict, out.reason),
            (Verdict::WouldDrop, Reason::Policy)
        );
        let out = r.classify(
            &tcp(CLIENT, 40000, [198, 51, 100, 1], 22, SYN, 1, 0),
            EXT,
            0,
        );
        assert_eq!((out.verdict, out.reason), (Verdict::Pass, Reason::Transit));
    }

    #[test]
    fn malformed_headers_get_their_own_reason() {
        let mut r = reference();
        let mut f = tcp(CLIENT, 40000, CAS, 443, SYN, 1, 0);
        f[14] = 0x44;
        assert_eq!(r.classify(&f, EXT, 0).reason, Reason::Ipv4BadIhl);
        f[14] = 0x65;
        assert_eq!(r.classify(&f, EXT, 0).reason, Reason::Ipv4BadVersion);
        f[14] = 0x45;
        f[46] = 0x40;
        assert_eq!(r.classify(&f, EXT, 0).reason, Reason::TcpBadHeader);
        assert_eq!(r.classify(&f[..30], EXT, 0).reason, Reason::Ipv4Truncated);
        assert_eq!(r.classify(&f[..40], EXT, 0).reason, Reason::Ipv4BadLength);
    }

    #[test]
    fn ipv4_source_routes_and_bad_options_drop() {
        assert_eq!(check_ipv4_options(&[1, 1, 0, 0x83]), Ok(()));
        assert_eq!(
            check_ipv4_options(&[1, 0x83, 7, 4, 0, 0, 0, 0]),
            Err(Reason::Ipv4SourceRoute)
        );
        assert_eq!(
            check_ipv4_options(&[0x89, 3, 4, 0]),
            Err(Reason::Ipv4SourceRoute)
        );
        assert_eq!(
            check_ipv4_options(&[0x44, 12, 5, 0]),
            Err(Reason::Ipv4BadOptions)
        );
        assert_eq!(
            check_ipv4_options(&[0x94, 1, 0, 0]),
            Err(Reason::Ipv4BadOptions)
        );
        assert_eq!(
            check_ipv4_options(&[1, 1, 1, 0x94]),
            Err(Reason::Ipv4BadOptions)
        );
        assert_eq!(check_ipv4_options(&[0x94, 4, 0, 0]), Ok(()));
        assert_eq!(check_ipv4_options(&[1; 8]), Ok(()));
        assert_eq!(check_ipv4_options(&[1; 12]), Err(Reason::Ipv4BadOptions));
        assert_eq!(
            check_ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]),
            Err(Reason::Ipv4BadOptions)
        );
    }
}
