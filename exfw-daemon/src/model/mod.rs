//! The Exchange role model: roles, which are trusted, and the port catalogue per version and
//! option, each entry carrying the document and table row that justify it.
//!
//! Ground truth: Microsoft's port tables and support statements (`source`), read row by row in
//! docs/exchange-model.md, which also gives the reason for every choice exfw makes where they
//! are silent.

use exfw_common::PortRange;

use crate::config::{DcAccess, ExchangeVersion, Organization};

pub use exfw_common::Role;

pub mod rows;

use rows::{At, Cite, Needs, Ports, Row};

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

/// The catalogue for an organisation: every row of [`rows::ROWS`] its version and options turn
/// on, read for its version; then internal clients get what the Internet gets.
pub fn catalogue(org: &Organization) -> Vec<Service> {
    let mut out: Vec<Service> = rows::ROWS
        .iter()
        .filter(|row| applies(row, org))
        .map(|row| service(row, org))
        .collect();
    clients_get_what_the_internet_gets(&mut out);
    out
}

/// Whether `row` applies to `org`: its version, and everything the row needs.
fn applies(row: &Row, org: &Organization) -> bool {
    row.versions.contains(&org.exchange)
        && row.needs.iter().all(|need| match need {
            Needs::Http => org.http,
            Needs::Imap4 => org.imap4,
            Needs::Pop3 => org.pop3,
            Needs::SmtpClientOn25 => org.smtp_client_on_25,
            Needs::StaticRpc => org.static_rpc_ports.is_some(),
            Needs::Edge => org.edge_subscribed,
            Needs::NoEdge => !org.edge_subscribed,
            Needs::OutboundProxy => org.outbound_proxy_through_cas,
            Needs::UnifiedMessaging => org.unified_messaging,
            Needs::DcClients => org.domain_controller_access == DcAccess::Clients,
            Needs::IcmpEcho => org.icmp_echo,
        })
}

impl At {
    /// The roles this stands for in `version`.
    pub fn roles(self, version: ExchangeVersion) -> Vec<Role> {
        let client_access = if version.client_access_on_mailbox() {
            Role::Mailbox
        } else {
            Role::Cas
        };
        match self {
            At::Role(role) => vec![role],
            At::ClientAccess => vec![client_access],
            At::Transport | At::Submission if version == ExchangeVersion::V2010 => vec![Role::Hub],
            At::Transport => vec![Role::Mailbox],
            At::Submission => vec![client_access],
            At::InternalServers => [Role::Cas, Role::Mailbox, Role::Hub, Role::Um]
                .into_iter()
                .filter(|r| version.role_missing(*r).is_none())
                .collect(),
        }
    }
}

/// The port page of `version` (2010 has none for clients and mail flow: it takes 2013's,
/// docs/exchange-model.md).
fn ports_page(version: ExchangeVersion) -> Document {
    if version.client_access_on_mailbox() {
        source::PORTS_2016
    } else {
        source::PORTS_2013
    }
}

impl Cite {
    /// The document and row this stands for in `version`.
    pub fn provenance(self, version: ExchangeVersion) -> Provenance {
        use source::*;
        let page = ports_page(version);
        match self {
            Cite::Passage(document, text) => Provenance::cite(document, text),
            Cite::PortsPage(text) => Provenance::cite(page, text),
            Cite::ClientTable(row) => Provenance::cite(
                page,
                &format!("table \"Network ports required for clients and services\", row \"{row}"),
            ),
            Cite::EdgeTable(row) => Provenance::cite(
                page,
                &format!(
                    "table \"Network ports required for mail flow with Edge Transport servers\", row \"{row}\""
                ),
            ),
            Cite::NoEdgeTable(row) => Provenance::cite(
                page,
                &format!(
                    "table \"Network ports required for mail flow (no Edge Transport servers)\", row \"{row}\""
                ),
            ),
            Cite::HubDataPaths(row) => Provenance::cite(
                PORT_REFERENCE_2010,
                &format!("table \"Transport server data paths\", row \"{row}\""),
            ),
            Cite::HubTakes2013(row) => Provenance::cite(
                EXFW,
                &format!(
                    "section \"Exchange 2010 without an Edge\": the Hub Transport server takes the row \"{row}\" of {}, table \"Network ports required for mail flow (no Edge Transport servers)\"",
                    PORTS_2013.title
                ),
            ),
            Cite::UmListening(row) => Provenance::cite(
                UM_PORTS,
                &format!("table \"UM listening ports\", row \"{row}\""),
            ),
            Cite::AdTable(server_port, service) => Provenance::cite(
                AD_FIREWALL,
                &format!(
                    "table under \"Windows Server 2008 and later versions\" (Client Port(s) | Server Port | Service), row \"{server_port} | {service}\""
                ),
            ),
        }
    }
}

/// `row` read for `org`.
fn service(row: &Row, org: &Organization) -> Service {
    let v = org.exchange;
    let (rpc_client_access, rpc_address_book) = org.static_rpc_ports.unwrap_or_default();
    let to = row.to.roles(v);
    debug_assert_eq!(to.len(), 1, "{}: a row goes to one role", row.service);
    Service {
        name: row.service.into(),
        proto: row.proto,
        ports: match row.ports {
            Ports::Fixed(ports) => ports,
            Ports::RpcClientAccess => PortRange::single(rpc_client_access),
            Ports::RpcAddressBook => PortRange::single(rpc_address_book),
        },
        from: row.from.iter().flat_map(|at| at.roles(v)).collect(),
        to: to[0],
        provenance: row.cite.provenance(v),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use exfw_common::proto;

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
