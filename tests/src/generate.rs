//! Random policies and traffic for differential tests: whole conversations (TCP handshakes with
//! data and closes, UDP exchanges, pings) interleaved on the interfaces their addresses route
//! through, and the frames an attacker sends: spoofed sources, floods of SYNs and bare ACKs,
//! forged handshake steps, reverse SYNs on open connections, ICMP errors about known and unknown
//! connections, neighbour discovery from off the link, source routes; plus malformed frames
//! (truncated at every header boundary, bad IHL, bad lengths, random bytes), fragments in and
//! out of order, VLAN stacks and IPv6 extension chains.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use exfw_daemon::policy::{
    Accepts, Class, Interface, Mode, Policy, PortRange, Routes, Rule, Timeouts,
};
use ipnet::IpNet;
use rand::{Rng, RngCore, rngs::StdRng, seq::IndexedRandom};

use crate::packet::{Ext, Fragment, Frame, L4, Spec, build};

const POPULAR_PORTS: [u16; 12] = [22, 25, 53, 80, 110, 143, 443, 587, 993, 3389, 50636, 135];

/// A source address of the gateway itself in routed topologies: the route back to it is local.
pub const LOCAL_ADDRESS: &str = "10.99.0.1";

/// The interfaces frames arrive on and how addresses route through them.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Interface names. In a routed topology the first carries the default route and the last
    /// never checks the reverse path (malformed and random frames arrive there).
    pub interfaces: Vec<String>,
    /// Whether the kernel routes match [`Topology::route`] (reverse-path checks can be on).
    pub routed: bool,
}

impl Topology {
    /// Every frame on loopback, no routing: what BPF_PROG_TEST_RUN gives without an ingress
    /// context (kernels before 5.15).
    pub fn loopback() -> Topology {
        Topology {
            interfaces: vec!["lo".into()],
            routed: false,
        }
    }

    /// Interfaces `names` with routes: the default route through the first.
    pub fn routed(names: &[&str]) -> Topology {
        assert!(names.len() >= 3, "a routed topology needs three interfaces");
        Topology {
            interfaces: names.iter().map(|n| n.to_string()).collect(),
            routed: true,
        }
    }

    /// The interface a policy prefix routes through: a function of the prefix alone, so
    /// every policy over the same addresses agrees with one routing table.
    pub fn route(&self, net: &IpNet) -> &str {
        if !self.routed {
            return &self.interfaces[0];
        }
        let h = match net {
            IpNet::V4(n) => {
                u32::from(n.network()).wrapping_mul(2_654_435_761) ^ u32::from(n.prefix_len())
            }
            IpNet::V6(n) => {
                (u128::from(n.network()) as u32).wrapping_mul(2_654_435_761)
                    ^ u32::from(n.prefix_len())
            }
        };
        // Mostly inside (interfaces 1 and up), sometimes out on the default route's side.
        let n = self.interfaces.len();
        &self.interfaces[if h % 5 == 0 {
            0
        } else {
            1 + (h as usize / 5) % (n - 1)
        }]
    }

    /// The no-reverse-path interface, where malformed frames arrive.
    pub fn lenient(&self) -> &str {
        self.interfaces.last().unwrap()
    }

    /// The routing table: every prefix of `policies` through [`Topology::route`], the default
    /// routes through the first interface, loopback and [`LOCAL_ADDRESS`] local.
    pub fn routes(&self, policies: &[&Policy]) -> Vec<(IpNet, String)> {
        let mut out: Vec<(IpNet, String)> = vec![
            ("0.0.0.0/0".parse().unwrap(), self.interfaces[0].clone()),
            ("::/0".parse().unwrap(), self.interfaces[0].clone()),
        ];
        for net in policies
            .iter()
            .flat_map(|p| &p.classes)
            .flat_map(|c| &c.prefixes)
        {
            if !out.iter().any(|(n, _)| n == net) {
                out.push((*net, self.route(net).to_string()));
            }
        }
        out
    }

    /// The reference's view of [`Topology::routes`].
    pub fn reference_routes(&self, policies: &[&Policy]) -> Routes {
        Routes::table(
            self.routes(policies),
            [
                "127.0.0.0/8".parse().unwrap(),
                format!("{LOCAL_ADDRESS}/32").parse().unwrap(),
            ],
        )
    }

    /// The interface `addr` arrives on when it tells the truth (routes of `policy`).
    fn home(&self, policy: &Policy, addr: IpAddr) -> &str {
        policy
            .classes
            .iter()
            .flat_map(|c| &c.prefixes)
            .filter(|n| n.contains(&addr))
            .max_by_key(|n| n.prefix_len())
            .map_or(self.interfaces[0].as_str(), |n| self.route(n))
    }
}

/// A random valid policy over the documentation ranges, with interfaces of `topology`.
pub fn policy(rng: &mut StdRng, topology: &Topology) -> Policy {
    let count = rng.random_range(1..=6u16);
    let mut taken: Vec<IpNet> = Vec::new();
    let mut classes = Vec::new();
    for id in 1..=count {
        let mut prefixes = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let net = random_prefix(rng);
            if !taken.contains(&net) {
                taken.push(net);
                prefixes.push(net);
            }
        }
        classes.push(Class {
            id,
            name: format!("class{id}"),
            protected: rng.random_bool(0.8),
            trusted: rng.random_bool(0.5),
            local: rng.random_bool(0.1),
            prefixes,
        });
    }
    let mut rules = Vec::new();
    for id in 0..rng.random_range(1..=16u32) {
        let proto = *[6u8, 6, 6, 17, 17, 1, 58, 47].choose(rng).unwrap();
        let ports = match proto {
            1 | 58 => PortRange::single(*[0u16, 8, 128, 129, 3, 11, 1, 2].choose(rng).unwrap()),
            47 => PortRange::ANY,
            _ if rng.random_bool(0.6) => PortRange::single(*POPULAR_PORTS.choose(rng).unwrap()),
            _ => {
                let first = rng.random_range(0..=65535u16);
                let last = first.saturating_add(rng.random_range(0..=4000u16));
                PortRange { first, last }
            }
        };
        let mut src_classes: std::collections::BTreeSet<u16> = (0..rng.random_range(1..=3))
            .map(|_| rng.random_range(0..=count))
            .collect();
        if src_classes.is_empty() {
            src_classes.insert(0);
        }
        rules.push(Rule {
            id: id * 7 % 4096,
            service: format!("svc{id}"),
            dst_class: rng.random_range(0..=count),
            src_classes,
            proto,
            ports,
        });
    }
    let interfaces = interfaces(rng, topology, &classes);
    Policy {
        mode: if rng.random_bool(0.25) {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        timeouts: Timeouts::default(),
        classes,
        rules,
        interfaces,
    }
}

/// What each interface accepts: mostly the classes routed through it (and external on the
/// default route's), sometimes everything, sometimes a random set; the reverse-path check on
/// where the topology is routed, except on its lenient interface.
fn interfaces(rng: &mut StdRng, topology: &Topology, classes: &[Class]) -> Vec<Interface> {
    topology
        .interfaces
        .iter()
        .enumerate()
        .map(|(slot, name)| {
            let accepts = match rng.random_range(0..10) {
                0..=5 => {
                    let mut set: std::collections::BTreeSet<u16> = classes
                        .iter()
                        .filter(|c| c.prefixes.iter().any(|p| topology.route(p) == name))
                        .map(|c| c.id)
                        .collect();
                    if slot == 0 || !topology.routed {
                        set.insert(0);
                    }
                    Accepts::Classes(set)
                }
                6..=7 => Accepts::Any,
                _ => Accepts::Classes(
                    (0..=classes.len() as u16)
                        .filter(|_| rng.random_bool(0.5))
                        .collect(),
                ),
            };
            Interface {
                name: name.clone(),
                reverse_path: topology.routed && name != topology.lenient() && rng.random_bool(0.7),
                accepts,
            }
        })
        .collect()
}

fn random_prefix(rng: &mut StdRng) -> IpNet {
    let net: IpNet = match rng.random_range(0..6) {
        0 => "192.0.2.0/24".parse().unwrap(),
        1 => format!("192.0.2.{}/28", 16 * rng.random_range(0..16))
            .parse()
            .unwrap(),
        2 => format!("192.0.2.{}/32", rng.random_range(0..=255))
            .parse()
            .unwrap(),
        3 => format!("198.51.100.{}/32", rng.random_range(0..=255))
            .parse()
            .unwrap(),
        4 => format!("2001:db8:{:x}::/48", rng.random_range(0..8))
            .parse()
            .unwrap(),
        _ => format!(
            "2001:db8:{:x}::{:x}/128",
            rng.random_range(0..8),
            rng.random_range(0..64)
        )
        .parse()
        .unwrap(),
    };
    net.trunc()
}

/// A random address of `v6`'s family: inside one of the policy's prefixes or external.
fn address(rng: &mut StdRng, policy: &Policy, v6: bool) -> IpAddr {
    let inside: Vec<&IpNet> = policy
        .classes
        .iter()
        .flat_map(|c| &c.prefixes)
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .collect();
    if !inside.is_empty() && rng.random_bool(0.75) {
        let net = inside.choose(rng).unwrap();
        return match net {
            IpNet::V4(n) => {
                let host = u32::from(n.network()) | (rng.next_u32() & !u32::from(n.netmask()));
                IpAddr::V4(Ipv4Addr::from(host))
            }
            IpNet::V6(n) => {
                let random = u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64);
                let host = u128::from(n.network()) | (random & !u128::from(n.netmask()));
                IpAddr::V6(Ipv6Addr::from(host))
            }
        };
    }
    external(rng, v6)
}

/// An address of class `class` (external when 0, or when the class has none of the family).
fn class_address(rng: &mut StdRng, policy: &Policy, class: u16, v6: bool) -> IpAddr {
    let nets: Vec<&IpNet> = policy
        .class(class)
        .into_iter()
        .flat_map(|c| &c.prefixes)
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .collect();
    match nets.choose(rng) {
        Some(IpNet::V4(n)) => IpAddr::V4(Ipv4Addr::from(
            u32::from(n.network()) | (rng.next_u32() & !u32::from(n.netmask())),
        )),
        Some(IpNet::V6(n)) => {
            let random = u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64);
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network()) | (random & !u128::from(n.netmask())),
            ))
        }
        None => external(rng, v6),
    }
}

fn external(rng: &mut StdRng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            0,
            rng.random_range(1..32),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.random_range(1..32)))
    }
}

/// Addresses the reverse-path check treats specially: link-local and unspecified sources
/// (exempt), a local address, link-scoped and other multicast destinations.
fn odd_address(rng: &mut StdRng, v6: bool) -> IpAddr {
    if v6 {
        *[
            "fe80::1",
            "fe80::2:3",
            "::",
            "ff02::1",
            "ff02::1:ff00:21",
            "ff05::2",
            "::1",
        ]
        .choose(rng)
        .unwrap()
    } else {
        *[
            "0.0.0.0",
            LOCAL_ADDRESS,
            "127.0.0.1",
            "224.0.0.5",
            "255.255.255.255",
        ]
        .choose(rng)
        .unwrap()
    }
    .parse()
    .unwrap()
}

fn port(rng: &mut StdRng, policy: &Policy) -> u16 {
    let ports: Vec<PortRange> = policy.rules.iter().map(|r| r.ports).collect();
    match ports.choose(rng) {
        Some(r) if rng.random_bool(0.6) => rng.random_range(r.first..=r.last),
        _ if rng.random_bool(0.5) => *POPULAR_PORTS.choose(rng).unwrap(),
        _ => rng.random_range(0..=65535),
    }
}

/// A well-formed packet aimed at the policy (any transport, any flags).
pub fn spec(rng: &mut StdRng, policy: &Policy) -> Spec {
    let v6 = rng.random_bool(0.4);
    let l4 = match rng.random_range(0..10) {
        0..=4 => L4::Tcp {
            sport: rng.random_range(1024..=65535),
            dport: port(rng, policy),
            flags: *[0x02u8, 0x10, 0x12, 0x18, 0x11, 0x04, 0x14, 0xc2]
                .choose(rng)
                .unwrap(),
            data_offset: if rng.random_bool(0.8) {
                5
            } else {
                rng.random_range(6..=15)
            },
            seq: rng.random(),
            ack: rng.random(),
        },
        5..=7 => L4::Udp {
            sport: rng.random_range(1024..=65535),
            dport: port(rng, policy),
            length: None,
        },
        8 => {
            let kinds: &[u8] = if v6 {
                &[128, 129, 2, 135, 136, 1, 3, 4, 134]
            } else {
                &[8, 0, 3, 11, 5, 12]
            };
            L4::Icmp {
                kind: *kinds.choose(rng).unwrap(),
                code: rng.random_range(0..5),
                id: rng.random(),
                inner: Vec::new(),
            }
        }
        _ => L4::Other {
            proto: *[47u8, 50, 132, 89].choose(rng).unwrap(),
        },
    };
    let mut spec = Spec::new(address(rng, policy, v6), address(rng, policy, v6), l4);
    if rng.random_bool(0.25) {
        for _ in 0..rng.random_range(1..=2) {
            spec.vlans.push((
                *[0x8100u16, 0x88a8].choose(rng).unwrap(),
                rng.random_range(1..4095),
            ));
        }
    }
    if v6 && rng.random_bool(0.3) {
        for i in 0..rng.random_range(1..=3) {
            spec.exts.push(match rng.random_range(0..3) {
                0 if i == 0 => Ext::HopByHop {
                    len: rng.random_range(0..3),
                },
                1 => Ext::Routing {
                    len: rng.random_range(0..3),
                    kind: *[2u8, 3, 4, 0].choose(rng).unwrap(),
                },
                _ => Ext::DestOpts {
                    len: rng.random_range(0..3),
                },
            });
        }
    }
    if !v6 && rng.random_bool(0.15) {
        spec.ipv4_options = ipv4_options(rng);
    }
    spec.payload = rng.random_range(0..64);
    spec
}

/// IPv4 options: valid lists, source routes, malformed lengths, too many options.
fn ipv4_options(rng: &mut StdRng) -> Vec<u8> {
    let mut o = Vec::new();
    match rng.random_range(0..6) {
        0 => o.extend(std::iter::repeat_n(1u8, rng.random_range(1..=12))),
        1 => {
            let kind = *[0x83u8, 0x89].choose(rng).unwrap();
            o.extend(std::iter::repeat_n(1u8, rng.random_range(0..4)));
            o.extend([kind, 7, 4, 0, 0, 0, 0]);
        }
        2 => o.extend([0x44, rng.random_range(0..=12), 5, 0, 0, 0, 0, 0]),
        3 => o.extend([7, 7, 4, 0, 0, 0, 0, 1, 0]),
        4 => o.extend([1, 1, 0, 0x83, 3, 4]),
        _ => {
            for _ in 0..rng.random_range(1..12) {
                o.push(rng.random());
            }
        }
    }
    o.truncate(40);
    o
}

/// Cuts `frame` at `at` and rewrites the IP length fields so only the transport is short.
pub fn truncate_consistently(frame: &Frame, at: usize) -> Vec<u8> {
    let mut b = frame.bytes[..at.min(frame.bytes.len())].to_vec();
    let l3 = frame.l3;
    if b.len() >= l3 + 40 && b[l3] >> 4 == 6 {
        let payload = (b.len() - l3 - 40) as u16;
        b[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    } else if b.len() >= l3 + 20 && b[l3] >> 4 == 4 {
        let total = (b.len() - l3) as u16;
        b[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    }
    b
}

/// A frame and the interface it arrives on.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// The bytes.
    pub frame: Vec<u8>,
    /// The ingress interface.
    pub iface: String,
}

/// One conversation's frames, in order, each with its interface.
struct Conversation {
    frames: VecDeque<(Spec, String)>,
}

/// A stream of frames aimed at a policy over a topology.
pub struct Stream<'a> {
    rng: &'a mut StdRng,
    policy: Policy,
    topology: Topology,
    conversations: Vec<Conversation>,
    /// Recent well-formed frames (for ICMP errors to embed).
    recent: Vec<Spec>,
    queued: VecDeque<Arrival>,
    next_id: u32,
}

impl<'a> Stream<'a> {
    /// A stream of frames aimed at `policy`, arriving on `topology`'s interfaces.
    pub fn new(rng: &'a mut StdRng, policy: Policy, topology: Topology) -> Self {
        Stream {
            rng,
            policy,
            topology,
            conversations: Vec::new(),
            recent: Vec::new(),
            queued: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Aims later frames at another policy (after a generation flip).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The interface a frame from `src` arrives on: its home mostly, sometimes anywhere.
    fn ingress(&mut self, src: IpAddr) -> String {
        if self.rng.random_bool(0.9) {
            self.topology.home(&self.policy, src).to_string()
        } else {
            self.topology.interfaces.choose(self.rng).unwrap().clone()
        }
    }

    fn remember(&mut self, spec: &Spec) {
        self.recent.push(spec.clone());
        if self.recent.len() > 64 {
            self.recent.remove(0);
        }
    }

    /// The next frame.
    pub fn next_arrival(&mut self) -> Arrival {
        if let Some(a) = self.queued.pop_front() {
            return a;
        }
        if !self.conversations.is_empty() && self.rng.random_bool(0.45) {
            let i = self.rng.random_range(0..self.conversations.len());
            if let Some((spec, iface)) = self.conversations[i].frames.pop_front() {
                self.remember(&spec);
                return Arrival {
                    frame: build(&spec).bytes,
                    iface,
                };
            }
            self.conversations.swap_remove(i);
        }
        let kind = self.rng.random_range(0..100);
        match kind {
            0..=24 => {
                self.start_conversation();
                self.next_arrival()
            }
            25..=27 => self.flood(),
            28..=31 => self.icmp_error(),
            32..=34 => self.neighbour_discovery(),
            35..=37 => {
                // Odd sources and destinations: link-local, unspecified, local, multicast.
                let mut spec = spec(self.rng, &self.policy);
                let v6 = spec.src.is_ipv6();
                if self.rng.random_bool(0.5) {
                    spec.src = odd_address(self.rng, v6);
                } else {
                    spec.dst = odd_address(self.rng, v6);
                }
                let iface = self.ingress(spec.src);
                Arrival {
                    frame: build(&spec).bytes,
                    iface,
                }
            }
            38..=49 => self.fragments(),
            50..=51 => self.boundaries(),
            52..=58 => self.truncated(),
            59..=65 => self.corrupted(),
            66..=70 => self.random_bytes(),
            71..=74 => self.odd_stack(),
            _ => {
                let spec = spec(self.rng, &self.policy);
                self.remember(&spec);
                let iface = self.ingress(spec.src);
                Arrival {
                    frame: build(&spec).bytes,
                    iface,
                }
            }
        }
    }

    /// A TCP connection (handshake, data, a close), a UDP exchange or a ping, with mistakes
    /// and attacks mixed in: wrong acknowledgements, replies on other interfaces, a reverse
    /// SYN on the open connection, FIN and RST inside and outside the window, packets after
    /// the close.
    fn start_conversation(&mut self) {
        let rng = &mut *self.rng;
        let (client, server, server_port, kind) = match self.policy.rules.choose(rng) {
            // Mostly what a rule admits: a client of a source class, a server of the
            // destination class, a port of the rule.
            Some(rule) if rng.random_bool(0.75) => {
                let v6 = match rule.proto {
                    1 => false,
                    58 => true,
                    _ => rng.random_bool(0.4),
                };
                let src = *rule
                    .src_classes
                    .iter()
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .unwrap();
                let client = class_address(rng, &self.policy, *src, v6);
                let server = class_address(rng, &self.policy, rule.dst_class, v6);
                let port = rng.random_range(rule.ports.first..=rule.ports.last);
                let kind = match rule.proto {
                    6 => 0,
                    17 => 6,
                    1 | 58 => 9,
                    _ => 10,
                };
                (client, server, port, kind)
            }
            _ => {
                let v6 = rng.random_bool(0.4);
                (
                    address(rng, &self.policy, v6),
                    address(rng, &self.policy, v6),
                    port(rng, &self.policy),
                    rng.random_range(0..11),
                )
            }
        };
        let client_port = rng.random_range(1024..=65535u16);
        let v6 = client.is_ipv6();
        let mut frames: VecDeque<(Spec, String)> = VecDeque::new();
        let ci = self.ingress(client);
        let si = self.ingress(server);
        let ifaces = self.topology.interfaces.clone();
        let rng = &mut *self.rng;
        let vlans: Vec<(u16, u16)> = if rng.random_bool(0.1) {
            vec![(0x8100, 7)]
        } else {
            vec![]
        };
        let push = |frames: &mut VecDeque<(Spec, String)>,
                    from_client: bool,
                    l4: L4,
                    payload: usize,
                    iface: &str| {
            let (src, dst) = if from_client {
                (client, server)
            } else {
                (server, client)
            };
            let mut spec = Spec::new(src, dst, l4);
            spec.vlans = vlans.clone();
            spec.payload = payload;
            frames.push_back((spec, iface.to_string()));
        };
        match kind {
            0..=5 => {
                let (mut c_seq, mut s_seq) = (rng.random::<u32>(), rng.random::<u32>());
                let tcp = |from_client: bool, flags: u8, seq: u32, ack: u32| {
                    let (sp, dp) = if from_client {
                        (client_port, server_port)
                    } else {
                        (server_port, client_port)
                    };
                    L4::tcp(sp, dp, flags, seq, ack)
                };
                let wrong = |rng: &mut StdRng, v: u32| {
                    if rng.random_bool(0.08) {
                        v.wrapping_add(rng.random_range(2..1000))
                    } else {
                        v
                    }
                };
                let other_iface = |rng: &mut StdRng, iface: &str| -> String {
                    if rng.random_bool(0.05) {
                        ifaces.choose(rng).unwrap().clone()
                    } else {
                        iface.to_string()
                    }
                };
                let syn_flags = if rng.random_bool(0.1) { 0xc2 } else { 0x02 };
                push(&mut frames, true, tcp(true, syn_flags, c_seq, 0), 0, &ci);
                if rng.random_bool(0.1) {
                    push(&mut frames, true, tcp(true, 0x02, c_seq, 0), 0, &ci);
                }
                let ack = wrong(rng, c_seq.wrapping_add(1));
                let si2 = other_iface(rng, &si);
                push(&mut frames, false, tcp(false, 0x12, s_seq, ack), 0, &si2);
                if rng.random_bool(0.05) {
                    // Refused instead.
                    push(
                        &mut frames,
                        false,
                        tcp(false, 0x14, 0, c_seq.wrapping_add(1)),
                        0,
                        &si,
                    );
                }
                c_seq = c_seq.wrapping_add(1);
                s_seq = s_seq.wrapping_add(1);
                let ack = wrong(rng, s_seq);
                let ci2 = other_iface(rng, &ci);
                push(&mut frames, true, tcp(true, 0x10, c_seq, ack), 0, &ci2);
                for _ in 0..rng.random_range(0..5) {
                    let from_client = rng.random_bool(0.5);
                    let len = rng.random_range(0..200);
                    if rng.random_bool(0.2) {
                        // Much data unseen in between: the recorded sequence number follows
                        // (or, far enough, falls behind).
                        let jump = rng.random_range(1u32 << 17..1 << 21);
                        if from_client {
                            c_seq = c_seq.wrapping_add(jump);
                        } else {
                            s_seq = s_seq.wrapping_add(jump);
                        }
                    }
                    if from_client {
                        push(&mut frames, true, tcp(true, 0x18, c_seq, s_seq), len, &ci);
                        c_seq = c_seq.wrapping_add(len as u32);
                    } else {
                        push(&mut frames, false, tcp(false, 0x18, s_seq, c_seq), len, &si);
                        s_seq = s_seq.wrapping_add(len as u32);
                    }
                }
                if rng.random_bool(0.1) {
                    // The server's end opening a connection back: never rides the flow.
                    push(&mut frames, false, tcp(false, 0x02, s_seq, 0), 0, &si);
                }
                match rng.random_range(0..10) {
                    0..=3 => {
                        push(&mut frames, true, tcp(true, 0x11, c_seq, s_seq), 0, &ci);
                        push(
                            &mut frames,
                            false,
                            tcp(false, 0x11, s_seq, c_seq.wrapping_add(1)),
                            0,
                            &si,
                        );
                        push(
                            &mut frames,
                            true,
                            tcp(true, 0x10, c_seq.wrapping_add(1), s_seq.wrapping_add(1)),
                            0,
                            &ci,
                        );
                    }
                    4..=5 => {
                        let seq = if rng.random_bool(0.3) {
                            c_seq.wrapping_add(1 << 30)
                        } else {
                            c_seq
                        };
                        push(&mut frames, true, tcp(true, 0x04, seq, 0), 0, &ci);
                        if rng.random_bool(0.5) {
                            push(&mut frames, false, tcp(false, 0x18, s_seq, c_seq), 10, &si);
                        }
                    }
                    _ => {}
                }
            }
            6..=8 => {
                let udp = |from_client: bool| {
                    let (sp, dp) = if from_client {
                        (client_port, server_port)
                    } else {
                        (server_port, client_port)
                    };
                    L4::Udp {
                        sport: sp,
                        dport: dp,
                        length: None,
                    }
                };
                push(&mut frames, true, udp(true), rng.random_range(0..60), &ci);
                for _ in 0..rng.random_range(0..4) {
                    let from_client = rng.random_bool(0.4);
                    let iface = if from_client { &ci } else { &si };
                    push(
                        &mut frames,
                        from_client,
                        udp(from_client),
                        rng.random_range(0..60),
                        iface,
                    );
                }
            }
            10 => {
                // Another protocol (GRE, ESP, ...): datagrams both ways, no ports.
                let other = L4::Other {
                    proto: *[47u8, 50, 132].choose(rng).unwrap(),
                };
                push(&mut frames, true, other.clone(), 24, &ci);
                push(&mut frames, false, other.clone(), 24, &si);
                push(&mut frames, true, other, 24, &ci);
            }
            _ => {
                let id = rng.random();
                let (req, rep) = if v6 { (128, 129) } else { (8, 0) };
                let echo = |kind| L4::Icmp {
                    kind,
                    code: 0,
                    id,
                    inner: Vec::new(),
                };
                push(&mut frames, true, echo(req), 16, &ci);
                push(&mut frames, false, echo(rep), 16, &si);
                if rng.random_bool(0.2) {
                    push(&mut frames, false, echo(req), 16, &si);
                }
            }
        }
        self.conversations.push(Conversation { frames });
    }

    /// A burst of SYNs or bare ACKs from many sources to one destination and port.
    fn flood(&mut self) -> Arrival {
        let v6 = self.rng.random_bool(0.3);
        let dst = address(self.rng, &self.policy, v6);
        let dport = port(self.rng, &self.policy);
        let flags = *[0x02u8, 0x10].choose(self.rng).unwrap();
        for _ in 0..self.rng.random_range(20..200) {
            let src = if self.rng.random_bool(0.8) {
                external(self.rng, v6)
            } else {
                address(self.rng, &self.policy, v6)
            };
            let l4 = L4::tcp(
                self.rng.random_range(1024..=65535),
                dport,
                flags,
                self.rng.random(),
                self.rng.random(),
            );
            let iface = self.ingress(src);
            self.queued.push_back(Arrival {
                frame: build(&Spec::new(src, dst, l4)).bytes,
                iface,
            });
        }
        self.queued.pop_front().unwrap()
    }

    /// An ICMP error carrying a recent packet (or an invented one), sent back to its sender
    /// or the wrong way, whole or cut short.
    fn icmp_error(&mut self) -> Arrival {
        let about = match self.recent.choose(self.rng) {
            Some(s) if self.rng.random_bool(0.8) => s.clone(),
            _ => spec(self.rng, &self.policy),
        };
        let v6 = about.src.is_ipv6();
        let mut inner_frame = build(&Spec {
            vlans: vec![],
            ..about.clone()
        });
        let header = inner_frame.boundaries[inner_frame.boundaries.len() - 2] - inner_frame.l3;
        let keep = match self.rng.random_range(0..10) {
            0 => self.rng.random_range(0..header + 8),
            1 => usize::MAX,
            _ => header + 8,
        };
        let mut inner = inner_frame.ip().to_vec();
        inner.truncate(keep);
        if self.rng.random_bool(0.05) && !inner.is_empty() {
            let i = self.rng.random_range(0..inner.len());
            inner[i] = self.rng.random();
        }
        inner_frame.bytes.clear();
        let dst = if self.rng.random_bool(0.8) {
            about.src
        } else {
            about.dst
        };
        let src = if self.rng.random_bool(0.5) {
            external(self.rng, v6)
        } else {
            address(self.rng, &self.policy, v6)
        };
        let (kind, code) = if v6 {
            *[(1u8, 0u8), (1, 4), (2, 0), (3, 0), (4, 0)]
                .choose(self.rng)
                .unwrap()
        } else {
            *[(3u8, 4u8), (3, 1), (3, 3), (11, 0), (12, 0)]
                .choose(self.rng)
                .unwrap()
        };
        let spec = Spec::new(
            src,
            dst,
            L4::Icmp {
                kind,
                code,
                id: 0,
                inner,
            },
        );
        let iface = self.ingress(src);
        Arrival {
            frame: build(&spec).bytes,
            iface,
        }
    }

    /// Neighbour discovery, on the link or not.
    fn neighbour_discovery(&mut self) -> Arrival {
        let rng = &mut *self.rng;
        let kind = rng.random_range(133..=137u8);
        let src: IpAddr = match rng.random_range(0..4) {
            0..=1 => "fe80::1".parse().unwrap(),
            2 => "::".parse().unwrap(),
            _ => address(rng, &self.policy, true),
        };
        let dst: IpAddr = ["ff02::1", "ff02::1:ff00:21", "fe80::2", "2001:db8:1::21"]
            .choose(rng)
            .unwrap()
            .parse()
            .unwrap();
        let mut spec = Spec::new(
            src,
            dst,
            L4::Icmp {
                kind,
                code: if rng.random_bool(0.9) { 0 } else { 1 },
                id: 0,
                inner: Vec::new(),
            },
        );
        spec.hop_limit = if rng.random_bool(0.7) {
            255
        } else {
            *[64u8, 254, 1].choose(rng).unwrap()
        };
        let iface = self.topology.interfaces.choose(self.rng).unwrap().clone();
        Arrival {
            frame: build(&spec).bytes,
            iface,
        }
    }

    /// A fragmented datagram: first and later fragments, in order, reversed, partial, or the
    /// later one on another interface.
    fn fragments(&mut self) -> Arrival {
        let id = self.next_id;
        self.next_id += 1;
        let mut spec = spec(self.rng, &self.policy);
        spec.fragment = Some(Fragment {
            id,
            offset: 0,
            more: true,
        });
        spec.payload = 16;
        let first = build(&spec);
        let mut later_spec = spec.clone();
        later_spec.fragment = Some(Fragment {
            id,
            offset: self.rng.random_range(3..200),
            more: self.rng.random_bool(0.3),
        });
        later_spec.payload = self.rng.random_range(8..64);
        let later = build(&later_spec).bytes;
        if self.rng.random_bool(0.1) {
            // A forged first fragment of the same datagram to a port nothing allows, from
            // anywhere: it must not undo the real first fragment's verdict.
            let mut forged = spec.clone();
            if let L4::Tcp { dport, .. } | L4::Udp { dport, .. } = &mut forged.l4 {
                *dport = 3389;
            }
            let iface = self.topology.interfaces.choose(self.rng).unwrap().clone();
            self.queued.push_back(Arrival {
                frame: build(&forged).bytes,
                iface,
            });
        }
        let first_bytes = if self.rng.random_bool(0.15) {
            // A tiny first fragment that cannot hold the transport header.
            let l4 = first.boundaries[first.boundaries.len() - 2];
            truncate_consistently(&first, l4 + self.rng.random_range(0..8))
        } else {
            first.bytes
        };
        let iface = self.ingress(spec.src);
        let later_iface = if self.rng.random_bool(0.1) {
            self.topology.interfaces.choose(self.rng).unwrap().clone()
        } else {
            iface.clone()
        };
        let (a, b) = (
            Arrival {
                frame: first_bytes,
                iface,
            },
            Arrival {
                frame: later,
                iface: later_iface,
            },
        );
        match self.rng.random_range(0..4) {
            0 => {
                self.queued.push_back(a);
                b
            }
            1 => b,
            2 => a,
            _ => {
                self.queued.push_back(b);
                a
            }
        }
    }

    fn lenient(&self, frame: Vec<u8>) -> Arrival {
        Arrival {
            frame,
            iface: self.topology.lenient().to_string(),
        }
    }

    /// Every header boundary of one frame, both ways: cut, and cut with lengths fixed.
    fn boundaries(&mut self) -> Arrival {
        let frame = build(&spec(self.rng, &self.policy));
        for at in frame.boundaries.iter().flat_map(|b| [*b, b + 1]) {
            let cut = self.lenient(frame.bytes[..at.min(frame.bytes.len())].to_vec());
            self.queued.push_back(cut);
            let fixed = self.lenient(truncate_consistently(&frame, at));
            self.queued.push_back(fixed);
        }
        self.lenient(frame.bytes)
    }

    /// Truncated at a header boundary (or one byte past), lengths left claiming more.
    fn truncated(&mut self) -> Arrival {
        let frame = build(&spec(self.rng, &self.policy));
        let at = *frame.boundaries.choose(self.rng).unwrap() + self.rng.random_range(0..2);
        let bytes = if self.rng.random_bool(0.5) {
            frame.bytes[..at.min(frame.bytes.len())].to_vec()
        } else {
            truncate_consistently(&frame, at)
        };
        self.lenient(bytes)
    }

    /// Corrupted IP header fields.
    fn corrupted(&mut self) -> Arrival {
        let spec = spec(self.rng, &self.policy);
        let mut frame = build(&spec);
        let l3 = frame.l3;
        let rng = &mut *self.rng;
        let b = &mut frame.bytes;
        match (spec.src.is_ipv6(), rng.random_range(0..3)) {
            (false, 0) => b[l3] = (b[l3] & 0xf0) | rng.random_range(0..16),
            (true, 0) => b[l3 + 4..l3 + 6].copy_from_slice(&rng.random::<u16>().to_be_bytes()),
            (false, 1) => b[l3 + 2..l3 + 4].copy_from_slice(&rng.random::<u16>().to_be_bytes()),
            (_, 1) => b[l3] = (rng.random_range(0..16u8) << 4) | (b[l3] & 0x0f),
            _ => {
                let i = rng.random_range(l3..b.len());
                b[i] = rng.random();
            }
        }
        self.lenient(frame.bytes)
    }

    /// Random bytes, sometimes behind a plausible ethertype.
    fn random_bytes(&mut self) -> Arrival {
        let rng = &mut *self.rng;
        let mut b: Vec<u8> = (0..rng.random_range(14..200))
            .map(|_| rng.random())
            .collect();
        let ethertype = *[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]
            .choose(rng)
            .unwrap();
        if rng.random_bool(0.8) {
            b[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }
        self.lenient(b)
    }

    /// Odd stacks: three VLAN tags, long or misordered IPv6 extension chains.
    fn odd_stack(&mut self) -> Arrival {
        let mut spec = spec(self.rng, &self.policy);
        if spec.src.is_ipv6() && self.rng.random_bool(0.7) {
            let n = self.rng.random_range(5..=8);
            spec.exts = (0..n).map(|_| Ext::DestOpts { len: 0 }).collect();
            if self.rng.random_bool(0.3) {
                spec.exts[1] = Ext::HopByHop { len: 0 };
            }
        } else {
            spec.vlans = vec![(0x88a8, 10), (0x8100, 20), (0x8100, 30)];
        }
        let iface = self.ingress(spec.src);
        Arrival {
            frame: build(&spec).bytes,
            iface,
        }
    }
}

/// A random valid configuration: any Exchange version, its roles, options, extra allow entries,
/// management access, IPv4 and IPv6. Every address is distinct by construction.
pub fn config(rng: &mut StdRng) -> exfw_daemon::config::Config {
    use exfw_daemon::{
        config::{
            Allow, Config, DcAccess, Endpoint, ExchangeVersion, Host, Limits, Management,
            Organization, Server,
        },
        model::Role,
    };
    let exchange = *[
        ExchangeVersion::V2010,
        ExchangeVersion::V2013,
        ExchangeVersion::V2016,
        ExchangeVersion::V2019,
        ExchangeVersion::SubscriptionEdition,
    ]
    .choose(rng)
    .unwrap();
    let server_roles: &[Role] = match exchange {
        ExchangeVersion::V2010 => &[Role::Cas, Role::Mailbox, Role::Hub, Role::Um],
        ExchangeVersion::V2013 => &[Role::Cas, Role::Mailbox],
        _ => &[Role::Mailbox],
    };
    let mut next_host = 10u8;
    let mut host = |rng: &mut StdRng| -> Vec<IpNet> {
        next_host += 1;
        let mut out = vec![format!("192.0.2.{next_host}/32").parse().unwrap()];
        if rng.random_bool(0.5) {
            out.push(format!("2001:db8:21::{next_host:x}/128").parse().unwrap());
        }
        out
    };
    let mut servers = Vec::new();
    for i in 0..rng.random_range(1..=6) {
        let mut roles = std::collections::BTreeSet::new();
        for _ in 0..rng.random_range(1..=2) {
            roles.insert(*server_roles.choose(rng).unwrap());
        }
        servers.push(Server {
            name: format!("EX{i}"),
            roles,
            addresses: host(rng),
            site: None,
        });
    }
    let edges = rng.random_range(0..=2);
    for i in 0..edges {
        servers.push(Server {
            name: format!("EDGE{i}"),
            roles: [Role::Edge].into(),
            addresses: host(rng),
            site: None,
        });
    }
    let hosts = |prefix: &str,
                 n: usize,
                 rng: &mut StdRng,
                 host: &mut dyn FnMut(&mut StdRng) -> Vec<IpNet>|
     -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                name: format!("{prefix}{i}"),
                addresses: host(rng),
            })
            .collect()
    };
    let domain_controllers = hosts("DC", rng.random_range(1..=2), rng, &mut host);
    let lync_servers = hosts("SFB", rng.random_range(0..=1), rng, &mut host);
    let unified_messaging = exchange < ExchangeVersion::V2019 && rng.random_bool(0.3);
    let um_gateways = if unified_messaging {
        vec![Host {
            name: "pbx".into(),
            addresses: vec!["198.51.100.240/32".parse().unwrap()],
        }]
    } else {
        vec![]
    };
    let client_networks: Vec<IpNet> = if rng.random_bool(0.7) {
        vec![
            "198.51.100.0/25".parse().unwrap(),
            "2001:db8:100::/48".parse().unwrap(),
        ]
    } else {
        vec![]
    };
    let protected_roles = [Role::Mailbox, Role::Edge, Role::Cas, Role::Hub, Role::Dc];
    let allows = (0..rng.random_range(0..=3))
        .map(|i| {
            let from = match rng.random_range(0..3) {
                0 => Endpoint::Role(
                    *[Role::External, Role::Clients, Role::Edge]
                        .choose(rng)
                        .unwrap(),
                ),
                1 => Endpoint::Prefix("198.51.100.200/32".parse().unwrap()),
                _ => Endpoint::Prefix("198.51.100.64/28".parse().unwrap()),
            };
            let first = rng.random_range(1..=65000u16);
            Allow {
                name: format!("extra{i}"),
                from: vec![from],
                to: vec![*protected_roles.choose(rng).unwrap()],
                proto: *[6u8, 17].choose(rng).unwrap(),
                ports: vec![(first, first + rng.random_range(0..=20u16))],
                reason: "generated".into(),
            }
        })
        .collect();
    let management = if rng.random_bool(0.5) {
        Management {
            sources: vec!["198.51.100.250/32".parse().unwrap()],
            gateway_addresses: vec!["192.0.2.254/32".parse().unwrap()],
            ports: vec![22],
        }
    } else {
        Management::default()
    };
    Config {
        mode: Mode::Enforce,
        organization: Organization {
            exchange,
            edge_subscribed: edges > 0,
            pop3: rng.random_bool(0.5),
            imap4: rng.random_bool(0.5),
            http: rng.random_bool(0.7),
            smtp_client_on_25: rng.random_bool(0.2),
            outbound_proxy_through_cas: rng.random_bool(0.3),
            static_rpc_ports: (exchange == ExchangeVersion::V2010 && rng.random_bool(0.6))
                .then_some((59531, 59532)),
            unified_messaging,
            icmp_echo: rng.random_bool(0.7),
            domain_controller_access: [
                DcAccess::Clients,
                DcAccess::ExchangeOnly,
                DcAccess::Unfiltered,
            ][rng.random_range(0..3usize)],
        },
        servers,
        domain_controllers,
        lync_servers,
        dns_servers: vec![Host {
            name: "dns".into(),
            addresses: vec![
                "203.0.113.53/32".parse().unwrap(),
                "2001:db8:53::53/128".parse().unwrap(),
            ],
        }],
        um_gateways,
        client_networks,
        allows,
        management,
        protected_networks: if rng.random_bool(0.3) {
            vec![Host {
                name: "servers".into(),
                addresses: vec!["192.0.2.0/24".parse().unwrap()],
            }]
        } else {
            vec![]
        },
        interfaces: vec![exfw_daemon::config::Interface {
            name: "lo".into(),
            mode: exfw_daemon::dataplane::AttachMode::Skb,
            accepts: None,
            reverse_path: false,
        }],
        limits: Limits::default(),
        metrics_listen: "127.0.0.1:9720".parse().unwrap(),
        reload: Default::default(),
        warnings: vec![],
    }
}

/// Addresses worth probing in a compiled policy: one host of every class prefix, and outsiders.
pub fn probe_addresses(policy: &Policy) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = policy
        .classes
        .iter()
        .flat_map(|c| &c.prefixes)
        .map(|n| match n {
            IpNet::V4(v) if v.prefix_len() < 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(v.network()) + 1))
            }
            IpNet::V6(v) if v.prefix_len() < 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(v.network()) + 7))
            }
            other => other.addr(),
        })
        .collect();
    out.extend(
        [
            "203.0.113.9",
            "203.0.113.77",
            "2001:db8:ffff::9",
            "198.51.100.201",
        ]
        .map(|a| a.parse::<IpAddr>().unwrap()),
    );
    out
}
