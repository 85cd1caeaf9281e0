//! Compiled role-model policies in the kernel: for random valid configs, the XDP program under
//! BPF_PROG_TEST_RUN and the reference classifier (what `exfw simulate` runs) agree on every
//! frame of a stateful stream (conversations, attacks, malformed frames) and on every counter.

use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions},
    policy::{Reference, Routes, compile},
};
use exfw_tests::{
    differential::Pair,
    generate::{self, Stream, Topology},
    require_root,
};
use rand::{SeedableRng, rngs::StdRng};

const CONFIGS: usize = 20;
const FRAMES_PER_CONFIG: usize = 2_000;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
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
        let mut reference = Reference::new(policy.clone(), Routes::assume_ingress());
        let mut stream = Stream::new(&mut rng, policy.clone(), Topology::loopback());
        for i in 0..FRAMES_PER_CONFIG {
            let arrival = stream.next_arrival();
            if let Err(e) = Pair::new(&dataplane, &mut reference).check(&arrival) {
                panic!("seed {seed:#x} config {round} frame {i}: {e}\nconfig: {config:#?}");
            }
            compared += 1;
        }
        let rule_ids = policy.rules.iter().map(|r| r.id);
        assert_eq!(
            &dataplane.counters(rule_ids).unwrap(),
            reference.counters(),
            "seed {seed:#x} config {round}: counters differ"
        );
    }
    eprintln!("compiled configs: {CONFIGS} configs, {compared} frames agree (seed {seed:#x})");
}
