//! Each shipped example against a table of (source, destination, protocol, port) -> verdict
//! cases taken from the seeds' tables, negatives included. `pass:NAME` expects a pass by the rule
//! of service NAME; `pass:trusted` / `pass:transit` expect that reason; `deny` expects a drop
//! (a would-drop in audit mode); `host:NAME` and `host:deny` expect traffic to the gateway
//! itself, passed by XDP to the host, whose input chain allows it by rule NAME or drops it.

use std::path::Path;

use exfw_common::{Reason, Verdict, proto};
use exfw_daemon::{
    config,
    policy::{Mode, compile, probe},
};

type Case = (&'static str, &'static str, &'static str, u16, &'static str);

fn example_path(example: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example)
}

fn run(example: &str, cases: &[Case]) {
    let cfg = config::load(&example_path(example)).unwrap_or_else(|e| panic!("{example}: {e}"));
    judge(example, &cfg, cases);
    assert!(cases.len() >= 40, "{example}: only {} cases", cases.len());
}

fn judge(example: &str, cfg: &config::Config, cases: &[Case]) {
    let compiled = compile(cfg).unwrap();
    let policy = &compiled.policy;
    let deny = if policy.mode == Mode::Audit {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    };
    let mut failures = Vec::new();
    for (src, dst, p, port, expect) in cases {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        let number = match (*p, std::net::IpAddr::is_ipv6(&src)) {
            ("tcp", _) => proto::TCP,
            ("udp", _) => proto::UDP,
            ("icmp", false) => proto::ICMP,
            ("icmp", true) => proto::ICMPV6,
            other => panic!("bad protocol {other:?}"),
        };
        // Every case is a new connection arriving where its source belongs.
        let outcome = policy.judge_first(&probe::frame(src, dst, number, *port, true));
        let service = outcome
            .rule
            .and_then(|id| policy.rule(id))
            .map(|r| r.service.as_str());
        let host = compiled
            .host_rule(outcome.src_class, outcome.dst_class, number, *port)
            .map(|h| h.rule.service.as_str());
        let ok = match *expect {
            "deny" => outcome.verdict == deny && outcome.reason == Reason::Policy,
            "host:deny" => outcome.reason == Reason::Local && host.is_none(),
            e if e.starts_with("host:") => outcome.reason == Reason::Local && host == Some(&e[5..]),
            "pass:trusted" => outcome.verdict == Verdict::Pass && outcome.reason == Reason::Trusted,
            "pass:transit" => outcome.verdict == Verdict::Pass && outcome.reason == Reason::Transit,
            e => outcome.verdict == Verdict::Pass && Some(&e[5..]) == service,
        };
        if !ok {
            failures.push(format!(
                "{src} -> {dst} {p}/{port}: expected {expect}, got {:?}/{:?} rule {service:?}",
                outcome.verdict, outcome.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{example}:\n{}", failures.join("\n"));
    let denied = cases.iter().filter(|c| c.4 == "deny").count();
    eprintln!(
        "{example}: {} cases ({} allowed, {denied} denied) agree",
        cases.len(),
        cases.len() - denied
    );
}

const EXT: &str = "203.0.113.9";

#[test]
fn exchange2013_without_edge() {
    let (cas1, cas2, mbx1, mbx2, dc, dns, client, mgmt, pbx) = (
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.5",
        "203.0.113.53",
        "198.51.100.7",
        "198.51.100.250",
        "198.51.100.240",
    );
    run(
        "exchange2013-no-edge.toml",
        &[
            (EXT, cas1, "tcp", 443, "pass:https"),
            (EXT, cas2, "tcp", 443, "pass:https"),
            (client, cas1, "tcp", 443, "pass:https"),
            (EXT, cas1, "tcp", 80, "pass:http"),
            (client, cas2, "tcp", 80, "pass:http"),
            (EXT, cas1, "tcp", 587, "pass:smtp-submission"),
            (client, cas1, "tcp", 587, "pass:smtp-submission"),
            (EXT, cas1, "tcp", 25, "pass:smtp-inbound"),
            (EXT, cas2, "tcp", 25, "pass:smtp-inbound"),
            (mbx1, "203.0.113.77", "tcp", 25, "pass:smtp-outbound"),
            (mbx2, "203.0.113.77", "tcp", 25, "pass:smtp-outbound"),
            (mbx1, dns, "udp", 53, "pass:dns"),
            (mbx1, dns, "tcp", 53, "pass:dns"),
            (cas1, dns, "udp", 53, "pass:dns"),
            (cas1, mbx1, "tcp", 49152, "pass:trusted"),
            (mbx1, cas1, "tcp", 61000, "pass:trusted"),
            (mbx1, dc, "tcp", 389, "pass:trusted"),
            (dc, mbx1, "tcp", 55555, "pass:trusted"),
            (cas1, dc, "udp", 88, "pass:trusted"),
            (mbx1, mbx2, "udp", 3343, "pass:trusted"),
            (mbx1, dc, "icmp", 8, "pass:trusted"),
            (client, cas1, "icmp", 8, "pass:icmp-echo"),
            (mgmt, cas1, "icmp", 8, "pass:icmp-echo"),
            (mgmt, "192.0.2.1", "tcp", 22, "host:management"),
            (mgmt, cas1, "tcp", 443, "pass:https"),
            (EXT, "203.0.113.10", "tcp", 3389, "pass:transit"),
            (client, EXT, "tcp", 443, "pass:transit"),
            (EXT, mbx1, "tcp", 443, "deny"),
            (EXT, mbx1, "tcp", 25, "deny"),
            (EXT, mbx2, "tcp", 135, "deny"),
            (EXT, cas1, "tcp", 110, "deny"),
            (EXT, cas1, "tcp", 995, "deny"),
            (EXT, cas1, "tcp", 143, "deny"),
            (client, cas1, "tcp", 993, "deny"),
            (EXT, cas1, "tcp", 3389, "deny"),
            (EXT, cas1, "tcp", 445, "deny"),
            (EXT, dc, "tcp", 389, "deny"),
            (EXT, dc, "tcp", 445, "deny"),
            (client, cas1, "tcp", 135, "deny"),
            (EXT, cas1, "tcp", 50636, "deny"),
            (cas1, "203.0.113.77", "tcp", 25, "deny"),
            (mbx1, "203.0.113.77", "tcp", 443, "deny"),
            (EXT, cas1, "icmp", 8, "deny"),
            (EXT, cas1, "udp", 53, "deny"),
            (mbx1, dns, "udp", 123, "deny"),
            (cas1, "192.0.2.1", "tcp", 22, "host:deny"),
            // Internal clients get what the Internet gets: Internet mail's port 25 included.
            (client, cas1, "tcp", 25, "pass:smtp-inbound"),
            // Domain controllers serve the client network (logon, Group Policy, DNS, time).
            (client, dc, "udp", 53, "pass:ad-dns"),
            (client, dc, "tcp", 88, "pass:ad-kerberos"),
            (client, dc, "udp", 123, "pass:ad-ntp"),
            (client, dc, "tcp", 135, "pass:ad-rpc-epm"),
            (client, dc, "udp", 389, "pass:ad-ldap"),
            (client, dc, "tcp", 445, "pass:ad-smb"),
            (client, dc, "tcp", 464, "pass:ad-kpasswd"),
            (client, dc, "tcp", 3269, "pass:ad-gc"),
            (client, dc, "tcp", 49200, "pass:ad-rpc"),
            (client, dc, "icmp", 8, "pass:ad-icmp-echo"),
            (EXT, dc, "icmp", 8, "deny"),
            (mgmt, dc, "tcp", 389, "pass:ad-ldap"),
            (client, dc, "tcp", 3389, "deny"),
            (client, dc, "tcp", 5985, "deny"),
            (EXT, dc, "tcp", 88, "deny"),
            (EXT, dc, "tcp", 49200, "deny"),
            // Unified Messaging on 2013: the call router on CAS, the worker on Mailbox.
            (pbx, cas1, "tcp", 5060, "pass:sip"),
            (pbx, cas2, "tcp", 5061, "pass:sips"),
            (pbx, mbx1, "tcp", 5065, "pass:um-worker"),
            (pbx, mbx2, "tcp", 5068, "pass:um-worker"),
            (pbx, mbx1, "udp", 30000, "pass:rtp"),
            (cas1, pbx, "tcp", 5060, "pass:um-gateway-sip"),
            (mbx1, pbx, "tcp", 5061, "pass:um-gateway-sips"),
            (pbx, cas1, "udp", 30000, "deny"),
            (pbx, cas1, "tcp", 5065, "deny"),
            (pbx, mbx1, "tcp", 5062, "deny"),
            (pbx, mbx1, "tcp", 5060, "deny"),
            (EXT, cas1, "tcp", 5060, "deny"),
            (EXT, mbx1, "udp", 30000, "deny"),
            (client, mbx1, "tcp", 5065, "deny"),
        ],
    );
}

#[test]
fn exchange2016_with_subscribed_edge() {
    let (mbx1, mbx2, edge, dc, lync, dns, client, lob, mgmt, sbc) = (
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.130",
        "192.0.2.5",
        "192.0.2.40",
        "192.0.2.153",
        "198.51.100.7",
        "198.51.100.200",
        "198.51.100.250",
        "198.51.100.240",
    );
    // Exchange Online's published mail ranges (not a documentation range: no packet is sent).
    let (exo, exo_v6) = ("40.107.22.5", "2a01:111:f403:2000::5");
    let (mbx1_v6, dc_v6, ext_v6) = ("2001:db8:21::21", "2001:db8:21::5", "2001:db8:ffff::9");
    run(
        "exchange2016-edge.toml",
        &[
            (EXT, mbx1, "tcp", 443, "pass:https"),
            (EXT, mbx1, "tcp", 80, "pass:http"),
            (EXT, mbx1, "tcp", 143, "pass:imap4"),
            (EXT, mbx2, "tcp", 993, "pass:imap4s"),
            (EXT, mbx1, "tcp", 587, "pass:smtp-submission"),
            (client, mbx2, "tcp", 443, "pass:https"),
            (EXT, edge, "tcp", 25, "pass:smtp-inbound"),
            (edge, mbx1, "tcp", 25, "pass:smtp-inbound-relay"),
            (mbx2, edge, "tcp", 25, "pass:smtp-outbound-relay"),
            (edge, "203.0.113.77", "tcp", 25, "pass:smtp-outbound"),
            (mbx1, edge, "tcp", 50636, "pass:edgesync"),
            (edge, dns, "udp", 53, "pass:dns"),
            (edge, dns, "tcp", 53, "pass:dns"),
            (mbx1, dns, "udp", 53, "pass:dns"),
            (mbx1, lync, "tcp", 5061, "pass:trusted"),
            (lync, mbx1, "tcp", 5062, "pass:trusted"),
            (mbx1, dc, "tcp", 389, "pass:trusted"),
            (dc, mbx1, "tcp", 49800, "pass:trusted"),
            (mbx1, mbx2, "tcp", 64327, "pass:trusted"),
            (mbx1, mbx2, "udp", 3343, "pass:trusted"),
            (ext_v6, mbx1_v6, "tcp", 443, "pass:https"),
            (mbx1_v6, dc_v6, "tcp", 3268, "pass:trusted"),
            (lob, mbx1, "tcp", 2525, "pass:lob-relay"),
            (mgmt, "192.0.2.1", "tcp", 22, "host:management"),
            (client, mbx1, "icmp", 8, "pass:icmp-echo"),
            (client, edge, "icmp", 8, "pass:icmp-echo"),
            (EXT, mbx1, "tcp", 25, "deny"),
            (EXT, edge, "tcp", 50636, "deny"),
            (edge, dc, "tcp", 389, "deny"),
            (edge, dc, "udp", 88, "deny"),
            (edge, mbx1, "tcp", 443, "deny"),
            (edge, mbx1, "tcp", 50636, "deny"),
            (EXT, mbx1, "tcp", 110, "deny"),
            (EXT, mbx1, "tcp", 995, "deny"),
            (EXT, mbx1, "tcp", 3389, "deny"),
            (EXT, mbx1, "tcp", 445, "deny"),
            (EXT, edge, "tcp", 443, "deny"),
            (EXT, edge, "tcp", 3389, "deny"),
            (lob, mbx2, "tcp", 2526, "deny"),
            (client, mbx1, "tcp", 2525, "deny"),
            (mbx1, "203.0.113.77", "tcp", 25, "deny"),
            (ext_v6, mbx1_v6, "tcp", 25, "deny"),
            (ext_v6, dc_v6, "tcp", 389, "deny"),
            (edge, lync, "tcp", 5061, "deny"),
            (EXT, dc, "udp", 53, "deny"),
            (edge, "203.0.113.77", "tcp", 443, "deny"),
            // Internal clients get what the Internet gets: the Edge's port 25 included.
            (client, edge, "tcp", 25, "pass:smtp-inbound"),
            (client, mbx1, "tcp", 25, "deny"),
            // Domain controllers serve the client network; never the Internet or the Edge.
            (client, dc, "tcp", 88, "pass:ad-kerberos"),
            (client, dc, "udp", 88, "pass:ad-kerberos"),
            (client, dc, "tcp", 445, "pass:ad-smb"),
            (client, dc, "tcp", 636, "pass:ad-ldaps"),
            (client, dc, "udp", 464, "pass:ad-kpasswd"),
            (client, dc, "tcp", 65535, "pass:ad-rpc"),
            (mgmt, dc, "tcp", 135, "pass:ad-rpc-epm"),
            // The invoicing system sits outside the client network: it is Internet to the DCs.
            (lob, dc, "tcp", 88, "deny"),
            (client, lync, "tcp", 5061, "deny"),
            (client, dc, "tcp", 49151, "deny"),
            (EXT, dc, "tcp", 88, "deny"),
            (edge, dc, "tcp", 445, "deny"),
            (edge, dc, "udp", 53, "deny"),
            // Unified Messaging on 2016: call router and worker on Mailbox; Mailbox places calls.
            (sbc, mbx1, "tcp", 5060, "pass:sip"),
            (sbc, mbx2, "tcp", 5061, "pass:sips"),
            (sbc, mbx1, "tcp", 5066, "pass:um-worker"),
            (sbc, mbx2, "udp", 1024, "pass:rtp"),
            (mbx1, sbc, "tcp", 5060, "pass:um-gateway-sip"),
            (mbx2, sbc, "tcp", 5061, "pass:um-gateway-sips"),
            (sbc, mbx1, "tcp", 5062, "deny"),
            (sbc, edge, "tcp", 5060, "deny"),
            (sbc, dc, "tcp", 389, "deny"),
            (edge, sbc, "tcp", 5060, "deny"),
            (EXT, mbx1, "tcp", 5061, "deny"),
            // Hybrid: Exchange Online's mail ranges reach Mailbox on 25 beside the Edge; Mailbox
            // reaches Exchange Online on 443 and revocation lists on 80.
            (exo, mbx1, "tcp", 25, "pass:hybrid-mail-from-exo"),
            (exo_v6, mbx1_v6, "tcp", 25, "pass:hybrid-mail-from-exo"),
            (exo, mbx2, "tcp", 443, "pass:https"),
            (exo, mbx1, "tcp", 2525, "deny"),
            (exo, dc, "tcp", 389, "deny"),
            (mbx1, "203.0.113.77", "tcp", 443, "pass:hybrid-outbound"),
            (mbx2, "203.0.113.77", "tcp", 80, "pass:hybrid-outbound"),
            (mbx1, "203.0.113.77", "tcp", 8080, "deny"),
            // The Edge's open-proxy test of a sending server.
            (
                edge,
                "203.0.113.77",
                "tcp",
                1080,
                "pass:edge-open-proxy-test",
            ),
            (
                edge,
                "203.0.113.77",
                "tcp",
                1081,
                "pass:edge-open-proxy-test",
            ),
            (edge, "203.0.113.77", "tcp", 23, "pass:edge-open-proxy-test"),
            (
                edge,
                "203.0.113.77",
                "tcp",
                3128,
                "pass:edge-open-proxy-test",
            ),
            (
                edge,
                "203.0.113.77",
                "tcp",
                6588,
                "pass:edge-open-proxy-test",
            ),
            (edge, "203.0.113.77", "tcp", 80, "pass:edge-open-proxy-test"),
            (edge, "203.0.113.77", "tcp", 8080, "deny"),
            (EXT, edge, "tcp", 1080, "deny"),
            (edge, mbx1, "tcp", 1080, "deny"),
        ],
    );
}

#[test]
fn exchange2010_with_static_rpc_ports() {
    let edge = "192.0.2.130";
    let (cas, hub, mbx, um, dc, dns, client, pbx) = (
        "192.0.2.11",
        "192.0.2.31",
        "192.0.2.21",
        "192.0.2.41",
        "192.0.2.5",
        "203.0.113.53",
        "198.51.100.7",
        "198.51.100.240",
    );
    run(
        "exchange2010-static-rpc.toml",
        &[
            (client, cas, "tcp", 135, "pass:rpc-epm"),
            (client, cas, "tcp", 59531, "pass:rpc-ca"),
            (client, cas, "tcp", 59532, "pass:rpc-ab"),
            (client, mbx, "tcp", 59531, "pass:rpc-ca"),
            (client, mbx, "tcp", 135, "pass:rpc-epm"),
            (EXT, cas, "tcp", 443, "pass:https"),
            (client, cas, "tcp", 443, "pass:https"),
            (EXT, cas, "tcp", 80, "pass:http"),
            (EXT, cas, "tcp", 110, "pass:pop3"),
            (EXT, cas, "tcp", 995, "pass:pop3s"),
            (EXT, hub, "tcp", 587, "pass:smtp-submission"),
            (client, hub, "tcp", 587, "pass:smtp-submission"),
            (EXT, cas, "tcp", 587, "deny"),
            (EXT, edge, "tcp", 25, "pass:smtp-inbound"),
            (edge, hub, "tcp", 25, "pass:smtp-inbound-relay"),
            (hub, edge, "tcp", 25, "pass:smtp-outbound-relay"),
            (edge, "203.0.113.77", "tcp", 25, "pass:smtp-outbound"),
            (hub, edge, "tcp", 50636, "pass:edgesync"),
            (edge, dns, "udp", 53, "pass:dns"),
            (edge, edge, "tcp", 25, "pass:smtp-edge-to-edge"),
            (EXT, hub, "tcp", 25, "deny"),
            (hub, "203.0.113.77", "tcp", 25, "deny"),
            (edge, hub, "tcp", 50636, "deny"),
            (edge, mbx, "tcp", 25, "deny"),
            (edge, cas, "tcp", 25, "deny"),
            (edge, dc, "tcp", 389, "deny"),
            (edge, um, "tcp", 5060, "deny"),
            (EXT, edge, "tcp", 50636, "deny"),
            (client, edge, "tcp", 25, "pass:smtp-inbound"),
            (client, hub, "tcp", 25, "deny"),
            (client, dc, "tcp", 88, "pass:ad-kerberos"),
            (client, dc, "tcp", 445, "pass:ad-smb"),
            (client, dc, "tcp", 3268, "pass:ad-gc"),
            (client, dc, "udp", 123, "pass:ad-ntp"),
            (pbx, dc, "tcp", 88, "deny"),
            (hub, dns, "udp", 53, "pass:dns"),
            (cas, dns, "udp", 53, "pass:dns"),
            (pbx, um, "tcp", 5060, "pass:sip"),
            (pbx, um, "tcp", 5061, "pass:sips"),
            (pbx, um, "udp", 20000, "pass:rtp"),
            (pbx, um, "tcp", 5065, "pass:um-worker"),
            (pbx, um, "tcp", 5068, "pass:um-worker"),
            (um, pbx, "tcp", 5060, "pass:um-gateway-sip"),
            (um, pbx, "tcp", 5061, "pass:um-gateway-sips"),
            (um, pbx, "tcp", 5065, "deny"),
            (pbx, um, "tcp", 5064, "deny"),
            (pbx, um, "tcp", 5069, "deny"),
            (pbx, hub, "tcp", 5065, "deny"),
            (cas, pbx, "tcp", 5060, "deny"),
            (um, hub, "tcp", 25, "pass:trusted"),
            (cas, mbx, "tcp", 6001, "pass:trusted"),
            (hub, dc, "tcp", 3268, "pass:trusted"),
            (mbx, dc, "udp", 389, "pass:trusted"),
            (client, cas, "icmp", 8, "pass:icmp-echo"),
            (cas, hub, "tcp", 2525, "pass:trusted"),
            (dc, um, "tcp", 135, "pass:trusted"),
            (EXT, cas, "tcp", 135, "deny"),
            (EXT, cas, "tcp", 59531, "deny"),
            (client, hub, "tcp", 59531, "deny"),
            (client, cas, "tcp", 59533, "deny"),
            (client, mbx, "tcp", 59532, "deny"),
            (EXT, mbx, "tcp", 443, "deny"),
            (EXT, cas, "tcp", 25, "deny"),
            (EXT, mbx, "tcp", 25, "deny"),
            (EXT, cas, "tcp", 143, "deny"),
            (EXT, um, "tcp", 5060, "deny"),
            (client, um, "tcp", 5060, "deny"),
            (pbx, cas, "tcp", 5060, "deny"),
            (pbx, mbx, "udp", 20000, "deny"),
            (mbx, "203.0.113.77", "tcp", 25, "deny"),
            (EXT, dc, "tcp", 445, "deny"),
            (EXT, hub, "tcp", 50636, "deny"),
            (hub, "203.0.113.77", "tcp", 443, "deny"),
            (EXT, cas, "tcp", 3389, "deny"),
        ],
    );
}

#[test]
fn exchange2019_with_imap4_and_ipv6() {
    let (mbx1, mbx2, dc1, dc2, dns, client) = (
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.5",
        "192.0.2.6",
        "203.0.113.53",
        "198.51.100.7",
    );
    let (mbx1_6, mbx2_6, dc1_6, dc2_6, dns_6, client_6, mgmt_6, ext_6, gw_6) = (
        "2001:db8:21::21",
        "2001:db8:21::22",
        "2001:db8:21::5",
        "2001:db8:21::6",
        "2001:db8:53::53",
        "2001:db8:100::7",
        "2001:db8:100::250",
        "2001:db8:ffff::9",
        "2001:db8:21::1",
    );
    run(
        "exchange2019-imap-ipv6.toml",
        &[
            (EXT, mbx1, "tcp", 443, "pass:https"),
            (ext_6, mbx1_6, "tcp", 443, "pass:https"),
            (client_6, mbx1_6, "tcp", 443, "pass:https"),
            (client, mbx2, "tcp", 993, "pass:imap4s"),
            (EXT, mbx1, "tcp", 143, "pass:imap4"),
            (ext_6, mbx2_6, "tcp", 993, "pass:imap4s"),
            (EXT, mbx1, "tcp", 587, "pass:smtp-submission"),
            (EXT, mbx1, "tcp", 25, "pass:smtp-inbound"),
            (ext_6, mbx1_6, "tcp", 25, "pass:smtp-inbound"),
            (mbx1, "203.0.113.77", "tcp", 25, "pass:smtp-outbound"),
            (mbx1_6, "2001:db8:ffff::25", "tcp", 25, "pass:smtp-outbound"),
            (mbx1, dns, "udp", 53, "pass:dns"),
            (mbx2_6, dns_6, "udp", 53, "pass:dns"),
            (mbx1_6, dns_6, "tcp", 53, "pass:dns"),
            (mbx1, mbx2, "tcp", 135, "pass:trusted"),
            (mbx1_6, dc1_6, "tcp", 88, "pass:trusted"),
            (mbx2, dc2, "udp", 389, "pass:trusted"),
            (dc2_6, mbx2_6, "tcp", 49152, "pass:trusted"),
            (dc1, mbx1, "udp", 53, "pass:trusted"),
            (client_6, mbx1_6, "icmp", 128, "pass:icmpv6-echo"),
            (client, mbx1, "icmp", 8, "pass:icmp-echo"),
            (mgmt_6, gw_6, "tcp", 22, "host:management"),
            (mgmt_6, gw_6, "tcp", 9720, "host:management"),
            (mgmt_6, mbx1_6, "icmp", 128, "pass:icmpv6-echo"),
            (mgmt_6, mbx1_6, "tcp", 443, "pass:https"),
            (client, EXT, "tcp", 443, "pass:transit"),
            (EXT, mbx1, "tcp", 80, "deny"),
            (ext_6, mbx1_6, "tcp", 80, "deny"),
            (EXT, mbx1, "tcp", 110, "deny"),
            (EXT, mbx1, "tcp", 995, "deny"),
            (EXT, mbx1, "tcp", 3389, "deny"),
            (ext_6, dc1_6, "tcp", 389, "deny"),
            (EXT, dc1, "udp", 53, "deny"),
            (client, mbx1, "tcp", 135, "deny"),
            (mbx1, "203.0.113.77", "tcp", 443, "pass:crl-and-updates"),
            (
                mbx1_6,
                "2001:db8:ffff::1",
                "tcp",
                80,
                "pass:crl-and-updates",
            ),
            (mbx1, "203.0.113.77", "tcp", 8080, "deny"),
            (mbx2_6, "2001:db8:ffff::1", "udp", 443, "deny"),
            (EXT, mbx1, "tcp", 49152, "deny"),
            // Dual-stack clients reach the domain controllers on both families.
            (client_6, dc1_6, "tcp", 88, "pass:ad-kerberos"),
            (client_6, dc2_6, "icmp", 128, "pass:ad-icmpv6-echo"),
            (ext_6, dc2_6, "icmp", 128, "deny"),
            (client, dc2, "udp", 389, "pass:ad-ldap"),
            (client_6, dc2_6, "tcp", 445, "pass:ad-smb"),
            (mgmt_6, dc1_6, "tcp", 636, "pass:ad-ldaps"),
            (client_6, dc1_6, "tcp", 3389, "deny"),
            (ext_6, dc1_6, "tcp", 88, "deny"),
            (client_6, mbx1_6, "tcp", 25, "pass:smtp-inbound"),
            (EXT, mbx1, "icmp", 8, "deny"),
            (ext_6, mbx1_6, "icmp", 128, "deny"),
            (EXT, mbx2, "tcp", 50636, "deny"),
            (client_6, mbx1_6, "tcp", 445, "deny"),
            (mbx1, dns, "udp", 123, "deny"),
            (mbx1_6, gw_6, "tcp", 22, "host:deny"),
            (ext_6, mbx2_6, "udp", 53, "deny"),
        ],
    );
}

/// The 2016 example with `domain_controller_access` set to `access`.
fn with_dc_access(access: &str) -> config::Config {
    with_dc_access_and(access, "")
}

/// The same, with `extra` appended to the config.
fn with_dc_access_and(access: &str, extra: &str) -> config::Config {
    let path = example_path("exchange2016-edge.toml");
    let text = std::fs::read_to_string(&path).unwrap() + extra;
    let text = text.replace(
        "domain_controller_access = \"clients\"",
        &format!("domain_controller_access = \"{access}\""),
    );
    let cfg = config::parse(&text, "exchange2016-edge.toml").unwrap();
    assert!(
        text.contains(&format!("domain_controller_access = \"{access}\"")),
        "the example changed shape"
    );
    cfg
}

#[test]
fn domain_controllers_serve_exactly_what_their_access_says() {
    let (mbx, edge, dc, client, dc_v6) = (
        "192.0.2.21",
        "192.0.2.130",
        "192.0.2.5",
        "198.51.100.7",
        "2001:db8:21::5",
    );
    // Exchange only: the clients lose the directory, Exchange keeps it.
    judge(
        "exchange-only",
        &with_dc_access("exchange-only"),
        &[
            (client, dc, "tcp", 88, "deny"),
            (client, dc, "tcp", 445, "deny"),
            (client, dc, "udp", 53, "deny"),
            (mbx, dc, "tcp", 389, "pass:trusted"),
            (EXT, dc, "tcp", 389, "deny"),
            (edge, dc, "tcp", 389, "deny"),
        ],
    );
    // Unfiltered: another firewall guards the DCs; exfw still keeps the Edge out of them and
    // Exchange's trust with them.
    judge(
        "unfiltered",
        &with_dc_access("unfiltered"),
        &[
            (client, dc, "tcp", 88, "pass:transit"),
            (EXT, dc, "tcp", 3389, "pass:transit"),
            ("2001:db8:ffff::9", dc_v6, "tcp", 389, "pass:transit"),
            (mbx, dc, "tcp", 389, "pass:trusted"),
            (dc, mbx, "tcp", 49800, "pass:trusted"),
            (edge, dc, "tcp", 389, "deny"),
            (edge, dc, "udp", 88, "deny"),
        ],
    );
    // A trust with a partner forest, whose DCs are external: the entry from `external` does
    // not hand the client networks the DC ports that "exchange-only" keeps from them.
    judge(
        "exchange-only with a trust",
        &with_dc_access_and(
            "exchange-only",
            "\n[[allow]]\nname = \"partner-trust\"\nfrom = [\"external\"]\nto = [\"dc\"]\nproto = \"tcp\"\nports = [88]\nreason = \"test: forest trust\"\n",
        ),
        &[
            (EXT, dc, "tcp", 88, "pass:partner-trust"),
            (client, dc, "tcp", 88, "deny"),
            (client, dc, "tcp", 445, "deny"),
        ],
    );
    let unfiltered = with_dc_access("unfiltered");
    assert!(
        unfiltered
            .warnings
            .iter()
            .any(|w| w.message.contains("domain controllers are not filtered")),
        "unfiltered domain controllers warn: {:?}",
        unfiltered.warnings
    );
    let bad = std::fs::read_to_string(example_path("exchange2016-edge.toml"))
        .unwrap()
        .replace(
            "domain_controller_access = \"clients\"",
            "domain_controller_access = \"everyone\"",
        );
    let error = config::parse(&bad, "bad.toml").unwrap_err().to_string();
    assert!(
        error.contains("domain_controller_access `everyone` is not known"),
        "{error}"
    );
}
