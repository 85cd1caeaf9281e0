//! Real sockets through the real XDP program: an outside namespace (the Internet, a domain
//! controller, a DNS server, a VLAN), a gateway namespace with exfw on both veth interfaces, and an
//! inside namespace holding a Client Access server.
//!
//! ```text
//!  outside                          gateway                         inside
//!  203.0.113.2   external     eth0 ---- out0 [XDP]   in0 [XDP] ---- eth0  192.0.2.2  cas
//!  203.0.113.10  dc (trusted)  |         |                          2001:db8:2::2
//!  203.0.113.53  dns
//!  203.0.113.66  external
//!  2001:db8:1::2 external
//! ```
//!
//! The VLAN case injects tagged frames (802.1Q and 802.1ad) with AF_PACKET on the outside veth:
//! the kernels these tests run on have neither the 802.1Q module nor the bridge, so no VLAN device
//! can tag a socket's traffic. The frames cross the real veth into the attached program, whose
//! verdicts and counters are checked.

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{SocketAddr, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use exfw_common::{DropKey, Reason, Verdict, proto};
use exfw_daemon::{
    dataplane::{AttachMode, AttachedMode, Dataplane, LoadOptions},
    policy::{Accepts, Class, Interface, Policy, PortRange, Rule},
};
use exfw_tests::{
    netns::{Namespace, Topology, remove_stale, tcp_connect},
    packet::{L4, Spec, build},
    require_root,
};

const CAS: u16 = 1;

fn policy() -> Policy {
    let nets = |list: &[&str]| list.iter().map(|n| n.parse().unwrap()).collect();
    Policy {
        classes: vec![
            Class {
                id: CAS,
                name: "cas".into(),
                protected: true,
                trusted: true,
                prefixes: nets(&["192.0.2.2/32", "2001:db8:2::2/128"]),
                ..Default::default()
            },
            Class {
                id: 2,
                name: "dc".into(),
                protected: true,
                trusted: true,
                prefixes: nets(&["203.0.113.10/32"]),
                ..Default::default()
            },
            Class {
                id: 3,
                name: "dns".into(),
                protected: false,
                trusted: false,
                prefixes: nets(&["203.0.113.53/32"]),
                ..Default::default()
            },
        ],
        rules: vec![
            Rule {
                id: 1,
                service: "https".into(),
                dst_class: CAS,
                src_classes: BTreeSet::from([0]),
                proto: proto::TCP,
                ports: PortRange::single(443),
            },
            Rule {
                id: 2,
                service: "dns".into(),
                dst_class: 3,
                src_classes: BTreeSet::from([CAS]),
                proto: proto::UDP,
                ports: PortRange::single(53),
            },
        ],
        interfaces: vec![
            Interface {
                name: "out0".into(),
                reverse_path: true,
                accepts: Accepts::Classes(BTreeSet::from([0, 2, 3])),
            },
            Interface {
                name: "in0".into(),
                reverse_path: true,
                accepts: Accepts::Classes(BTreeSet::from([CAS])),
            },
        ],
        ..Default::default()
    }
}

struct Lab {
    // Field order is drop order: the data plane goes before the namespaces.
    dataplane: Dataplane,
    net: Topology,
}

impl Lab {
    fn new(mode: AttachMode) -> (Lab, AttachedMode) {
        require_root();
        let net = Topology::new(
            &[
                "203.0.113.2/24",
                "203.0.113.10/24",
                "203.0.113.53/24",
                "203.0.113.66/24",
                "2001:db8:1::2/64",
            ],
            &["192.0.2.2/24", "2001:db8:2::2/64"],
        );
        let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load the XDP program");
        let attached = net.gateway.run(|| {
            dataplane.apply(&policy()).expect("apply the policy");
            let a = dataplane.attach("out0", mode).expect("attach to out0");
            let b = dataplane.attach("in0", mode).expect("attach to in0");
            assert_eq!(a, b);
            a
        });
        (Lab { dataplane, net }, attached)
    }

    /// Listens on `port` inside on both families; the kernel backlog completes handshakes.
    fn listen(&self, port: u16) -> Vec<TcpListener> {
        self.net.inside.run(|| {
            ["192.0.2.2", "[2001:db8:2::2]"]
                .iter()
                .map(|a| TcpListener::bind(format!("{a}:{port}")).expect("listen"))
                .collect()
        })
    }

    /// Connects from `src` (an outside address) to `dst`; the error kind on failure.
    fn connect(&self, src: &str, dst: &str) -> Result<(), ErrorKind> {
        let src = SocketAddr::new(src.parse().unwrap(), 0);
        tcp_connect(&self.net.outside, Some(src), dst.parse().unwrap()).map(drop)
    }

    /// Policy drops to the CAS counted under `port` (or under "other" when no rule names it).
    fn drops(&self, port: u16, proto: u8) -> u64 {
        let other = !policy().named_ports().contains(&(proto, port));
        let key = DropKey {
            dst_class: CAS,
            port: if other { 0 } else { port },
            proto,
            verdict: Verdict::Drop as u8,
            other: other as u8,
            pad: 0,
        };
        self.dataplane
            .counters([])
            .unwrap()
            .drops
            .get(&key)
            .map_or(0, |c| c.packets)
    }

    fn passed(&self, reason: Reason) -> u64 {
        self.dataplane
            .reason_counter(Verdict::Pass, reason)
            .unwrap()
            .packets
    }

    /// Sends a raw frame out of the outside namespace's eth0.
    fn inject(&self, frame: &[u8]) {
        self.net.outside.inject("eth0", frame);
    }

    /// Polls until `condition` holds or a deadline passes.
    fn wait_for(&self, what: &str, condition: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn check_real_traffic(mode: AttachMode, expected_mode: AttachedMode) {
    let (mut lab, attached) = Lab::new(mode);
    assert_eq!(attached, expected_mode);
    let _https = lab.listen(443);
    let _rdp = lab.listen(3389);
    let high_port = 40_000 + (std::process::id() % 20_000) as u16;
    let _high = lab.listen(high_port);

    // An allowed port connects (and its SYN-ACK returns through the flow table).
    let rule_before = lab.dataplane.rule_counter(1).unwrap();
    assert_eq!(lab.connect("203.0.113.2", "192.0.2.2:443"), Ok(()));
    // The handshake's last ACK crosses the gateway after connect() returns.
    lab.wait_for("the https rule to count the confirmed connection", |lab| {
        lab.dataplane.rule_counter(1).unwrap().new_connections > rule_before.new_connections
    });
    assert!(
        lab.passed(Reason::Flow) > 0,
        "the SYN-ACK did not pass through the flow table"
    );

    // A blocked port times out though a listener is there, and the drop is counted and sampled.
    assert_eq!(
        lab.connect("203.0.113.2", "192.0.2.2:3389"),
        Err(ErrorKind::TimedOut)
    );
    assert!(
        lab.drops(3389, proto::TCP) >= 1,
        "the 3389 drop was not counted"
    );
    let events = lab.dataplane.drain_events();
    assert!(
        events.iter().any(|e| e.dport == 3389
            && e.reason == Reason::Policy as u8
            && e.src[..4] == [203, 0, 113, 2]),
        "no drop event for 3389 in {events:?}"
    );

    // A trusted pair connects on a random high port.
    let trusted_before = lab.passed(Reason::Trusted);
    assert_eq!(
        lab.connect("203.0.113.10", &format!("192.0.2.2:{high_port}")),
        Ok(())
    );
    assert!(lab.passed(Reason::Trusted) > trusted_before);
    // The same port from an untrusted external address is dropped.
    assert_eq!(
        lab.connect("203.0.113.2", &format!("192.0.2.2:{high_port}")),
        Err(ErrorKind::TimedOut)
    );

    // DNS: the protected host's query gets its reply through the flow table...
    let server = lab
        .net
        .outside
        .run(|| UdpSocket::bind("203.0.113.53:53").unwrap());
    let client = lab
        .net
        .inside
        .run(|| UdpSocket::bind("192.0.2.2:0").unwrap());
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let flow_before = lab.passed(Reason::Flow);
    client.send_to(b"query", "203.0.113.53:53").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server
        .recv_from(&mut buf)
        .expect("the query reaches the DNS server");
    assert_eq!(&buf[..n], b"query");
    server.send_to(b"answer", from).unwrap();
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("the answer reaches the client");
    assert_eq!(&buf[..n], b"answer");
    assert!(lab.passed(Reason::Flow) > flow_before);
    // ...while an unsolicited packet to the same ephemeral port from elsewhere drops.
    let ephemeral = client.local_addr().unwrap().port();
    let udp_drops_before = lab.drops(ephemeral, proto::UDP);
    let stranger = lab
        .net
        .outside
        .run(|| UdpSocket::bind("203.0.113.66:53").unwrap());
    stranger
        .send_to(b"spoofed", format!("192.0.2.2:{ephemeral}"))
        .unwrap();
    lab.wait_for("the unsolicited UDP drop", |lab| {
        lab.drops(ephemeral, proto::UDP) > udp_drops_before
    });
    client.set_nonblocking(true).unwrap();
    assert_eq!(
        client
            .recv_from(&mut buf)
            .map_err(|e| e.kind())
            .unwrap_err(),
        ErrorKind::WouldBlock
    );

    // IPv6: allowed and blocked.
    assert_eq!(lab.connect("2001:db8:1::2", "[2001:db8:2::2]:443"), Ok(()));
    let v6_drops = lab.drops(3389, proto::TCP);
    assert_eq!(
        lab.connect("2001:db8:1::2", "[2001:db8:2::2]:3389"),
        Err(ErrorKind::TimedOut)
    );
    assert!(lab.drops(3389, proto::TCP) > v6_drops);

    // VLAN: tagged SYNs on the wire; 443 passes by rule, 3389 drops and its event names the
    // outer VLAN.
    for (tags, outer) in [
        (vec![(0x8100, 100)], 100),
        (vec![(0x88a8, 200), (0x8100, 100)], 200),
    ] {
        lab.dataplane.drain_events();
        let https = lab.dataplane.rule_counter(1).unwrap().packets;
        let rdp = lab.drops(3389, proto::TCP);
        lab.inject(&tagged_syn(&tags, 443));
        lab.inject(&tagged_syn(&tags, 3389));
        lab.wait_for("the tagged SYN to pass by rule", |lab| {
            lab.dataplane.rule_counter(1).unwrap().packets > https
        });
        lab.wait_for("the tagged SYN to 3389 to drop", |lab| {
            lab.drops(3389, proto::TCP) > rdp
        });
        let events = lab.dataplane.drain_events();
        assert!(
            events
                .iter()
                .any(|e| e.vlan == outer && e.dport == 3389 && e.src[..4] == [198, 51, 100, 2]),
            "no drop event tagged VLAN {outer} in {events:?}"
        );
    }
}

/// A TCP SYN from 198.51.100.2 to the Client Access server behind VLAN `tags`.
fn tagged_syn(tags: &[(u16, u16)], dport: u16) -> Vec<u8> {
    let mut spec = Spec::new(
        "198.51.100.2".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        L4::tcp(45000, dport, 0x02, 1, 0),
    );
    spec.vlans = tags.to_vec();
    let mut frame = build(&spec).bytes;
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn driver_mode_enforces_real_traffic() {
    check_real_traffic(AttachMode::Driver, AttachedMode::Driver);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn skb_mode_enforces_real_traffic() {
    check_real_traffic(AttachMode::Skb, AttachedMode::Skb);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn auto_mode_falls_back_to_skb_where_the_driver_refuses() {
    require_root();
    remove_stale();
    // Loopback has no native XDP support: driver mode must fail, auto must fall back.
    let ns = Namespace::new("lo");
    let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load the XDP program");
    let refused = ns.run(|| dataplane.attach("lo", AttachMode::Driver));
    let message = refused
        .expect_err("driver mode on lo should be refused")
        .to_string();
    assert!(message.contains("driver mode"), "unclear error: {message}");
    assert_eq!(
        ns.run(|| dataplane.attach("lo", AttachMode::Auto)).unwrap(),
        AttachedMode::Skb
    );
    let missing = ns
        .run(|| dataplane.attach("no-such-if", AttachMode::Auto))
        .expect_err("unknown interface");
    assert!(
        missing.to_string().contains("no-such-if"),
        "unclear error: {missing}"
    );
}
