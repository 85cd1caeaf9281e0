//! Compiled role-model policies in the kernel: for random valid configs, the XDP program under
//! BPF_PROG_TEST_RUN and the reference classifier (what `exfw simulate` runs) agree on every
//! generated packet, replies included.

use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions},
    policy::{Reference, Verdict, compile},
};
use exfw_tests::{
    generate, hex, monotonic_ns,
    packet::{L4, Spec, build},
    require_root,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const CONFIGS: usize = 20;
const PACKETS_PER_CONFIG: usize = 2_000;

#[test]
fn simulate_agrees_with_the_kernel_on_compiled_configs() {
    require_root();
    let seed = std::env::var("EXFW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0f1_2026u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut compared = 0;
    for round in 0..CONFIGS {
        let config = generate::config(&mut rng);
        let compiled = compile(&config).expect("generated configs are valid");
        let policy = compiled.policy;
        let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load");
        dataplane.apply(&policy).expect("apply");
        let mut reference = Reference::new(policy.clone());
        let addresses = generate::probe_addresses(&policy);
        let ports: Vec<u16> = policy
            .rules
            .iter()
            .map(|r| r.ports.first)
            .chain([25, 443, 3389])
            .collect();
        let mut sent: Vec<Spec> = Vec::new();
        for i in 0..PACKETS_PER_CONFIG {
            let spec = if !sent.is_empty() && rng.random_bool(0.3) {
                sent.choose(&mut rng).unwrap().reply()
            } else {
                let src = *addresses.choose(&mut rng).unwrap();
                let dst = *addresses
                    .iter()
                    .filter(|a| a.is_ipv6() == src.is_ipv6())
                    .collect::<Vec<_>>()
                    .choose(&mut rng)
                    .unwrap();
                let dport = if rng.random_bool(0.8) {
                    *ports.choose(&mut rng).unwrap()
                } else {
                    rng.random()
                };
                let l4 = match rng.random_range(0..5) {
                    0..=2 => L4::Tcp {
                        sport: rng.random_range(1024..=65535),
                        dport,
                        flags: *[0x02u8, 0x10].choose(&mut rng).unwrap(),
                        data_offset: 5,
                    },
                    3 => L4::Udp {
                        sport: rng.random_range(1024..=65535),
                        dport,
                        length: None,
                    },
                    _ => L4::Icmp {
                        kind: *[8u8, 128, 0, 3].choose(&mut rng).unwrap(),
                        code: 0,
                        id: rng.random(),
                    },
                };
                let spec = Spec {
                    vlans: vec![],
                    src,
                    dst: *dst,
                    ipv4_option_words: 0,
                    exts: vec![],
                    fragment: None,
                    l4,
                    payload: 0,
                };
                sent.push(spec.clone());
                spec
            };
            let frame = build(&spec).bytes;
            let expected = reference.classify(&frame, monotonic_ns());
            let run = dataplane.test_run("exfw_xdp", &frame, 1).expect("test run");
            let want = if expected.verdict == Verdict::Drop {
                1
            } else {
                2
            };
            assert_eq!(
                run.return_value,
                want,
                "seed {seed:#x} config {round} packet {i}: reference says {expected:?}\n{}\nconfig: {config:#?}",
                hex(&frame)
            );
            compared += 1;
        }
        let rule_ids = policy.rules.iter().map(|r| r.id);
        assert_eq!(
            &dataplane.counters(rule_ids).unwrap(),
            reference.counters(),
            "seed {seed:#x} config {round}: counters differ"
        );
    }
    eprintln!("compiled configs: {CONFIGS} configs, {compared} packets agree (seed {seed:#x})");
}
