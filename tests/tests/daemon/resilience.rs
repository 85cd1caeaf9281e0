//! A bad day, on the real kernel path: reloads that would remove protection, a config written
//! slowly in place, interfaces deleted, re-created and renamed under the daemon, a config file
//! that is gone, a directory, a pipe or writable by everyone, SIGTERM in the middle of a reload,
//! and a daemon that keeps answering while it counts a large flow table and reloads a large
//! config. After every fault the policy in force is the last good one.

use std::{
    io::Write,
    net::TcpListener,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use exfw_tests::{
    daemon::{
        GATEWAY_CONFIG, METRICS, Scratch, connects, exfw_detach, exfw_status, http_get,
        http_get_here, more_servers, value, wait_until, write_config,
    },
    netns::{Namespace, Topology},
    require_root,
};

/// A scratch directory, the three-namespace topology, and servers on 443 and 3389 inside.
fn gateway(tag: &str) -> (Scratch, Topology, Vec<TcpListener>) {
    let scratch = Scratch::new(tag);
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let listeners = net.listen(&[443, 3389]);
    (scratch, net, listeners)
}

fn reloads(gateway: &Namespace, result: &str) -> f64 {
    value(
        gateway,
        "exfw_config_reloads_total",
        &[&format!(r#"result="{result}""#)],
    )
}

fn state(gateway: &Namespace, iface: &str, state: &str) -> f64 {
    value(
        gateway,
        "exfw_interface_state",
        &[
            &format!(r#"iface="{iface}""#),
            &format!(r#"state="{state}""#),
        ],
    )
}

fn status_text(gateway: &Namespace, pins: &std::path::Path) -> String {
    exfw_status(gateway, pins, false)
}

/// The gateway config without in0 (out0 taking the server's traffic too): valid, but it would
/// stop filtering in0.
fn without_in0() -> String {
    let block = "[[interface]]\nname = \"in0\"\nxdp_mode = \"driver\"\naccepts = [\"mailbox\"]\n";
    assert!(GATEWAY_CONFIG.contains(block));
    GATEWAY_CONFIG.replace(block, "").replace(
        r#"accepts = ["external"]"#,
        r#"accepts = ["external", "mailbox"]"#,
    )
}

/// The four-server organisation of these tests: the one in [`GATEWAY_CONFIG`] and three more.
fn four_servers() -> String {
    format!("{GATEWAY_CONFIG}{}", more_servers(3))
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn reloads_that_would_detach_open_or_unprotect_are_refused() {
    require_root();
    let (scratch, net, _listeners) = gateway("guard");
    let four_servers = four_servers();
    write_config(&scratch.config(), &four_servers);
    let daemon = scratch.start_ready(&net.gateway, "guard");
    let generation = value(&net.gateway, "exfw_policy_generation", &[]);

    // A config that no longer names in0: refused, in0 stays filtered.
    write_config(&scratch.config(), &without_in0());
    wait_until("the refusal", Duration::from_secs(10), || {
        value(
            &net.gateway,
            "exfw_config_reload_refusals_total",
            &[r#"reason="detaches_interface""#],
        ) == 1.0
    });
    assert!(
        daemon.log_text().contains("exfw detach in0"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        value(&net.gateway, "exfw_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(
        value(&net.gateway, "exfw_policy_generation", &[]),
        generation
    );
    assert!(status_text(&net.gateway, &scratch.pins).contains("in0 (driver, attached)"));

    // The file cut inside the last [[interface]], before its accepts list: in0 would take
    // every source. Refused: the running policy stays.
    let cut = four_servers.replacen("accepts = [\"mailbox\"]\n", "", 1);
    assert_ne!(cut, four_servers);
    write_config(&scratch.config(), &cut);
    wait_until("the accepts refusal", Duration::from_secs(10), || {
        value(
            &net.gateway,
            "exfw_config_reload_refusals_total",
            &[r#"reason="opens_interface_sources""#],
        ) == 1.0
    });
    assert!(
        daemon.log_text().contains("drops the accepts list of in0"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        value(&net.gateway, "exfw_policy_generation", &[]),
        generation
    );

    // Three of the four servers gone (75 % > the default 50 %): refused.
    write_config(&scratch.config(), GATEWAY_CONFIG);
    wait_until("the second refusal", Duration::from_secs(10), || {
        value(
            &net.gateway,
            "exfw_config_reload_refusals_total",
            &[r#"reason="removes_protected_addresses""#],
        ) == 1.0
    });
    assert!(
        daemon
            .log_text()
            .contains("removes 3 of the 4 protected addresses"),
        "{}",
        daemon.log_text()
    );
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_restart_is_held_to_what_the_pinned_policy_protects() {
    require_root();
    let (scratch, net, _listeners) = gateway("restart");
    let four_servers = four_servers();
    write_config(&scratch.config(), &four_servers);
    let daemon = scratch.start_ready(&net.gateway, "restart");
    let cut = four_servers.replacen("accepts = [\"mailbox\"]\n", "", 1);
    daemon.signal(libc::SIGTERM);
    let (code, text) = daemon.exit_and_log(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{text}");
    // A restart with three of the four servers gone (75 % > the default 50 %) is held to what
    // the pinned policy protects: refused (exit 3, not restarted by the unit), the pinned
    // policy stays in force.
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let (code, text) = scratch.start_and_exit(&net.gateway, "guard-restart");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("removes 3 of the 4 protected addresses"),
        "{text}"
    );
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));
    // So is a restart with the file that lost in0's accepts list: the pinned policy restricts
    // the sources arriving there.
    write_config(&scratch.config(), &cut);
    let (code, text) = scratch.start_and_exit(&net.gateway, "guard-restart-accepts");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("drops the accepts list of in0"), "{text}");
    // With the full file it starts, adopting the pinned policy (nothing counts as removed).
    write_config(&scratch.config(), &four_servers);
    let _daemon = scratch.start_ready(&net.gateway, "guard-again");
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_config_written_slowly_in_place_loads_only_when_complete() {
    require_root();
    let (scratch, net, _listeners) = gateway("slow");
    let four_servers = four_servers();
    write_config(&scratch.config(), &four_servers);
    let _daemon = scratch.start_ready(&net.gateway, "slow");
    // Written slowly in place: nothing is loaded until the writer closes the file, then the
    // complete file is (here one that allows the removal explicitly).
    let explicit = format!("{GATEWAY_CONFIG}\n[reload]\nmax_protected_removal_percent = 100\n");
    let (successes, failures) = (
        reloads(&net.gateway, "success"),
        reloads(&net.gateway, "failure"),
    );
    let mut file = std::fs::File::create(scratch.config()).unwrap();
    file.write_all(&explicit.as_bytes()[..explicit.len() / 2])
        .unwrap();
    file.flush().unwrap();
    // Proving an absence takes time: three debounce periods with the half file open.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        reloads(&net.gateway, "failure"),
        failures,
        "a half-written file was loaded"
    );
    assert_eq!(reloads(&net.gateway, "success"), successes);
    file.write_all(&explicit.as_bytes()[explicit.len() / 2..])
        .unwrap();
    drop(file);
    wait_until(
        "the reload of the completed file",
        Duration::from_secs(10),
        || reloads(&net.gateway, "success") == successes + 1.0,
    );
    assert_eq!(reloads(&net.gateway, "failure"), failures);
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn detaching_an_interface_lets_a_config_without_it_load() {
    require_root();
    let (scratch, net, _listeners) = gateway("detach");
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let _daemon = scratch.start_ready(&net.gateway, "detach");
    // The explicit way to remove an interface: exfw detach IFACE while the daemon runs.
    let out = exfw_detach(&scratch.pins, &["in0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("until its next reload"));
    wait_until("in0 reported detached", Duration::from_secs(10), || {
        state(&net.gateway, "in0", "detached") == 1.0
    });
    let (code, body) = http_get(&net.gateway, METRICS, "/readyz").unwrap();
    assert_eq!(
        (code, body.trim()),
        (503, "not ready: unfiltered interfaces: in0 detached")
    );
    // Now the shortened config goes through, and the daemon is ready again.
    let successes = reloads(&net.gateway, "success");
    write_config(&scratch.config(), &without_in0());
    wait_until("the reload without in0", Duration::from_secs(10), || {
        reloads(&net.gateway, "success") == successes + 1.0
    });
    assert_eq!(http_get(&net.gateway, METRICS, "/readyz").unwrap().0, 200);
    let status = status_text(&net.gateway, &scratch.pins);
    assert!(
        status.contains("interfaces:  out0 (driver, attached)\n"),
        "{status}"
    );
    assert!(!connects(&net.outside, 3389));
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn interfaces_deleted_recreated_or_renamed_are_filtered_again() {
    require_root();
    let (scratch, net, _listeners) = gateway("links");
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let daemon = scratch.start_ready(&net.gateway, "links");

    // The outside link is deleted (a VLAN or bond re-created, a driver reloaded).
    net.gateway.ip(&["link", "del", "out0"]);
    wait_until("out0 reported missing", Duration::from_secs(5), || {
        state(&net.gateway, "out0", "missing") == 1.0
    });
    assert_eq!(
        value(
            &net.gateway,
            "exfw_interface_attached",
            &[r#"iface="out0""#]
        ),
        0.0
    );
    let (code, body) = http_get(&net.gateway, METRICS, "/readyz").unwrap();
    assert_eq!(
        (code, body.trim()),
        (503, "not ready: unfiltered interfaces: out0 missing")
    );
    // Its dead pin is either still there (shown missing) or already removed by an interface
    // check that raced the deletion; never shown attached.
    let status = status_text(&net.gateway, &scratch.pins);
    assert!(!status.contains("out0 (driver, attached)"), "{status}");

    // Re-created under the same name: a new interface index, the old link dead.
    let recreated = Instant::now();
    net.recreate_outside_link();
    wait_until("out0 filtered again", Duration::from_secs(5), || {
        state(&net.gateway, "out0", "attached") == 1.0
    });
    eprintln!(
        "out0 re-attached within {} ms of its re-creation",
        recreated.elapsed().as_millis()
    );
    assert!(connects(&net.outside, 443));
    assert!(
        !connects(&net.outside, 3389),
        "the re-created out0 is unfiltered"
    );
    assert!(status_text(&net.gateway, &scratch.pins).contains("out0 (driver, attached)"));
    assert!(
        daemon.log_text().contains("no longer filters out0"),
        "{}",
        daemon.log_text()
    );

    // Renamed away and back: missing meanwhile, the same link filters it again after.
    net.gateway.ip(&["link", "set", "in0", "name", "in9"]);
    wait_until("in0 reported missing", Duration::from_secs(5), || {
        state(&net.gateway, "in0", "missing") == 1.0
    });
    net.gateway.ip(&["link", "set", "in9", "name", "in0"]);
    wait_until("in0 filtered again", Duration::from_secs(5), || {
        state(&net.gateway, "in0", "attached") == 1.0
    });
    assert_eq!(http_get(&net.gateway, METRICS, "/readyz").unwrap().0, 200);
    let with_late0 = format!(
        "{GATEWAY_CONFIG}\n[[interface]]\nname = \"late0\"\nxdp_mode = \"skb\"\naccepts = [\"external\"]\n"
    );
    // An interface the config names before it exists (a VLAN the network manager creates
    // after exfw started): reported missing, attached the moment it appears.
    let successes = reloads(&net.gateway, "success");
    write_config(&scratch.config(), &with_late0);
    wait_until("the reload naming late0", Duration::from_secs(10), || {
        reloads(&net.gateway, "success") == successes + 1.0
    });
    assert_eq!(state(&net.gateway, "late0", "missing"), 1.0);
    assert_eq!(http_get(&net.gateway, METRICS, "/readyz").unwrap().0, 503);
    net.gateway.ip(&[
        "link", "add", "late0", "type", "veth", "peer", "name", "late0p",
    ]);
    wait_until("late0 attached", Duration::from_secs(5), || {
        state(&net.gateway, "late0", "attached") == 1.0
    });
    assert_eq!(http_get(&net.gateway, METRICS, "/readyz").unwrap().0, 200);

    // A reload after all this still works (the dead pin was replaced, not reused).
    let successes = reloads(&net.gateway, "success");
    write_config(&scratch.config(), &format!("{with_late0}\n"));
    wait_until("a reload", Duration::from_secs(10), || {
        reloads(&net.gateway, "success") == successes + 1.0
    });
    assert!(!connects(&net.outside, 3389));
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_broken_config_file_keeps_the_policy_in_force() {
    require_root();
    let (scratch, net, _listeners) = gateway("cfgfault");
    let config = scratch.config();
    write_config(&config, GATEWAY_CONFIG);
    let daemon = scratch.start_ready(&net.gateway, "cfgfault");
    let generation = value(&net.gateway, "exfw_policy_generation", &[]);
    // Each fault is loaded on SIGHUP (the file watcher may load it too: a deletion and a
    // rewrite count as changes), so wait for the fault's own message to appear once more.
    let expect_failure = |what: &str, says: &str, fault: &dyn Fn()| {
        let seen = daemon.log_text().matches(says).count();
        let failures = reloads(&net.gateway, "failure");
        fault();
        let sighup = Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .unwrap();
        assert!(sighup.success());
        wait_until(what, Duration::from_secs(10), || {
            daemon.log_text().matches(says).count() > seen
                && reloads(&net.gateway, "failure") > failures
        });
        assert_eq!(
            value(&net.gateway, "exfw_policy_generation", &[]),
            generation,
            "{what}"
        );
    };
    expect_failure("deleted", "cannot read the config file", &|| {
        std::fs::remove_file(&config).unwrap()
    });
    expect_failure("a directory", "not a regular file", &|| {
        std::fs::create_dir(&config).unwrap()
    });
    expect_failure("a pipe", "not a regular file", &|| {
        std::fs::remove_dir(&config).unwrap();
        let path = std::ffi::CString::new(config.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    });
    expect_failure("writable by everyone", "chmod o-w", &|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::remove_file(&config).unwrap();
        std::fs::write(&config, GATEWAY_CONFIG).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    });
    expect_failure("cut mid-line", "exfw.toml:11:", &|| {
        let cut = &GATEWAY_CONFIG[..GATEWAY_CONFIG.find("roles = [").unwrap() + 10];
        write_config(&config, cut);
    });
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));
    assert_eq!(http_get(&net.gateway, METRICS, "/readyz").unwrap().0, 200);
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn the_daemon_answers_while_it_counts_and_reloads_and_stops_only_after_a_reload() {
    require_root();
    let scratch = Scratch::new("busy");
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let daemon = scratch.start_ready(&net.gateway, "busy");

    // 100,000 connections in the flow table, written the way the program writes them.
    fill_flow_table(&scratch.pins, 100_000);
    // A 10,000-server config, loaded on SIGHUP while /healthz is asked every 20 ms.
    write_config(
        &scratch.config(),
        &format!("{GATEWAY_CONFIG}{}", more_servers(10_000)),
    );
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let done = done.clone();
        net.gateway.spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut answered = 0u32;
            while !done.load(Ordering::Relaxed) {
                // /healthz touches nothing; /metrics reads every kernel counter.
                let path = if answered.is_multiple_of(2) {
                    "/healthz"
                } else {
                    "/metrics"
                };
                let asked = Instant::now();
                let reply = http_get_here(METRICS, path);
                assert_eq!(reply.map(|r| r.0), Some(200), "{path} did not answer");
                slowest = slowest.max(asked.elapsed());
                answered += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (answered, slowest)
        })
    };
    let generation = value(&net.gateway, "exfw_policy_generation", &[]);
    let started = Instant::now();
    daemon.signal(libc::SIGHUP);
    wait_until("the 10,000-server reload", Duration::from_secs(120), || {
        value(&net.gateway, "exfw_policy_generation", &[]) > generation
    });
    let reload_took = started.elapsed();
    wait_until("the flow count", Duration::from_secs(60), || {
        value(&net.gateway, "exfw_flow_table_entries", &[]) >= 100_000.0
    });
    done.store(true, Ordering::Relaxed);
    let (answered, slowest) = poller.join().unwrap();
    eprintln!(
        "reload of 10,000 servers with 100,000 flows: {} ms; /healthz and /metrics answered {answered} times, slowest {} ms",
        reload_took.as_millis(),
        slowest.as_millis()
    );
    assert!(
        answered >= 3,
        "too few /healthz probes ({answered}) to show anything"
    );

    // SIGTERM in the middle of a reload (the same large config, a new generation): the reload
    // completes, then the daemon stops, and the pinned policy is whole.
    write_config(
        &scratch.config(),
        &format!("{GATEWAY_CONFIG}{}\n", more_servers(10_000)),
    );
    let reloaded = value(&net.gateway, "exfw_policy_generation", &[]);
    daemon.signal(libc::SIGHUP);
    wait_until(
        "the second reload to start",
        Duration::from_secs(20),
        || daemon.log_text().matches("reload started").count() >= 2,
    );
    daemon.signal(libc::SIGTERM);
    let log = daemon.log.clone();
    assert_eq!(daemon.wait(Duration::from_secs(120)), Some(0));
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("stopping once the running reload completes"),
        "SIGTERM must have arrived during the reload:\n{text}"
    );
    let stopped = text
        .find("stopping; the pinned policy stays in force")
        .unwrap();
    let applied = text.rfind("config reloaded").unwrap();
    assert!(applied < stopped, "{text}");
    let status = status_text(&net.gateway, &scratch.pins);
    assert!(
        status.contains(&format!("generation:  {}", reloaded as u64 + 1)),
        "{status}"
    );
}

/// Writes `count` confirmed connections into the pinned flow table.
fn fill_flow_table(pins: &std::path::Path, count: u32) {
    use exfw_common::{FlowKey, FlowValue, family, flow_state, proto};
    let map = aya::maps::MapData::from_pin(pins.join("maps").join("EXFW_FLOWS")).unwrap();
    let mut flows = aya::maps::HashMap::<_, FlowKey, FlowValue>::try_from(
        aya::maps::Map::from_map_data(map).unwrap(),
    )
    .unwrap();
    let now = exfw_tests::monotonic_ns();
    for i in 0..count {
        let mut key = FlowKey {
            proto: proto::TCP,
            family: family::V4,
            lo_port: 443,
            hi_port: 1024 + (i % 60_000) as u16,
            ..Default::default()
        };
        key.lo[..4].copy_from_slice(&[192, 0, 2, 2]);
        key.hi[..4].copy_from_slice(&[198, 51, 100, (i / 60_000) as u8]);
        let value = FlowValue {
            last_seen_ns: now,
            state: flow_state::OPEN,
            ..Default::default()
        };
        flows.insert(key, value, 0).unwrap();
    }
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_start_that_cannot_succeed_changes_nothing_and_bpffs_or_logging_trouble_does_not_stop_it() {
    require_root();
    let (scratch, net, _listeners) = gateway("startfault");
    write_config(&scratch.config(), GATEWAY_CONFIG);

    // The metrics port taken: exit 1, nothing pinned, nothing attached.
    let squatter = net.gateway.run(|| TcpListener::bind(METRICS).unwrap());
    let (code, text) = scratch.start_and_exit(&net.gateway, "port-taken");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot listen on 127.0.0.1:9720"), "{text}");
    assert!(
        !scratch.pins.exists(),
        "a failed start must not pin anything"
    );
    assert!(connects(&net.outside, 3389), "nothing may be attached");
    drop(squatter);

    // bpffs not mounted (a private mount namespace without it): exfw mounts it and enforces.
    let mut daemon = exfw_tests::daemon::Daemon::start_under(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/bpf && exec \"$@\"",
            "exfw-without-bpffs",
        ],
        &net.gateway,
        &scratch.config(),
        &scratch.pins,
        &scratch.log("no-bpffs"),
    );
    wait_until("/readyz without bpffs", Duration::from_secs(30), || {
        assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
        http_get(&net.gateway, METRICS, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert!(
        daemon.log_text().contains("exfw mounted it"),
        "{}",
        daemon.log_text()
    );
    assert!(!connects(&net.outside, 3389));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(Duration::from_secs(30)), Some(0));
    // Its pins lived in its own mount namespace, which is gone: nothing is left attached.
    wait_until("the private pins to go", Duration::from_secs(10), || {
        connects(&net.outside, 3389)
    });

    // The log on a full disk: every write fails, the daemon goes on enforcing and reloading.
    // Both standard output and the log (stderr) go to /dev/full.
    let full = exfw_tests::daemon::Daemon::start(
        &net.gateway,
        &scratch.config(),
        &scratch.pins,
        std::path::Path::new("/dev/full"),
    );
    wait_until("/readyz with a full log", Duration::from_secs(30), || {
        http_get(&net.gateway, METRICS, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let generation = value(&net.gateway, "exfw_policy_generation", &[]);
    full.signal(libc::SIGHUP);
    wait_until("a reload with a full log", Duration::from_secs(10), || {
        value(&net.gateway, "exfw_policy_generation", &[]) > generation
    });
    assert!(
        !connects(&net.outside, 3389),
        "dropped traffic is logged too"
    );
    assert!(connects(&net.outside, 443));
    assert_eq!(http_get(&net.gateway, METRICS, "/healthz").unwrap().0, 200);
}

/// The daemon started over maps an incompatible build pinned: it says so, sets them aside and
/// puts its own program in through the pinned links, with no moment unfiltered; readers refuse
/// the old state rather than misread it.
#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn a_start_over_an_incompatible_build_replaces_its_state_without_a_gap() {
    require_root();
    let (scratch, net, _listeners) = gateway("upgrade");
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let daemon = scratch.start_ready(&net.gateway, "old-build");
    daemon.signal(libc::SIGTERM);
    let (code, text) = daemon.exit_and_log(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{text}");

    // What an older build with another drop-counter key would have pinned.
    exfw_tests::daemon::pin_foreign_drop_map(&scratch.pins);
    let status = exfw_tests::daemon::exfw_status_output(&net.gateway, &scratch.pins, false);
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("EXFW_DROPS: key size 12, this build 8"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // The old policy's tables have this build's layout, so the start is held to it: a file
    // that drops in0's accepts list is refused (exit 3), and the old state stays as it was.
    let block = "accepts = [\"mailbox\"]\n";
    write_config(&scratch.config(), &GATEWAY_CONFIG.replacen(block, "", 1));
    let (code, text) = scratch.start_and_exit(&net.gateway, "refused-upgrade");
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("drops the accepts list of in0"), "{text}");
    let status = exfw_tests::daemon::exfw_status_output(&net.gateway, &scratch.pins, false);
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("EXFW_DROPS: key size 12"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(!connects(&net.outside, 3389));

    // Accepted. A connection attempt waits 1.5 s: a SYN that the new program records while
    // its SYN-ACK meets the old one on the other interface (the links are updated one after
    // the other, with separate connection tables) is retransmitted in time.
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let prober = exfw_tests::daemon::Prober::start(&net.outside, Duration::from_millis(1500));
    let daemon = scratch.start_ready(&net.gateway, "new-build");
    let probes = prober.finish();
    assert_eq!(
        (probes.denied_connected, probes.allowed_failed),
        (0, 0),
        "enforcement had a gap across the replacement: {probes:?}"
    );
    // The policy was in the new maps before the new program was attached: no packet met it
    // without one.
    let unknown = exfw_tests::daemon::metric(
        &exfw_tests::daemon::scrape(&net.gateway),
        "exfw_packets_total",
        &[r#"verdict="drop""#, r#"reason="unknown_interface""#],
    );
    assert_eq!(unknown.unwrap_or(0.0), 0.0);
    assert!(
        daemon
            .log_text()
            .contains("the pinned maps are from an incompatible exfw build"),
        "{}",
        daemon.log_text()
    );
    assert!(!scratch.pins.join("replaced-maps").exists());
    assert!(!scratch.pins.join("staged-maps").exists());
    let status = status_text(&net.gateway, &scratch.pins);
    assert!(status.contains("out0 (driver, attached)"), "{status}");
    assert!(connects(&net.outside, 443));
    assert!(!connects(&net.outside, 3389));
}
