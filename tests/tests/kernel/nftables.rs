//! `exfw export --format nft` loaded into a gateway namespace gives the same verdicts as exfw's
//! reference classifier (what `exfw simulate` answers) for real TCP connections, its input chain
//! those of the gateway rows; the XDP program attached to the same gateway is held to the same
//! answers.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    path::Path,
};

use exfw_common::{Verdict, proto};
use exfw_daemon::{
    config,
    dataplane::{AttachMode, Dataplane, LoadOptions},
    policy::{Reference, Routes, compile, export::nftables, probe},
};
use exfw_tests::{
    netns::{Topology, tcp_connects},
    require_root,
};

const PORTS: [u16; 12] = [25, 80, 110, 143, 389, 443, 445, 587, 993, 2525, 3389, 50636];

/// (source, destination, port) and whether exfw says it passes.
type Case = (IpAddr, IpAddr, u16, bool);

/// Runs every case at once; returns the cases whose outcome differs from exfw's verdict.
fn mismatches(net: &Topology, cases: &[Case], outbound: &[(IpAddr, IpAddr, u16)]) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(src, dst, port, pass)| {
                let ns = if outbound.contains(&(src, dst, port)) {
                    &net.inside
                } else {
                    &net.outside
                };
                s.spawn(move || {
                    let connected = tcp_connects(
                        ns,
                        Some(SocketAddr::new(src, 0)),
                        SocketAddr::new(dst, port),
                    );
                    (connected != pass).then(|| {
                        format!(
                            "{src} -> {dst}:{port}: exfw says {}, connection {}",
                            if pass { "pass" } else { "drop" },
                            if connected { "succeeded" } else { "timed out" }
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    })
}

/// The example's organisation on a gateway with real listeners, and the connections to try:
/// each (source, destination, port) with what exfw's reference classifier says of it.
struct Matrix {
    compiled: exfw_daemon::policy::Compiled,
    policy: exfw_daemon::policy::Policy,
    net: Topology,
    cases: Vec<Case>,
    outbound: [(IpAddr, IpAddr, u16); 4],
    passes: usize,
    _listeners: Vec<TcpListener>,
}

fn matrix() -> Matrix {
    require_root();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/exchange2016-edge.toml");
    // The example's organisation on this gateway's two links: the Internet, the clients and the
    // administrators outside, the servers inside.
    let mut text: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let interface = |name: &str, accepts: &[&str]| {
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert(
            "accepts".into(),
            toml::Value::Array(accepts.iter().map(|a| (*a).into()).collect()),
        );
        toml::Value::Table(t)
    };
    text.insert(
        "interface".into(),
        toml::Value::Array(vec![
            interface("out0", &["external", "clients", "management"]),
            interface(
                "in0",
                &["mailbox", "edge", "dc", "lync", "dns", "protected-network"],
            ),
        ]),
    );
    let config = config::parse(&toml::to_string(&text).unwrap(), "exchange2016-edge.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let compiled = compile(&config).unwrap();
    let policy = compiled.policy.clone();
    let net = Topology::new(
        &[
            "203.0.113.9/24",
            "198.51.100.7/24",
            "198.51.100.200/24",
            "198.51.100.250/24",
            "2001:db8:ffff::9/64",
        ],
        &[
            "192.0.2.21/24",
            "192.0.2.22/24",
            "192.0.2.130/24",
            "192.0.2.5/24",
            "2001:db8:21::21/64",
            "2001:db8:21::5/64",
        ],
    );
    // Listeners on every port on both sides (dual-stack sockets).
    let mut listeners: Vec<TcpListener> = net.inside.run(|| {
        PORTS
            .iter()
            .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
            .collect()
    });
    listeners.extend(net.outside.run(|| {
        [25u16, 443]
            .iter()
            .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
            .collect::<Vec<_>>()
    }));

    let inside = |a: IpAddr| {
        a.to_string().starts_with("192.0.2.") || a.to_string().starts_with("2001:db8:21:")
    };
    let simulate = |src: IpAddr, dst: IpAddr, port: u16| {
        let iface = if inside(src) { "in0" } else { "out0" };
        Reference::new(policy.clone(), Routes::assume_ingress())
            .classify(&probe::frame(src, dst, proto::TCP, port, true), iface, 0)
            .verdict
            == Verdict::Pass
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut cases: Vec<Case> = Vec::new();
    for src in [
        "203.0.113.9",
        "198.51.100.7",
        "198.51.100.200",
        "198.51.100.250",
    ] {
        for dst in ["192.0.2.21", "192.0.2.130", "192.0.2.5"] {
            for port in PORTS {
                cases.push((ip(src), ip(dst), port, simulate(ip(src), ip(dst), port)));
            }
        }
    }
    for (dst, port) in [
        ("2001:db8:21::21", 443),
        ("2001:db8:21::21", 25),
        ("2001:db8:21::21", 3389),
        ("2001:db8:21::5", 389),
    ] {
        cases.push((
            ip("2001:db8:ffff::9"),
            ip(dst),
            port,
            simulate(ip("2001:db8:ffff::9"), ip(dst), port),
        ));
    }
    let outbound = [
        (ip("192.0.2.130"), ip("203.0.113.9"), 25),
        (ip("192.0.2.21"), ip("203.0.113.9"), 25),
        (ip("192.0.2.130"), ip("203.0.113.9"), 443),
        (ip("2001:db8:21::21"), ip("2001:db8:ffff::9"), 25),
    ];
    for (src, dst, port) in outbound {
        cases.push((src, dst, port, simulate(src, dst, port)));
    }
    let passes = cases.iter().filter(|c| c.3).count();
    assert!(
        passes >= 10 && cases.len() - passes >= 10,
        "the matrix must hold both verdicts: {passes} of {}",
        cases.len()
    );

    Matrix {
        compiled,
        policy,
        net,
        cases,
        outbound,
        passes,
        _listeners: listeners,
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_nftables_export_matches_simulate_on_real_connections() {
    let Matrix {
        compiled,
        net,
        cases,
        outbound,
        ..
    } = &matrix();
    let (cases, outbound) = (cases.as_slice(), outbound.as_slice());
    // Without any firewall, every connection succeeds: the matrix can tell the two apart.
    let open: Vec<Case> = cases.iter().map(|&(s, d, p, _)| (s, d, p, true)).collect();
    let baseline = mismatches(net, &open, outbound);
    assert!(
        baseline.is_empty(),
        "without a firewall:\n{}",
        baseline.join("\n")
    );

    // nftables.
    let ruleset = std::env::temp_dir().join(format!("exfw-test-{}.nft", std::process::id()));
    std::fs::write(&ruleset, nftables(compiled, "exchange2016-edge.toml")).unwrap();
    net.gateway.exec(&["nft", "-f", ruleset.to_str().unwrap()]);
    let _ = std::fs::remove_file(&ruleset);
    let nft = mismatches(net, cases, outbound);
    assert!(
        nft.is_empty(),
        "nftables export disagrees with exfw simulate:\n{}",
        nft.join("\n")
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_exported_input_chain_lets_only_management_reach_the_gateway() {
    let Matrix {
        compiled,
        policy,
        net,
        ..
    } = &matrix();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let ruleset = std::env::temp_dir().join(format!("exfw-test-input-{}.nft", std::process::id()));
    std::fs::write(&ruleset, nftables(compiled, "exchange2016-edge.toml")).unwrap();
    net.gateway.exec(&["nft", "-f", ruleset.to_str().unwrap()]);
    let _ = std::fs::remove_file(&ruleset);
    // The gateway itself: its input chain lets the administrators' network reach SSH on the
    // gateway's declared address, and nobody else.
    let _ssh = net
        .gateway
        .run(|| TcpListener::bind("192.0.2.1:22").expect("listen on the gateway"));
    let gateway = ip("192.0.2.1");
    let host_cases: Vec<Case> = ["198.51.100.250", "198.51.100.7", "203.0.113.9"]
        .iter()
        .map(|src| {
            let src = ip(src);
            let class = policy.judge_first(&probe::frame(src, gateway, proto::TCP, 22, true));
            let allowed = compiled
                .host_rule(class.src_class, class.dst_class, proto::TCP, 22)
                .is_some();
            (src, gateway, 22, allowed)
        })
        .collect();
    assert_eq!(
        host_cases.iter().map(|c| c.3).collect::<Vec<_>>(),
        [true, false, false],
        "only the management source may reach the gateway's SSH"
    );
    let host = mismatches(net, &host_cases, &[]);
    assert!(
        host.is_empty(),
        "the exported input chain disagrees with the gateway rows of exfw explain:\n{}",
        host.join("\n")
    );
    // ... and ping from the administrators' network, nobody else's.
    let pings = |src: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                net.outside.name(),
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                src,
                "192.0.2.1",
            ])
            .output()
            .expect("busybox ping (cargo xtask setup installs busybox-static)")
            .status
            .success()
    };
    assert!(
        pings("198.51.100.250"),
        "the management source cannot ping the gateway"
    );
    assert!(!pings("198.51.100.7"), "a client pinged the gateway");
    net.gateway
        .exec(&["nft", "delete", "table", "inet", "exfw"]);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_xdp_program_matches_simulate_on_real_connections() {
    let Matrix {
        policy,
        net,
        cases,
        outbound,
        passes,
        ..
    } = &matrix();
    let (cases, outbound) = (cases.as_slice(), outbound.as_slice());
    // The XDP program on the same gateway.
    let mut dataplane = Dataplane::load(LoadOptions::default()).unwrap();
    net.gateway.run(|| {
        dataplane.apply(policy).unwrap();
        dataplane.attach("out0", AttachMode::Driver).unwrap();
        dataplane.attach("in0", AttachMode::Driver).unwrap();
    });
    let xdp = mismatches(net, cases, outbound);
    assert!(
        xdp.is_empty(),
        "XDP disagrees with exfw simulate:\n{}",
        xdp.join("\n")
    );
    eprintln!(
        "nftables and XDP: {} real connections ({passes} pass, {} drop) match simulate",
        cases.len(),
        cases.len() - passes
    );
}
