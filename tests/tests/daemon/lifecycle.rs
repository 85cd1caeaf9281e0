//! The real `exfw run` on a namespace gateway, an operator's day in small tests: a start that
//! fails changes nothing; a start enforces and counts, and a second daemon is refused; a bad
//! reload keeps the policy and an edited file reloads; kill -9 keeps enforcing and a restart
//! adopts the pinned state, replacing the program through the pinned links; SIGTERM leaves the
//! policy and `exfw detach` removes it.

use std::{path::Path, process::Command, time::Duration};

use exfw_tests::{
    daemon::{
        Daemon, GATEWAY_CONFIG, Prober, Scratch, connects, exfw_detach, exfw_status, http_get,
        metric, scrape, value, wait_until, write_config,
    },
    netns::{Namespace, Topology},
    require_root,
};

const ALLOW_RDP: &str = r#"
[[allow]]
name = "rdp-jump"
from = ["external"]
to = ["mailbox"]
proto = "tcp"
ports = [3389]
reason = "test: temporary remote desktop"
"#;

fn pinned_link(pins: &Path, iface: &str) -> (u64, u64) {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(pins.join("links/driver").join(iface))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("bpftool: {}", String::from_utf8_lossy(&out.stderr)));
    (v["id"].as_u64().unwrap(), v["prog_id"].as_u64().unwrap())
}

fn status_json(gateway: &Namespace, pins: &Path) -> serde_json::Value {
    serde_json::from_str(&exfw_status(gateway, pins, true)).unwrap()
}

/// A gateway namespace with exfw's config written and a Mailbox server behind it listening on
/// 443 (allowed) and 3389 (denied), in a scratch directory named after `tag`.
fn gateway(tag: &str) -> (Scratch, Topology, Vec<std::net::TcpListener>) {
    require_root();
    let cleanup = Scratch::new(tag);
    write_config(&cleanup.config(), GATEWAY_CONFIG);
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let listeners = net.listen(&[443, 3389]);
    (cleanup, net, listeners)
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_start_with_a_config_error_exits_1_and_changes_nothing() {
    let (cleanup, net, _listeners) = gateway("dfail");
    write_config(
        &cleanup.config(),
        &GATEWAY_CONFIG.replace("xdp_mode = \"driver\"", "xdp_mode = \"turbo\""),
    );
    let (code, text) = cleanup.start_and_exit(&net.gateway, "failed-start");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("xdp_mode `turbo` is unknown"), "{text}");
    assert!(
        !cleanup.pins.exists(),
        "a failed start must not pin anything"
    );
    assert!(connects(&net.outside, 3389), "nothing is enforcing yet");
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_started_daemon_enforces_counts_and_logs_drops_and_a_second_is_refused() {
    let (cleanup, net, _listeners) = gateway("dstart");
    let daemon = cleanup.start_ready(&net.gateway, "first");
    assert_eq!(
        http_get(&net.gateway, exfw_tests::daemon::METRICS, "/healthz")
            .unwrap()
            .0,
        200
    );
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));
    let body = scrape(&net.gateway);
    assert!(
        metric(
            &body,
            "exfw_rule_new_connections_total",
            &[r#"service="https""#, r#"dst_role="mailbox""#]
        )
        .unwrap()
            >= 1.0,
        "{body}"
    );
    assert!(
        metric(
            &body,
            "exfw_port_drops_total",
            &[r#"port="other""#, r#"proto="tcp""#]
        )
        .unwrap()
            >= 1.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "exfw_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &body,
            "exfw_interface_attached",
            &[r#"iface="out0""#, r#"mode="driver""#]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&body, "exfw_build_info", &[]), Some(1.0));
    wait_until("a drop event in the log", Duration::from_secs(10), || {
        daemon.log_text().contains("dropped")
    });
    assert!(
        daemon.log_text().contains("port=3389"),
        "{}",
        daemon.log_text()
    );

    // A second daemon on the same pin path refuses to start.
    let (code, text) = cleanup.start_and_exit(&net.gateway, "second");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("another exfw daemon manages"), "{text}");
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_broken_reload_keeps_the_policy_and_an_edited_file_reloads_by_itself() {
    let (cleanup, net, _listeners) = gateway("dreload");
    let config = cleanup.config();
    let daemon = cleanup.start_ready(&net.gateway, "reload");
    let first_generation = value(&net.gateway, "exfw_policy_generation", &[]);

    // A broken file on SIGHUP: every error logged, the running policy stays.
    write_config(&config, &format!("{GATEWAY_CONFIG}\n[organization.typo]\n"));
    daemon.signal(libc::SIGHUP);
    wait_until("the failed reload", Duration::from_secs(10), || {
        value(&net.gateway, "exfw_config_last_reload_successful", &[]) == 0.0
    });
    assert!(
        daemon
            .log_text()
            .contains("reload failed, the running policy stays in force"),
        "{}",
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("exfw.toml:"),
        "errors must carry the location: {}",
        daemon.log_text()
    );
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));

    let https_label = [r#"service="https""#, r#"dst_role="mailbox""#];
    let https_before = value(
        &net.gateway,
        "exfw_rule_new_connections_total",
        &https_label,
    );
    // An edited file (replaced by rename) reloads by itself.
    write_config(&config, &format!("{GATEWAY_CONFIG}{ALLOW_RDP}"));
    wait_until("the reload after the edit", Duration::from_secs(10), || {
        value(&net.gateway, "exfw_config_last_reload_successful", &[]) == 1.0
            && value(&net.gateway, "exfw_policy_generation", &[]) > first_generation
    });
    assert!(connects(&net.outside, 3389));
    // Adding a rule moved no other rule's counters (stable slots).
    assert!(
        value(
            &net.gateway,
            "exfw_rule_new_connections_total",
            &https_label
        ) >= https_before
    );
    assert!(connects(&net.outside, 443));
    assert!(
        value(
            &net.gateway,
            "exfw_rule_new_connections_total",
            &https_label
        ) > https_before
    );
    write_config(&config, GATEWAY_CONFIG);
    wait_until("the reload back", Duration::from_secs(10), || {
        !connects(&net.outside, 3389)
    });
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn enforcement_outlives_kill_9_and_a_broken_start_and_a_restart_adopts_the_pins() {
    let (cleanup, net, _listeners) = gateway("dkill");
    let config = cleanup.config();
    let pins = cleanup.pins.clone();
    let daemon = cleanup.start_ready(&net.gateway, "first");
    assert!(!connects(&net.outside, 3389));
    let drops_before_kill = value(
        &net.gateway,
        "exfw_packets_total",
        &[r#"verdict="drop""#, r#"reason="policy""#],
    );
    let (link_id, prog_id) = pinned_link(&pins, "out0");

    // kill -9: enforcement goes on, also while probing continuously across the restart.
    let prober = Prober::start(&net.outside, Duration::from_millis(300));
    daemon.kill9();
    assert!(!connects(&net.outside, 3389));
    assert!(connects(&net.outside, 443));
    let status = status_json(&net.gateway, &pins);
    assert_eq!(status["daemon_running"], false);
    assert_eq!(status["mode"], "enforce");
    assert_eq!(status["interfaces"].as_array().unwrap().len(), 2);
    let generation_while_down = status["generation"].as_u64().unwrap();

    // A start with a broken config while down: exits 1, the pinned policy stays.
    write_config(
        &config,
        &GATEWAY_CONFIG.replace("exchange = \"2019\"", "exchange = \"2003\""),
    );
    let broken = Daemon::start(&net.gateway, &config, &pins, &cleanup.log("broken-restart"));
    assert_eq!(broken.wait(Duration::from_secs(20)), Some(1));
    assert_eq!(
        status_json(&net.gateway, &pins)["generation"]
            .as_u64()
            .unwrap(),
        generation_while_down
    );
    assert!(!connects(&net.outside, 3389));

    // Restart: adopts the pins; the same links now run the new program instance.
    write_config(&config, GATEWAY_CONFIG);
    let _daemon = cleanup.start_ready(&net.gateway, "restart");
    let probes = prober.finish();
    assert!(probes.rounds >= 3);
    assert_eq!(
        (probes.denied_connected, probes.allowed_failed),
        (0, 0),
        "3389 connected or 443 failed while the daemon was down or restarting: {probes:?}"
    );
    let (new_link_id, new_prog_id) = pinned_link(&pins, "out0");
    assert_eq!(
        new_link_id, link_id,
        "the pinned link must be kept, never detached and attached again"
    );
    assert_ne!(
        new_prog_id, prog_id,
        "the restarted daemon's program must replace the old one through the link"
    );
    assert_eq!(
        value(&net.gateway, "exfw_policy_generation", &[]) as u64,
        generation_while_down + 1
    );
    assert!(!connects(&net.outside, 3389));
    assert!(
        value(
            &net.gateway,
            "exfw_packets_total",
            &[r#"verdict="drop""#, r#"reason="policy""#]
        ) > drops_before_kill,
        "drop counters must continue across the restart"
    );
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn sigterm_leaves_the_policy_in_force_and_detach_removes_it() {
    let (cleanup, net, _listeners) = gateway("dstop");
    let pins = cleanup.pins.clone();
    let daemon = cleanup.start_ready(&net.gateway, "stop");
    assert!(!connects(&net.outside, 3389));

    // SIGTERM: a clean stop that leaves the policy in force.
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(Duration::from_secs(10)), Some(0));
    assert!(!connects(&net.outside, 3389));

    // Detach removes everything.
    let out = exfw_detach(&pins, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("in0, out0"));
    assert!(connects(&net.outside, 3389));
    assert!(!pins.exists());
}

/// A per-role drop series keeps its meaning when a reload adds a class before it (which
/// shifts the compiled class ids) and when it removes that class again.
#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn per_role_drop_series_keep_their_meaning_across_reloads() {
    require_root();
    let cleanup = Scratch::new("dclass");
    let config = cleanup.config();
    let pins = cleanup.pins.clone();
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let _listeners = net.listen(&[3389]);
    // Exchange 2013: a Client Access class sorts before the Mailbox class, so adding one moves
    // the Mailbox class's compiled id.
    let base = GATEWAY_CONFIG.replace(r#"exchange = "2019""#, r#"exchange = "2013""#);
    let with_cas = format!(
        "{}\n[[server]]\nname = \"CAS01\"\nroles = [\"cas\"]\naddresses = [\"192.0.2.3\"]\n",
        base.replace(
            r#"accepts = ["mailbox"]"#,
            r#"accepts = ["mailbox", "cas"]"#
        )
    );
    write_config(&config, &base);
    let mut daemon = Daemon::start(&net.gateway, &config, &pins, &cleanup.log("classes"));
    wait_until("/readyz", Duration::from_secs(30), || {
        assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
        http_get(&net.gateway, exfw_tests::daemon::METRICS, "/readyz")
            .is_some_and(|(s, _)| s == 200)
    });
    let series = |role: &str| {
        metric(
            &scrape(&net.gateway),
            "exfw_port_drops_total",
            &[
                &format!(r#"dst_role="{role}""#),
                r#"proto="tcp""#,
                r#"port="other""#,
                r#"verdict="drop""#,
            ],
        )
    };
    assert!(!connects(&net.outside, 3389));
    let mailbox = series("mailbox").expect("drops to the Mailbox server are counted");
    assert!(mailbox >= 1.0);
    // A reload counts as a success once the daemon has published everything it applied (the
    // generation in the kernel flips a moment before the class names the scrape labels by).
    let successes = || {
        value(
            &net.gateway,
            "exfw_config_reloads_total",
            &[r#"result="success""#],
        )
    };
    let reload_to = |text: &str| {
        let before = successes();
        write_config(&config, text);
        wait_until("the reload", Duration::from_secs(10), || {
            assert_ne!(
                value(&net.gateway, "exfw_config_last_reload_successful", &[]),
                0.0,
                "{}",
                daemon.log_text()
            );
            successes() > before
        });
    };

    // A class added before it: the Mailbox series neither moves to the new role nor restarts.
    reload_to(&with_cas);
    assert_eq!(series("mailbox"), Some(mailbox), "{}", scrape(&net.gateway));
    assert_eq!(series("cas"), None, "{}", scrape(&net.gateway));
    assert!(!connects(&net.outside, 3389));
    let grown = series("mailbox").unwrap();
    assert!(grown > mailbox);
    // The new role counts its own drops.
    let cas: std::net::SocketAddr = "192.0.2.3:3389".parse().unwrap();
    assert_eq!(
        exfw_tests::netns::tcp_connect(&net.outside, None, cas).err(),
        Some(std::io::ErrorKind::TimedOut)
    );
    assert!(series("cas").is_some_and(|n| n >= 1.0));
    assert_eq!(series("mailbox"), Some(grown));

    // The class removed again: the same, and the removed role's series is gone.
    reload_to(&base);
    assert_eq!(series("mailbox"), Some(grown), "{}", scrape(&net.gateway));
    assert_eq!(series("cas"), None);
}

/// The kernel program's rare diagnostics reach the daemon's log through aya-log: with
/// `exfw::kernel` at debug, a drop that finds the per-port drop table full (filled here through
/// its pin, as a flood of distinct keys would) is logged by the XDP program and appears in
/// exfw's log under that target, beside the counter that moved.
#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_kernel_diagnostic_reaches_the_daemon_log() {
    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
    use exfw_common::{Counter, DropKey, Verdict, map_names, proto};
    require_root();
    let cleanup = Scratch::new("klog");
    let config = cleanup.config();
    let pins = cleanup.pins.clone();
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    write_config(&config, GATEWAY_CONFIG);
    let mut daemon = cleanup.start_ready_with(
        &net.gateway,
        "klog",
        &[("RUST_LOG", "info,exfw::kernel=debug")],
    );
    // Fill the per-port drop table with keys of a class that does not exist.
    let data = MapData::from_pin(pins.join("maps").join(map_names::DROP_STATS)).unwrap();
    let mut drops: PerCpuHashMap<MapData, DropKey, Counter> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    let zero = || PerCpuValues::try_from(vec![Counter::default(); cpus]).unwrap();
    let mut filled = 0u32;
    for port in 0..=u16::MAX {
        let key = DropKey {
            dst_class: 65_000,
            port,
            proto: proto::UDP,
            verdict: Verdict::Drop as u8,
            other: 0,
            pad: 0,
        };
        if drops.insert(key, zero(), 0).is_err() {
            break;
        }
        filled += 1;
    }
    assert!(
        filled > 1000 && filled < u32::from(u16::MAX),
        "the drop table took {filled} keys"
    );
    let overflow =
        || metric(&scrape(&net.gateway), "exfw_drop_stats_overflow_total", &[]).unwrap_or(0.0);
    let before = overflow();
    // RDP to the Mailbox server drops; its drop counter has no room.
    assert!(!connects(&net.outside, 3389));
    assert!(overflow() > before, "the overflow counter moved");
    wait_until(
        "the kernel's diagnostic in the daemon's log",
        Duration::from_secs(10),
        || {
            assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
            daemon.log_text().lines().any(|l| {
                l.contains("exfw::kernel")
                    && l.contains("the per-port drop counters are full (EXFW_DROPS)")
            })
        },
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(Duration::from_secs(10)), Some(0));
}
