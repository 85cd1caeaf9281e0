//! The lab end to end: every scenario as `exfw simulate` predicts, every dashboard query valid
//! and non-empty against the Prometheus that scraped the lab's exfw, the alert rules valid and
//! loaded, and nothing left behind afterwards.

use std::{path::Path, process::Command, time::Duration};

use exfw_lab::{Lab, Options, print_table};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Every PromQL expression in the dashboard, with Grafana's variables given concrete values.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/exfw.json")).unwrap(),
    )
    .unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            panel["targets"].as_array().unwrap().iter().map(move |t| {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$__interval", "15s")
                    .replace("$instance", ".*");
                (title.clone(), expr)
            })
        })
        .collect()
}

#[test]
fn dashboard_is_a_grafana_dashboard_with_a_datasource_variable() {
    let d: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/exfw.json")).unwrap(),
    )
    .unwrap();
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 36,
        "current Grafana wants a recent schema"
    );
    let variables = d["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["type"] == "datasource"
        && v["query"] == "prometheus"
        && v["name"] == "datasource"));
    // One gateway or several: every query is scoped to the Gateway variable.
    assert!(variables.iter().any(|v| {
        v["type"] == "query"
            && v["name"] == "instance"
            && v["includeAll"] == true
            && v["definition"]
                .as_str()
                .is_some_and(|d| d.contains("label_values(exfw_build_info, instance)"))
    }));
    for panel in d["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert_eq!(
                expr.matches("exfw_").count(),
                expr.matches(r#"instance=~"$instance""#).count(),
                "panel {}: every exfw series must be scoped to the gateway variable: {expr}",
                panel["title"]
            );
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for panel in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        assert!(
            ["timeseries", "stat", "gauge", "table", "bargauge"]
                .contains(&panel["type"].as_str().unwrap())
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{} lacks gridPos.{key}",
                panel["title"]
            );
        }
        for target in panel["targets"].as_array().unwrap() {
            assert!(target["refId"].is_string() && target["expr"].is_string());
        }
    }
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for needed in [
        "Client access by service",
        "Mail flow: new SMTP sessions",
        "Drops by destination role and port",
        "Top dropped ports",
        "New connections per service",
        "Trusted traffic (Exchange, DCs, Lync)",
        "Config reloads",
        "Policy generation",
        "Flow-table pressure",
        "Policies in force across gateways",
        "Policy per gateway",
    ] {
        assert!(titles.contains(&needed), "the dashboard lacks {needed}");
    }
}

/// Runs `promtool` on a file of dashboards/ and returns its output; fails unless it succeeds.
fn promtool(args: &[&str], file: &str) -> String {
    let out = Command::new("promtool")
        .args(args)
        .arg(repo().join("dashboards").join(file))
        .output()
        .expect("promtool (cargo xtask setup installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
#[ignore = "needs promtool (Debian's prometheus): cargo xtask test installs and runs it"]
fn alert_rules_pass_promtool() {
    assert!(promtool(&["check", "rules"], "exfw-alerts.yml").contains("SUCCESS: 7 rules found"));
}

/// The fleet alerts fire as documented: promtool's unit tests of two HA pairs, one drifting.
#[test]
#[ignore = "needs promtool (Debian's prometheus): cargo xtask test installs and runs it"]
fn fleet_alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules"], "exfw-alerts.test.yml");
}

/// Starts the lab on `example`, runs every scenario once, prints the table and checks it: no
/// mismatch, both verdicts well represented, and an exfw counter behind every row.
/// One lab at a time: two would share the machine's two cores and its connect timeouts.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_example(example: &str) -> (Lab, Vec<exfw_lab::Row>) {
    let options = Options {
        config: repo().join("examples").join(example),
        duration: Duration::ZERO,
        repo: repo().to_path_buf(),
    };
    let lab = Lab::start(&options).expect("the lab starts");
    let rows = lab.scenarios();
    println!("{}", lab.origin());
    print_table(&rows);
    let mismatches: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.scenario.as_str())
        .collect();
    assert!(
        mismatches.is_empty(),
        "{example}: scenarios not as expected: {mismatches:?}"
    );
    assert!(
        rows.iter().filter(|r| r.expected == "drop").count() >= 6
            && rows.iter().filter(|r| r.expected == "pass").count() >= 8,
        "{example}: too few scenarios of one verdict"
    );
    assert!(
        rows.iter().all(|r| r.counter != "none"),
        "{example}: every scenario must move an exfw counter"
    );
    // The table agrees with the reference classifier; what the reference must say of these is
    // fixed here, so a model that let an attacker through cannot agree its way past the test.
    for row in &rows {
        let s = row.scenario.as_str();
        let must_drop = s.starts_with("Attacker")
            || s.contains("from the Internet to the domain controller")
            || s.starts_with("RDP 3389 from the Internet")
            || s.starts_with("SMB 445 from the Internet")
            || s.starts_with("EdgeSync 50636 from the Internet")
            || s.starts_with("Edge -> domain controller")
            || s.starts_with("UM: SIP from the Internet")
            || s.starts_with("MAPI/RPC endpoint mapper from the Internet");
        let must_pass = s.starts_with("HTTPS (OWA")
            || s.starts_with("Inbound mail")
            || s.starts_with("Authenticated submission")
            || s.starts_with("Domain logon from a client")
            || s.starts_with("UM: a call from the IP gateway")
            || s.starts_with("Outlook MAPI/RPC from a client");
        let wrong = (must_drop && row.expected != "drop") || (must_pass && row.expected != "pass");
        assert!(
            !wrong,
            "{example}: `{s}` is expected to {}, which the model must not allow",
            row.expected
        );
    }
    (lab, rows)
}

/// Every shipped example other than the default one runs through the lab: 2013 without an Edge
/// (Client Access takes Internet mail), 2010 with static RPC ports, an Edge and Unified
/// Messaging, 2019 dual-stack with IPv6 clients.
#[test]
#[ignore = "needs root and the lab's servers: cargo xtask test runs it"]
fn every_example_through_the_lab() {
    let mut examples: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml") && n != "exchange2016-edge.toml")
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    for example in &examples {
        let (lab, rows) = run_example(example);
        let scenario = |needle: &str| rows.iter().any(|r| r.scenario.contains(needle));
        // What each organisation is there to show.
        match example.as_str() {
            "exchange2013-no-edge.toml" => {
                assert!(scenario("Inbound mail: Internet -> cas -> mailbox"));
                assert!(scenario("UM: a call from the IP gateway"));
            }
            "exchange2010-static-rpc.toml" => {
                assert!(scenario("Outlook MAPI/RPC from a client"));
                assert!(scenario("UM: a call from the IP gateway"));
                assert!(scenario("Inbound mail: Internet -> edge -> hub"));
            }
            "exchange2019-imap-ipv6.toml" => {
                assert!(scenario("HTTPS over IPv6 from an IPv6 client"));
            }
            _ => {}
        }
        drop(lab);
    }
}

#[test]
#[ignore = "needs root and the lab's servers: cargo xtask test runs it"]
fn lab_end_to_end() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, rows) = run_example("exchange2016-edge.toml");
    let work = lab.work_dir();
    let pins = lab.pin_dir();

    lab.wait_for_scrapes();
    let queries = dashboard_queries();
    assert!(queries.len() >= 12);
    for (panel, expr) in &queries {
        let result = lab
            .query(expr)
            .unwrap_or_else(|e| panic!("panel `{panel}`: Prometheus rejected `{expr}`: {e}"));
        assert!(
            !result.is_empty(),
            "panel `{panel}`: `{expr}` is empty although the lab generated that traffic"
        );
    }
    // Prometheus loaded the alert rules (and nothing fires while exfw is up and reloads succeed).
    let rules = lab.query("count(ALERTS)").unwrap();
    let firing: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    assert!(
        firing.is_empty(),
        "alerts firing in a healthy lab: {firing:?}"
    );
    eprintln!(
        "{} scenarios as expected; {} dashboard queries non-empty",
        rows.len(),
        queries.len()
    );
    drop(lab);

    // Nothing left behind: no lab namespace, process, pin, or file.
    let namespaces = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !namespaces.contains(&format!("-{}-", std::process::id())),
        "namespaces left: {namespaces}"
    );
    assert!(!work.exists(), "{} left behind", work.display());
    let marker = work.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&marker),
            "a lab process survived: {}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        );
    }
    assert!(!pins.exists(), "{} left behind", pins.display());
}
