//! Exporters of a compiled policy: the allowlist as a firewall change request (table, CSV,
//! Markdown, JSON) and an equivalent nftables ruleset.

use std::fmt::Write;

use exfw_common::{CLASS_EXTERNAL, proto};
use ipnet::IpNet;
use serde::Serialize;

use super::{Compiled, PortRange, Rule};

/// How `explain` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainFormat {
    /// Aligned text.
    Table,
    /// Comma-separated values, one rule a row, addresses spelled out.
    Csv,
    /// Markdown tables for a change request.
    Markdown,
    /// Machine-readable.
    Json,
}

/// One line of the change request.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExplainRow {
    /// Service name.
    pub service: String,
    /// tcp, udp, icmp, icmpv6, any, or a number.
    pub protocol: String,
    /// Port, range, ICMP type, or "any".
    pub ports: String,
    /// Source groups.
    pub source: Vec<String>,
    /// Destination groups.
    pub destination: Vec<String>,
    /// Why: the document and row.
    pub why: String,
}

/// A named group of addresses.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Group {
    /// Group name (the class).
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<String>,
}

/// The whole explanation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Explanation {
    /// Address groups, in class order; "external" is everything else.
    pub groups: Vec<Group>,
    /// The trusted-pair rule first, then every allow rule.
    pub rules: Vec<ExplainRow>,
    /// What holds beyond the rows.
    pub notes: Vec<String>,
}

/// The protocol's name.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn ports_text(rule: &Rule) -> String {
    let PortRange { first, last } = rule.ports;
    let prefix = if matches!(rule.proto, proto::ICMP | proto::ICMPV6) {
        "type "
    } else {
        ""
    };
    if rule.ports == PortRange::ANY {
        "any".into()
    } else if first == last {
        format!("{prefix}{first}")
    } else {
        format!("{prefix}{first}-{last}")
    }
}

/// Builds the explanation of a compiled policy.
pub fn explain(c: &Compiled) -> Explanation {
    let p = &c.policy;
    let groups = p
        .classes
        .iter()
        .map(|class| Group {
            name: class.name.clone(),
            addresses: class.prefixes.iter().map(host_or_net).collect(),
        })
        .collect();
    let trusted: Vec<String> = c
        .trusted_classes()
        .iter()
        .map(|cl| cl.name.clone())
        .collect();
    let mut rules = Vec::new();
    if !trusted.is_empty() {
        rules.push(ExplainRow {
            service: "trusted-pairs".into(),
            protocol: "any".into(),
            ports: "any".into(),
            source: trusted.clone(),
            destination: trusted,
            why: "seed 002 ground rules: never restrict traffic between Exchange servers, with domain controllers, \
                  or with Lync/Skype servers (any port, any protocol, both directions); seed 001: ANY/ANY \"everywhere\""
                .into(),
        });
    }
    for rule in &p.rules {
        let why = c.provenance.get(&rule.id).map(|v| {
            v.iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        });
        rules.push(ExplainRow {
            service: rule.service.clone(),
            protocol: proto_name(rule.proto),
            ports: ports_text(rule),
            source: rule
                .src_classes
                .iter()
                .map(|id| p.class_name(*id).to_string())
                .collect(),
            destination: vec![p.class_name(rule.dst_class).to_string()],
            why: why.unwrap_or_default(),
        });
    }
    let mode = match p.mode {
        super::Mode::Enforce => "enforce: denied traffic is dropped",
        super::Mode::Audit => "audit: nothing is dropped; denied traffic is counted as would-drop",
    };
    Explanation {
        groups,
        rules,
        notes: vec![
            "Stateful: replies to allowed connections pass.".into(),
            "Everything else to or from a protected group (Exchange servers, Edge, domain controllers, Lync) is dropped and counted; traffic between two unprotected ends passes untouched.".into(),
            "ICMP fragmentation-needed, ICMPv6 packet-too-big and neighbour discovery always pass; ARP passes.".into(),
            "\"external\" is every address not listed in a group (the Internet, partner forests).".into(),
            format!("Mode: {mode}."),
        ],
    }
}

fn host_or_net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Renders the explanation.
pub fn render_explain(c: &Compiled, format: ExplainFormat) -> String {
    let e = explain(c);
    let addresses = |names: &[String]| -> String {
        names
            .iter()
            .map(|n| {
                e.groups
                    .iter()
                    .find(|g| &g.name == n)
                    .map_or_else(|| "any (external)".to_string(), |g| g.addresses.join(" "))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    match format {
        ExplainFormat::Json => out = serde_json::to_string_pretty(&e).expect("serialisable") + "\n",
        ExplainFormat::Csv => {
            out.push_str("service,protocol,ports,source,source_addresses,destination,destination_addresses,why\n");
            for r in &e.rules {
                let fields = [
                    r.service.clone(),
                    r.protocol.clone(),
                    r.ports.clone(),
                    r.source.join(" "),
                    addresses(&r.source),
                    r.destination.join(" "),
                    addresses(&r.destination),
                    r.why.clone(),
                ];
                out.push_str(
                    &fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
            }
        }
        ExplainFormat::Markdown => {
            out.push_str("## Address groups\n\n| group | addresses |\n| --- | --- |\n");
            for g in &e.groups {
                let _ = writeln!(out, "| {} | {} |", g.name, g.addresses.join(", "));
            }
            out.push_str("| external | every address not listed above |\n\n## Allowed traffic\n\n");
            out.push_str("| service | protocol/port | source | destination | why |\n| --- | --- | --- | --- | --- |\n");
            for r in &e.rules {
                let _ = writeln!(
                    out,
                    "| {} | {}/{} | {} | {} | {} |",
                    r.service,
                    r.protocol,
                    r.ports,
                    r.source.join(", "),
                    r.destination.join(", "),
                    r.why.replace('|', "\\|")
                );
            }
            out.push_str("\n## Notes\n\n");
            for n in &e.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        ExplainFormat::Table => {
            out.push_str("ADDRESS GROUPS\n");
            let width = e
                .groups
                .iter()
                .map(|g| g.name.len())
                .max()
                .unwrap_or(8)
                .max(8);
            for g in &e.groups {
                let _ = writeln!(out, "  {:<width$}  {}", g.name, g.addresses.join(" "));
            }
            let _ = writeln!(
                out,
                "  {:<width$}  every address not listed above\n",
                "external"
            );
            out.push_str("ALLOWED TRAFFIC\n");
            let rows: Vec<[String; 5]> = e
                .rules
                .iter()
                .map(|r| {
                    [
                        r.service.clone(),
                        format!("{}/{}", r.protocol, r.ports),
                        r.source.join(","),
                        r.destination.join(","),
                        r.why.clone(),
                    ]
                })
                .collect();
            let header =
                ["SERVICE", "PROTO/PORT", "SOURCE", "DESTINATION", "WHY"].map(String::from);
            let mut widths = [0usize; 4];
            for row in rows.iter().chain(std::iter::once(&header)) {
                for (w, cell) in widths.iter_mut().zip(row.iter()) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(rows.iter()) {
                let _ = writeln!(
                    out,
                    "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3]
                );
            }
            out.push_str("\nNOTES\n");
            for n in &e.notes {
                let _ = writeln!(out, "  - {n}");
            }
        }
    }
    out
}

/// An nftables ruleset (`nft -f`) with the same verdicts as the XDP program for connections
/// through a gateway: a stateful `forward` and `input` filter in table `inet exfw`.
pub fn nftables(c: &Compiled, origin: &str) -> String {
    let p = &c.policy;
    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        out,
        "# Generated by exfw {} from {origin}. Load with: nft -f FILE",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# Address classes are matched longest prefix first, as exfw's XDP program does."
    );
    out.push_str("table inet exfw\ndelete table inet exfw\n\ntable inet exfw {\n");
    let family_sets = |out: &mut String, name: &str, nets: &[IpNet]| {
        for (suffix, ty, v6) in [("v4", "ipv4_addr", false), ("v6", "ipv6_addr", true)] {
            let elements: Vec<String> = nets
                .iter()
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .map(|n| n.to_string())
                .collect();
            let _ = write!(
                out,
                "    set {name}_{suffix} {{ type {ty}; flags interval; auto-merge;"
            );
            if !elements.is_empty() {
                let _ = write!(out, " elements = {{ {} }};", elements.join(", "));
            }
            out.push_str(" }\n");
        }
    };
    let all: Vec<IpNet> = p
        .classes
        .iter()
        .flat_map(|c| c.prefixes.iter().copied())
        .collect();
    for class in &p.classes {
        let _ = writeln!(out, "    # class {}: {}", class.id, class.name);
        family_sets(&mut out, &format!("c{}", class.id), &class.prefixes);
        // Longer prefixes of other classes inside this one belong to those classes.
        let carved: Vec<IpNet> = all
            .iter()
            .filter(|n| {
                !class.prefixes.contains(n)
                    && class
                        .prefixes
                        .iter()
                        .any(|mine| mine.contains(*n) && mine.prefix_len() < n.prefix_len())
            })
            .copied()
            .collect();
        family_sets(&mut out, &format!("c{}_carved", class.id), &carved);
    }
    family_sets(&mut out, "known", &all);
    let select = |class: u16, field: &str, family: &str| -> String {
        let (kw, sfx) = if family == "v4" {
            ("ip", "v4")
        } else {
            ("ip6", "v6")
        };
        if class == CLASS_EXTERNAL {
            format!("{kw} {field} != @known_{sfx}")
        } else {
            format!("{kw} {field} @c{class}_{sfx} {kw} {field} != @c{class}_carved_{sfx}")
        }
    };
    out.push_str("\n    chain exfw {\n");
    out.push_str("        ct state established,related accept\n");
    out.push_str("        icmp type destination-unreachable icmp code frag-needed accept\n");
    out.push_str("        icmpv6 type { packet-too-big, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept\n");
    let trusted: Vec<u16> = p
        .classes
        .iter()
        .filter(|c| c.trusted)
        .map(|c| c.id)
        .collect();
    for family in ["v4", "v6"] {
        for s in &trusted {
            for d in &trusted {
                let _ = writeln!(
                    out,
                    "        {} {} accept comment \"trusted-pairs\"",
                    select(*s, "saddr", family),
                    select(*d, "daddr", family)
                );
            }
        }
    }
    for rule in &p.rules {
        let transport = match rule.proto {
            proto::TCP | proto::UDP => {
                let l4 = proto_name(rule.proto);
                let PortRange { first, last } = rule.ports;
                if rule.ports == PortRange::ANY {
                    format!("meta l4proto {l4}")
                } else if first == last {
                    format!("{l4} dport {first}")
                } else {
                    format!("{l4} dport {first}-{last}")
                }
            }
            proto::ICMP | proto::ICMPV6 => {
                let kw = proto_name(rule.proto);
                let PortRange { first, last } = rule.ports;
                if first == last {
                    format!("{kw} type {first}")
                } else {
                    format!("{kw} type {first}-{last}")
                }
            }
            other => format!("meta l4proto {other}"),
        };
        for family in ["v4", "v6"] {
            if (rule.proto == proto::ICMP && family == "v6")
                || (rule.proto == proto::ICMPV6 && family == "v4")
            {
                continue;
            }
            for src in &rule.src_classes {
                let _ = writeln!(
                    out,
                    "        {} {} {transport} accept comment \"{} (rule {})\"",
                    select(*src, "saddr", family),
                    select(rule.dst_class, "daddr", family),
                    rule.service,
                    rule.id
                );
            }
        }
    }
    let protected: Vec<u16> = p
        .classes
        .iter()
        .filter(|c| c.protected)
        .map(|c| c.id)
        .collect();
    // Audit mode counts what enforce would drop, and drops nothing.
    let verdict = if p.mode == super::Mode::Audit {
        "counter comment \"would drop\""
    } else {
        "counter drop comment \"policy\""
    };
    for family in ["v4", "v6"] {
        for class in &protected {
            let _ = writeln!(out, "        {} {verdict}", select(*class, "saddr", family));
            let _ = writeln!(out, "        {} {verdict}", select(*class, "daddr", family));
        }
    }
    out.push_str("    }\n\n");
    out.push_str("    chain forward {\n        type filter hook forward priority filter; policy accept;\n        jump exfw\n    }\n\n");
    out.push_str("    chain input {\n        type filter hook input priority filter; policy accept;\n        jump exfw\n    }\n}\n");
    out
}
