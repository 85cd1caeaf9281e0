//! Exporters of a compiled policy: the allowlist as a firewall change request (table, CSV,
//! Markdown, JSON) and an equivalent nftables ruleset.

use std::fmt::Write;

use exfw_common::{CLASS_EXTERNAL, proto};
use ipnet::IpNet;
use serde::Serialize;

use super::{Accepts, Compiled, PortRange, Rule};

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

/// Where packets may come from on one interface.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InterfaceRow {
    /// Interface name.
    pub name: String,
    /// "strict" or "off".
    pub reverse_path: String,
    /// The groups whose addresses may arrive here as sources ("every group" when unrestricted).
    pub accepts: Vec<String>,
}

/// The whole explanation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Explanation {
    /// Address groups, in class order; "external" is everything else.
    pub groups: Vec<Group>,
    /// The interfaces and the sources each accepts.
    pub interfaces: Vec<InterfaceRow>,
    /// The trusted-pair rule first, then every allow rule the XDP program enforces.
    pub rules: Vec<ExplainRow>,
    /// Rules towards the gateway itself, enforced by its input chain (`exfw export`).
    pub gateway: Vec<ExplainRow>,
    /// What holds beyond the rows.
    pub notes: Vec<String>,
    /// Every document a row cites, with where it is published.
    pub sources: Vec<SourceRow>,
}

/// A document the rows cite.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceRow {
    /// Publisher and title.
    pub title: String,
    /// Where it is published.
    pub url: String,
}

/// The protocol's name.
pub fn proto_name(p: u8) -> String {
    proto::name(p).map_or_else(|| p.to_string(), str::to_string)
}

/// A port range as people write it: `443`, `5065-5068`, `any`, `type 8` for ICMP.
pub fn ports_text(protocol: u8, ports: PortRange) -> String {
    if ports != PortRange::ANY && matches!(protocol, proto::ICMP | proto::ICMPV6) {
        format!("type {ports}")
    } else {
        ports.to_string()
    }
}

fn rule_row(c: &Compiled, rule: &Rule, why: &[crate::model::Provenance]) -> ExplainRow {
    let p = &c.policy;
    ExplainRow {
        service: rule.service.clone(),
        protocol: proto_name(rule.proto),
        ports: ports_text(rule.proto, rule.ports),
        source: rule
            .src_classes
            .iter()
            .map(|id| p.class_name(*id).to_string())
            .collect(),
        destination: vec![p.class_name(rule.dst_class).to_string()],
        why: why
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("; "),
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
            why: trusted_pairs_why()
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    for rule in &p.rules {
        let why = c.provenance.get(&rule.id).map_or(&[][..], |v| v.as_slice());
        rules.push(rule_row(c, rule, why));
    }
    let gateway = c
        .host_rules
        .iter()
        .map(|h| rule_row(c, &h.rule, &h.why))
        .collect();
    let interfaces = p
        .interfaces
        .iter()
        .map(|i| InterfaceRow {
            name: i.name.clone(),
            reverse_path: if i.reverse_path { "strict" } else { "off" }.into(),
            accepts: match &i.accepts {
                Accepts::Any => vec!["every group".into()],
                Accepts::Classes(set) => {
                    set.iter().map(|id| p.class_name(*id).to_string()).collect()
                }
            },
        })
        .collect();
    let mut cited: Vec<(String, String)> = Vec::new();
    let whys = c
        .provenance
        .values()
        .flatten()
        .chain(c.host_rules.iter().flat_map(|h| &h.why));
    let trusted_whys = if c.trusted_classes().is_empty() {
        Vec::new()
    } else {
        trusted_pairs_why()
    };
    for why in whys.chain(&trusted_whys) {
        if !why.url.is_empty() && !cited.iter().any(|(title, _)| *title == why.document) {
            cited.push((why.document.clone(), why.url.clone()));
        }
    }
    // In the order docs/exchange-model.md lists them.
    let rank = |title: &str| {
        crate::model::source::ALL
            .iter()
            .position(|d| d.title == title)
            .unwrap_or(usize::MAX)
    };
    cited.sort_by_key(|(title, _)| rank(title));
    let sources = cited
        .into_iter()
        .map(|(title, url)| SourceRow { title, url })
        .collect();
    let mode = match p.mode {
        super::Mode::Enforce => "enforce: denied traffic is dropped",
        super::Mode::Audit => "audit: nothing is dropped; denied traffic is counted as would-drop",
    };
    Explanation {
        groups,
        interfaces,
        rules,
        gateway,
        notes: vec![
            "Sources are validated first: a packet whose source group the interface does not accept, or whose source the routing table would not reach back through that interface (reverse_path strict), drops as spoofed_source.".into(),
            "Connections: a rule admits the packet that opens one (TCP SYN, the first UDP datagram, an ICMP echo request); its replies and later packets pass once the handshake completes (TCP: SYN, SYN-ACK, ACK), on the interfaces it was seen on. Nothing mid-stream creates state.".into(),
            "Everything else to or from a protected group (Exchange servers, Edge, domain controllers, Lync, protected networks) is dropped and counted; traffic between two unprotected ends passes untouched (transit).".into(),
            "ICMP errors pass only when they carry the header of a known connection, a trusted pair or a rule, travelling back to its sender; IPv6 neighbour discovery only with hop limit 255; IPv4 source routes and IPv6 type-0 routing headers drop; ARP passes.".into(),
            "The gateway itself: XDP passes traffic to the gateway's own addresses to the host (reason local); the rows under \"the gateway itself\" are enforced by the gateway's input chain, which `exfw export --format nft-gateway` writes.".into(),
            "\"external\" is every address not listed in a group (the Internet, partner forests).".into(),
            format!("Mode: {mode}."),
        ],
        sources,
    }
}

/// Why trusted pairs pass: Microsoft's ground rules and the product group's support statement.
fn trusted_pairs_why() -> Vec<crate::model::Provenance> {
    use crate::model::{Provenance, source};
    let ground_rules = "first bullet before the tables: \"We do not support restricting or altering network traffic between internal Exchange servers, between internal Exchange servers and internal Lync or Skype for Business servers, or between internal Exchange servers and internal Active Directory domain controllers\" (any port, including random RPC ports, any protocol, both directions)";
    vec![
        Provenance::cite(source::PORTS_2013, ground_rules),
        Provenance::cite(source::PORTS_2016, ground_rules),
        Provenance::cite(
            source::FIREWALL_SUPPORT,
            "\"a rule allowing ANY/ANY port and protocol communication must be in place allowing free communication between Exchange servers as well as between Exchange servers and domain controllers\"",
        ),
    ]
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
            out.push_str("service,protocol,ports,source,source_addresses,destination,destination_addresses,why,enforced_by\n");
            let tagged = e
                .rules
                .iter()
                .map(|r| (r, "xdp"))
                .chain(e.gateway.iter().map(|r| (r, "host input chain")));
            for (r, by) in tagged {
                let fields = [
                    r.service.clone(),
                    r.protocol.clone(),
                    r.ports.clone(),
                    r.source.join(" "),
                    addresses(&r.source),
                    r.destination.join(" "),
                    addresses(&r.destination),
                    r.why.clone(),
                    by.to_string(),
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
            out.push_str("| external | every address not listed above |\n\n");
            if !e.interfaces.is_empty() {
                out.push_str("## Interfaces\n\n| interface | reverse path | accepts sources from |\n| --- | --- | --- |\n");
                for i in &e.interfaces {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} |",
                        i.name,
                        i.reverse_path,
                        i.accepts.join(", ")
                    );
                }
                out.push('\n');
            }
            let markdown_rows = |out: &mut String, rows: &[ExplainRow]| {
                out.push_str("| service | protocol/port | source | destination | why |\n| --- | --- | --- | --- | --- |\n");
                for r in rows {
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
            };
            out.push_str("## Allowed traffic\n\n");
            markdown_rows(&mut out, &e.rules);
            if !e.gateway.is_empty() {
                out.push_str("\n## The gateway itself\n\nEnforced by the gateway's input chain (`exfw export --format nft-gateway`), not by XDP.\n\n");
                markdown_rows(&mut out, &e.gateway);
            }
            out.push_str("\n## Notes\n\n");
            for n in &e.notes {
                let _ = writeln!(out, "- {n}");
            }
            if !e.sources.is_empty() {
                out.push_str("\n## Sources\n\n");
                for s in &e.sources {
                    let _ = writeln!(out, "- {}: <{}>", s.title, s.url);
                }
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
            if !e.interfaces.is_empty() {
                out.push_str("INTERFACES\n");
                let rows: Vec<Vec<String>> = e
                    .interfaces
                    .iter()
                    .map(|i| vec![i.name.clone(), i.reverse_path.clone(), i.accepts.join(", ")])
                    .collect();
                text_table(
                    &mut out,
                    &["INTERFACE", "REVERSE PATH", "ACCEPTS SOURCES FROM"],
                    &rows,
                );
                out.push('\n');
            }
            let rule_rows = |rows: &[ExplainRow]| -> Vec<Vec<String>> {
                rows.iter()
                    .map(|r| {
                        vec![
                            r.service.clone(),
                            format!("{}/{}", r.protocol, r.ports),
                            r.source.join(","),
                            r.destination.join(","),
                            r.why.clone(),
                        ]
                    })
                    .collect()
            };
            let header = ["SERVICE", "PROTO/PORT", "SOURCE", "DESTINATION", "WHY"];
            out.push_str("ALLOWED TRAFFIC\n");
            text_table(&mut out, &header, &rule_rows(&e.rules));
            if !e.gateway.is_empty() {
                out.push_str("\nTHE GATEWAY ITSELF (enforced by its input chain: exfw export --format nft-gateway)\n");
                text_table(&mut out, &header, &rule_rows(&e.gateway));
            }
            out.push_str("\nNOTES\n");
            for n in &e.notes {
                let _ = writeln!(out, "  - {n}");
            }
            if !e.sources.is_empty() {
                out.push_str("\nSOURCES\n");
                for s in &e.sources {
                    let _ = writeln!(out, "  {}\n    {}", s.title, s.url);
                }
            }
        }
    }
    out
}

/// The nftables matches that accept `rule` (one line per family and source class, without the
/// comment); `select` matches a class's addresses.
fn rule_lines(rule: &Rule, select: &impl Fn(u16, &str, &str) -> String) -> Vec<String> {
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
            if first > 255 {
                // No ICMP type is above 255: the rule matches nothing.
                return Vec::new();
            }
            if first == 0 && last >= 255 {
                format!("meta l4proto {kw}")
            } else if first == last {
                format!("{kw} type {first}")
            } else {
                format!("{kw} type {first}-{}", last.min(255))
            }
        }
        other => format!("meta l4proto {other}"),
    };
    // Like the XDP program, only a SYN opens a TCP connection through a rule; conntrack's
    // loose pick-up of mid-stream segments would otherwise create state from anything.
    let transport = if rule.proto == proto::TCP {
        format!("{transport} tcp flags & (fin|syn|rst|ack) == syn")
    } else {
        transport
    };
    let mut lines = Vec::new();
    for family in ["v4", "v6"] {
        if (rule.proto == proto::ICMP && family == "v6")
            || (rule.proto == proto::ICMPV6 && family == "v4")
        {
            continue;
        }
        for src in &rule.src_classes {
            lines.push(format!(
                "{} {} {transport} accept",
                select(*src, "saddr", family),
                select(rule.dst_class, "daddr", family),
            ));
        }
    }
    lines
}

/// Aligned columns, the last one unpadded.
fn text_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let columns = header.len();
    let mut widths = vec![0usize; columns];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        out.push(' ');
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == columns {
                let _ = write!(out, " {cell}");
            } else {
                let _ = write!(out, " {cell:<w$} ", w = widths[i]);
            }
        }
        out.push('\n');
    }
}

/// Which chains an nftables export holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NftChains {
    /// The XDP program's policy for forwarded traffic (`forward`) and the gateway's own input
    /// chain (`input`): a complete replacement for XDP.
    All,
    /// Only the gateway's own input chain: what runs beside the XDP program, which passes
    /// traffic to the gateway's addresses to the host.
    Gateway,
}

/// An nftables ruleset (`nft -f`) with the same verdicts as the XDP program for connections
/// through a gateway: a stateful `forward` and `input` filter in table `inet exfw`. Two
/// differences: conntrack decides what a connection is (any TCP packet after the SYN
/// matches `established`), and mid-stream TCP segments to an allowed port, which XDP passes
/// without state, drop here.
pub fn nftables(c: &Compiled, origin: &str) -> String {
    nftables_chains(c, origin, NftChains::All)
}

/// An nftables ruleset holding `chains`.
pub fn nftables_chains(c: &Compiled, origin: &str, chains: NftChains) -> String {
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
    // Source validation, one chain per interface: the groups it accepts, the reverse path.
    let spoofed = if p.mode == super::Mode::Audit {
        "counter comment \"spoofed_source: would drop\" return"
    } else {
        "counter drop comment \"spoofed_source\""
    };
    for (slot, iface) in p.interfaces.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n    chain source_{slot} {{\n        # {}",
            iface.name
        );
        out.push_str(
            "        ip6 saddr { fe80::/10, :: } return\n        ip saddr 0.0.0.0 return\n",
        );
        if iface.reverse_path {
            let _ = writeln!(out, "        fib saddr . iif oif missing {spoofed}");
        }
        match &iface.accepts {
            Accepts::Any => out.push_str("        return\n"),
            Accepts::Classes(set) => {
                for family in ["v4", "v6"] {
                    for class in set {
                        let _ = writeln!(out, "        {} return", select(*class, "saddr", family));
                    }
                }
                let _ = writeln!(out, "        {spoofed}");
            }
        }
        out.push_str("    }\n");
    }
    let validate_sources: String = p
        .interfaces
        .iter()
        .enumerate()
        .map(|(slot, iface)| format!("        iifname \"{}\" jump source_{slot}\n", iface.name))
        .collect();
    let mut forward = String::new();
    forward.push_str("\n    chain exfw {\n");
    forward.push_str(&validate_sources);
    forward.push_str("        ct state established,related accept\n");
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
                    forward,
                    "        {} {} accept comment \"trusted-pairs\"",
                    select(*s, "saddr", family),
                    select(*d, "daddr", family)
                );
            }
        }
    }
    for rule in &p.rules {
        for line in rule_lines(rule, &select) {
            let _ = writeln!(
                forward,
                "        {line} comment \"{} (rule {})\"",
                rule.service, rule.id
            );
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
            let _ = writeln!(
                forward,
                "        {} {verdict}",
                select(*class, "saddr", family)
            );
            let _ = writeln!(
                forward,
                "        {} {verdict}",
                select(*class, "daddr", family)
            );
        }
    }
    forward.push_str("    }\n\n");
    if chains == NftChains::All {
        out.push_str(&forward);
    } else {
        out.push('\n');
    }
    if chains == NftChains::All {
        out.push_str("    chain forward {\n        type filter hook forward priority filter; policy accept;\n        jump exfw\n    }\n\n");
    }
    // The gateway itself: what XDP passes to the host (reason local) is judged here.
    out.push_str(
        "    chain input {\n        type filter hook input priority filter; policy accept;\n",
    );
    if !p.interfaces.is_empty() {
        let names: Vec<String> = p
            .interfaces
            .iter()
            .map(|i| format!("\"{}\"", i.name))
            .collect();
        let _ = writeln!(
            out,
            "        iifname != {{ {} }} accept comment \"not an exfw interface\"",
            names.join(", ")
        );
    }
    out.push_str(&validate_sources);
    out.push_str("        iif \"lo\" accept\n        ct state established,related accept\n");
    out.push_str("        icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } ip6 hoplimit 255 accept\n");
    out.push_str("        udp sport 67 udp dport 68 accept comment \"DHCP replies\"\n        udp sport 547 udp dport 546 accept comment \"DHCPv6 replies\"\n");
    for host in &c.host_rules {
        for line in rule_lines(&host.rule, &select) {
            let _ = writeln!(
                out,
                "        {line} comment \"{} (gateway)\"",
                host.rule.service
            );
        }
    }
    // Every unicast address of the gateway, declared or not (link-local, SLAAC, secondary):
    // multicast and broadcast (VRRP, MLD, DHCP) stay the host's.
    let _ = writeln!(
        out,
        "        fib daddr type local {}",
        verdict.replace("policy", "gateway")
    );
    out.push_str("    }\n}\n");
    out
}
