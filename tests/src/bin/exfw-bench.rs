//! Data-plane benchmark: BPF_PROG_TEST_RUN nanoseconds per packet for allowed, trusted and
//! dropped packets under a small and a 10,000-server policy, against an empty XDP_PASS program
//! measured in the same run. Prints a table and writes JSON to the path given as argument.

use std::{collections::BTreeSet, net::IpAddr};

use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions},
    policy::{Class, Policy, PortRange, Rule},
};
use exfw_tests::packet::{L4, Spec, build};

const REPEAT: u32 = 1_000_000;
const SAMPLES: usize = 5;

fn policy(servers: u32, client_networks: u32) -> Policy {
    let host = |i: u32| -> ipnet::IpNet {
        format!("10.{}.{}.{}/32", 1 + i / 65536, (i / 256) % 256, i % 256)
            .parse()
            .unwrap()
    };
    let mut cas: Vec<ipnet::IpNet> = vec!["192.0.2.10/32".parse().unwrap()];
    let mut mailbox: Vec<ipnet::IpNet> = vec!["192.0.2.20/32".parse().unwrap()];
    for i in 0..servers {
        if i % 2 == 0 {
            cas.push(host(i))
        } else {
            mailbox.push(host(i))
        }
    }
    let clients = (0..client_networks)
        .map(|i| {
            format!("10.200.{}.{}/30", i / 64, (i % 64) * 4)
                .parse()
                .unwrap()
        })
        .collect();
    let class = |id, name: &str, protected, trusted, prefixes| Class {
        id,
        name: name.into(),
        protected,
        trusted,
        prefixes,
    };
    Policy {
        classes: vec![
            class(1, "cas", true, true, cas),
            class(2, "mailbox", true, true, mailbox),
            class(3, "dc", true, true, vec!["192.0.2.30/32".parse().unwrap()]),
            class(4, "clients", false, false, clients),
        ],
        rules: vec![
            Rule {
                id: 1,
                service: "https".into(),
                dst_class: 1,
                src_classes: BTreeSet::from([0, 4]),
                proto: 6,
                ports: PortRange::single(443),
            },
            Rule {
                id: 2,
                service: "smtp-inbound".into(),
                dst_class: 1,
                src_classes: BTreeSet::from([0]),
                proto: 6,
                ports: PortRange::single(25),
            },
            Rule {
                id: 3,
                service: "smtp-submission".into(),
                dst_class: 1,
                src_classes: BTreeSet::from([0, 4]),
                proto: 6,
                ports: PortRange::single(587),
            },
        ],
        ..Default::default()
    }
}

fn tcp(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    build(&Spec {
        vlans: vec![],
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        ipv4_option_words: 0,
        exts: vec![],
        fragment: None,
        l4: L4::Tcp {
            sport: 40000,
            dport,
            flags: 0x02,
            data_offset: 5,
        },
        payload: 0,
    })
    .bytes
}

fn median_ns(dp: &Dataplane, program: &str, frame: &[u8]) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            dp.test_run(program, frame, REPEAT)
                .expect("BPF_PROG_TEST_RUN")
                .duration
                .as_nanos() as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench/dataplane.json".into());
    let cases = [
        (
            "allowed (external -> cas:443)",
            tcp("203.0.113.5", "192.0.2.10", 443),
        ),
        (
            "trusted (mailbox -> dc:49152)",
            tcp("192.0.2.20", "192.0.2.30", 49152),
        ),
        (
            "dropped (external -> cas:3389)",
            tcp("203.0.113.5", "192.0.2.10", 3389),
        ),
    ];
    let mut rows = Vec::new();
    for (label, servers, clients) in [("small", 0, 0), ("10k servers", 10_000, 1_000)] {
        let mut dp = Dataplane::load(LoadOptions::default()).expect("load (run as root)");
        dp.set_event_rate(0, 0).unwrap();
        dp.apply(&policy(servers, clients)).expect("apply");
        let baseline = median_ns(&dp, "exfw_pass", &cases[0].1);
        rows.push((
            label,
            "empty XDP_PASS program (baseline)".to_string(),
            baseline,
            1.0,
        ));
        for (case, frame) in &cases {
            let ns = median_ns(&dp, "exfw_xdp", frame);
            rows.push((label, case.to_string(), ns, ns / baseline));
        }
    }
    println!(
        "{:<12} {:<36} {:>10} {:>10}",
        "policy", "packet", "ns/packet", "x baseline"
    );
    for (policy, case, ns, ratio) in &rows {
        println!("{policy:<12} {case:<36} {ns:>10.1} {ratio:>10.2}");
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|(policy, case, ns, ratio)| serde_json::json!({"policy": policy, "packet": case, "ns_per_packet": ns, "ratio_to_baseline": ratio, "repeat": REPEAT, "samples": SAMPLES}))
        .collect();
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap())
        .expect("write the JSON report");
    println!("wrote {out}");
}
