//! The real XDP program under BPF_PROG_TEST_RUN against the reference classifier: verdict,
//! reason and counter deltas must agree on every generated packet.

use std::collections::BTreeSet;

use exfw_common::{Counter, RuleStats};
use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions},
    policy::{Policy, Reason, Reference, Verdict},
};
use exfw_tests::{generate, hex, monotonic_ns, require_root};
use rand::{SeedableRng, rngs::StdRng};

const ROUNDS: usize = 6;
const PACKETS_PER_ROUND: usize = 20_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn seed() -> u64 {
    std::env::var("EXFW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026)
}

#[test]
fn kernel_agrees_with_reference_classifier() {
    require_root();
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut compared = 0usize;
    for round in 0..ROUNDS {
        let mut first = generate::policy(&mut rng);
        let second = generate::policy(&mut rng);
        if round == ROUNDS - 1 {
            // Zero lifetimes: every flow and fragment entry is already expired when looked up.
            first.timeouts.tcp = std::time::Duration::ZERO;
            first.timeouts.udp = std::time::Duration::ZERO;
            first.timeouts.other = std::time::Duration::ZERO;
            first.timeouts.fragment = std::time::Duration::ZERO;
        }
        let rule_ids: BTreeSet<u32> = first
            .rules
            .iter()
            .chain(&second.rules)
            .map(|r| r.id)
            .collect();
        let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load the XDP program");
        dataplane.apply(&first).expect("apply the first policy");
        let mut reference = Reference::new(first.clone());
        let mut stream = generate::Stream::new(&mut rng, first.clone());
        let mut policy: Policy = first;
        for i in 0..PACKETS_PER_ROUND {
            if i == PACKETS_PER_ROUND / 2 && round != ROUNDS - 1 {
                // A generation flip mid-stream: flows and fragments survive, rules change.
                dataplane.apply(&second).expect("apply the second policy");
                reference.set_policy(second.clone());
                stream.set_policy(second.clone());
                policy = second.clone();
            }
            let frame = stream.next_frame();
            let expected = reference.classify(&frame, monotonic_ns());
            let reason_before = dataplane
                .reason_counter(expected.verdict, expected.reason)
                .unwrap();
            let rule_before = expected.rule.map(|r| dataplane.rule_counter(r).unwrap());
            let drop_key = (expected.reason == Reason::Policy)
                .then(|| reference.last_drop_key())
                .flatten();
            let drop_before = drop_key.map(|k| dataplane.drop_counter(&k).unwrap());
            let run = dataplane
                .test_run("exfw_xdp", &frame, 1)
                .expect("BPF_PROG_TEST_RUN");
            let reason_after = dataplane
                .reason_counter(expected.verdict, expected.reason)
                .unwrap();
            let rule_after = expected.rule.map(|r| dataplane.rule_counter(r).unwrap());
            let drop_after = drop_key.map(|k| dataplane.drop_counter(&k).unwrap());
            let len = frame.len() as u64;
            let want_action = if expected.verdict == Verdict::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            let reason_delta = Counter {
                packets: reason_after.packets - reason_before.packets,
                bytes: reason_after.bytes - reason_before.bytes,
            };
            let rule_delta = rule_before.zip(rule_after).map(|(b, a)| RuleStats {
                packets: a.packets - b.packets,
                bytes: a.bytes - b.bytes,
                new_connections: a.new_connections - b.new_connections,
            });
            let rule_ok = rule_delta.is_none_or(|d| d.packets == 1 && d.bytes == len);
            let drop_delta = drop_before
                .zip(drop_after)
                .map(|(b, a)| a.packets - b.packets);
            let one_packet = Counter {
                packets: 1,
                bytes: len,
            };
            if run.return_value != want_action
                || reason_delta != one_packet
                || !rule_ok
                || drop_delta.is_some_and(|d| d != 1)
            {
                panic!(
                    "seed {seed:#x} round {round} packet {i}: kernel returned {} with reason delta \
                     {reason_delta:?}, rule delta {rule_delta:?}, drop delta {drop_delta:?}; reference \
                     says {expected:?}\nframe ({len} bytes):\n{}\npolicy: {policy:#?}",
                    run.return_value,
                    hex(&frame),
                );
            }
            compared += 1;
            if i % 4096 == 0 {
                dataplane.drain_events();
            }
        }
        let kernel = dataplane.counters(rule_ids.iter().copied()).unwrap();
        assert_eq!(
            &kernel,
            reference.counters(),
            "seed {seed:#x} round {round}: counter totals differ (left: kernel, right: reference)"
        );
        let events = dataplane.event_stats().unwrap();
        assert!(
            events.sampled > 0,
            "round {round}: no drop event was sampled: {events:?}"
        );
        eprintln!(
            "round {round}: {PACKETS_PER_ROUND} packets agree: {:?}",
            kernel
                .reasons
                .iter()
                .map(|((v, r), c)| format!("{v:?}/{}={}", r.name(), c.packets))
                .collect::<Vec<_>>()
        );
    }
    eprintln!("differential: compared {compared} packets (seed {seed:#x})");
    assert!(compared >= 100_000);
}
