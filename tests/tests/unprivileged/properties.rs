//! Properties of the compiler and the reference classifier over random valid configs.

use std::net::IpAddr;

use exfw_common::{Reason, Verdict, proto};
use exfw_daemon::policy::{
    Class, compile,
    export::{ExplainFormat, ExplainRow, explain, nftables, proto_name, render_explain},
    probe,
};
use exfw_tests::generate::{self, Topology};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

fn row_covers(row: &ExplainRow, protocol: u8, port: u16, src: &str, dst: &str) -> bool {
    let port_ok = match row.ports.trim_start_matches("type ") {
        "any" => true,
        p => match p.split_once('-') {
            Some((a, b)) => (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&port),
            None => p.parse::<u16>().unwrap() == port,
        },
    };
    row.protocol == proto_name(protocol)
        && port_ok
        && row.destination.iter().any(|d| d == dst)
        && row.source.iter().any(|s| s == src)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every pair of trusted hosts passes on any port and protocol, both ways.
    #[test]
    fn every_trusted_pair_passes(seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let compiled = compile(&generate::config(&mut rng)).unwrap();
        let p = &compiled.policy;
        let trusted: Vec<IpAddr> = p.classes.iter().filter(|c| c.trusted).flat_map(|c| &c.prefixes).map(|n| n.addr()).collect();
        for _ in 0..50 {
            let (a, b) = (*trusted.choose(&mut rng).unwrap(), *trusted.choose(&mut rng).unwrap());
            if a.is_ipv6() != b.is_ipv6() { continue; }
            let number = *[proto::TCP, proto::UDP, if a.is_ipv6() { proto::ICMPV6 } else { proto::ICMP }, 47].choose(&mut rng).unwrap();
            let port: u16 = rng.random();
            if number == proto::ICMPV6 && (133..=137).contains(&(port as u8)) {
                // Neighbour discovery is judged as on-link traffic before anything else.
                continue;
            }
            let out = p.judge_first(&probe::frame(a, b, number, port, true));
            prop_assert!(out.verdict == Verdict::Pass && out.reason == Reason::Trusted, "{} -> {} proto {} port {}: {:?}", a, b, number, port, out);
        }
    }

    /// Nothing reaches a protected host unless the explained allowlist has a row for it, and
    /// every row's traffic passes.
    #[test]
    fn protected_hosts_get_exactly_the_explained_allowlist(seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let compiled = compile(&generate::config(&mut rng)).unwrap();
        let p = &compiled.policy;
        let rows = explain(&compiled).rules;
        let ports: Vec<u16> = p.rules.iter().map(|r| r.ports.first).chain([22, 25, 443, 445, 3389, 50636, 59531]).collect();
        let addresses = generate::probe_addresses(p);
        let class_of = |addr: IpAddr| {
            let out = p.judge_first(&probe::frame(addr, addr, proto::UDP, 9, false));
            out.src_class
        };
        for _ in 0..200 {
            let (src, dst) = (*addresses.choose(&mut rng).unwrap(), *addresses.choose(&mut rng).unwrap());
            if src.is_ipv6() != dst.is_ipv6() { continue; }
            let dst_class = class_of(dst);
            let Some(dst_info) = p.class(dst_class).filter(|c| c.protected) else { continue };
            let src_info = p.class(class_of(src));
            if src_info.is_some_and(|c| c.trusted) && dst_info.trusted { continue; }
            let number = *[proto::TCP, proto::UDP].choose(&mut rng).unwrap();
            let port = if rng.random_bool(0.7) { *ports.choose(&mut rng).unwrap() } else { rng.random() };
            let out = p.judge_first(&probe::frame(src, dst, number, port, true));
            let explained = rows.iter().any(|r| row_covers(r, number, port, p.class_name(out.src_class), &dst_info.name));
            prop_assert_eq!(out.verdict == Verdict::Pass, explained, "{} ({}) -> {} ({}) {}/{}: {:?}", src, p.class_name(out.src_class), dst, dst_info.name, number, port, out);
        }
    }

    /// The same config compiles to the same policy, explanation and nftables ruleset, byte for byte.
    #[test]
    fn compile_is_deterministic(seed in any::<u64>()) {
        let config = generate::config(&mut StdRng::seed_from_u64(seed));
        let (a, b) = (compile(&config).unwrap(), compile(&config.clone()).unwrap());
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(render_explain(&a, ExplainFormat::Json), render_explain(&b, ExplainFormat::Json));
        prop_assert_eq!(nftables(&a, "x"), nftables(&b, "x"));
    }
}

/// The differential suite's generator covers the gateway's own class and protected classes
/// that are not trusted (else those paths would go untested in the kernel).
#[test]
fn generated_policies_hold_local_and_untrusted_classes() {
    let mut rng = StdRng::seed_from_u64(0x00e7_f3a1);
    let topology = Topology::routed(&["v0", "v1", "v2"]);
    let classes: Vec<Class> = (0..200)
        .flat_map(|_| generate::policy(&mut rng, &topology).classes)
        .collect();
    assert!(classes.iter().any(|c| c.local));
    assert!(classes.iter().any(|c| !c.trusted && c.protected));
}
