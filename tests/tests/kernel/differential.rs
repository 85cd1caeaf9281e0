//! The real XDP program under BPF_PROG_TEST_RUN against the reference classifier, over a
//! million frames in sequences: handshakes and their replies on the interfaces they route
//! through, floods of SYNs and bare ACKs, spoofed sources, ICMP errors about known and unknown
//! connections, neighbour discovery, source routes, malformed frames, and policy flips that
//! change what each interface accepts. Verdict, reason and the counters each frame moves must
//! agree frame by frame; the counter totals and the confirmed connections round by round.
//!
//! The frames arrive on three veth interfaces of a namespace whose routes the reference knows
//! (Linux 5.15 and later accept an ingress interface for a test run); on older kernels they
//! arrive on loopback, where the reverse-path check cannot be exercised (the network-namespace
//! suites test it there on real traffic).

use std::{collections::BTreeSet, time::Duration};

use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions},
    policy::{Accepts, Interface, Policy, Reason, Reference, Timeouts},
};
use exfw_tests::{
    differential::Pair,
    generate::{self, Arrival, LOCAL_ADDRESS, Stream, Topology},
    netns::Namespace,
    require_root,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const ROUNDS: usize = 6;
const INTERFACES: [&str; 3] = ["v0", "v1", "v2"];

fn seed() -> u64 {
    std::env::var("EXFW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
}

/// Frames in all (`EXFW_DIFF_PACKETS` lowers it where the kernel runs emulated).
fn packets() -> usize {
    std::env::var("EXFW_DIFF_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_020_000)
}

fn load() -> Dataplane {
    // Tables far larger than a round fills: LRU eviction is the one thing the reference does
    // not model.
    Dataplane::load(LoadOptions {
        flow_entries: 1 << 20,
        pending_entries: 1 << 20,
        frag_entries: 1 << 18,
        pin_dir: None,
        // The program with its diagnostics on must pass every kernel's verifier too (the VM
        // suites run this one).
        kernel_log: true,
    })
    .expect("load the XDP program")
}

/// Lifetimes no round outlives (or, for one round, zero: every entry expired at once).
fn timeouts(zero: bool) -> Timeouts {
    let d = if zero {
        Duration::ZERO
    } else {
        Duration::from_secs(7200)
    };
    Timeouts {
        tcp: d,
        udp: d,
        other: d,
        fragment: d,
        pending: d,
        tcp_fin: d,
        tcp_rst: d,
    }
}

/// Three veth pairs (peers in the same namespace), forwarding on, the empty program attached
/// to register their receive queues; whether the kernel accepts them as a test run's ingress.
fn prepare(ns: &Namespace) -> Topology {
    for name in INTERFACES {
        let peer = format!("{name}p");
        ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", name, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);
    }
    ns.exec(&[
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    ns.ip(&["addr", "add", &format!("{LOCAL_ADDRESS}/32"), "dev", "v2"]);
    let routed = ns.run(|| {
        let mut dataplane = load();
        dataplane
            .attach_empty("v0")
            .expect("attach the empty program");
        let policy = Policy {
            interfaces: vec![Interface {
                name: "v0".into(),
                reverse_path: false,
                accepts: Accepts::Any,
            }],
            ..Default::default()
        };
        dataplane.apply(&policy).expect("apply");
        let frame = exfw_daemon::policy::probe::frame(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            6,
            443,
            true,
        );
        dataplane
            .test_run_on(
                "exfw_xdp",
                &frame,
                1,
                exfw_daemon::dataplane::ifindex_of("v0"),
            )
            .is_ok()
    });
    if routed {
        Topology::routed(&INTERFACES)
    } else {
        eprintln!(
            "differential: this kernel takes no ingress interface for a test run (Linux 5.15+); \
             every frame arrives on loopback and the reverse-path check is left to the \
             network-namespace suites"
        );
        Topology::loopback()
    }
}

/// Replaces the namespace's routes with the topology's for these policies.
fn install_routes(ns: &Namespace, topology: &Topology, policies: &[&Policy]) {
    if !topology.routed {
        return;
    }
    ns.ip(&["-4", "route", "flush", "table", "main"]);
    ns.ip(&["-6", "route", "flush", "table", "main"]);
    for (net, iface) in topology.routes(policies) {
        let family = if net.addr().is_ipv6() { "-6" } else { "-4" };
        ns.ip(&[family, "route", "replace", &net.to_string(), "dev", &iface]);
    }
}

/// A second policy for the flip: new classes and rules, and sometimes one interface fewer (its
/// frames then drop as arriving on an interface the policy does not name).
fn second(rng: &mut StdRng, topology: &Topology) -> Policy {
    let mut p = generate::policy(rng, topology);
    if topology.interfaces.len() > 1 && rng.random_bool(0.3) {
        p.interfaces.remove(1);
    }
    p
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn kernel_agrees_with_reference_classifier() {
    require_root();
    let seed = seed();
    let total = packets();
    let per_round = total.div_ceil(ROUNDS);
    let mut rng = StdRng::seed_from_u64(seed);
    let ns = Namespace::new("diff");
    let topology = prepare(&ns);
    let mut compared = 0usize;
    let mut seen: BTreeSet<Reason> = BTreeSet::new();
    let mut confirmed = 0u64;
    for round in 0..ROUNDS {
        let zero = round == ROUNDS - 1;
        let mut first = generate::policy(&mut rng, &topology);
        let mut second = second(&mut rng, &topology);
        first.timeouts = timeouts(zero);
        second.timeouts = timeouts(zero);
        install_routes(&ns, &topology, &[&first, &second]);
        let topo = topology.clone();
        let rng = &mut rng;
        let (reasons, round_confirmed) = ns.run(|| {
            let mut dataplane = load();
            if topo.routed {
                for name in INTERFACES {
                    dataplane.attach_empty(name).expect("attach the empty program");
                }
            }
            dataplane.apply(&first).expect("apply the first policy");
            let routes = topo.reference_routes(&[&first, &second]);
            let mut reference = Reference::new(first.clone(), routes);
            let mut stream = Stream::new(rng, first.clone(), topo.clone());
            let mut policy = first.clone();
            let mut reasons = BTreeSet::new();
            let mut round_confirmed = 0;
            for i in 0..per_round {
                if i == per_round / 2 {
                    // A generation flip mid-stream: connections and fragments survive.
                    dataplane.apply(&second).expect("apply the second policy");
                    reference.set_policy(second.clone());
                    stream.set_policy(second.clone());
                    policy = second.clone();
                }
                let arrival: Arrival = stream.next_arrival();
                let mut pair = Pair::new(&dataplane, &mut reference);
                match pair.check(&arrival) {
                    Ok(outcome) => {
                        reasons.insert(outcome.reason);
                        round_confirmed += u64::from(outcome.confirmed);
                    }
                    Err(e) => panic!(
                        "seed {seed:#x} round {round} frame {i}: {e}\npolicy: {policy:#?}"
                    ),
                }
                if i % 4096 == 0 {
                    dataplane.drain_events();
                }
            }
            let rule_ids: BTreeSet<u32> = first
                .rules
                .iter()
                .chain(&second.rules)
                .map(|r| r.id)
                .collect();
            let kernel = dataplane.counters(rule_ids.iter().copied()).unwrap();
            assert_eq!(
                &kernel,
                reference.counters(),
                "seed {seed:#x} round {round}: counter totals differ (left: kernel, right: reference)"
            );
            let kernel_flows: BTreeSet<_> = dataplane
                .confirmed_flows()
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(
                kernel_flows,
                reference.confirmed_keys(),
                "seed {seed:#x} round {round}: the confirmed connections differ"
            );
            assert!(
                reference.pending_entries() < (1 << 18),
                "the unconfirmed table came near the size where the kernel evicts"
            );
            assert!(
                dataplane.event_stats().unwrap().sampled > 0,
                "round {round}: no drop event was sampled"
            );
            eprintln!(
                "round {round}: {per_round} frames on {:?} agree; {round_confirmed} connections confirmed, {} held; {:?}",
                topo.interfaces,
                kernel_flows.len(),
                kernel
                    .reasons
                    .iter()
                    .map(|((v, r), c)| format!("{}/{}={}", v.name(), r.name(), c.packets))
                    .collect::<Vec<_>>()
            );
            (reasons, round_confirmed)
        });
        compared += per_round;
        confirmed += round_confirmed;
        seen.extend(reasons);
    }
    eprintln!(
        "differential: {compared} frames agree (seed {seed:#x}), {confirmed} connections confirmed"
    );
    assert!(compared >= total);
    assert!(confirmed > 0, "no connection ever completed its handshake");
    let mut expected: BTreeSet<Reason> = Reason::ALL.into_iter().collect();
    if !topology.routed {
        // One interface: nothing arrives where the policy names no interface.
        expected.remove(&Reason::UnknownInterface);
    }
    let missing: Vec<&str> = expected.difference(&seen).map(|r| r.name()).collect();
    assert!(
        missing.is_empty(),
        "reasons that never occurred: {missing:?}"
    );
}
