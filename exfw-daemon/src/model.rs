//! The Exchange role model: roles, which are trusted, and the port catalogue per version and
//! option, each entry carrying the document and table row that justify it.
//!
//! Ground truth: shared/seeds (Microsoft's port tables and support statements), summarised in
//! shared/reference/exchange-role-model.md.

use exfw_common::proto;

use crate::{
    config::{ExchangeVersion, Organization},
    policy::PortRange,
};

/// A role an address can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Client Access server (2010, 2013).
    Cas,
    /// Mailbox server (2016 and later: also client access and front-end transport).
    Mailbox,
    /// Hub Transport server (2010).
    Hub,
    /// Unified Messaging server (2010).
    Um,
    /// Edge Transport server in the perimeter: restricted.
    Edge,
    /// Domain controller / global catalog.
    Dc,
    /// Lync / Skype for Business server.
    Lync,
    /// DNS server used by Exchange.
    Dns,
    /// Internal client networks.
    Clients,
    /// UM IP gateways and IP-PBXs.
    UmGateway,
    /// Administrators' networks.
    Management,
    /// The gateway's own addresses.
    Gateway,
    /// Networks the servers live in: addresses no host claims there are protected too.
    ProtectedNetwork,
    /// Everything unlisted: the Internet, partner forests.
    External,
}

impl Role {
    /// Roles a `[[server]]` can hold.
    pub const SERVER_ROLES: [Role; 5] = [Role::Cas, Role::Mailbox, Role::Hub, Role::Um, Role::Edge];
    /// Roles an `[[allow]]` entry can name.
    pub const ENDPOINT_ROLES: [Role; 14] = [
        Role::Cas,
        Role::Mailbox,
        Role::Hub,
        Role::Um,
        Role::Edge,
        Role::Dc,
        Role::Lync,
        Role::Dns,
        Role::Clients,
        Role::UmGateway,
        Role::Management,
        Role::Gateway,
        Role::ProtectedNetwork,
        Role::External,
    ];

    /// The name used in configs, explanations and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Cas => "cas",
            Role::Mailbox => "mailbox",
            Role::Hub => "hub",
            Role::Um => "um",
            Role::Edge => "edge",
            Role::Dc => "dc",
            Role::Lync => "lync",
            Role::Dns => "dns",
            Role::Clients => "clients",
            Role::UmGateway => "um-gateway",
            Role::Management => "management",
            Role::Gateway => "gateway",
            Role::ProtectedNetwork => "protected-network",
            Role::External => "external",
        }
    }

    /// A server role by name.
    pub fn server_role(name: &str) -> Option<Role> {
        Self::SERVER_ROLES.into_iter().find(|r| r.name() == name)
    }

    /// Any role by name.
    pub fn endpoint_role(name: &str) -> Option<Role> {
        Self::ENDPOINT_ROLES.into_iter().find(|r| r.name() == name)
    }

    /// Why this server role does not exist in `version`, if it does not.
    pub fn unavailable_in(self, version: ExchangeVersion) -> Option<String> {
        match self {
            Role::Cas if version.client_access_on_mailbox() => Some(format!(
                "Exchange {} has no separate Client Access role: client access runs on the Mailbox role; use \"mailbox\"",
                version.name()
            )),
            Role::Hub | Role::Um if version != ExchangeVersion::V2010 => Some(format!(
                "the {} role exists only up to Exchange 2010; in Exchange {} it runs on the Mailbox role; use \"mailbox\"",
                if self == Role::Hub {
                    "Hub Transport"
                } else {
                    "Unified Messaging"
                },
                version.name()
            )),
            _ => None,
        }
    }

    /// Trusted roles pass to each other on every port and protocol (seeds 001, 002).
    pub fn trusted(self) -> bool {
        matches!(
            self,
            Role::Cas | Role::Mailbox | Role::Hub | Role::Um | Role::Dc | Role::Lync
        )
    }

    /// Protected roles: traffic to or from them is subject to the policy.
    pub fn protected(self) -> bool {
        self.trusted() || matches!(self, Role::Edge | Role::ProtectedNetwork)
    }

    /// The gateway's own addresses: traffic to them is the host firewall's to judge.
    pub fn local(self) -> bool {
        self == Role::Gateway
    }
}

/// The documents the catalogue cites.
pub mod source {
    /// Seed 002.
    pub const PORTS_2013: &str =
        "seed 002, Microsoft: Network ports for clients and mail flow in Exchange 2013";
    /// Seed 001.
    pub const FIREWALL_SUPPORT: &str =
        "seed 001, Exchange product group: Exchange, Firewalls, and Support (2013)";
    /// Seed 003.
    pub const PORTS_2016: &str = "seed 003, Network ports for Exchange 2016 and 2019";
    /// Not among the seeds; summarised in shared/reference/exchange-role-model.md.
    pub const PORT_REFERENCE_2010: &str =
        "Microsoft: Exchange Network Port Reference (2010), per reference/exchange-role-model.md";
    /// Not among the seeds; summarised in shared/reference/exchange-role-model.md.
    pub const UM_PORTS: &str =
        "Microsoft: UM protocols, ports, and services, per reference/exchange-role-model.md";
    /// Where the sources are silent.
    pub const EXFW: &str = "exfw's choice, reference/exchange-role-model.md \"Our choices where the sources are silent\"";
}

/// Why a catalogue entry exists: a document and the table row or passage in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Provenance {
    /// The document.
    pub document: String,
    /// The table row or passage.
    pub row: String,
}

impl Provenance {
    fn new(document: &str, row: &str) -> Self {
        Provenance {
            document: document.to_string(),
            row: row.to_string(),
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
    let clients_doc = if v.client_access_on_mailbox() {
        format!("{PORTS_2013}; {PORTS_2016}")
    } else {
        PORTS_2013.to_string()
    };
    let client_row = |row: &str| {
        Provenance::new(
            &clients_doc,
            &format!("table \"Network ports required for clients and services\", row \"{row}\""),
        )
    };
    let anyone = [External, Clients];
    let mut out = vec![svc(
        "https",
        tcp,
        one(443),
        &anyone,
        client_access,
        client_row(
            "Encrypted web connections: Autodiscover, EAS, EWS, OAB, Outlook Anywhere, MAPI over HTTP, Outlook Web App",
        ),
    )];
    if org.http {
        out.push(svc("http", tcp, one(80), &anyone, client_access, client_row("Unencrypted web connections: Internet calendar publishing, OWA redirect, Autodiscover fallback")));
    }
    if org.imap4 {
        out.push(svc(
            "imap4",
            tcp,
            one(143),
            &anyone,
            client_access,
            client_row("IMAP4 clients (143/TCP)"),
        ));
        out.push(svc(
            "imap4s",
            tcp,
            one(993),
            &anyone,
            client_access,
            client_row("IMAP4 clients (993/TCP secure IMAP)"),
        ));
    }
    if org.pop3 {
        out.push(svc(
            "pop3",
            tcp,
            one(110),
            &anyone,
            client_access,
            client_row("POP3 clients (110/TCP)"),
        ));
        out.push(svc(
            "pop3s",
            tcp,
            one(995),
            &anyone,
            client_access,
            client_row("POP3 clients (995/TCP secure POP3)"),
        ));
    }
    // Client submission: the "Client Frontend" connector of a 2013 or later Client Access
    // service; on 2010 the "Client <server>" receive connector of Hub Transport (a 2010 Client
    // Access server runs no SMTP listener).
    let (submission_to, submission_why) = if v == ExchangeVersion::V2010 {
        (
            Hub,
            Provenance::new(
                PORT_REFERENCE_2010,
                "Hub Transport: client submission 587/TCP, \"Client <server>\" receive connector",
            ),
        )
    } else {
        (
            client_access,
            client_row("SMTP clients (authenticated), 587/TCP"),
        )
    };
    out.push(svc(
        "smtp-submission",
        tcp,
        one(587),
        &anyone,
        submission_to,
        submission_why.clone(),
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
            if v == ExchangeVersion::V2010 {
                submission_why
            } else {
                client_row(
                    "SMTP clients (authenticated), note: Client Frontend connector rebound to port 25",
                )
            },
        ));
    }
    if let Some((rpc_ca, rpc_ab)) = org.static_rpc_ports {
        let mapi = |what: &str| {
            Provenance::new(
                FIREWALL_SUPPORT,
                &format!(
                    "\"I don't trust my clients\": {what}, Outlook MAPI/RPC clients of Exchange 2010"
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
                mapi("static TCP port of the RPC Client Access service (on CAS and Mailbox)"),
            ));
        }
        out.push(svc(
            "rpc-ab",
            tcp,
            one(rpc_ab),
            &[Clients],
            Cas,
            mapi("static TCP port of the Address Book service"),
        ));
    }
    let edge_row = |row: &str| {
        Provenance::new(
            PORTS_2013,
            &format!(
                "table \"Network ports required for mail flow with Edge Transport servers\", row \"{row}\""
            ),
        )
    };
    let no_edge_row = |row: &str| {
        Provenance::new(
            PORTS_2013,
            &format!(
                "table \"Network ports required for mail flow (no Edge Transport servers)\", row \"{row}\""
            ),
        )
    };
    let hub_row = |row: &str| Provenance::new(PORT_REFERENCE_2010, row);
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
                hub_row("Edge -> Hub Transport 25/TCP")
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
                hub_row("Hub Transport -> Edge 25/TCP")
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
            edge_row("Outbound mail - Edge Transport server to Internet"),
        ));
        out.push(svc(
            "edgesync",
            tcp,
            one(50636),
            &[transport],
            Edge,
            if transport == Hub {
                hub_row("EdgeSync Hub Transport -> Edge 50636/TCP (one way)")
            } else {
                edge_row("EdgeSync synchronization, 50636/TCP secure LDAP")
            },
        ));
        let dns = edge_row("DNS for name resolution of the next mail hop");
        out.push(svc("dns", udp, one(53), &[Edge], Dns, dns.clone()));
        out.push(svc("dns", tcp, one(53), &[Edge], Dns, dns));
        if v == ExchangeVersion::V2010 {
            out.push(svc(
                "smtp-edge-to-edge",
                tcp,
                one(25),
                &[Edge],
                Edge,
                hub_row("Edge -> Edge 25/TCP between Edge Transport servers"),
            ));
        }
    } else {
        let inbound_to = if v == ExchangeVersion::V2010 {
            Hub
        } else {
            client_access
        };
        out.push(svc(
            "smtp-inbound",
            tcp,
            one(25),
            &[External],
            inbound_to,
            if v == ExchangeVersion::V2010 {
                hub_row("Internet -> Hub Transport 25/TCP (no Edge)")
            } else {
                no_edge_row(
                    "Inbound mail: Internet to Client Access server, Default Frontend connector",
                )
            },
        ));
        out.push(svc(
            "smtp-outbound",
            tcp,
            one(25),
            &[transport],
            External,
            if v == ExchangeVersion::V2010 {
                hub_row("Hub Transport -> Internet 25/TCP (no Edge)")
            } else {
                no_edge_row("Outbound mail: Mailbox server to Internet")
            },
        ));
        if org.outbound_proxy_through_cas && client_access != transport {
            out.push(svc("smtp-outbound-proxy", tcp, one(25), &[client_access], External, no_edge_row("Outbound mail (if routed through the Client Access server), FrontEndProxyEnabled")));
        }
    }
    // All internal Exchange servers resolve names; the Internet-facing ones the next hop.
    let internal: Vec<Role> = [Cas, Mailbox, Hub, Um]
        .into_iter()
        .filter(|r| r.unavailable_in(v).is_none())
        .collect();
    let resolution = Provenance::new(
        PORTS_2013,
        "section \"Name resolution\" and row \"DNS for name resolution of the next mail hop\" (53/UDP, 53/TCP)",
    );
    out.push(svc("dns", udp, one(53), &internal, Dns, resolution.clone()));
    out.push(svc("dns", tcp, one(53), &internal, Dns, resolution));
    if org.unified_messaging {
        let um = |row: &str| Provenance::new(UM_PORTS, row);
        let sources = [UmGateway];
        let (router, worker) = match v {
            ExchangeVersion::V2010 => (Um, Um),
            ExchangeVersion::V2013 => (Cas, Mailbox),
            _ => (Mailbox, Mailbox),
        };
        out.push(svc(
            "sip",
            tcp,
            one(5060),
            &sources,
            router,
            um("UM call router SIP 5060/TCP"),
        ));
        out.push(svc(
            "sips",
            tcp,
            one(5061),
            &sources,
            router,
            um("UM call router SIP over TLS 5061/TCP"),
        ));
        // The call router hands each call to a worker process, which the gateway then
        // reaches directly: 5065/5067 TCP, 5066/5068 mutual TLS (2010: on the UM server).
        out.push(svc(
            "um-worker",
            tcp,
            PortRange {
                first: 5065,
                last: 5068,
            },
            &sources,
            worker,
            um(if v == ExchangeVersion::V2010 {
                "UM worker process 5065/5067 TCP, 5066/5068 mutual TLS (Exchange 2010 UM server)"
            } else {
                "UM worker process SIP 5065-5068/TCP on Mailbox"
            }),
        ));
        // Calls Exchange places (Play on Phone, transfers, outbound calls): SIP to the gateway.
        let mut callers = vec![router, worker];
        callers.dedup();
        for (name, port, row) in [
            (
                "um-gateway-sip",
                5060,
                "SIP 5060/TCP from Exchange to the UM IP gateway or IP-PBX",
            ),
            (
                "um-gateway-sips",
                5061,
                "SIP over TLS 5061/TCP from Exchange to the UM IP gateway or IP-PBX",
            ),
        ] {
            out.push(svc(name, tcp, one(port), &callers, UmGateway, um(row)));
        }
        if v != ExchangeVersion::V2010 {
            out.push(svc(
                "um-sip",
                tcp,
                PortRange {
                    first: 5062,
                    last: 5063,
                },
                &sources,
                worker,
                um("UM service SIP 5062-5063/TCP on Mailbox"),
            ));
        }
        out.push(svc("rtp", udp, PortRange { first: 1024, last: 65535 }, &sources, worker, Provenance::new(FIREWALL_SUPPORT, "UM: SIP+RTP goes directly from the telephony device to the Mailbox server (RTP/SRTP on dynamic UDP ports)")));
    }
    if org.icmp_echo {
        let servers: Vec<Role> = [Cas, Mailbox, Hub, Um, Edge]
            .into_iter()
            .filter(|r| r.unavailable_in(v).is_none())
            .collect();
        let why = Provenance::new(
            EXFW,
            "echo is configurable (icmp_echo): from internal clients and management hosts",
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
    out
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
            }
        }
    }
}
