//! The `exfw` binary as an operator runs it: every example passes `check`, every bad-config
//! fixture fails with its located message, and the subcommands answer.

use std::{path::Path, process::Command};

fn exfw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exfw"))
        .args(args)
        .output()
        .expect("run exfw");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn examples() -> Vec<String> {
    let mut list: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    // The config the Debian package installs as /etc/exfw/exfw.toml.
    list.push(root().join("packaging/exfw.toml").display().to_string());
    list.sort();
    list
}

#[test]
fn check_accepts_every_example() {
    let list = examples();
    assert!(
        list.len() >= 4,
        "expected the four example configs, found {list:?}"
    );
    for path in list {
        let (code, stdout, stderr) = exfw(&["check", &path]);
        assert_eq!(code, 0, "{path}: {stderr}");
        assert!(
            stdout.contains("valid") && stdout.contains("rules"),
            "{path}: {stdout}"
        );
    }
}

/// Where `marker` first occurs in the fixture, as file:line:column.
fn location(path: &Path, marker: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let offset = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in {}", path.display()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
    format!("{}:{line}:{column}", path.display())
}

fn bad(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad")
        .join(name)
}

/// Asserts `exfw check` rejects the fixture with `message` located at `marker`.
fn rejects(fixture: &str, marker: &str, message: &str) {
    let path = bad(fixture);
    let (code, stdout, stderr) = exfw(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{fixture} should be rejected; stdout: {stdout}");
    let expected = format!("{}: ", location(&path, marker));
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("{fixture}: no error at {expected} in:\n{stderr}"));
    assert!(
        line.contains(message),
        "{fixture}: expected `{message}` in `{line}`"
    );
}

#[test]
fn invalid_address() {
    rejects(
        "invalid-address.toml",
        "\"300.1.2.3\"",
        "is not an IP address or prefix",
    );
}

#[test]
fn edge_with_another_role() {
    rejects(
        "edge-with-another-role.toml",
        "[\"edge\", \"mailbox\"]",
        "an Edge Transport server cannot hold another role",
    );
}

#[test]
fn protected_server_inside_client_range() {
    rejects(
        "server-inside-client-range.toml",
        "\"198.51.100.20\"",
        "overlaps the client network 198.51.100.0/24",
    );
}

#[test]
fn overlapping_servers() {
    rejects(
        "overlapping-servers.toml",
        "\"192.0.2.9\"",
        "overlaps 192.0.2.0/28 of server `EX01`",
    );
}

#[test]
fn port_out_of_range() {
    rejects(
        "port-out-of-range.toml",
        "70000",
        "port 70000 is out of range",
    );
}

#[test]
fn unknown_role() {
    rejects(
        "unknown-role.toml",
        "\"gateway-server\"",
        "unknown role `gateway-server`; server roles are cas, mailbox, hub, um, edge",
    );
}

#[test]
fn server_without_address() {
    rejects(
        "server-without-address.toml",
        "\"EX-NOADDR\"",
        "has no address",
    );
}

#[test]
fn allow_without_reason() {
    rejects(
        "allow-without-reason.toml",
        "\"backup-agent\"",
        "has no reason",
    );
}

#[test]
fn static_rpc_port_on_a_version_without_them() {
    rejects(
        "static-rpc-on-2016.toml",
        "59531",
        "static RPC ports exist only on Exchange 2010",
    );
    rejects(
        "static-rpc-on-2016.toml",
        "59532",
        "static RPC ports exist only on Exchange 2010",
    );
}

#[test]
fn unknown_key() {
    rejects("unknown-key.toml", "imap = true", "unknown field `imap`");
}

#[test]
fn every_error_is_reported_at_once() {
    let path = bad("many-errors.toml");
    let (code, _, stderr) = exfw(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    for (marker, message) in [
        ("\"cas\"", "no separate Client Access role"),
        ("\"192.0.2.300\"", "is not an IP address"),
        ("\"EX02\"", "has no address"),
        ("\"x\"", "has no reason"),
        ("99999", "out of range"),
    ] {
        let at = format!("{}: ", location(&path, marker));
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&at) && l.contains(message)),
            "missing `{message}` at {at} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("5 error(s)"), "{stderr}");
}

#[test]
fn explain_prints_every_format() {
    let example = root().join("examples/exchange2016-edge.toml");
    let example = example.to_str().unwrap();
    let (code, table, _) = exfw(&["explain", example]);
    assert_eq!(code, 0);
    assert!(
        table.contains("trusted-pairs") && table.contains("edgesync") && table.contains("50636"),
        "{table}"
    );
    let (_, csv, _) = exfw(&["explain", example, "--format", "csv"]);
    assert!(csv.starts_with("service,protocol,ports,source,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("smtp-inbound,tcp,25,external") && l.contains("192.0.2.130")),
        "{csv}"
    );
    let (_, md, _) = exfw(&["explain", example, "--format", "markdown"]);
    assert!(md.contains("| imap4s | tcp/993 |"), "{md}");
    let (_, json, _) = exfw(&["explain", example, "--format", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(value["rules"].as_array().unwrap().len() > 10);
}

#[test]
fn simulate_names_verdict_reason_and_rule() {
    let example = root().join("examples/exchange2016-edge.toml");
    let example = example.to_str().unwrap();
    let (code, out, _) = exfw(&[
        "simulate",
        example,
        "--src",
        "203.0.113.5",
        "--dst",
        "192.0.2.130",
        "--proto",
        "tcp",
        "--port",
        "25",
        "--syn",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("verdict:     pass") && out.contains("smtp-inbound"),
        "{out}"
    );
    let (_, out, _) = exfw(&[
        "simulate",
        example,
        "--src",
        "192.0.2.130",
        "--dst",
        "192.0.2.5",
        "--proto",
        "tcp",
        "--port",
        "389",
    ]);
    assert!(
        out.contains("verdict:     drop") && out.contains("reason:      policy"),
        "{out}"
    );
    let (code, _, err) = exfw(&[
        "simulate",
        example,
        "--src",
        "192.0.2.1",
        "--dst",
        "2001:db8::1",
        "--proto",
        "udp",
        "--port",
        "53",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("different address families"), "{err}");
}

#[test]
fn help_lists_every_subcommand_with_examples() {
    let (_, help, _) = exfw(&["--help"]);
    for sub in ["check", "explain", "simulate", "export"] {
        assert!(help.contains(sub), "{help}");
        let (_, sub_help, _) = exfw(&[sub, "--help"]);
        assert!(
            sub_help.contains("Examples:"),
            "{sub} --help has no examples"
        );
    }
}
