//! `exfw export --format nft` loaded into a gateway namespace gives the same verdicts as exfw's
//! reference classifier (what `exfw simulate` answers) for real TCP connections; the XDP program
//! attached to the same gateway is held to the same answers.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpListener},
    path::Path,
    time::Duration,
};

use exfw_common::{Verdict, proto};
use exfw_daemon::{
    config,
    dataplane::{AttachMode, Dataplane, LoadOptions},
    policy::{Reference, compile, export::nftables, probe},
};
use exfw_tests::{netns::Topology, require_root};
use socket2::{Domain, Socket, Type};

const PORTS: [u16; 12] = [25, 80, 110, 143, 389, 443, 445, 587, 993, 2525, 3389, 50636];

/// (source, destination, port) and whether exfw says it passes.
type Case = (IpAddr, IpAddr, u16, bool);

fn connect(ns: &exfw_tests::netns::Namespace, src: IpAddr, dst: SocketAddr) -> bool {
    ns.run(|| {
        let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
        match socket.connect_timeout(&dst.into(), Duration::from_millis(1200)) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::TimedOut => false,
            Err(e) => panic!("{src} -> {dst}: unexpected {e}"),
        }
    })
}

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
                    let connected = connect(ns, src, SocketAddr::new(dst, port));
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

#[test]
fn nftables_export_and_xdp_match_simulate_on_real_connections() {
    require_root();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/exchange2016-edge.toml");
    let compiled = compile(&config::load(&path).unwrap()).unwrap();
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
    let _inside: Vec<TcpListener> = net.inside.run(|| {
        PORTS
            .iter()
            .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
            .collect()
    });
    let _outside: Vec<TcpListener> = net.outside.run(|| {
        [25u16, 443]
            .iter()
            .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
            .collect()
    });

    let simulate = |src: IpAddr, dst: IpAddr, port: u16| {
        Reference::new(policy.clone())
            .classify(&probe::frame(src, dst, proto::TCP, port, true), 0)
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

    // Without any firewall, every connection succeeds: the matrix can tell the two apart.
    let open: Vec<Case> = cases.iter().map(|&(s, d, p, _)| (s, d, p, true)).collect();
    let baseline = mismatches(&net, &open, &outbound);
    assert!(
        baseline.is_empty(),
        "without a firewall:\n{}",
        baseline.join("\n")
    );

    // nftables.
    let ruleset = std::env::temp_dir().join(format!("exfw-test-{}.nft", std::process::id()));
    std::fs::write(&ruleset, nftables(&compiled, "exchange2016-edge.toml")).unwrap();
    net.gateway.exec(&["nft", "-f", ruleset.to_str().unwrap()]);
    let _ = std::fs::remove_file(&ruleset);
    let nft = mismatches(&net, &cases, &outbound);
    assert!(
        nft.is_empty(),
        "nftables export disagrees with exfw simulate:\n{}",
        nft.join("\n")
    );
    net.gateway
        .exec(&["nft", "delete", "table", "inet", "exfw"]);

    // The XDP program on the same gateway.
    let mut dataplane = Dataplane::load(LoadOptions::default()).unwrap();
    dataplane.apply(&policy).unwrap();
    net.gateway.run(|| {
        dataplane.attach("out0", AttachMode::Driver).unwrap();
        dataplane.attach("in0", AttachMode::Driver).unwrap();
    });
    let xdp = mismatches(&net, &cases, &outbound);
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
    drop(dataplane);
}
