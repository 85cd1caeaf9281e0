//! What the fuzz targets run (`fuzz/`, built by `cargo xtask fuzz` with coverage
//! instrumentation for libFuzzer) and what `cargo xtask test` replays from the corpus in the
//! repository (`fuzz/corpus/TARGET/`): each function panics on what it must never see.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use exfw_daemon::{
    config,
    dataplane::{Dataplane, LoadOptions},
    policy::{
        Compiled, Reference, Routes, compile,
        encode::policy_table_use,
        export::{ExplainFormat, NftChains, nftables_chains, render_explain},
    },
};

use crate::{differential::Pair, generate::Arrival, monotonic_ns};

/// The fuzz targets, by the name of their binary and corpus directory.
pub const TARGETS: [&str; 3] = ["config", "classifier", "differential"];

/// A 2019 organisation with every kind of host, on loopback (no reverse path: test runs have no
/// ingress interface there): the policy the frame targets run.
pub const FRAME_POLICY_CONFIG: &str = r#"version = 1
mode = "enforce"

[organization]
exchange = "2019"
edge_subscribed = true
imap4 = true
pop3 = true

[[server]]
name = "MBX01"
roles = ["mailbox"]
addresses = ["192.0.2.10", "2001:db8:10::10"]

[[server]]
name = "EDGE01"
roles = ["edge"]
addresses = ["198.51.100.10", "2001:db8:20::10"]

[[domain_controller]]
name = "DC01"
addresses = ["192.0.2.20"]

[[protected_network]]
name = "servers"
addresses = ["192.0.2.0/26"]

[clients]
networks = ["10.1.0.0/16", "2001:db8:100::/48"]

[management]
sources = ["10.9.0.0/24"]
gateway_addresses = ["192.0.2.1"]

[[interface]]
name = "lo"
xdp_mode = "skb"
reverse_path = "off"
accepts = ["mailbox", "edge", "dc", "protected-network", "clients", "management", "external"]
"#;

/// The compiled frame policy.
pub fn frame_policy() -> Compiled {
    compile(&config::parse(FRAME_POLICY_CONFIG, "fuzz.toml").expect("the fuzz config is valid"))
        .expect("the fuzz config compiles")
}

/// Config text: parsing and validating never panics, every error has a line and a column, and
/// a valid config compiles, sizes its tables, explains itself and exports without panicking.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, "fuzz.toml") {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a message");
            for e in &errors.0 {
                assert!(
                    e.line >= 1 && e.column >= 1,
                    "an error without a location: {e}"
                );
            }
        }
        Ok(cfg) => {
            let Ok(compiled) = compile(&cfg) else {
                return;
            };
            let _ = policy_table_use(&compiled.policy);
            for format in [ExplainFormat::Table, ExplainFormat::Json] {
                let _ = render_explain(&compiled, format);
            }
            let _ = nftables_chains(&compiled, "fuzz.toml", NftChains::All);
        }
    }
}

/// A frame through the reference classifier's parser and decision: never panics.
pub fn classifier(data: &[u8]) {
    static REFERENCE: OnceLock<Mutex<Reference>> = OnceLock::new();
    let reference = REFERENCE.get_or_init(|| {
        Mutex::new(Reference::new(
            frame_policy().policy,
            Routes::assume_ingress(),
        ))
    });
    let mut reference = reference.lock().unwrap_or_else(|e| e.into_inner());
    let _ = reference.classify(data, "lo", monotonic_ns());
}

/// The kernel and the reference side by side.
struct Both {
    dataplane: Dataplane,
    reference: Reference,
}

/// A frame through the XDP program (BPF_PROG_TEST_RUN, needs root) and the reference: they must
/// agree on the verdict, the reason and every counter the frame moves.
pub fn differential(data: &[u8]) {
    static BOTH: OnceLock<Mutex<Both>> = OnceLock::new();
    let both = BOTH.get_or_init(|| {
        let policy = frame_policy().policy;
        let mut dataplane = Dataplane::load(LoadOptions::default()).expect("load the XDP program");
        dataplane.apply(&policy).expect("apply the fuzz policy");
        Mutex::new(Both {
            dataplane,
            reference: Reference::new(policy, Routes::assume_ingress()),
        })
    });
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header or longer than a page.
    if data.len() < 14 || data.len() > 4000 {
        return;
    }
    let mut both = both.lock().unwrap_or_else(|e| e.into_inner());
    let Both {
        dataplane,
        reference,
    } = &mut *both;
    let arrival = Arrival {
        iface: "lo".into(),
        frame: data.to_vec(),
    };
    if let Err(difference) = Pair::new(dataplane, reference).check(&arrival) {
        panic!("the kernel and the reference disagree: {difference}");
    }
}

/// Runs `target` on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "config" => config(data),
        "classifier" => classifier(data),
        "differential" => differential(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The inputs of `fuzz/corpus/TARGET`, sorted (at least 10, or the corpus is missing).
pub fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds {} inputs: the corpus is missing",
        dir.display(),
        files.len()
    );
    files
}

/// Replays every input of `target`'s corpus through its body; fails naming the first that
/// fails.
pub fn replay_corpus(target: &str) {
    let files = corpus(target);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| run(target, &data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
    eprintln!("{target}: {} corpus inputs replayed", files.len());
}
