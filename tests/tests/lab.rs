//! The lab end to end: every scenario as `exfw simulate` predicts, every dashboard query valid
//! and non-empty against the Prometheus that scraped the lab's exfw, the alert rules valid and
//! loaded, and nothing left behind afterwards.

use std::{path::Path, process::Command, time::Duration};

use exfw_tests::lab::{Lab, Options, print_table};

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
                    .replace("$__interval", "15s");
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
    ] {
        assert!(titles.contains(&needed), "the dashboard lacks {needed}");
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("dashboards/exfw-alerts.yml"))
        .output()
        .expect("promtool (cargo xtask setup installs prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 5 rules found"));
}

#[test]
fn lab_end_to_end() {
    let options = Options {
        config: repo().join("examples/exchange2016-edge.toml"),
        duration: Duration::ZERO,
        repo: repo().to_path_buf(),
    };
    let lab = Lab::start(&options).expect("the lab starts");
    let work = lab.work_dir();
    let rows = lab.scenarios();
    print_table(&rows);
    let mismatches: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.scenario.as_str())
        .collect();
    assert!(
        mismatches.is_empty(),
        "scenarios not as expected: {mismatches:?}"
    );
    assert!(
        rows.iter().filter(|r| r.expected == "drop").count() >= 6
            && rows.iter().filter(|r| r.expected == "pass").count() >= 8
    );
    assert!(
        rows.iter().all(|r| r.counter != "none"),
        "every scenario must move an exfw counter"
    );

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
    assert!(!Path::new(&format!("/sys/fs/bpf/exfw-lab-{}", std::process::id())).exists());
}
