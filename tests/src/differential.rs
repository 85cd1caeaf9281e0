//! The differential harness: frames through the real XDP program (BPF_PROG_TEST_RUN, with the
//! ingress interface as its context where the kernel allows one) and through the reference
//! classifier, which must agree on the verdict, the reason and every counter the frame moves.

use std::collections::BTreeMap;

use exfw_common::{Counter, RuleStats};
use exfw_daemon::{
    dataplane::{Dataplane, ifindex_of},
    policy::{Outcome, Reason, Reference, Verdict},
};

use crate::{generate::Arrival, hex, monotonic_ns};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The kernel and the reference, side by side.
pub struct Pair<'a> {
    /// The loaded program.
    pub dataplane: &'a Dataplane,
    /// The oracle.
    pub reference: &'a mut Reference,
    /// Interface name -> ifindex for test-run contexts (loopback runs without one).
    ifindex: BTreeMap<String, u32>,
}

impl<'a> Pair<'a> {
    /// Pairs a data plane with a reference; interface indexes are looked up in the calling
    /// thread's network namespace.
    pub fn new(dataplane: &'a Dataplane, reference: &'a mut Reference) -> Self {
        Pair {
            dataplane,
            reference,
            ifindex: BTreeMap::new(),
        }
    }

    fn ingress(&mut self, iface: &str) -> Option<u32> {
        if iface == "lo" {
            return None;
        }
        Some(
            *self.ifindex.entry(iface.to_string()).or_insert_with(|| {
                ifindex_of(iface).unwrap_or_else(|| panic!("no interface {iface}"))
            }),
        )
    }

    /// Runs one frame through both and checks they agree; the error says how they differ.
    pub fn check(&mut self, arrival: &Arrival) -> Result<Outcome, String> {
        let ingress = self.ingress(&arrival.iface);
        let expected = self
            .reference
            .classify(&arrival.frame, &arrival.iface, monotonic_ns());
        let dp = self.dataplane;
        let read = |e: &Outcome| -> (Counter, Option<RuleStats>, Option<Counter>, Option<Counter>) {
            let reason = dp.reason_counter(e.verdict, e.reason).unwrap();
            let rule = e.rule.map(|r| dp.rule_counter(r).unwrap());
            let drop = None;
            let spoofed = (e.reason == Reason::SpoofedSource)
                .then(|| dp.spoofed_counter(ingress.unwrap_or(1), e.verdict).unwrap());
            (reason, rule, drop, spoofed)
        };
        let drop_key = (expected.reason == Reason::Policy)
            .then(|| self.reference.last_drop_key())
            .flatten();
        let (reason_before, rule_before, _, spoofed_before) = read(&expected);
        let drop_before = drop_key.map(|k| dp.drop_counter(&k).unwrap());
        let run = dp
            .test_run_on("exfw_xdp", &arrival.frame, 1, ingress)
            .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
        let (reason_after, rule_after, _, spoofed_after) = read(&expected);
        let drop_after = drop_key.map(|k| dp.drop_counter(&k).unwrap());
        let len = arrival.frame.len() as u64;
        let one = Counter {
            packets: 1,
            bytes: len,
        };
        let delta = |a: Counter, b: Counter| Counter {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
        };
        let want = if expected.verdict == Verdict::Drop {
            XDP_DROP
        } else {
            XDP_PASS
        };
        let rule_delta = rule_before.zip(rule_after).map(|(b, a)| RuleStats {
            packets: a.packets - b.packets,
            bytes: a.bytes - b.bytes,
            new_connections: a.new_connections - b.new_connections,
        });
        let rule_ok = rule_delta.is_none_or(|d| {
            d.packets == 1 && d.bytes == len && d.new_connections == u64::from(expected.confirmed)
        });
        let drop_ok = drop_before
            .zip(drop_after)
            .is_none_or(|(b, a)| a.packets - b.packets == 1);
        let spoofed_ok = spoofed_before
            .zip(spoofed_after)
            .is_none_or(|(b, a)| delta(a, b) == one);
        let reason_delta = delta(reason_after, reason_before);
        if run.return_value != want || reason_delta != one || !rule_ok || !drop_ok || !spoofed_ok {
            return Err(format!(
                "kernel returned {} with reason delta {reason_delta:?}, rule delta {rule_delta:?}, \
                 drop ok {drop_ok}, spoofed ok {spoofed_ok}; reference says {expected:?}\n\
                 on {} ({len} bytes):\n{}",
                run.return_value,
                arrival.iface,
                hex(&arrival.frame),
            ));
        }
        Ok(expected)
    }
}
