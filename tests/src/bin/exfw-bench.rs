//! Data-plane benchmark: BPF_PROG_TEST_RUN nanoseconds per packet for a new connection, both
//! directions of a confirmed one, trusted and dropped packets under a small policy (with the
//! reverse-path check on and off) and a 10,000-server one, against an empty XDP_PASS program
//! measured in the same run. The packets arrive on the interfaces of a namespace they route
//! through (Linux 5.15 and later; before, on loopback without the reverse-path check). Then config parse, validation and compile times
//! for a 10,000-server organisation against the shipped example, and the daemon's memory,
//! reload and scrape times. Prints tables and writes JSON to the path given.

use std::{collections::BTreeSet, net::IpAddr};

use exfw_daemon::{
    dataplane::{Dataplane, LoadOptions, ifindex_of},
    policy::{Accepts, Class, Interface, Policy, PortRange, Rule},
};
use exfw_tests::{
    daemon::http_get_here,
    netns::Namespace,
    packet::{L4, Spec, build},
};

const REPEAT: u32 = 1_000_000;
const SAMPLES: usize = 5;
const OUTSIDE: &str = "v0";
const INSIDE: &str = "v1";

fn policy(servers: u32, client_networks: u32, interfaces: Vec<Interface>) -> Policy {
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
        ..Default::default()
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
        interfaces,
        ..Default::default()
    }
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    build(&Spec::new(
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
        L4::tcp(sport, dport, flags, seq, ack),
    ))
    .bytes
}

fn median_ns(dp: &Dataplane, program: &str, frame: &[u8], ingress: Option<u32>) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            dp.test_run_on(program, frame, REPEAT, ingress)
                .expect("BPF_PROG_TEST_RUN")
                .duration
                .as_nanos() as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

/// Per-packet costs in a namespace whose routes put the servers behind `v1` and the Internet
/// behind `v0` (or, where the kernel takes no test-run ingress, on loopback).
fn dataplane_rows() -> Vec<(&'static str, String, f64, f64)> {
    let ns = Namespace::new("bench");
    for name in [OUTSIDE, INSIDE] {
        let peer = format!("{name}p");
        ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", name, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);
    }
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ns.ip(&["route", "add", "default", "dev", OUTSIDE]);
    ns.ip(&["route", "add", "192.0.2.0/24", "dev", INSIDE]);
    ns.ip(&["route", "add", "10.0.0.0/8", "dev", INSIDE]);
    let mut rows = Vec::new();
    ns.run(|| {
        for (label, servers, clients, reverse_path) in [
            ("small", 0, 0, true),
            ("small, reverse-path check off", 0, 0, false),
            ("10k servers", 10_000, 1_000, true),
        ] {
            let mut dp = Dataplane::load(LoadOptions::default()).expect("load (run as root)");
            dp.set_event_rate(0, 0).unwrap();
            for name in [OUTSIDE, INSIDE] {
                dp.attach_empty(name).expect("attach the empty program");
            }
            let routed_interfaces = vec![
                Interface {
                    name: OUTSIDE.into(),
                    reverse_path,
                    accepts: Accepts::Classes(BTreeSet::from([0, 4])),
                },
                Interface {
                    name: INSIDE.into(),
                    reverse_path,
                    accepts: Accepts::Classes(BTreeSet::from([1, 2, 3])),
                },
            ];
            dp.apply(&policy(servers, clients, routed_interfaces))
                .expect("apply");
            let (out, inside) = (ifindex_of(OUTSIDE), ifindex_of(INSIDE));
            let syn = tcp("203.0.113.5", "192.0.2.10", 40000, 443, 0x02, 1000, 0);
            let routed = dp.test_run_on("exfw_xdp", &syn, 1, out).is_ok();
            let (out, inside) = if routed {
                (out, inside)
            } else {
                eprintln!(
                    "bench: no test-run ingress on this kernel; loopback, no reverse-path check"
                );
                let lo = vec![Interface {
                    name: "lo".into(),
                    reverse_path: false,
                    accepts: Accepts::Any,
                }];
                dp.apply(&policy(servers, clients, lo)).expect("apply");
                (None, None)
            };
            // A confirmed connection: SYN, SYN-ACK, ACK.
            let syn_ack = tcp("192.0.2.10", "203.0.113.5", 443, 40000, 0x12, 5000, 1001);
            let ack = tcp("203.0.113.5", "192.0.2.10", 40000, 443, 0x10, 1001, 5001);
            let reply = tcp("192.0.2.10", "203.0.113.5", 443, 40000, 0x18, 5001, 1001);
            for (frame, ingress) in [(&syn, out), (&syn_ack, inside), (&ack, out)] {
                assert_eq!(
                    dp.test_run_on("exfw_xdp", frame, 1, ingress)
                        .unwrap()
                        .return_value,
                    2
                );
            }
            let baseline = median_ns(&dp, "exfw_pass", &syn, out);
            rows.push((
                label,
                "empty XDP_PASS program (baseline)".to_string(),
                baseline,
                1.0,
            ));
            let new_syn = tcp("203.0.113.5", "192.0.2.10", 40001, 443, 0x02, 7000, 0);
            let cases = [
                ("new connection (SYN external -> cas:443)", new_syn, out),
                ("established (ACK external -> cas:443)", ack.clone(), out),
                ("reply (cas:443 -> external)", reply.clone(), inside),
                (
                    "trusted (mailbox -> dc:49152)",
                    tcp("192.0.2.20", "192.0.2.30", 40000, 49152, 0x02, 1, 0),
                    inside,
                ),
                (
                    "dropped (external -> cas:3389)",
                    tcp("203.0.113.5", "192.0.2.10", 40000, 3389, 0x02, 1, 0),
                    out,
                ),
            ];
            for (case, frame, ingress) in &cases {
                let ns = median_ns(&dp, "exfw_xdp", frame, *ingress);
                rows.push((label, case.to_string(), ns, ns / baseline));
            }
        }
    });
    rows
}

/// A config file with `servers` Mailbox servers and `networks` client networks.
fn large_config(servers: u32, networks: u32) -> String {
    let mut text = String::from(
        "version = 1\nmode = \"enforce\"\n\n[organization]\nexchange = \"2019\"\nimap4 = true\n\n",
    );
    for i in 0..servers {
        text.push_str(&format!(
            "[[server]]\nname = \"EX{i:05}\"\nroles = [\"mailbox\"]\naddresses = [\"10.{}.{}.{}\"]\n\n",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    text.push_str("[[domain_controller]]\nname = \"DC01\"\naddresses = [\"192.0.2.5\"]\n\n[clients]\nnetworks = [");
    let nets: Vec<String> = (0..networks)
        .map(|i| format!("\"10.200.{}.{}/30\"", i / 64, (i % 64) * 4))
        .collect();
    text.push_str(&nets.join(", "));
    // The daemon attaches to loopback, where its own scrapes arrive: no route to check there.
    text.push_str(
        "]\n\n[[interface]]\nname = \"lo\"\nreverse_path = \"off\"\naccepts = [\"mailbox\", \"dc\", \"clients\", \"external\"]\n",
    );
    text
}

/// Median wall time of `f` over SAMPLES runs, in milliseconds.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

/// Config parse + validation and compile times: the 10,000-server organisation against the
/// shipped 2016 example.
fn compile_rows() -> Vec<(String, String, f64, f64)> {
    use exfw_daemon::{config, policy::compile};
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/exchange2016-edge.toml"
    ))
    .unwrap();
    let large = large_config(10_000, 1_000);
    let check_small = median_ms(|| drop(config::parse(&example, "example").unwrap()));
    let check_large = median_ms(|| drop(config::parse(&large, "large").unwrap()));
    let small_cfg = config::parse(&example, "example").unwrap();
    let large_cfg = config::parse(&large, "large").unwrap();
    let compile_small = median_ms(|| drop(compile(&small_cfg).unwrap()));
    let compile_large = median_ms(|| drop(compile(&large_cfg).unwrap()));
    vec![
        (
            "example (baseline)".into(),
            "parse + validate".into(),
            check_small,
            1.0,
        ),
        (
            "10k servers, 1k nets".into(),
            "parse + validate".into(),
            check_large,
            check_large / check_small,
        ),
        (
            "example (baseline)".into(),
            "compile".into(),
            compile_small,
            1.0,
        ),
        (
            "10k servers, 1k nets".into(),
            "compile".into(),
            compile_large,
            compile_large / compile_small,
        ),
    ]
}

/// The real `exfw run` (no interfaces) with a small and a 10,000-server config: resident
/// memory, SIGHUP reload latency (the daemon's own measurement), and /metrics scrape time.
fn daemon_rows() -> Vec<(String, String, f64, f64)> {
    let exfw = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("exfw");
    assert!(
        exfw.exists(),
        "{} is missing: cargo xtask bench builds it",
        exfw.display()
    );
    let work = std::env::temp_dir().join(format!("exfw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mut measured: Vec<(String, f64, f64, f64, usize)> = Vec::new();
    for (i, (label, servers, networks)) in [
        ("small (baseline)", 10, 1),
        ("10k servers, 1k nets", 10_000, 1_000),
    ]
    .into_iter()
    .enumerate()
    {
        let addr = format!("127.0.0.1:{}", 19720 + i);
        let config = work.join(format!("{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "{}\n[metrics]\nlisten = \"{addr}\"\n",
                large_config(servers, networks)
            ),
        )
        .unwrap();
        let pins =
            std::path::PathBuf::from(format!("/sys/fs/bpf/exfw-bench-{}-{i}", std::process::id()));
        let log = work.join(format!("{i}.log"));
        let mut child = std::process::Command::new(&exfw)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--pin-dir")
            .arg(&pins)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start exfw run");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http_get_here(&addr, "/readyz").is_none_or(|(s, _)| s != 200) {
            assert!(
                std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "exfw run did not get ready: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let rss_kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let mut reloads = Vec::new();
        for n in 1..=SAMPLES {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
            loop {
                let text = std::fs::read_to_string(&log).unwrap();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("config reloaded"))
                    .collect();
                if lines.len() >= n {
                    let ms: f64 = lines[n - 1]
                        .split("elapsed_ms=")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    reloads.push(ms);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        reloads.sort_by(f64::total_cmp);
        let mut series = 0;
        let scrape = median_ms(|| {
            let (status, body) = http_get_here(&addr, "/metrics").unwrap();
            assert_eq!(status, 200);
            series = body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
        });
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
        std::process::Command::new(&exfw)
            .args(["detach", "--pin-dir"])
            .arg(&pins)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        measured.push((
            label.to_string(),
            rss_kib / 1024.0,
            reloads[SAMPLES / 2],
            scrape,
            series,
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    let base = measured[0].clone();
    let mut rows = Vec::new();
    for (label, rss, reload, scrape, series) in &measured {
        rows.push((label.clone(), "daemon RSS (MiB)".into(), *rss, rss / base.1));
        rows.push((
            label.clone(),
            "SIGHUP reload (ms)".into(),
            *reload,
            reload / base.2.max(0.001),
        ));
        rows.push((
            label.clone(),
            format!("scrape, {series} series (ms)"),
            *scrape,
            scrape / base.3.max(0.001),
        ));
    }
    rows
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench/dataplane.json".into());
    let rows = dataplane_rows();
    println!(
        "{:<30} {:<42} {:>10} {:>10}",
        "policy", "packet", "ns/packet", "x baseline"
    );
    for (policy, case, ns, ratio) in &rows {
        println!("{policy:<30} {case:<42} {ns:>10.1} {ratio:>10.2}");
    }
    let mut compile = compile_rows();
    compile.extend(daemon_rows());
    println!();
    println!(
        "{:<22} {:<30} {:>10} {:>10}",
        "config", "measure (ms unless said)", "value", "x baseline"
    );
    for (config, step, value, ratio) in &compile {
        println!("{config:<22} {step:<30} {value:>10.2} {ratio:>10.1}");
    }
    let dataplane: Vec<serde_json::Value> = rows
        .iter()
        .map(|(policy, case, ns, ratio)| serde_json::json!({"policy": policy, "packet": case, "ns_per_packet": ns, "ratio_to_baseline": ratio, "repeat": REPEAT, "samples": SAMPLES}))
        .collect();
    let compile: Vec<serde_json::Value> = compile
        .iter()
        .map(|(config, step, value, ratio)| serde_json::json!({"config": config, "measure": step, "value": value, "ratio_to_baseline": ratio, "samples": SAMPLES}))
        .collect();
    let json = serde_json::json!({"dataplane": dataplane, "compile": compile});
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap())
        .expect("write the JSON report");
    println!("wrote {out}");
}
