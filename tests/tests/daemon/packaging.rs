//! The systemd unit passes `systemd-analyze verify`, and the Debian package (built by
//! `cargo xtask test` before the tests run) holds the binary, the unit and the config.

use std::{net::TcpListener, path::Path, process::Command, time::Duration};

use exfw_tests::{
    daemon::{
        Daemon, GATEWAY_CONFIG, METRICS, Scratch, connects, exfw_binary, exfw_detach, http_get,
        wait_until, write_config,
    },
    netns::Topology,
    require_root,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(root().join("packaging/exfw.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ExecStart=/usr/bin/exfw run --config /etc/exfw/exfw.toml",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf/exfw",
        "NoNewPrivileges=yes",
        "Before=network-pre.target shutdown.target",
        "Wants=network-pre.target",
        "OnFailure=exfw-fail-closed.service",
        "WatchdogSec=30s",
        "IPAddressDeny=any",
        "ProtectProc=invisible",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "exfw.service lacks `{line}`"
        );
    }
    // verify checks that the executables exist: point the unit at the built binary.
    let dir = std::env::temp_dir().join(format!("exfw-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exfw.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/exfw", exfw_binary().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_us: Vec<&str> = stderr.lines().filter(|l| l.contains("exfw")).collect();
    assert!(
        out.status.success() && about_us.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn debian_package_holds_binary_unit_and_config() {
    let dir = root().join("target/debian");
    let deb = std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("exfw_")
        })
        .unwrap_or_else(|| {
            panic!(
                "no exfw_*.deb in {}: `cargo xtask test` builds it with cargo deb",
                dir.display()
            )
        });
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "./usr/bin/exfw",
        "./lib/systemd/system/exfw.service",
        "./lib/systemd/system/exfw-fail-closed.service",
        "./usr/share/exfw/exfw-fail-closed-last-resort.nft",
        "./etc/exfw/exfw.toml",
        "./usr/share/doc/exfw/operations.md",
        "./usr/share/doc/exfw/config.md",
        "./usr/share/doc/exfw/examples/exchange2016-edge.toml",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(path)),
            "{} lacks {path}:\n{list}",
            deb.display()
        );
    }
    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "exfw");
    assert_eq!(
        field("Version").split('-').next().unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    let info = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("/etc/exfw/exfw.toml"),
        "the config must be a conffile"
    );
    // The packaged binary runs and validates the packaged config.
    let unpacked = std::env::temp_dir().join(format!("exfw-deb-{}", std::process::id()));
    assert!(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&unpacked)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new(unpacked.join("usr/bin/exfw"))
        .arg("check")
        .arg(unpacked.join("etc/exfw/exfw.toml"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&unpacked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit's value of `key` (continuation lines joined as systemd joins them).
fn unit_value(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(root().join("packaging").join(unit)).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn the_unit_scores_under_two_in_systemd_analyze_security() {
    // --offline reads the file as it is; --threshold makes the score the exit status.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=19"])
        .arg(root().join("packaging/exfw.service"))
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{score}");
    assert!(
        out.status.success(),
        "the exposure score must stay under 2.0: {score}\n{text}"
    );
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn the_units_capabilities_are_enough_and_cap_perfmon_is_needed() {
    require_root();
    let caps: Vec<String> = unit_value("exfw.service", "CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = |caps: &[String]| format!("--bounding-set=-all,{}", caps.join(","));
    let scratch = Scratch::new("caps");
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let _listener = net
        .inside
        .run(|| TcpListener::bind("0.0.0.0:3389").unwrap());
    write_config(&scratch.config(), GATEWAY_CONFIG);

    // Without CAP_PERFMON the verifier refuses the program's packet-pointer arithmetic.
    let without: Vec<String> = caps.iter().filter(|c| *c != "+perfmon").cloned().collect();
    let refused = Daemon::start_under(
        &["setpriv", &bounding(&without), "--inh-caps=-all", "--"],
        &net.gateway,
        &scratch.config(),
        &scratch.pins,
        &scratch.log("without-perfmon"),
    );
    let (code, text) = refused.exit_and_log(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the verifier rejected"), "{text}");
    let _ = exfw_detach(&scratch.pins, &[]);

    // With exactly the unit's set it runs and enforces.
    let mut daemon = Daemon::start_under(
        &["setpriv", &bounding(&caps), "--inh-caps=-all", "--"],
        &net.gateway,
        &scratch.config(),
        &scratch.pins,
        &scratch.log("unit-caps"),
    );
    wait_until("/readyz", Duration::from_secs(30), || {
        assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
        http_get(&net.gateway, METRICS, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert!(!connects(&net.outside, 3389));

    // Without CAP_DAC_OVERRIDE even root cannot read a config made unreadable: the reload
    // fails, saying so, and the policy in force stays.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(scratch.config(), std::fs::Permissions::from_mode(0o000)).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the failed reload", Duration::from_secs(10), || {
        exfw_tests::daemon::value(&net.gateway, "exfw_config_last_reload_successful", &[]) == 0.0
    });
    assert!(
        daemon.log_text().contains("cannot read the config file"),
        "{}",
        daemon.log_text()
    );
    assert!(!connects(&net.outside, 3389));
    std::fs::set_permissions(scratch.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until(
        "the reload of the readable file",
        Duration::from_secs(10),
        || {
            exfw_tests::daemon::value(&net.gateway, "exfw_config_last_reload_successful", &[])
                == 1.0
        },
    );
}

#[test]
#[ignore = "needs root, the exfw binary and its package: cargo xtask test runs it"]
fn the_fail_closed_unit_loads_the_policy_or_else_the_last_resort() {
    require_root();
    let script = unit_value("exfw-fail-closed.service", "ExecStart");
    // As systemd reads it: `$$` is a literal `$`.
    let script = script
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.trim_end().strip_suffix('\''))
        .expect("ExecStart=/bin/sh -c '...'")
        .replace("$$", "$");
    let scratch = Scratch::new("failclosed");
    let run_dir = scratch.work.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let script = script
        .replace("/usr/bin/exfw", exfw_binary().to_str().unwrap())
        .replace("/etc/exfw/exfw.toml", scratch.config().to_str().unwrap())
        .replace("/run/exfw-fail-closed", run_dir.to_str().unwrap())
        .replace(
            "/usr/share/exfw/exfw-fail-closed-last-resort.nft",
            root()
                .join("packaging/exfw-fail-closed-last-resort.nft")
                .to_str()
                .unwrap(),
        );
    let net = Topology::new(&["203.0.113.2/24"], &["192.0.2.2/24"]);
    let _listeners = net.listen(&[443, 3389]);
    let run_with = |path: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", net.gateway.name(), "sh", "-c", &script])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let path = std::env::var("PATH").unwrap_or_default();
    // Here systemd is not running: `systemctl show` answers nothing, as for a unit down for good.
    let run = || run_with(&path);
    // systemd 254 and later start it also while exfw restarts, or after a refused start: then
    // it must leave everything alone.
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let fake = scratch.work.join("fake-systemctl");
    std::fs::create_dir_all(&fake).unwrap();
    for (state, status, says) in [
        ("activating", "1", "nothing to do"),
        ("failed", "3", "refused a start"),
    ] {
        let systemctl = fake.join("systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\ncase \"$*\" in *ActiveState*) echo {state};; *ExecMainStatus*) echo {status};; esac\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let said = run_with(&format!("{}:{path}", fake.display()));
        assert!(said.contains(says), "{state}/{status}: {said}");
        let tables = net.gateway.exec(&["nft", "list", "tables"]);
        assert!(!tables.contains("exfw"), "{state}/{status}: {tables}");
    }
    assert!(connects(&net.outside, 3389), "nothing filters yet");
    // No XDP at all (exfw never started): the exported policy enforces in nftables.
    write_config(&scratch.config(), GATEWAY_CONFIG);
    let said = run();
    assert!(said.contains("table inet exfw"), "{said}");
    assert!(connects(&net.outside, 443), "the policy allows https");
    assert!(!connects(&net.outside, 3389), "and nothing else");
    net.gateway
        .exec(&["nft", "delete", "table", "inet", "exfw"]);
    // A config that cannot even be exported: forwarding stops.
    write_config(&scratch.config(), "version = 1\n");
    let said = run();
    assert!(said.contains("last-resort"), "{said}");
    let tables = net.gateway.exec(&["nft", "list", "tables"]);
    assert!(tables.contains("exfw_last_resort"), "{tables}");
    assert!(!connects(&net.outside, 443), "forwarding must stop");
}
