//! The attacks of docs/security.md on the real kernel path: an Exchange 2016 organisation with
//! a subscribed Edge behind a gateway namespace whose links run the XDP program in driver mode,
//! real sockets where a real client exists and forged frames (AF_PACKET) where none does.
//!
//! ```text
//!  inet0     203.0.113.9  2001:db8:ffff::9   the Internet (and, for path MTU, a router to 2001:db8:ffff:1::/64)
//!  clients0  198.51.100.7                    internal clients
//!  mbx0      192.0.2.21  2001:db8:21::21     Mailbox; 192.0.2.50 an unlisted host in the protected network
//!  edge0     192.0.2.130                     Edge Transport (perimeter)
//!  dc0       192.0.2.69  2001:db8:22::69     domain controller; 192.0.2.77 DNS
//! ```

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use exfw_common::{FlowKey, Reason, Verdict};
use exfw_daemon::{
    config,
    dataplane::{AttachMode, Dataplane, LoadOptions, ifindex_of},
    policy::{Compiled, Policy, compile},
};
use exfw_tests::{
    netns::{Namespace, Network, connect_here, tcp_connect},
    packet::{Ext, L4, Spec, build},
    require_root,
};

const MAILBOX: &str = "192.0.2.21";
const MAILBOX_V6: &str = "2001:db8:21::21";
const EDGE: &str = "192.0.2.130";
const DC: &str = "192.0.2.69";
const DC_V6: &str = "2001:db8:22::69";
const INTERNET: &str = "203.0.113.9";
const INTERNET_V6: &str = "2001:db8:ffff::9";
const UNLISTED: &str = "192.0.2.50";
const BLOCKED: Duration = Duration::from_millis(1200);

fn organisation(protected_network: bool) -> String {
    format!(
        r#"version = 1
mode = "enforce"

[organization]
exchange = "2016"
edge_subscribed = true

[[server]]
name = "EX01"
roles = ["mailbox"]
addresses = ["{MAILBOX}", "{MAILBOX_V6}"]

[[server]]
name = "EDGE01"
roles = ["edge"]
addresses = ["{EDGE}"]

[[domain_controller]]
name = "DC01"
addresses = ["{DC}", "{DC_V6}"]

[[dns_server]]
name = "resolver"
addresses = ["192.0.2.77"]

[clients]
networks = ["198.51.100.0/24"]

{}
[[interface]]
name = "inet0"
accepts = ["external"]

[[interface]]
name = "clients0"
accepts = ["clients"]

[[interface]]
name = "mbx0"
accepts = ["mailbox", "{}"]

[[interface]]
name = "edge0"
accepts = ["edge"]

[[interface]]
name = "dc0"
accepts = ["dc", "dns"]
"#,
        if protected_network {
            "[[protected_network]]\nname = \"servers\"\naddresses = [\"192.0.2.0/26\", \"2001:db8:21::/64\"]\n"
        } else {
            ""
        },
        // Without the protected network, the hosts on the Mailbox link no one lists are
        // external addresses, which that link must then accept.
        if protected_network {
            "protected-network"
        } else {
            "external"
        }
    )
}

fn compiled(protected_network: bool) -> Compiled {
    let cfg = config::parse(&organisation(protected_network), "attacks.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    compile(&cfg).unwrap()
}

/// The organisation behind a gateway running the XDP program on every link.
struct Org {
    // Field order is drop order: the data plane goes before the namespaces.
    dataplane: Dataplane,
    net: Network,
    policy: Policy,
}

impl Org {
    fn new() -> Org {
        Org::with(LoadOptions::default())
    }

    /// The organisation with the data plane's tables sized by `options`.
    fn with(options: LoadOptions) -> Org {
        require_root();
        let net = Network::new(&[
            ("inet0", &["203.0.113.9/24", "2001:db8:ffff::9/64"]),
            ("clients0", &["198.51.100.7/24"]),
            (
                "mbx0",
                &["192.0.2.21/26", "2001:db8:21::21/64", "192.0.2.50/26"],
            ),
            ("edge0", &["192.0.2.130/26"]),
            (
                "dc0",
                &["192.0.2.69/26", "2001:db8:22::69/64", "192.0.2.77/26"],
            ),
        ]);
        let policy = compiled(true).policy;
        let mut dataplane = Dataplane::load(options).expect("load the XDP program");
        net.gateway.run(|| {
            dataplane.apply(&policy).expect("apply");
            for (link, _) in &net.legs {
                dataplane.attach(link, AttachMode::Driver).expect("attach");
            }
        });
        Org {
            dataplane,
            net,
            policy,
        }
    }

    fn leg(&self, link: &str) -> &Namespace {
        self.net.leg(link)
    }

    fn listen(&self, link: &str, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        self.leg(link)
            .run(|| TcpListener::bind(addr).expect("listen"))
    }

    fn connect(&self, link: &str, src: Option<&str>, dst: &str) -> Result<TcpStream, ErrorKind> {
        tcp_connect(
            self.leg(link),
            src.map(|s| s.parse().unwrap()),
            dst.parse().unwrap(),
        )
    }

    /// A frame from a host on `link` to the gateway's end of that link.
    fn frame(&self, link: &str, spec: &Spec) -> Vec<u8> {
        let mut bytes = build(spec).bytes;
        bytes[..6].copy_from_slice(&self.net.gateway.mac(link));
        bytes[6..12].copy_from_slice(&self.leg(link).mac("eth0"));
        bytes
    }

    fn inject(&self, link: &str, spec: &Spec) {
        let frame = self.frame(link, spec);
        self.leg(link).inject("eth0", &frame);
    }

    fn count(&self, verdict: Verdict, reason: Reason) -> u64 {
        self.dataplane
            .reason_counter(verdict, reason)
            .unwrap()
            .packets
    }

    fn spoofed(&self, link: &str) -> u64 {
        let ifindex = self.net.gateway.run(|| ifindex_of(link).unwrap());
        self.dataplane
            .spoofed_counter(ifindex, Verdict::Drop)
            .unwrap()
            .packets
    }

    /// Polls until `condition` holds (the kernel counted what was sent) or fails after 5 s.
    fn wait_for(&self, what: &str, condition: impl Fn(&Org) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn flows(&self) -> BTreeSet<FlowKey> {
        self.dataplane
            .confirmed_flows()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, seq: u32, ack: u32) -> Spec {
    Spec::new(ip(src), ip(dst), L4::tcp(sport, dport, flags, seq, ack))
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_spoofed_domain_controller_drops_while_the_real_one_reaches_exchange() {
    let mut org = Org::new();
    let _smb = org.listen("mbx0", "192.0.2.21:445");
    let _smb6 = org.listen("mbx0", "[2001:db8:21::21]:445");
    // The real domain controller, from its own link, on SMB: trusted, passes.
    let trusted = org.count(Verdict::Pass, Reason::Trusted);
    org.connect("dc0", Some("192.0.2.69:0"), "192.0.2.21:445")
        .expect("the DC reaches the Mailbox server");
    org.connect("dc0", Some("[2001:db8:22::69]:0"), "[2001:db8:21::21]:445")
        .expect("the DC reaches the Mailbox server over IPv6");
    assert!(org.count(Verdict::Pass, Reason::Trusted) > trusted);
    // The Internet and a client claiming the DC's addresses.
    let (inet, clients) = (org.spoofed("inet0"), org.spoofed("clients0"));
    org.dataplane.drain_events();
    org.inject("inet0", &tcp(DC, 40001, MAILBOX, 445, 0x02, 1, 0));
    org.inject("inet0", &tcp(DC_V6, 40001, MAILBOX_V6, 445, 0x02, 1, 0));
    org.inject("clients0", &tcp(DC, 40002, MAILBOX, 445, 0x02, 1, 0));
    org.wait_for("the spoofed DC packets to drop", |o| {
        o.spoofed("inet0") >= inet + 2 && o.spoofed("clients0") > clients
    });
    let inet0 = org.net.gateway.run(|| ifindex_of("inet0").unwrap());
    let events = org.dataplane.drain_events();
    assert!(
        events
            .iter()
            .any(|e| e.reason == Reason::SpoofedSource as u8
                && e.ifindex == inet0
                && e.src[..4] == [192, 0, 2, 69]),
        "no spoofed_source event naming inet0: {events:?}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_edge_cannot_open_a_pinhole_into_the_organisation() {
    let org = Org::new();
    let _smb = org.listen("mbx0", "192.0.2.21:445");
    // The Edge claims to be the Mailbox server relaying mail to it (smtp-outbound-relay is
    // Mailbox -> Edge 25): the perimeter link does not accept Mailbox addresses.
    let spoofed = org.spoofed("edge0");
    let pending_before = org.dataplane.pending_entries();
    org.inject("edge0", &tcp(MAILBOX, 445, EDGE, 25, 0x02, 1000, 0));
    org.wait_for("the forged relay SYN to drop", |o| {
        o.spoofed("edge0") > spoofed
    });
    assert_eq!(
        org.dataplane.pending_entries(),
        pending_before,
        "the forged SYN opened state"
    );
    // ... so the reply it hoped to ride, Edge:25 -> Mailbox:445, is refused.
    assert_eq!(
        org.connect("edge0", Some("192.0.2.130:25"), "192.0.2.21:445")
            .err(),
        Some(ErrorKind::TimedOut)
    );

    // A compromised Edge, sending from its own address (which its link accepts and routing
    // confirms), can walk a handshake to the end with an accomplice on the Internet through
    // the smtp-outbound rule; the connection it confirms still carries no new connection the
    // other way, from the accomplice's port 25 into the Edge.
    let _edge_smb = org.listen("edge0", "192.0.2.130:445");
    org.inject("edge0", &tcp(EDGE, 445, INTERNET, 25, 0x02, 5000, 0));
    org.inject("inet0", &tcp(INTERNET, 25, EDGE, 445, 0x12, 9000, 5001));
    let before = org.flows();
    org.inject("edge0", &tcp(EDGE, 445, INTERNET, 25, 0x10, 5001, 9001));
    org.wait_for("the forged handshake to confirm", |o| {
        o.flows().len() > before.len()
    });
    assert_eq!(
        org.connect("inet0", Some("203.0.113.9:25"), "192.0.2.130:445")
            .err(),
        Some(ErrorKind::TimedOut),
        "a SYN rode a confirmed connection backwards"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_flood_of_spoofed_syns_and_acks_leaves_confirmed_connections_in_place() {
    let org = Org::new();
    let listener = org.listen("mbx0", "192.0.2.21:443");
    // Idle confirmed connections from the Internet and from the clients.
    let mut pairs: Vec<(TcpStream, TcpStream)> = Vec::new();
    for i in 0..40 {
        let (link, src) = if i % 2 == 0 {
            ("inet0", "203.0.113.9:0")
        } else {
            ("clients0", "198.51.100.7:0")
        };
        let client = org
            .connect(link, Some(src), "192.0.2.21:443")
            .expect("connect");
        let (server, _) = listener.accept().unwrap();
        pairs.push((client, server));
    }
    org.wait_for("every connection to confirm", |o| o.flows().len() >= 40);
    let confirmed = org.flows();
    // A million SYNs and bare ACKs from spoofed Internet sources to the allowed port, every
    // one a different connection (EXFW_FLOOD_FRAMES lowers it where the kernel is emulated).
    let flood: usize = std::env::var("EXFW_FLOOD_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let template = org.frame("inet0", &tcp(INTERNET, 1024, MAILBOX, 443, 0x02, 0, 0));
    let frames: Vec<Vec<u8>> = (0..flood as u32)
        .map(|i| {
            let src = ip(&format!("203.0.113.{}", 100 + i % 150));
            let sport = 1024 + (i / 150 % 60_000) as u16;
            let flags = if i % 2 == 0 { 0x02 } else { 0x10 };
            let mut frame = build(&tcp(
                &src.to_string(),
                sport,
                MAILBOX,
                443,
                flags,
                i.wrapping_mul(7919),
                i,
            ))
            .bytes;
            frame[..12].copy_from_slice(&template[..12]);
            frame
        })
        .collect();
    let passed_by_rule = org.count(Verdict::Pass, Reason::Rule);
    let started = Instant::now();
    let sent = org
        .leg("inet0")
        .inject_many("eth0", frames.iter().map(|f| f.as_slice()));
    let took = started.elapsed();
    org.wait_for("the flood to be judged", |o| {
        o.count(Verdict::Pass, Reason::Rule) >= passed_by_rule + flood as u64 * 9 / 10
    });
    eprintln!(
        "flood: {sent} frames in {:.1} s ({:.0} per second); {} unconfirmed entries held",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        org.dataplane.pending_entries()
    );
    let after = org.flows();
    let lost: Vec<_> = confirmed.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "the flood evicted confirmed connections: {lost:?}"
    );
    assert_eq!(org.dataplane.event_stats().unwrap().flow_insert_failed, 0);
    // Every idle connection still carries data both ways.
    for (i, (client, server)) in pairs.iter_mut().enumerate() {
        server.write_all(b"heartbeat").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 9];
        client
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("connection {i} lost its server's data: {e}"));
        assert_eq!(&buf, b"heartbeat");
        client.write_all(b"ack").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 3];
        server.read_exact(&mut buf).unwrap();
    }
}

/// A full confirmed-connection table evicts its least recently used connection, and what it
/// evicted fails closed: the server's replies there drop (`policy`). New connections are still
/// judged by the rules, denied traffic still drops, and the connections in the table carry on.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_full_flow_table_evicts_the_oldest_connection_and_fails_closed() {
    const CAPACITY: u32 = 128;
    let org = Org::with(LoadOptions {
        flow_entries: CAPACITY,
        ..LoadOptions::default()
    });
    let listener = org.listen("mbx0", "192.0.2.21:443");
    let _rdp = org.listen("mbx0", "192.0.2.21:3389");
    // Two and a half times what the table holds (each pair is two descriptors of the
    // test's 1,024).
    let mut pairs: Vec<(TcpStream, TcpStream)> = Vec::new();
    for i in 0..CAPACITY * 5 / 2 {
        let client = org
            .connect("inet0", Some("203.0.113.9:0"), "192.0.2.21:443")
            .unwrap_or_else(|e| panic!("connection {i} with the table full: {e:?}"));
        let (server, _) = listener.accept().unwrap();
        pairs.push((client, server));
    }
    let key = |client: &TcpStream| {
        let (SocketAddr::V4(local), SocketAddr::V4(peer)) =
            (client.local_addr().unwrap(), client.peer_addr().unwrap())
        else {
            unreachable!("IPv4 connections")
        };
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        src[..4].copy_from_slice(&local.ip().octets());
        dst[..4].copy_from_slice(&peer.ip().octets());
        exfw_common::flow_key(
            exfw_common::family::V4,
            exfw_common::proto::TCP,
            &src,
            local.port(),
            &dst,
            peer.port(),
        )
        .0
    };
    let flows = org.flows();
    assert!(
        flows.len() <= CAPACITY as usize,
        "{} entries in a table of {CAPACITY}",
        flows.len()
    );
    assert_eq!(org.dataplane.event_stats().unwrap().flow_insert_failed, 0);
    eprintln!(
        "flow table: {} connections, {} held in a table of {CAPACITY}",
        pairs.len(),
        flows.len()
    );
    // Denied traffic still drops.
    assert_eq!(
        org.connect("inet0", None, "192.0.2.21:3389").err(),
        Some(ErrorKind::TimedOut)
    );
    // The newest connection is in the table and carries data both ways.
    let (client, server) = pairs.last_mut().unwrap();
    assert!(
        flows.contains(&key(client)),
        "the newest connection is not in the table"
    );
    server.write_all(b"data").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).unwrap();
    // An evicted one fails closed: its server's data drops, counted as `policy`.
    let (client, server) = pairs
        .iter_mut()
        .find(|(client, _)| !flows.contains(&key(client)))
        .expect("the table evicted no connection");
    let dropped = org.count(Verdict::Drop, Reason::Policy);
    server.write_all(b"data").unwrap();
    client.set_read_timeout(Some(BLOCKED)).unwrap();
    let err = client.read_exact(&mut buf).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(org.count(Verdict::Drop, Reason::Policy) > dropped);
}

/// A drop flood that fills the event ring loses events, never verdicts: every packet drops and
/// is counted, every event that does not fit is counted as lost, and the ring takes events
/// again once it is read.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_full_event_ring_loses_events_not_verdicts() {
    require_root();
    let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load the XDP program");
    // The test run's frames arrive on the loopback interface (index 1 in every namespace).
    let policy = Policy {
        interfaces: vec![exfw_daemon::policy::Interface {
            name: "lo".into(),
            reverse_path: false,
            accepts: exfw_daemon::policy::Accepts::Any,
        }],
        ..compiled(true).policy
    };
    dataplane.apply(&policy).unwrap();
    // As many events as the kernel program allows, so none is suppressed by the rate limit.
    dataplane.set_event_rate(1_000_000, 1_000_000).unwrap();
    let frame = build(&tcp(INTERNET, 40_000, MAILBOX, 3389, 0x02, 1, 0)).bytes;
    let (drops, events) = (
        dataplane
            .reason_counter(Verdict::Drop, Reason::Policy)
            .unwrap()
            .packets,
        dataplane.event_stats().unwrap(),
    );
    // 1 MiB of ring holds some 14,000 events; nothing reads it meanwhile.
    let flood = 40_000;
    dataplane.test_run("exfw_xdp", &frame, flood).unwrap();
    let after = dataplane.event_stats().unwrap();
    assert_eq!(
        dataplane
            .reason_counter(Verdict::Drop, Reason::Policy)
            .unwrap()
            .packets
            - drops,
        u64::from(flood),
        "every packet of the flood drops"
    );
    let (sampled, lost, suppressed) = (
        after.sampled - events.sampled,
        after.lost - events.lost,
        after.suppressed - events.suppressed,
    );
    assert_eq!(sampled + lost + suppressed, u64::from(flood));
    assert!(lost > 0, "the ring never filled: {sampled} events written");
    eprintln!(
        "event ring: {flood} drops, {sampled} events written, {lost} lost, {suppressed} suppressed"
    );
    let read = dataplane.drain_events();
    assert_eq!(read.len() as u64, sampled);
    assert!(
        read.iter()
            .all(|e| e.reason == Reason::Policy as u8 && e.dport == 3389)
    );
    // Read, the ring takes events again.
    dataplane.test_run("exfw_xdp", &frame, 10).unwrap();
    assert_eq!(dataplane.drain_events().len(), 10);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_unlisted_address_in_a_protected_network_drops() {
    let org = Org::new();
    let _l = org.listen("mbx0", "192.0.2.50:443");
    let class = org
        .policy
        .classes
        .iter()
        .find(|c| c.name == "protected-network servers")
        .expect("the protected network's class")
        .id;
    let drops = |o: &Org| {
        o.dataplane
            .counters([])
            .unwrap()
            .drops
            .iter()
            .filter(|(k, _)| k.dst_class == class)
            .map(|(_, c)| c.packets)
            .sum::<u64>()
    };
    let before = drops(&org);
    assert_eq!(
        org.connect("inet0", Some("203.0.113.9:0"), "192.0.2.50:443")
            .err(),
        Some(ErrorKind::TimedOut)
    );
    assert!(
        drops(&org) > before,
        "the drop was not counted against the protected network"
    );
    // Without the protected network the same address is nobody's: transit, it connects.
    let mut dataplane = org.dataplane;
    org.net
        .gateway
        .run(|| dataplane.apply(&compiled(false).policy).unwrap());
    tcp_connect(
        org.net.leg("inet0"),
        Some("203.0.113.9:0".parse().unwrap()),
        format!("{UNLISTED}:443").parse().unwrap(),
    )
    .expect("an unprotected unlisted host is transit");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn forged_packet_too_big_drops_while_a_real_one_for_a_live_connection_passes() {
    let org = Org::new();
    // A router on the Internet side with a 1280-byte link to a far client.
    let router = org.leg("inet0");
    let far = Namespace::new("far");
    router.veth_to("far0", &far);
    router.ip(&["link", "set", "far0", "mtu", "1280", "up"]);
    router.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:ffff:1::1/64",
        "dev",
        "far0",
        "nodad",
    ]);
    router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    far.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:ffff:1::9/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    far.ip(&["link", "set", "eth0", "up"]);
    far.ip(&["-6", "route", "add", "default", "via", "2001:db8:ffff:1::1"]);
    org.net.gateway.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:ffff:1::/64",
        "via",
        INTERNET_V6,
        "dev",
        "inet0",
    ]);
    let listener = org.listen("mbx0", "[2001:db8:21::21]:443");
    let related = org.count(Verdict::Pass, Reason::IcmpRelated);
    let mut client = far
        .run(|| {
            connect_here(
                None,
                "[2001:db8:21::21]:443".parse().unwrap(),
                Duration::from_secs(5),
            )
        })
        .expect("the far client connects");
    let (mut server, _) = listener.accept().unwrap();
    // 1500-byte segments cannot cross the router's 1280-byte link: it answers with a real
    // packet-too-big about the connection, which must reach the server for the data to arrive.
    let data = vec![0x5a; 16_000];
    server.write_all(&data).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = vec![0u8; data.len()];
    client
        .read_exact(&mut got)
        .expect("the data arrives once path MTU discovery worked");
    assert!(
        org.count(Verdict::Pass, Reason::IcmpRelated) > related,
        "no packet-too-big passed as related"
    );

    // A forged packet-too-big about no connection, and a compromised server's "error" carrying
    // whatever it wants to an Internet host: both drop.
    let unmatched = org.count(Verdict::Drop, Reason::IcmpErrorUnmatched);
    let inner = build(&tcp(MAILBOX_V6, 443, "2001:db8:ffff::99", 5555, 0x10, 1, 1));
    let forged = Spec::new(
        ip("2001:db8:ffff::77"),
        ip(MAILBOX_V6),
        L4::Icmp {
            kind: 2,
            code: 0,
            id: 0,
            inner: inner.ip()[..48].to_vec(),
        },
    );
    org.inject("inet0", &forged);
    // The carried header names a port a rule opens (HTTPS from the Internet), but no
    // connection: the error is a covert channel, not an answer.
    let junk = build(&tcp(INTERNET, 9999, MAILBOX, 443, 0x10, 1, 1));
    let mut carried = junk.ip()[..28].to_vec();
    carried.extend_from_slice(b"exfiltrated bytes ride here");
    let exfil = Spec::new(
        ip(MAILBOX),
        ip(INTERNET),
        L4::Icmp {
            kind: 3,
            code: 4,
            id: 0,
            inner: carried,
        },
    );
    org.inject("mbx0", &exfil);
    org.wait_for("the forged errors to drop", |o| {
        o.count(Verdict::Drop, Reason::IcmpErrorUnmatched) >= unmatched + 2
    });
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn source_routes_and_off_link_neighbour_discovery_drop() {
    let org = Org::new();
    let (lsrr, rh0, nd) = (
        org.count(Verdict::Drop, Reason::Ipv4SourceRoute),
        org.count(Verdict::Drop, Reason::Ipv6RoutingType0),
        org.count(Verdict::Drop, Reason::NeighbourDiscoveryInvalid),
    );
    let mut source_routed = tcp(INTERNET, 40000, MAILBOX, 443, 0x02, 1, 0);
    source_routed.ipv4_options = vec![0x83, 7, 4, 192, 0, 2, 130, 0];
    org.inject("inet0", &source_routed);
    let mut routed6 = tcp(INTERNET_V6, 40000, MAILBOX_V6, 443, 0x02, 1, 0);
    routed6.exts = vec![Ext::Routing { len: 2, kind: 0 }];
    org.inject("inet0", &routed6);
    // A neighbour advertisement from beyond a router (hop limit below 255), and one with the
    // right hop limit addressed past the gateway to a server (a carrier for anything).
    let advert = |hop_limit: u8| {
        let mut spec = Spec::new(
            ip(INTERNET_V6),
            ip(MAILBOX_V6),
            L4::Icmp {
                kind: 136,
                code: 0,
                id: 0,
                inner: vec![0; 16],
            },
        );
        spec.hop_limit = hop_limit;
        spec
    };
    org.inject("inet0", &advert(63));
    org.inject("inet0", &advert(255));
    org.wait_for("the four drops", |o| {
        o.count(Verdict::Drop, Reason::Ipv4SourceRoute) > lsrr
            && o.count(Verdict::Drop, Reason::Ipv6RoutingType0) > rh0
            && o.count(Verdict::Drop, Reason::NeighbourDiscoveryInvalid) >= nd + 2
    });
}
