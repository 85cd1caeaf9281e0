//! Random policies and frames for differential tests: well-formed traffic aimed at the policy's
//! classes and ports, replies, fragments in and out of order, VLAN stacks, IPv6 extension chains,
//! and malformed frames (truncated at every header boundary, bad IHL, bad lengths, random bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use exfw_daemon::policy::{Class, Mode, Policy, PortRange, Rule, Timeouts};
use ipnet::IpNet;
use rand::{Rng, RngCore, rngs::StdRng, seq::IndexedRandom};

use crate::packet::{Ext, Fragment, Frame, L4, Spec, build};

const POPULAR_PORTS: [u16; 12] = [22, 25, 53, 80, 110, 143, 443, 587, 993, 3389, 50636, 135];

/// A random valid policy over the documentation ranges.
pub fn policy(rng: &mut StdRng) -> Policy {
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
        let protected = rng.random_bool(0.8);
        classes.push(Class {
            id,
            name: format!("class{id}"),
            protected,
            trusted: rng.random_bool(0.5),
            prefixes,
        });
    }
    let mut rules = Vec::new();
    for id in 0..rng.random_range(1..=16u32) {
        let proto = *[6u8, 6, 6, 17, 17, 1, 58, 47].choose(rng).unwrap();
        let ports = match proto {
            1 | 58 => PortRange::single(*[0u16, 8, 128, 129, 3, 11].choose(rng).unwrap()),
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
    Policy {
        mode: if rng.random_bool(0.25) {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        timeouts: Timeouts::default(),
        classes,
        rules,
    }
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

fn port(rng: &mut StdRng, policy: &Policy) -> u16 {
    let ports: Vec<PortRange> = policy.rules.iter().map(|r| r.ports).collect();
    match ports.choose(rng) {
        Some(r) if rng.random_bool(0.6) => rng.random_range(r.first..=r.last),
        _ if rng.random_bool(0.5) => *POPULAR_PORTS.choose(rng).unwrap(),
        _ => rng.random_range(0..=65535),
    }
}

/// A well-formed packet aimed at the policy.
pub fn spec(rng: &mut StdRng, policy: &Policy) -> Spec {
    let v6 = rng.random_bool(0.4);
    let l4 = match rng.random_range(0..10) {
        0..=4 => L4::Tcp {
            sport: rng.random_range(1024..=65535),
            dport: port(rng, policy),
            flags: *[0x02u8, 0x10, 0x12, 0x18, 0x11, 0x04].choose(rng).unwrap(),
            data_offset: if rng.random_bool(0.8) {
                5
            } else {
                rng.random_range(6..=15)
            },
        },
        5..=7 => L4::Udp {
            sport: rng.random_range(1024..=65535),
            dport: port(rng, policy),
            length: None,
        },
        8 => {
            let kinds: &[u8] = if v6 {
                &[128, 129, 2, 135, 136, 1, 3]
            } else {
                &[8, 0, 3, 11, 5]
            };
            L4::Icmp {
                kind: *kinds.choose(rng).unwrap(),
                code: rng.random_range(0..5),
                id: rng.random(),
            }
        }
        _ => L4::Other {
            proto: *[47u8, 50, 132, 89].choose(rng).unwrap(),
        },
    };
    let mut vlans = Vec::new();
    if rng.random_bool(0.25) {
        for _ in 0..rng.random_range(1..=2) {
            vlans.push((
                *[0x8100u16, 0x88a8].choose(rng).unwrap(),
                rng.random_range(1..4095),
            ));
        }
    }
    let mut exts = Vec::new();
    if v6 && rng.random_bool(0.3) {
        for i in 0..rng.random_range(1..=3) {
            exts.push(match rng.random_range(0..3) {
                0 if i == 0 => Ext::HopByHop {
                    len: rng.random_range(0..3),
                },
                1 => Ext::Routing {
                    len: rng.random_range(0..3),
                },
                _ => Ext::DestOpts {
                    len: rng.random_range(0..3),
                },
            });
        }
    }
    Spec {
        vlans,
        src: address(rng, policy, v6),
        dst: address(rng, policy, v6),
        ipv4_option_words: if !v6 && rng.random_bool(0.15) {
            rng.random_range(1..=10)
        } else {
            0
        },
        exts,
        fragment: None,
        l4,
        payload: rng.random_range(0..64),
    }
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

/// One step of a traffic stream: a frame plus, for well-formed packets, its spec.
pub struct Stream<'a> {
    rng: &'a mut StdRng,
    policy: Policy,
    recent: Vec<Spec>,
    pending: Vec<Vec<u8>>,
    next_id: u32,
}

impl<'a> Stream<'a> {
    /// A stream of frames aimed at `policy`.
    pub fn new(rng: &'a mut StdRng, policy: Policy) -> Self {
        Stream {
            rng,
            policy,
            recent: Vec::new(),
            pending: Vec::new(),
            next_id: 1,
        }
    }

    /// Aims later frames at another policy (after a generation flip).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Vec<u8> {
        if let Some(f) = self.pending.pop() {
            return f;
        }
        let rng = &mut *self.rng;
        let kind = rng.random_range(0..100);
        let mut spec = spec(rng, &self.policy);
        match kind {
            // A reply to something sent earlier.
            0..=14 if !self.recent.is_empty() => {
                let earlier = self.recent.choose(rng).unwrap().reply();
                build(&earlier).bytes
            }
            // A fragmented datagram: first and later fragments, in order, reversed, or partial.
            15..=26 => {
                let id = self.next_id;
                self.next_id += 1;
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
                    offset: rng.random_range(3..200),
                    more: rng.random_bool(0.3),
                });
                later_spec.payload = rng.random_range(8..64);
                let later = build(&later_spec).bytes;
                let first_bytes = if rng.random_bool(0.15) {
                    // A tiny first fragment that cannot hold the transport header.
                    let l4 = first.boundaries[first.boundaries.len() - 2];
                    truncate_consistently(&first, l4 + rng.random_range(0..8))
                } else {
                    first.bytes
                };
                match rng.random_range(0..4) {
                    0 => {
                        self.pending.push(first_bytes);
                        later
                    }
                    1 => later,
                    2 => first_bytes,
                    _ => {
                        self.pending.push(later);
                        first_bytes
                    }
                }
            }
            // Every header boundary of one frame, both ways: cut, and cut with lengths fixed.
            27..=28 => {
                let frame = build(&spec);
                for at in frame.boundaries.iter().flat_map(|b| [*b, b + 1]) {
                    self.pending
                        .push(frame.bytes[..at.min(frame.bytes.len())].to_vec());
                    self.pending.push(truncate_consistently(&frame, at));
                }
                frame.bytes
            }
            // Truncated at a header boundary (or one byte past), lengths left claiming more.
            29..=38 => {
                let frame = build(&spec);
                let at = *frame.boundaries.choose(rng).unwrap() + rng.random_range(0..2);
                if rng.random_bool(0.5) {
                    frame.bytes[..at.min(frame.bytes.len())].to_vec()
                } else {
                    truncate_consistently(&frame, at)
                }
            }
            // Corrupted IP header fields.
            39..=48 => {
                let mut frame = build(&spec);
                let l3 = frame.l3;
                let b = &mut frame.bytes;
                match (spec.src.is_ipv6(), rng.random_range(0..3)) {
                    (false, 0) => b[l3] = (b[l3] & 0xf0) | rng.random_range(0..16),
                    (true, 0) => {
                        b[l3 + 4..l3 + 6].copy_from_slice(&rng.random::<u16>().to_be_bytes())
                    }
                    (false, 1) => {
                        b[l3 + 2..l3 + 4].copy_from_slice(&rng.random::<u16>().to_be_bytes())
                    }
                    (_, 1) => b[l3] = (rng.random_range(0..16u8) << 4) | (b[l3] & 0x0f),
                    _ => {
                        let i = rng.random_range(l3..b.len());
                        b[i] = rng.random();
                    }
                }
                frame.bytes
            }
            // Random bytes, sometimes behind a plausible ethertype.
            49..=54 => {
                let mut b: Vec<u8> = (0..rng.random_range(14..200))
                    .map(|_| rng.random())
                    .collect();
                let ethertype = *[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]
                    .choose(rng)
                    .unwrap();
                if rng.random_bool(0.8) {
                    b[12..14].copy_from_slice(&ethertype.to_be_bytes());
                }
                b
            }
            // Odd stacks: three VLAN tags, long or misordered IPv6 extension chains.
            55..=58 => {
                if spec.src.is_ipv6() && rng.random_bool(0.7) {
                    let n = rng.random_range(5..=8);
                    spec.exts = (0..n).map(|_| Ext::DestOpts { len: 0 }).collect();
                    if rng.random_bool(0.3) {
                        spec.exts[1] = Ext::HopByHop { len: 0 };
                    }
                } else {
                    spec.vlans = vec![(0x88a8, 10), (0x8100, 20), (0x8100, 30)];
                }
                build(&spec).bytes
            }
            _ => {
                self.recent.push(spec.clone());
                if self.recent.len() > 64 {
                    self.recent.remove(0);
                }
                build(&spec).bytes
            }
        }
    }
}

/// A random valid configuration: any Exchange version, its roles, options, extra allow entries,
/// management access, IPv4 and IPv6. Every address is distinct by construction.
pub fn config(rng: &mut StdRng) -> exfw_daemon::config::Config {
    use exfw_daemon::{
        config::{
            Allow, Config, Endpoint, ExchangeVersion, Host, Limits, Management, Organization,
            Server,
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
        mode: exfw_daemon::policy::Mode::Enforce,
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
        interfaces: vec![],
        limits: Limits::default(),
        metrics_listen: "127.0.0.1:9720".parse().unwrap(),
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
