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

/// Every citation stands on its own: a published title and its public address, and for exfw's
/// own choices the document the package ships; never a file outside the product.
#[test]
fn explain_cites_published_documents_and_lists_their_addresses() {
    let shipped = std::fs::read_to_string(root().join("docs/exchange-model.md"))
        .expect("docs/exchange-model.md ships with exfw");
    for example in examples() {
        for format in ["table", "csv", "markdown", "json"] {
            let (code, out, _) = exfw(&["explain", &example, "--format", format]);
            assert_eq!(code, 0);
            for private in ["seed", "reference/", "shared/", ".txt"] {
                assert!(
                    !out.contains(private),
                    "{example} {format} names {private:?}"
                );
            }
        }
        let (_, json, _) = exfw(&["explain", &example, "--format", "json"]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sources = value["sources"].as_array().unwrap();
        assert!(sources.len() >= 3, "{example}: {sources:?}");
        for s in sources {
            let url = s["url"].as_str().unwrap();
            assert!(
                url.starts_with("https://learn.microsoft.com/")
                    || url.starts_with("https://techcommunity.microsoft.com/")
                    || url == "file:///usr/share/doc/exfw/exchange-model.md",
                "{example}: {url}"
            );
        }
        // Every section of exfw's own document that a row cites exists in it.
        for rule in value["rules"].as_array().unwrap() {
            let why = rule["why"].as_str().unwrap();
            for part in why.split("exfw, \"The Exchange model\"").skip(1) {
                let section = part
                    .split("section \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_else(|| panic!("{example}: no section in {why}"));
                assert!(
                    shipped.contains(&format!("## {section}")),
                    "{example}: docs/exchange-model.md has no section \"{section}\""
                );
            }
        }
    }
}

#[test]
fn a_protected_group_accepted_nowhere_is_refused() {
    rejects(
        "protected-group-accepted-nowhere.toml",
        "[\"external\"]",
        "no interface accepts every dc (\"dc\") as a source",
    );
}

#[test]
fn a_config_where_nothing_validates_sources_is_refused() {
    rejects(
        "nothing-validates-sources.toml",
        "\"eth0\"",
        "nothing validates sources",
    );
}

#[test]
fn routing_alone_is_a_warning() {
    let dir = std::env::temp_dir().join(format!("exfw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routing-only.toml");
    let text = std::fs::read_to_string(bad("nothing-validates-sources.toml"))
        .unwrap()
        .replace("reverse_path = \"off\"", "reverse_path = \"strict\"");
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = exfw(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(
        stderr.contains("warning:") && stderr.contains("validated by the routing table alone"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_judges_a_packet_on_an_interface() {
    let example = root().join("examples/exchange2019-imap-ipv6.toml");
    let example = example.to_str().unwrap();
    let spoofed_dc = [
        "simulate",
        example,
        "--src",
        "2001:db8:21::5",
        "--dst",
        "2001:db8:21::21",
        "--proto",
        "tcp",
        "--port",
        "445",
        "--syn",
    ];
    // Several interfaces: which one must be said.
    let (code, _, err) = exfw(&spoofed_dc);
    assert_eq!(code, 1);
    assert!(
        err.contains("--iface") && err.contains("ens1f0, ens1f1"),
        "{err}"
    );
    let on = |iface: &str, extra: &[&str]| {
        let mut args = spoofed_dc.to_vec();
        args.extend(["--iface", iface]);
        args.extend(extra);
        let (code, out, err) = exfw(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    // The DC's address from the Internet link, and from its own link with the route back
    // elsewhere: spoofed. From its own link: trusted.
    let internet = on("ens1f0", &[]);
    assert!(
        internet.contains("reason:      spoofed_source"),
        "{internet}"
    );
    let rerouted = on("ens1f1", &["--route-via", "ens1f0"]);
    assert!(
        rerouted.contains("reason:      spoofed_source"),
        "{rerouted}"
    );
    let real = on("ens1f1", &[]);
    assert!(
        real.contains("verdict:     pass") && real.contains("reason:      trusted"),
        "{real}"
    );
    assert!(
        real.contains("interface:   ens1f1 (accepts mailbox, dc"),
        "{real}"
    );
}

#[test]
fn simulate_replays_a_scenario() {
    let example = root().join("examples/exchange2016-edge.toml");
    let dir = std::env::temp_dir().join(format!("exfw-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("steps.txt");
    std::fs::write(
        &file,
        "# a client's handshake, a reply, a forged SYN-ACK, an error about the connection\n\
         0.00 eth0 tcp 203.0.113.5:40000 192.0.2.21:443 syn\n\
         0.01 eth1 tcp 192.0.2.21:443 203.0.113.5:40000 syn,ack\n\
         0.02 eth0 tcp 203.0.113.5:40000 192.0.2.21:443 ack\n\
         0.03 eth1 tcp 192.0.2.21:443 203.0.113.5:40000 psh,ack\n\
         0.04 eth0 tcp 203.0.113.5:40001 192.0.2.21:443 syn\n\
         0.05 eth1 tcp 192.0.2.21:443 203.0.113.5:40001 syn,ack ack=7\n\
         0.06 eth0 icmp 203.0.113.1 192.0.2.21 type=3 code=4 about=tcp,192.0.2.21:443,203.0.113.5:40000\n\
         0.07 eth0 tcp 192.0.2.5:50000 192.0.2.21:445 syn\n",
    )
    .unwrap();
    let (code, out, err) = exfw(&[
        "simulate",
        example.to_str().unwrap(),
        "--scenario",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let verdicts: Vec<(&str, &str)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split("  ").filter(|c| !c.trim().is_empty()).collect();
            (cells[cells.len() - 3].trim(), cells[cells.len() - 2].trim())
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("pass", "rule"),
            ("pass", "flow"),
            ("pass", "flow (confirmed)"),
            ("pass", "flow"),
            ("pass", "rule"),
            ("drop", "policy"),
            ("pass", "icmp_related"),
            ("drop", "spoofed_source"),
        ],
        "{out}"
    );
    std::fs::write(&file, "0 eth0 tcp 203.0.113.5:1 192.0.2.21:443 syn\n1 eth0 tcp 203.0.113.5:1 192.0.2.21:443 sin\n").unwrap();
    let (code, _, err) = exfw(&[
        "simulate",
        example.to_str().unwrap(),
        "--scenario",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2") && err.contains("sin"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_shows_interfaces_and_the_gateway_itself() {
    let example = root().join("examples/exchange2016-edge.toml");
    let (code, table, _) = exfw(&["explain", example.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(table.contains("INTERFACES"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("eth2") && l.contains("strict") && l.contains("edge")),
        "{table}"
    );
    let gateway = table
        .split("THE GATEWAY ITSELF")
        .nth(1)
        .expect("a section for the gateway itself");
    assert!(
        gateway.contains("management") && gateway.contains("tcp/22"),
        "{gateway}"
    );
    let allowed = table.split("THE GATEWAY ITSELF").next().unwrap();
    assert!(
        !allowed.contains("tcp/22"),
        "the gateway's rows are not XDP's: {allowed}"
    );
    let (code, nft, _) = exfw(&[
        "export",
        example.to_str().unwrap(),
        "--format",
        "nft-gateway",
    ]);
    assert_eq!(code, 0);
    assert!(
        nft.contains("chain input")
            && !nft.contains("chain forward")
            && nft.contains("management (gateway)"),
        "{nft}"
    );
}

#[test]
fn simulate_names_verdict_reason_and_rule() {
    let example = root().join("examples/exchange2016-edge.toml");
    let example = example.to_str().unwrap();
    let (code, out, _) = exfw(&[
        "simulate",
        example,
        "--iface",
        "eth0",
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
        "--iface",
        "eth2",
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

/// A closed pipe on the output ends a printing command quietly (`exfw explain FILE | head -1`),
/// by SIGPIPE as it ends `cat`, not with a panic.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let example = root().join("examples/exchange2016-edge.toml");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_exfw"))
        .args(["explain", example.to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run exfw");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A config cut short (a partial copy, a half-saved file) names no interface or no protected
/// host: `check` refuses it at its end instead of calling it valid.
#[test]
fn a_config_cut_short_is_refused() {
    let dir = std::env::temp_dir().join(format!("exfw-cli-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string(root().join("examples/exchange2016-edge.toml")).unwrap();
    let path = dir.join("cut.toml");
    // Cut just before the first server: the [organization] table and the comments above it.
    let keep = example
        .lines()
        .position(|l| l.starts_with("[[server]]"))
        .unwrap();
    let cut: String = example
        .lines()
        .take(keep)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, &cut).unwrap();
    let (code, stdout, stderr) = exfw(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "a cut config passed: {stdout}");
    // Refused at its last line of content.
    let lines: Vec<&str> = cut.lines().collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty()).unwrap() + 1;
    let last_line = format!("{}:{last}:", path.display());
    for message in ["names no [[interface]]", "names no [[server]]"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&last_line) && l.contains(message)),
            "no `{message}` at line {last} in:\n{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loopback_with_the_reverse_path_check_is_refused() {
    rejects(
        "lo-with-reverse-path.toml",
        "\"lo\"",
        "interface `lo` carries the host's own traffic",
    );
}

/// A config with one `[[allow]]` from `sources` single addresses to Mailbox on every TCP port:
/// each source is a class, and every port range is 16 rule-trie prefixes per source.
fn allow_from_many_sources(sources: u32) -> String {
    let from: Vec<String> = (0..sources)
        .map(|i| format!("\"198.18.{}.{}\"", i / 256, i % 256))
        .collect();
    format!(
        "version = 1\nmode = \"enforce\"\n[organization]\nexchange = \"2019\"\n[[server]]\nname = \"EX01\"\nroles = [\"mailbox\"]\naddresses = [\"192.0.2.2\"]\n[[allow]]\nname = \"wide\"\nfrom = [{}]\nto = [\"mailbox\"]\nproto = \"tcp\"\nports = [\"1-65535\"]\nreason = \"test: fill the rule table\"\n[[interface]]\nname = \"eth0\"\n",
        from.join(", ")
    )
}

#[test]
fn check_counts_encoded_rule_entries_against_both_generations() {
    let dir = std::env::temp_dir().join(format!("exfw-capacity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fits = dir.join("fits.toml");
    std::fs::write(&fits, allow_from_many_sources(1000)).unwrap();
    let (code, out, err) = exfw(&["check", fits.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("rule entries"))
        .unwrap_or_else(|| panic!("no rule-entry line in\n{out}"));
    assert!(line.contains("/ 65536"), "{line}");
    // Twice the room of one generation would load once and then block every reload.
    let too_big = dir.join("too-big.toml");
    std::fs::write(&too_big, allow_from_many_sources(4200)).unwrap();
    let (code, _, err) = exfw(&["check", too_big.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rule entries, more than the 65536"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
}
