//! Holds the modules to their layers: a module may name (`crate::x`) only modules of a lower
//! layer or its own, and the pure layers (config, model, policy) touch no kernel, runtime or
//! HTTP crate.

/// Each module, from the bottom up, with its layer and source. Modules of the same layer are
/// listed in the order they may use one another.
const MODULES: &[(&str, u8, &[&str])] = &[
    ("config", 1, &[include_str!("config.rs")]),
    (
        "model",
        2,
        &[include_str!("model/mod.rs"), include_str!("model/rows.rs")],
    ),
    (
        "policy",
        3,
        &[
            include_str!("policy/mod.rs"),
            include_str!("policy/classify.rs"),
            include_str!("policy/compile.rs"),
            include_str!("policy/encode.rs"),
            include_str!("policy/export.rs"),
            include_str!("policy/probe.rs"),
            include_str!("policy/scenario.rs"),
        ],
    ),
    ("dataplane", 4, &[include_str!("dataplane.rs")]),
    ("links", 5, &[include_str!("links.rs")]),
    ("state", 6, &[include_str!("state.rs")]),
    ("metrics", 7, &[include_str!("metrics.rs")]),
    ("server", 8, &[include_str!("server.rs")]),
    ("reload", 9, &[include_str!("reload.rs")]),
    ("cli", 10, &[include_str!("cli.rs")]),
];

/// Crates only the layers from the data plane up may use (`aya::Pod`, the marker of plain
/// bytes, excepted: the policy hashes the kernel's key layouts).
const IO_CRATES: &[&str] = &[
    "aya::",
    "aya_obj::",
    "aya_log::",
    "tokio::",
    "axum::",
    "prometheus_client::",
    "notify::",
    "sd_notify::",
];

/// The layer the pure modules end at.
const PURE_UP_TO: u8 = 3;

/// The top-level modules a source names through `crate::`, with `crate::{a, b::c}` groups
/// read out.
fn named_modules(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level items of a brace group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(item);
        } else {
            out.push(rest.chars().take_while(|c| *c != '\n').collect());
        }
    }
    out.iter()
        .map(|item| {
            item.trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn every_module_imports_only_downward() {
    let layer_of = |name: &str| MODULES.iter().position(|(m, _, _)| *m == name);
    let mut wrong = Vec::new();
    for (position, (module, layer, sources)) in MODULES.iter().enumerate() {
        for source in *sources {
            for named in named_modules(source) {
                match layer_of(&named) {
                    // Items of the crate root (the embedded object).
                    None if named.chars().all(|c| c.is_uppercase() || c == '_') => {}
                    None => wrong.push(format!(
                        "{module} names crate::{named}, which is not a module of the table"
                    )),
                    Some(other) if other > position => wrong.push(format!(
                        "{module} (layer {layer}) imports {named} (layer {}), a layer above it",
                        MODULES[other].1
                    )),
                    Some(_) => {}
                }
            }
            if *layer <= PURE_UP_TO {
                for io in IO_CRATES {
                    let uses = source.match_indices(io).any(|(at, _)| {
                        !source[at..].starts_with("aya::Pod")
                            && !source[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if uses {
                        wrong.push(format!("{module} is a pure layer but uses {io}"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(
        named_modules(
            "use crate::{\n    config::{self, Config},\n    dataplane::Dataplane,\n};\nlet x = crate::reload::run();"
        ),
        ["config", "dataplane", "reload"]
    );
}
