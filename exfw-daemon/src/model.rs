//! The Exchange role model: roles, which are trusted, and the port catalogue per version and
//! option, each entry carrying the document and table row that justify it.
//!
//! Ground truth: Microsoft's port tables and support statements (`source`), read row by row in
//! docs/exchange-model.md, which also gives the reason for every choice exfw makes where they
//! are silent.

use exfw_common::proto;

use exfw_common::PortRange;

use crate::config::{DcAccess, ExchangeVersion, Organization};

pub use exfw_common::Role;

/// A document the catalogue cites: its title as published and its public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Document {
    /// Publisher and title.
    pub title: &'static str,
    /// Where to read it.
    pub url: &'static str,
}

/// The documents the catalogue cites (docs/exchange-model.md lists every row taken from each).
pub mod source {
    use super::Document;

    /// The port tables for Exchange 2013.
    pub const PORTS_2013: Document = Document {
        title: "Microsoft, \"Network ports for clients and mail flow in Exchange 2013\"",
        url: "https://learn.microsoft.com/en-us/exchange/network-ports-for-clients-and-mail-flow-in-exchange-2013-exchange-2013-help",
    };
    /// The port tables for Exchange 2016, 2019 and Subscription Edition.
    pub const PORTS_2016: Document = Document {
        title: "Microsoft, \"Network ports for clients and mail flow in Exchange\" (Exchange 2016 and later)",
        url: "https://learn.microsoft.com/en-us/exchange/plan-and-deploy/deployment-ref/network-ports",
    };
    /// The product group's support statement on firewalls between Exchange servers.
    pub const FIREWALL_SUPPORT: Document = Document {
        title: "Exchange Team Blog, \"Exchange, Firewalls, and Support... Oh, my!\" (18 February 2013)",
        url: "https://techcommunity.microsoft.com/t5/exchange-team-blog/exchange-firewalls-and-support-8230-oh-my/ba-p/595710",
    };
    /// The data paths of Exchange 2010.
    pub const PORT_REFERENCE_2010: Document = Document {
        title: "Microsoft, \"Exchange Network Port Reference\" (Exchange 2010)",
        url: "https://learn.microsoft.com/en-us/previous-versions/office/exchange-server-2010/bb331973(v=exchg.141)",
    };
    /// Unified Messaging ports of Exchange 2010.
    pub const UM_PORTS_2010: Document = Document {
        title: "Microsoft, \"Understanding Protocols, Ports, and Services in Unified Messaging\" (Exchange 2010)",
        url: "https://learn.microsoft.com/en-us/previous-versions/office/exchange-server-2010/aa998265(v=exchg.141)",
    };
    /// Unified Messaging ports of Exchange 2013 and 2016.
    pub const UM_PORTS: Document = Document {
        title: "Microsoft, \"UM protocols, ports, and services\" (Exchange 2013, 2016)",
        url: "https://learn.microsoft.com/en-us/exchange/um-protocols-ports-and-services-exchange-2013-help",
    };
    /// Exchange's side of the VoIP gateway.
    pub const UM_GATEWAY: Document = Document {
        title: "Microsoft, \"Connect UM to a supported VoIP gateway\" (Exchange 2013, 2016)",
        url: "https://learn.microsoft.com/en-us/exchange/connect-um-to-a-supported-voip-gateway-exchange-2013-help",
    };
    /// The ports of Windows services, domain controllers' among them.
    pub const WINDOWS_PORTS: Document = Document {
        title: "Microsoft, \"Service overview and network port requirements for Windows\"",
        url: "https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/service-overview-and-network-port-requirements",
    };
    /// What clients need of a domain controller through a firewall.
    pub const AD_FIREWALL: Document = Document {
        title: "Microsoft, \"How to configure a firewall for Active Directory domains and trusts\"",
        url: "https://learn.microsoft.com/en-us/troubleshoot/windows-server/active-directory/config-firewall-for-ad-domains-and-trusts",
    };
    /// exfw's own choices where Microsoft is silent, each with its reason.
    pub const EXFW: Document = Document {
        title: "exfw, \"The Exchange model\" (docs/exchange-model.md)",
        url: "file:///usr/share/doc/exfw/exchange-model.md",
    };

    /// Every document, in the order docs/exchange-model.md lists them.
    pub const ALL: [Document; 10] = [
        PORTS_2013,
        PORTS_2016,
        FIREWALL_SUPPORT,
        PORT_REFERENCE_2010,
        UM_PORTS_2010,
        UM_PORTS,
        UM_GATEWAY,
        WINDOWS_PORTS,
        AD_FIREWALL,
        EXFW,
    ];
}

/// Why a catalogue entry exists: a document and the table row or passage in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Provenance {
    /// The document (publisher and title), or "config" for an `[[allow]]` entry.
    pub document: String,
    /// Where the document is published (empty for the config).
    pub url: String,
    /// The table row or passage.
    pub row: String,
}

impl Provenance {
    /// A row of one of the documents the catalogue cites.
    pub fn cite(document: Document, row: &str) -> Self {
        Provenance {
            document: document.title.to_string(),
            url: document.url.to_string(),
            row: row.to_string(),
        }
    }

    /// An entry of the operator's config.
    pub fn config(row: String) -> Self {
        Provenance {
            document: "config".into(),
            url: String::new(),
            row,
        }
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.document, self.row)
    }
}

/// One allowed service: from these roles to that role on a protocol and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service name (https, smtp-inbound, ...).
    pub name: String,
    /// IP protocol number.
    pub proto: u8,
    /// Destination ports (ICMP: types).
    pub ports: PortRange,
    /// Source roles.
    pub from: Vec<Role>,
    /// Destination role.
    pub to: Role,
    /// Why.
    pub provenance: Provenance,
}

fn svc(
    name: &str,
    proto: u8,
    ports: PortRange,
    from: &[Role],
    to: Role,
    provenance: Provenance,
) -> Service {
    Service {
        name: name.into(),
        proto,
        ports,
        from: from.to_vec(),
        to,
        provenance,
    }
}

/// The catalogue for an organisation: every service its version and options allow.
pub fn catalogue(org: &Organization) -> Vec<Service> {
    use Role::*;
    use source::*;
    let v = org.exchange;
    let tcp = proto::TCP;
    let udp = proto::UDP;
    let one = PortRange::single;
    // Client access: CAS up to 2013, the Mailbox role from 2016 on.
    let client_access = if v.client_access_on_mailbox() {
        Mailbox
    } else {
        Cas
    };
    // The transport rows that name "Mailbox" belong to Hub Transport on 2010.
    let transport = if v == ExchangeVersion::V2010 {
        Hub
    } else {
        Mailbox
    };
    // Microsoft's port page for this version (2010 has none for clients and mail flow: its
    // client ports are the 2013 table's, docs/exchange-model.md).
    let ports_doc = if v.client_access_on_mailbox() {
        PORTS_2016
    } else {
        PORTS_2013
    };
    let client_row = |row: &str| {
        // Rows that carry their own closing quote name the ports after it.
        let row = if row.contains('"') {
            row.to_string()
        } else {
            format!("{row}\"")
        };
        Provenance::cite(
            ports_doc,
            &format!("table \"Network ports required for clients and services\", row \"{row}"),
        )
    };
    // The 2013 page says "Outlook Web App"; the 2016 page its new name.
    let owa = if v.client_access_on_mailbox() {
        "Outlook on the web (formerly known as Outlook Web App)"
    } else {
        "Outlook Web App"
    };
    let anyone = [External, Clients];
    let mut out = vec![svc(
        "https",
        tcp,
        one(443),
        &anyone,
        client_access,
        client_row(&format!(
            "Encrypted web connections are used by the following clients and services: Autodiscover service, Exchange ActiveSync, Exchange Web Services (EWS), Offline address book distribution, Outlook Anywhere (RPC over HTTP), Outlook MAPI over HTTP, {owa}\", 443/TCP (HTTPS)"
        )),
    )];
    if org.http {
        out.push(svc("http", tcp, one(80), &anyone, client_access, client_row(&format!("Unencrypted web connections are used by the following clients and services: Internet calendar publishing, {owa} (redirect to 443/TCP), Autodiscover (fallback when 443/TCP isn't available)\", 80/TCP (HTTP)"))));
    }
    if org.imap4 {
        out.push(svc(
            "imap4",
            tcp,
            one(143),
            &anyone,
            client_access,
            client_row("IMAP4 clients\", 143/TCP (IMAP)"),
        ));
        out.push(svc(
            "imap4s",
            tcp,
            one(993),
            &anyone,
            client_access,
            client_row("IMAP4 clients\", 993/TCP (secure IMAP)"),
        ));
    }
    if org.pop3 {
        out.push(svc(
            "pop3",
            tcp,
            one(110),
            &anyone,
            client_access,
            client_row("POP3 clients\", 110/TCP (POP3)"),
        ));
        out.push(svc(
            "pop3s",
            tcp,
            one(995),
            &anyone,
            client_access,
            client_row("POP3 clients\", 995/TCP (secure POP3)"),
        ));
    }
    // Client submission: the "Client Frontend" connector of a 2013 or later Client Access
    // service; on 2010 the "Client <server>" receive connector of Hub Transport (a 2010 Client
    // Access server runs no SMTP listener).
    let (submission_to, submission_why) = if v == ExchangeVersion::V2010 {
        (
            Hub,
            Provenance::cite(
                PORT_REFERENCE_2010,
                "table \"Transport server data paths\": SMTP clients submitting to the Hub Transport server, 587/TCP (its \"Client <server>\" receive connector)",
            ),
        )
    } else {
        (
            client_access,
            client_row(
                "SMTP clients (authenticated)\", 587/TCP (authenticated SMTP), the default Receive connector \"Client Frontend <server>\"",
            ),
        )
    };
    out.push(svc(
        "smtp-submission",
        tcp,
        one(587),
        &anyone,
        submission_to,
        submission_why,
    ));
    if org.smtp_client_on_25 {
        // With a subscribed Edge, Internet mail must go through the Edge's filtering: port 25
        // on the internal servers is then for the client networks only.
        let from: &[Role] = if org.edge_subscribed {
            &[Clients]
        } else {
            &anyone
        };
        out.push(svc(
            "smtp-client-25",
            tcp,
            one(25),
            from,
            submission_to,
            Provenance::cite(
                EXFW,
                "section \"Client submission on port 25\": the SMTP clients (authenticated) row with the client connector bound to 25; from the client networks only when an Edge is subscribed",
            ),
        ));
    }
    if let Some((rpc_ca, rpc_ab)) = org.static_rpc_ports {
        let mapi = |what: &str| {
            Provenance::cite(
                FIREWALL_SUPPORT,
                &format!(
                    "Exchange 2010 Outlook clients in MAPI/RPC mode with static ports: \"{what}\""
                ),
            )
        };
        for to in [Cas, Mailbox] {
            out.push(svc(
                "rpc-epm",
                tcp,
                one(135),
                &[Clients],
                to,
                mapi("TCP 135 for the Endpoint Mapper"),
            ));
            out.push(svc(
                "rpc-ca",
                tcp,
                one(rpc_ca),
                &[Clients],
                to,
                mapi("TCP <your choice #2> for the RPC Client Access service"),
            ));
        }
        out.push(svc(
            "rpc-ab",
            tcp,
            one(rpc_ab),
            &[Clients],
            Cas,
            mapi("TCP <your choice #1> for the Address Book service"),
        ));
    }
    let edge_row = |row: &str| {
        Provenance::cite(
            ports_doc,
            &format!(
                "table \"Network ports required for mail flow with Edge Transport servers\", row \"{row}\""
            ),
        )
    };
    let no_edge_row = |row: &str| {
        Provenance::cite(
            ports_doc,
            &format!(
                "table \"Network ports required for mail flow (no Edge Transport servers)\", row \"{row}\""
            ),
        )
    };
    let hub_row = |row: &str| {
        Provenance::cite(
            PORT_REFERENCE_2010,
            &format!("table \"Transport server data paths\", row \"{row}\""),
        )
    };
    if org.edge_subscribed {
        out.push(svc(
            "smtp-inbound",
            tcp,
            one(25),
            &[External],
            Edge,
            edge_row("Inbound mail - Internet to Edge Transport server"),
        ));
        out.push(svc(
            "smtp-inbound-relay",
            tcp,
            one(25),
            &[Edge],
            transport,
            if transport == Hub {
                hub_row("Edge Transport server to Hub Transport server")
            } else {
                edge_row("Inbound mail - Edge Transport server to internal Exchange organization")
            },
        ));
        out.push(svc(
            "smtp-outbound-relay",
            tcp,
            one(25),
            &[transport],
            Edge,
            if transport == Hub {
                hub_row("Hub Transport server to Edge Transport server")
            } else {
                edge_row("Outbound mail - Internal Exchange organization to Edge Transport server")
            },
        ));
        out.push(svc(
            "smtp-outbound",
            tcp,
            one(25),
            &[Edge],
            External,
            edge_row(if ports_doc == PORTS_2016 {
                "Outbound mail - Edge Transport server to internet"
            } else {
                "Outbound mail - Edge Transport server to Internet"
            }),
        ));
        out.push(svc(
            "edgesync",
            tcp,
            one(50636),
            &[transport],
            Edge,
            if transport == Hub {
                hub_row("Microsoft Exchange EdgeSync service from Hub Transport server to Edge Transport server")
            } else {
                edge_row("EdgeSync synchronization")
            },
        ));
        let dns = edge_row("DNS for name resolution of the next mail hop (not pictured)");
        out.push(svc("dns", udp, one(53), &[Edge], Dns, dns.clone()));
        out.push(svc("dns", tcp, one(53), &[Edge], Dns, dns));
        if v == ExchangeVersion::V2010 {
            out.push(svc(
                "smtp-edge-to-edge",
                tcp,
                one(25),
                &[Edge],
                Edge,
                hub_row("Edge Transport server to Edge Transport server"),
            ));
        }
    } else {
        let inbound_to = if v == ExchangeVersion::V2010 {
            Hub
        } else {
            client_access
        };
        // Exchange 2010's port reference has no row for Internet mail without an Edge: the
        // Hub Transport server takes the 2013 table's rows (docs/exchange-model.md).
        let hub_reading = |row: &str| {
            Provenance::cite(
                EXFW,
                &format!(
                    "section \"Exchange 2010 without an Edge\": the Hub Transport server takes the row \"{row}\" of {}, table \"Network ports required for mail flow (no Edge Transport servers)\"",
                    PORTS_2013.title
                ),
            )
        };
        out.push(svc(
            "smtp-inbound",
            tcp,
            one(25),
            &[External],
            inbound_to,
            if v == ExchangeVersion::V2010 {
                hub_reading("Inbound mail")
            } else {
                no_edge_row("Inbound mail")
            },
        ));
        out.push(svc(
            "smtp-outbound",
            tcp,
            one(25),
            &[transport],
            External,
            if v == ExchangeVersion::V2010 {
                hub_reading("Outbound mail")
            } else {
                no_edge_row("Outbound mail")
            },
        ));
        // A 2013 Client Access server's Front End Transport; 2010 has no such proxy, and from
        // 2016 the proxy runs on the Mailbox server, which sends outbound mail anyway.
        if org.outbound_proxy_through_cas && v == ExchangeVersion::V2013 {
            out.push(svc(
                "smtp-outbound-proxy",
                tcp,
                one(25),
                &[client_access],
                External,
                no_edge_row("Outbound mail (if routed through the Client Access server)"),
            ));
        }
    }
    // All internal Exchange servers resolve names; the Internet-facing ones the next hop.
    let internal: Vec<Role> = [Cas, Mailbox, Hub, Um]
        .into_iter()
        .filter(|r| v.role_missing(*r).is_none())
        .collect();
    let resolution = Provenance::cite(
        ports_doc,
        "section \"Name resolution\" (\"all internal Exchange servers must be able to resolve internal host names\") and row \"DNS for name resolution of the next mail hop (not pictured)\", 53/UDP, 53/TCP",
    );
    out.push(svc("dns", udp, one(53), &internal, Dns, resolution.clone()));
    out.push(svc("dns", tcp, one(53), &internal, Dns, resolution));
    if org.unified_messaging {
        unified_messaging(v, &mut out);
    }
    if org.domain_controller_access == DcAccess::Clients {
        directory_services(&mut out);
    }
    if org.icmp_echo {
        let servers: Vec<Role> = [Cas, Mailbox, Hub, Um, Edge]
            .into_iter()
            .filter(|r| v.role_missing(*r).is_none())
            .collect();
        let why = Provenance::cite(
            EXFW,
            "section \"ICMP\": echo is configurable (icmp_echo), from internal clients and management hosts",
        );
        for to in servers {
            out.push(svc(
                "icmp-echo",
                proto::ICMP,
                one(8),
                &[Clients, Management],
                to,
                why.clone(),
            ));
            out.push(svc(
                "icmpv6-echo",
                proto::ICMPV6,
                one(128),
                &[Clients, Management],
                to,
                why.clone(),
            ));
        }
    }
    clients_get_what_the_internet_gets(&mut out);
    out
}

/// Internal clients get at least every service the Internet gets (docs/exchange-model.md,
/// "Internal clients and the Internet"): Microsoft allows restricting internal clients, but a
/// client network that gets less than the Internet only pushes its users out to it.
fn clients_get_what_the_internet_gets(services: &mut [Service]) {
    for s in services {
        if s.from.contains(&Role::External)
            && s.to != Role::External
            && !s.from.contains(&Role::Clients)
        {
            s.from.push(Role::Clients);
        }
    }
}

/// Unified Messaging (2010 to 2016): SIP from the gateways to the call router and the worker
/// process, RTP to the worker, and SIP from Exchange to the gateways for the calls it places.
fn unified_messaging(v: ExchangeVersion, out: &mut Vec<Service>) {
    use Role::*;
    use source::*;
    let tcp = proto::TCP;
    let one = PortRange::single;
    let (router, worker) = match v {
        ExchangeVersion::V2010 => (Um, Um),
        ExchangeVersion::V2013 => (Cas, Mailbox),
        _ => (Mailbox, Mailbox),
    };
    let listening = |row: &str| {
        if v == ExchangeVersion::V2010 {
            Provenance::cite(UM_PORTS_2010, row)
        } else {
            Provenance::cite(
                UM_PORTS,
                &format!("table \"UM listening ports\", row \"{row}\""),
            )
        }
    };
    let (router_row, worker_row, rtp_row) = if v == ExchangeVersion::V2010 {
        (
            "\"the Microsoft Exchange Unified Messaging service listens on both TCP port 5060 in Unsecured mode and TCP port 5061 when mutual Transport Layer Security (mutual TLS) is used\"",
            "\"Each UM worker process that's created listens on port 5065 and 5067 (unsecured) and 5066 and 5068 (secured)\"",
            "RTP from the IP gateway or IP PBX to the worker process \"will use a valid UDP port that ranges from 1024 through 65535\"",
        )
    } else if v == ExchangeVersion::V2013 {
        (
            "SIP (Client Access server - Microsoft Unified Messaging Call Router service)",
            "SIP (Mailbox server - UM worker process)",
            "RTP (Mailbox server - UM worker process)",
        )
    } else {
        (
            "SIP (Client Access server - Microsoft Unified Messaging Call Router service)\" (from Exchange 2016 the call router runs on the Mailbox server",
            "SIP (Mailbox server - UM worker process)",
            "RTP (Mailbox server - UM worker process)",
        )
    };
    let gateways = [UmGateway];
    out.push(svc(
        "sip",
        tcp,
        one(5060),
        &gateways,
        router,
        listening(router_row),
    ));
    out.push(svc(
        "sips",
        tcp,
        one(5061),
        &gateways,
        router,
        listening(router_row),
    ));
    // The call router hands each call to a worker process, which the gateway then reaches
    // directly: 5065/5067 TCP, 5066/5068 mutual TLS.
    out.push(svc(
        "um-worker",
        tcp,
        PortRange {
            first: 5065,
            last: 5068,
        },
        &gateways,
        worker,
        listening(worker_row),
    ));
    out.push(svc(
        "rtp",
        proto::UDP,
        PortRange {
            first: 1024,
            last: 65535,
        },
        &gateways,
        worker,
        listening(rtp_row),
    ));
    // Calls Exchange places (Play on Phone, transfers, the OPTIONS probe): SIP to the gateway.
    let mut callers = vec![router, worker];
    callers.dedup();
    let call = Provenance::cite(
        UM_GATEWAY,
        "\"You must also configure the Client Access and Mailbox servers to communicate with the VoIP gateways, IP PBXs, SIP-enabled PBXs, or SBCs\"; the gateway's SIP listening port is 5060/TCP, 5061/TCP with mutual TLS",
    );
    for (name, port) in [("um-gateway-sip", 5060), ("um-gateway-sips", 5061)] {
        out.push(svc(name, tcp, one(port), &callers, UmGateway, call.clone()));
    }
}

/// What a domain-joined client needs of its domain controllers (logon, Group Policy, name
/// resolution, time), from the client networks and management hosts; never from the Internet
/// or the Edge.
fn directory_services(out: &mut Vec<Service>) {
    use Role::*;
    use source::*;
    let (tcp, udp) = (proto::TCP, proto::UDP);
    let row = |server_port: &str, service: &str| {
        Provenance::cite(
            AD_FIREWALL,
            &format!(
                "table under \"Windows Server 2008 and later versions\" (Client Port(s) | Server Port | Service), row \"{server_port} | {service}\""
            ),
        )
    };
    let from = [Clients, Management];
    let one = PortRange::single;
    let dns = row("53/TCP/UDP", "DNS");
    let kerberos = row("88/TCP/UDP", "Kerberos");
    let ldap = row("389/TCP/UDP", "LDAP");
    let kpasswd = row("464/TCP/UDP", "Kerberos password change");
    // SMB: the trusts table marks it "trust creation only"; members need it for SYSVOL.
    let smb = Provenance::cite(
        WINDOWS_PORTS,
        "section \"Group Policy\" (\"a client computer must be able to contact a domain controller over the Kerberos, LDAP, SMB, and RPC protocols\"), row \"SMB | TCP | 445\"",
    );
    // The LDAP client's keep-alive ping and the redirector's reachability check.
    let ping = Provenance::cite(
        AD_FIREWALL,
        "section \"Active Directory\": \"The Microsoft LDAP client uses ICMP ping when a LDAP request is pending for extended time\" (<any> ICMP -> DC IP addr = allow)",
    );
    for (name, protocol, ports, why) in [
        ("ad-icmp-echo", proto::ICMP, one(8), ping.clone()),
        ("ad-icmpv6-echo", proto::ICMPV6, one(128), ping),
        ("ad-dns", udp, one(53), dns.clone()),
        ("ad-dns", tcp, one(53), dns),
        ("ad-kerberos", udp, one(88), kerberos.clone()),
        ("ad-kerberos", tcp, one(88), kerberos),
        ("ad-ntp", udp, one(123), row("123/UDP", "W32Time")),
        (
            "ad-rpc-epm",
            tcp,
            one(135),
            row("135/TCP", "RPC Endpoint Mapper"),
        ),
        ("ad-ldap", udp, one(389), ldap.clone()),
        ("ad-ldap", tcp, one(389), ldap),
        ("ad-smb", tcp, one(445), smb),
        ("ad-kpasswd", udp, one(464), kpasswd.clone()),
        ("ad-kpasswd", tcp, one(464), kpasswd),
        ("ad-ldaps", tcp, one(636), row("636/TCP", "LDAP SSL")),
        (
            "ad-gc",
            tcp,
            PortRange {
                first: 3268,
                last: 3269,
            },
            row("3268/TCP | LDAP GC\" and \"3269/TCP", "LDAP GC SSL"),
        ),
        (
            "ad-rpc",
            tcp,
            PortRange {
                first: 49152,
                last: 65535,
            },
            row("49152-65535/TCP", "RPC for LSA, SAM, NetLogon (*)"),
        ),
    ] {
        out.push(svc(name, protocol, ports, &from, Dc, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(exchange: ExchangeVersion, edge: bool) -> Organization {
        Organization {
            exchange,
            edge_subscribed: edge,
            pop3: false,
            imap4: false,
            http: true,
            smtp_client_on_25: false,
            outbound_proxy_through_cas: false,
            static_rpc_ports: None,
            unified_messaging: false,
            icmp_echo: false,
            domain_controller_access: DcAccess::Clients,
        }
    }

    fn has(c: &[Service], name: &str, to: Role, port: u16) -> bool {
        c.iter()
            .any(|s| s.name == name && s.to == to && s.ports.contains(port))
    }

    #[test]
    fn client_access_moves_to_mailbox_in_2016() {
        assert!(has(
            &catalogue(&org(ExchangeVersion::V2013, false)),
            "https",
            Role::Cas,
            443
        ));
        assert!(has(
            &catalogue(&org(ExchangeVersion::V2016, false)),
            "https",
            Role::Mailbox,
            443
        ));
        assert!(
            !catalogue(&org(ExchangeVersion::V2019, false))
                .iter()
                .any(|s| s.to == Role::Cas)
        );
    }

    #[test]
    fn a_subscribed_edge_takes_inbound_smtp_away_from_client_access() {
        let c = catalogue(&org(ExchangeVersion::V2016, true));
        assert!(has(&c, "smtp-inbound", Role::Edge, 25));
        assert!(!c.iter().any(|s| s.from.contains(&Role::External)
            && s.to == Role::Mailbox
            && s.ports.contains(25)));
        assert!(has(&c, "edgesync", Role::Edge, 50636));
        assert!(
            !c.iter()
                .any(|s| s.from.contains(&Role::External) && s.ports.contains(50636))
        );
        assert!(
            !c.iter()
                .any(|s| s.from.contains(&Role::Edge) && s.to == Role::Dc)
        );
    }

    #[test]
    fn client_smtp_on_25_with_an_edge_is_for_client_networks_only() {
        for edge in [false, true] {
            let mut o = org(ExchangeVersion::V2016, edge);
            o.smtp_client_on_25 = true;
            let c = catalogue(&o);
            let on_25 = c.iter().find(|s| s.name == "smtp-client-25").unwrap();
            assert!(on_25.from.contains(&Role::Clients));
            // With an Edge, Internet mail must not bypass its filtering.
            assert_eq!(on_25.from.contains(&Role::External), !edge);
        }
    }

    #[test]
    fn exchange_2010_submits_on_hub_and_runs_um_workers() {
        let mut o = org(ExchangeVersion::V2010, false);
        o.unified_messaging = true;
        let c = catalogue(&o);
        assert!(has(&c, "smtp-submission", Role::Hub, 587));
        assert!(!c.iter().any(|s| s.to == Role::Cas && s.ports.contains(587)));
        assert!(has(&c, "um-worker", Role::Um, 5065));
        assert!(has(&c, "um-worker", Role::Um, 5068));
        assert!(has(&c, "um-gateway-sip", Role::UmGateway, 5060));
        assert!(has(&c, "um-gateway-sips", Role::UmGateway, 5061));
        // 2016: the Mailbox server calls the gateway.
        let mut o = org(ExchangeVersion::V2016, false);
        o.unified_messaging = true;
        let c = catalogue(&o);
        let sip = c.iter().find(|s| s.name == "um-gateway-sip").unwrap();
        assert_eq!(sip.from, vec![Role::Mailbox]);
    }

    /// Every organisation shape the options can describe.
    fn every_shape() -> Vec<Organization> {
        let mut out = Vec::new();
        for v in [
            ExchangeVersion::V2010,
            ExchangeVersion::V2013,
            ExchangeVersion::V2016,
            ExchangeVersion::V2019,
        ] {
            for bits in 0..64u32 {
                let mut o = org(v, bits & 1 != 0);
                o.smtp_client_on_25 = bits & 2 != 0;
                o.outbound_proxy_through_cas = bits & 4 != 0;
                o.unified_messaging = bits & 8 != 0 && v < ExchangeVersion::V2019;
                o.pop3 = bits & 16 != 0;
                o.imap4 = bits & 16 != 0;
                o.domain_controller_access = if bits & 32 != 0 {
                    DcAccess::ExchangeOnly
                } else {
                    DcAccess::Clients
                };
                out.push(o);
            }
        }
        out
    }

    #[test]
    fn internal_clients_get_every_service_the_internet_gets() {
        for o in every_shape() {
            for s in catalogue(&o) {
                if s.from.contains(&Role::External) && s.to != Role::External {
                    assert!(s.from.contains(&Role::Clients), "{o:?}: {s:?}");
                }
            }
        }
    }

    #[test]
    fn domain_controllers_serve_clients_never_the_internet_or_the_edge() {
        for o in every_shape() {
            let to_dc: Vec<Service> = catalogue(&o)
                .into_iter()
                .filter(|s| s.to == Role::Dc)
                .collect();
            for s in &to_dc {
                assert_eq!(s.from, vec![Role::Clients, Role::Management], "{s:?}");
            }
            let has = |proto, port| {
                to_dc
                    .iter()
                    .any(|s| s.proto == proto && s.ports.contains(port))
            };
            let clients = o.domain_controller_access == DcAccess::Clients;
            for (p, port) in [
                (proto::UDP, 53),
                (proto::TCP, 88),
                (proto::UDP, 88),
                (proto::UDP, 123),
                (proto::TCP, 135),
                (proto::UDP, 389),
                (proto::TCP, 389),
                (proto::TCP, 445),
                (proto::TCP, 464),
                (proto::TCP, 636),
                (proto::TCP, 3268),
                (proto::TCP, 3269),
                (proto::TCP, 49152),
                (proto::TCP, 65535),
            ] {
                assert_eq!(has(p, port), clients, "{p}/{port} {o:?}");
            }
            assert!(!has(proto::TCP, 3389) && !has(proto::TCP, 49151));
        }
    }

    #[test]
    fn every_entry_cites_a_source() {
        for v in [
            ExchangeVersion::V2010,
            ExchangeVersion::V2013,
            ExchangeVersion::V2016,
        ] {
            let mut o = org(v, true);
            o.unified_messaging = true;
            o.icmp_echo = true;
            for s in catalogue(&o) {
                assert!(
                    !s.provenance.document.is_empty() && !s.provenance.row.is_empty(),
                    "{s:?}"
                );
                // A public address, never a file of somebody's notes.
                assert!(
                    source::ALL
                        .iter()
                        .any(|d| d.title == s.provenance.document && d.url == s.provenance.url),
                    "{s:?}"
                );
                assert!(!s.provenance.row.contains("seed"), "{s:?}");
            }
        }
    }
}
