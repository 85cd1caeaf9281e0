//! The systemd unit passes `systemd-analyze verify`, and the Debian package (built by
//! `cargo xtask test` before the tests run) holds the binary, the unit and the config.

use std::{path::Path, process::Command};

use exfw_tests::daemon::exfw_binary;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(root().join("packaging/exfw.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ExecStart=/usr/bin/exfw run --config /etc/exfw/exfw.toml",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "NoNewPrivileges=yes",
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
