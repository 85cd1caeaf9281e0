//! The port catalogue as data: one row per line of Microsoft's tables (or of exfw's own
//! reasoned choices where they are silent), with the versions and options that turn it on and
//! the row it comes from. Adding a port from a Microsoft table is adding a row here;
//! [`super::catalogue`] reads the rows for one organisation.

use exfw_common::{PortRange, Role, proto};

use super::source::{
    AD_FIREWALL, EXFW, FIREWALL_SUPPORT, PORT_REFERENCE_2010, UM_GATEWAY, UM_PORTS_2010,
    WINDOWS_PORTS,
};
use crate::config::ExchangeVersion::{self, SubscriptionEdition, V2010, V2013, V2016, V2019};

/// Where a row's traffic comes from or goes to: a role, or a role that depends on the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// One role.
    Role(Role),
    /// Client access: the Client Access server up to 2013, the Mailbox server from 2016.
    ClientAccess,
    /// The servers the transport rows name "Mailbox": Hub Transport on 2010.
    Transport,
    /// Client submission: Hub Transport on 2010 (a 2010 Client Access server runs no SMTP
    /// listener), client access later.
    Submission,
    /// Every internal Exchange role the version has (Client Access, Mailbox, Hub, UM).
    InternalServers,
}

/// What of the organisation a row needs to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// `http = true`.
    Http,
    /// `imap4 = true`.
    Imap4,
    /// `pop3 = true`.
    Pop3,
    /// `smtp_client_on_25 = true`.
    SmtpClientOn25,
    /// `static_rpc_ports` set.
    StaticRpc,
    /// A subscribed Edge.
    Edge,
    /// No subscribed Edge.
    NoEdge,
    /// `outbound_proxy_through_cas = true`.
    OutboundProxy,
    /// `unified_messaging = true`.
    UnifiedMessaging,
    /// `domain_controller_access = "clients"`.
    DcClients,
    /// `icmp_echo = true`.
    IcmpEcho,
}

/// A row's destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// The same on every organisation.
    Fixed(PortRange),
    /// The static port of the RPC Client Access service (`static_rpc_ports`).
    RpcClientAccess,
    /// The static port of the Address Book service (`static_rpc_ports`).
    RpcAddressBook,
}

/// Where in a document a row comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cite {
    /// A passage of a document, as written.
    Passage(super::Document, &'static str),
    /// A passage of the version's port page (the 2013 page up to 2013, the 2016 page from
    /// 2016; 2010 has none for clients and mail flow and takes the 2013 page's).
    PortsPage(&'static str),
    /// A row of the port page's table "Network ports required for clients and services": the
    /// text after the row's opening quote.
    ClientTable(&'static str),
    /// A row of the port page's table "Network ports required for mail flow with Edge
    /// Transport servers".
    EdgeTable(&'static str),
    /// A row of the port page's table "Network ports required for mail flow (no Edge Transport
    /// servers)".
    NoEdgeTable(&'static str),
    /// A row of Exchange 2010's table "Transport server data paths".
    HubDataPaths(&'static str),
    /// Exchange 2010 without an Edge: the Hub Transport server takes this row of the 2013
    /// page's mail-flow table (exfw's section "Exchange 2010 without an Edge").
    HubTakes2013(&'static str),
    /// A row of the table "UM listening ports" (Exchange 2013 and 2016).
    UmListening(&'static str),
    /// A row (server port, service) of the Active Directory firewall table under "Windows
    /// Server 2008 and later versions".
    AdTable(&'static str, &'static str),
}

/// One row of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The service name rules and metrics carry.
    pub service: &'static str,
    /// IP protocol number.
    pub proto: u8,
    /// Destination ports (ICMP: types).
    pub ports: Ports,
    /// Who may connect.
    pub from: &'static [At],
    /// Who is connected to.
    pub to: At,
    /// The Exchange versions it applies to.
    pub versions: &'static [ExchangeVersion],
    /// What else of the organisation it needs (all of them).
    pub needs: &'static [Needs],
    /// Where it comes from.
    pub cite: Cite,
}

/// Every version.
const ALL: &[ExchangeVersion] = &[V2010, V2013, V2016, V2019, SubscriptionEdition];
/// Exchange 2010 only.
const ONLY_2010: &[ExchangeVersion] = &[V2010];
/// Exchange 2013 only.
const ONLY_2013: &[ExchangeVersion] = &[V2013];
/// Up to 2013: Client Access servers of their own.
const UP_TO_2013: &[ExchangeVersion] = &[V2010, V2013];
/// From 2013 on: the transport rows name the Mailbox server.
const FROM_2013: &[ExchangeVersion] = &[V2013, V2016, V2019, SubscriptionEdition];
/// From 2016 on: client access on the Mailbox server.
const FROM_2016: &[ExchangeVersion] = &[V2016, V2019, SubscriptionEdition];

const TCP: u8 = proto::TCP;
const UDP: u8 = proto::UDP;
const ICMP: u8 = proto::ICMP;
const ICMPV6: u8 = proto::ICMPV6;

const fn one(port: u16) -> Ports {
    Ports::Fixed(PortRange::single(port))
}

const fn range(first: u16, last: u16) -> Ports {
    Ports::Fixed(PortRange { first, last })
}

const ANYONE: &[At] = &[At::Role(Role::External), At::Role(Role::Clients)];
const CLIENTS: &[At] = &[At::Role(Role::Clients)];
const EXTERNAL: &[At] = &[At::Role(Role::External)];
const EDGE: &[At] = &[At::Role(Role::Edge)];
const TRANSPORT: &[At] = &[Transport];
const CLIENT_ACCESS: &[At] = &[ClientAccess];
const INTERNAL: &[At] = &[At::InternalServers];
const GATEWAYS: &[At] = &[At::Role(UmGateway)];
const CLIENTS_AND_MANAGEMENT: &[At] = &[At::Role(Role::Clients), At::Role(Role::Management)];

/// Shorthand for a row (the table below reads as Microsoft's tables do).
#[allow(clippy::too_many_arguments)]
const fn row(
    service: &'static str,
    proto: u8,
    ports: Ports,
    from: &'static [At],
    to: At,
    versions: &'static [ExchangeVersion],
    needs: &'static [Needs],
    cite: Cite,
) -> Row {
    Row {
        service,
        proto,
        ports,
        from,
        to,
        versions,
        needs,
        cite,
    }
}

use At::{ClientAccess, Submission, Transport};
use Needs::*;
use Role::{Cas, Dc, Dns, Edge as EdgeRole, Hub, Mailbox, Um, UmGateway};

const fn to(role: Role) -> At {
    At::Role(role)
}

const MAPI_EPM: Cite = Cite::Passage(
    FIREWALL_SUPPORT,
    "Exchange 2010 Outlook clients in MAPI/RPC mode with static ports: \"TCP 135 for the Endpoint Mapper\"",
);
const MAPI_CA: Cite = Cite::Passage(
    FIREWALL_SUPPORT,
    "Exchange 2010 Outlook clients in MAPI/RPC mode with static ports: \"TCP <your choice #2> for the RPC Client Access service\"",
);
const SMTP_CLIENT_25: Cite = Cite::Passage(
    EXFW,
    "section \"Client submission on port 25\": the SMTP clients (authenticated) row with the client connector bound to 25; from the client networks only when an Edge is subscribed",
);
const NAME_RESOLUTION: Cite = Cite::PortsPage(
    "section \"Name resolution\" (\"all internal Exchange servers must be able to resolve internal host names\") and row \"DNS for name resolution of the next mail hop (not pictured)\", 53/UDP, 53/TCP",
);
const NEXT_HOP_DNS: Cite =
    Cite::EdgeTable("DNS for name resolution of the next mail hop (not pictured)");
const UM_2010_ROUTER: Cite = Cite::Passage(
    UM_PORTS_2010,
    "\"the Microsoft Exchange Unified Messaging service listens on both TCP port 5060 in Unsecured mode and TCP port 5061 when mutual Transport Layer Security (mutual TLS) is used\"",
);
const UM_2010_WORKER: Cite = Cite::Passage(
    UM_PORTS_2010,
    "\"Each UM worker process that's created listens on port 5065 and 5067 (unsecured) and 5066 and 5068 (secured)\"",
);
const UM_2010_RTP: Cite = Cite::Passage(
    UM_PORTS_2010,
    "RTP from the IP gateway or IP PBX to the worker process \"will use a valid UDP port that ranges from 1024 through 65535\"",
);
const UM_2013_ROUTER: Cite = Cite::UmListening(
    "SIP (Client Access server - Microsoft Unified Messaging Call Router service)",
);
const UM_2016_ROUTER: Cite = Cite::UmListening(
    "SIP (Client Access server - Microsoft Unified Messaging Call Router service)\" (from Exchange 2016 the call router runs on the Mailbox server",
);
const UM_WORKER: Cite = Cite::UmListening("SIP (Mailbox server - UM worker process)");
const UM_RTP: Cite = Cite::UmListening("RTP (Mailbox server - UM worker process)");
const UM_CALLS: Cite = Cite::Passage(
    UM_GATEWAY,
    "\"You must also configure the Client Access and Mailbox servers to communicate with the VoIP gateways, IP PBXs, SIP-enabled PBXs, or SBCs\"; the gateway's SIP listening port is 5060/TCP, 5061/TCP with mutual TLS",
);
const AD_DNS: Cite = Cite::AdTable("53/TCP/UDP", "DNS");
const AD_KERBEROS: Cite = Cite::AdTable("88/TCP/UDP", "Kerberos");
const AD_LDAP: Cite = Cite::AdTable("389/TCP/UDP", "LDAP");
const AD_KPASSWD: Cite = Cite::AdTable("464/TCP/UDP", "Kerberos password change");
// SMB: the trusts table marks it "trust creation only"; members need it for SYSVOL.
const AD_SMB: Cite = Cite::Passage(
    WINDOWS_PORTS,
    "section \"Group Policy\" (\"a client computer must be able to contact a domain controller over the Kerberos, LDAP, SMB, and RPC protocols\"), row \"SMB | TCP | 445\"",
);
// The LDAP client's keep-alive ping and the redirector's reachability check.
const AD_PING: Cite = Cite::Passage(
    AD_FIREWALL,
    "section \"Active Directory\": \"The Microsoft LDAP client uses ICMP ping when a LDAP request is pending for extended time\" (<any> ICMP -> DC IP addr = allow)",
);
const ICMP_ECHO: Cite = Cite::Passage(
    EXFW,
    "section \"ICMP\": echo is configurable (icmp_echo), from internal clients and management hosts",
);
/// Calls Exchange places (Play on Phone, transfers, the OPTIONS probe): SIP to the gateway,
/// from the call router and the worker.
const UM_CALLERS_2010: &[At] = &[At::Role(Um)];
const UM_CALLERS_2013: &[At] = &[At::Role(Cas), At::Role(Mailbox)];
const UM_CALLERS_2016: &[At] = &[At::Role(Mailbox)];
const WORKER_PORTS: Ports = range(5065, 5068);
const RTP_PORTS: Ports = range(1024, 65535);

/// The catalogue, in the order rules are compiled.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    // Clients and services: the table "Network ports required for clients and services" (the
    // 2013 page says "Outlook Web App", the 2016 page its new name).
    row("https", TCP, one(443), ANYONE, ClientAccess, UP_TO_2013, &[], Cite::ClientTable("Encrypted web connections are used by the following clients and services: Autodiscover service, Exchange ActiveSync, Exchange Web Services (EWS), Offline address book distribution, Outlook Anywhere (RPC over HTTP), Outlook MAPI over HTTP, Outlook Web App\", 443/TCP (HTTPS)")),
    row("https", TCP, one(443), ANYONE, ClientAccess, FROM_2016, &[], Cite::ClientTable("Encrypted web connections are used by the following clients and services: Autodiscover service, Exchange ActiveSync, Exchange Web Services (EWS), Offline address book distribution, Outlook Anywhere (RPC over HTTP), Outlook MAPI over HTTP, Outlook on the web (formerly known as Outlook Web App)\", 443/TCP (HTTPS)")),
    row("http", TCP, one(80), ANYONE, ClientAccess, UP_TO_2013, &[Http], Cite::ClientTable("Unencrypted web connections are used by the following clients and services: Internet calendar publishing, Outlook Web App (redirect to 443/TCP), Autodiscover (fallback when 443/TCP isn't available)\", 80/TCP (HTTP)")),
    row("http", TCP, one(80), ANYONE, ClientAccess, FROM_2016, &[Http], Cite::ClientTable("Unencrypted web connections are used by the following clients and services: Internet calendar publishing, Outlook on the web (formerly known as Outlook Web App) (redirect to 443/TCP), Autodiscover (fallback when 443/TCP isn't available)\", 80/TCP (HTTP)")),
    row("imap4", TCP, one(143), ANYONE, ClientAccess, ALL, &[Imap4], Cite::ClientTable("IMAP4 clients\", 143/TCP (IMAP)")),
    row("imap4s", TCP, one(993), ANYONE, ClientAccess, ALL, &[Imap4], Cite::ClientTable("IMAP4 clients\", 993/TCP (secure IMAP)")),
    row("pop3", TCP, one(110), ANYONE, ClientAccess, ALL, &[Pop3], Cite::ClientTable("POP3 clients\", 110/TCP (POP3)")),
    row("pop3s", TCP, one(995), ANYONE, ClientAccess, ALL, &[Pop3], Cite::ClientTable("POP3 clients\", 995/TCP (secure POP3)")),
    // Client submission: the "Client Frontend" connector of a 2013 or later Client Access
    // service; on 2010 the "Client <server>" receive connector of Hub Transport.
    row("smtp-submission", TCP, one(587), ANYONE, Submission, ONLY_2010, &[], Cite::Passage(PORT_REFERENCE_2010, "table \"Transport server data paths\": SMTP clients submitting to the Hub Transport server, 587/TCP (its \"Client <server>\" receive connector)")),
    row("smtp-submission", TCP, one(587), ANYONE, Submission, FROM_2013, &[], Cite::ClientTable("SMTP clients (authenticated)\", 587/TCP (authenticated SMTP), the default Receive connector \"Client Frontend <server>\"")),
    // With a subscribed Edge, Internet mail must go through the Edge's filtering: port 25 on
    // the internal servers is then for the client networks only.
    row("smtp-client-25", TCP, one(25), CLIENTS, Submission, ALL, &[SmtpClientOn25, Edge], SMTP_CLIENT_25),
    row("smtp-client-25", TCP, one(25), ANYONE, Submission, ALL, &[SmtpClientOn25, NoEdge], SMTP_CLIENT_25),
    // Exchange 2010 Outlook clients in MAPI/RPC mode, with the two RPC services on static ports.
    row("rpc-epm", TCP, one(135), CLIENTS, to(Cas), ALL, &[StaticRpc], MAPI_EPM),
    row("rpc-ca", TCP, Ports::RpcClientAccess, CLIENTS, to(Cas), ALL, &[StaticRpc], MAPI_CA),
    row("rpc-epm", TCP, one(135), CLIENTS, to(Mailbox), ALL, &[StaticRpc], MAPI_EPM),
    row("rpc-ca", TCP, Ports::RpcClientAccess, CLIENTS, to(Mailbox), ALL, &[StaticRpc], MAPI_CA),
    row("rpc-ab", TCP, Ports::RpcAddressBook, CLIENTS, to(Cas), ALL, &[StaticRpc], Cite::Passage(FIREWALL_SUPPORT, "Exchange 2010 Outlook clients in MAPI/RPC mode with static ports: \"TCP <your choice #1> for the Address Book service\"")),
    // Mail flow with a subscribed Edge.
    row("smtp-inbound", TCP, one(25), EXTERNAL, to(EdgeRole), ALL, &[Edge], Cite::EdgeTable("Inbound mail - Internet to Edge Transport server")),
    row("smtp-inbound-relay", TCP, one(25), EDGE, Transport, ONLY_2010, &[Edge], Cite::HubDataPaths("Edge Transport server to Hub Transport server")),
    row("smtp-inbound-relay", TCP, one(25), EDGE, Transport, FROM_2013, &[Edge], Cite::EdgeTable("Inbound mail - Edge Transport server to internal Exchange organization")),
    row("smtp-outbound-relay", TCP, one(25), TRANSPORT, to(EdgeRole), ONLY_2010, &[Edge], Cite::HubDataPaths("Hub Transport server to Edge Transport server")),
    row("smtp-outbound-relay", TCP, one(25), TRANSPORT, to(EdgeRole), FROM_2013, &[Edge], Cite::EdgeTable("Outbound mail - Internal Exchange organization to Edge Transport server")),
    row("smtp-outbound", TCP, one(25), EDGE, to(Role::External), UP_TO_2013, &[Edge], Cite::EdgeTable("Outbound mail - Edge Transport server to Internet")),
    row("smtp-outbound", TCP, one(25), EDGE, to(Role::External), FROM_2016, &[Edge], Cite::EdgeTable("Outbound mail - Edge Transport server to internet")),
    row("edgesync", TCP, one(50636), TRANSPORT, to(EdgeRole), ONLY_2010, &[Edge], Cite::HubDataPaths("Microsoft Exchange EdgeSync service from Hub Transport server to Edge Transport server")),
    row("edgesync", TCP, one(50636), TRANSPORT, to(EdgeRole), FROM_2013, &[Edge], Cite::EdgeTable("EdgeSync synchronization")),
    row("dns", UDP, one(53), EDGE, to(Dns), ALL, &[Edge], NEXT_HOP_DNS),
    row("dns", TCP, one(53), EDGE, to(Dns), ALL, &[Edge], NEXT_HOP_DNS),
    row("smtp-edge-to-edge", TCP, one(25), EDGE, to(EdgeRole), ONLY_2010, &[Edge], Cite::HubDataPaths("Edge Transport server to Edge Transport server")),
    // Mail flow without an Edge (2010's port reference has no row for it: the Hub Transport
    // server takes the 2013 table's rows).
    row("smtp-inbound", TCP, one(25), EXTERNAL, to(Hub), ONLY_2010, &[NoEdge], Cite::HubTakes2013("Inbound mail")),
    row("smtp-inbound", TCP, one(25), EXTERNAL, ClientAccess, FROM_2013, &[NoEdge], Cite::NoEdgeTable("Inbound mail")),
    row("smtp-outbound", TCP, one(25), TRANSPORT, to(Role::External), ONLY_2010, &[NoEdge], Cite::HubTakes2013("Outbound mail")),
    row("smtp-outbound", TCP, one(25), TRANSPORT, to(Role::External), FROM_2013, &[NoEdge], Cite::NoEdgeTable("Outbound mail")),
    // A 2013 Client Access server's Front End Transport; 2010 has no such proxy, and from 2016
    // the proxy runs on the Mailbox server, which sends outbound mail anyway.
    row("smtp-outbound-proxy", TCP, one(25), CLIENT_ACCESS, to(Role::External), ONLY_2013, &[NoEdge, OutboundProxy], Cite::NoEdgeTable("Outbound mail (if routed through the Client Access server)")),
    // All internal Exchange servers resolve names; the Internet-facing ones the next hop.
    row("dns", UDP, one(53), INTERNAL, to(Dns), ALL, &[], NAME_RESOLUTION),
    row("dns", TCP, one(53), INTERNAL, to(Dns), ALL, &[], NAME_RESOLUTION),
    // Unified Messaging: SIP from the gateways to the call router, then to the worker process
    // it hands the call to (5065/5067 TCP, 5066/5068 mutual TLS), RTP to the worker; SIP from
    // Exchange to the gateways for the calls it places.
    row("sip", TCP, one(5060), GATEWAYS, to(Um), ONLY_2010, &[UnifiedMessaging], UM_2010_ROUTER),
    row("sips", TCP, one(5061), GATEWAYS, to(Um), ONLY_2010, &[UnifiedMessaging], UM_2010_ROUTER),
    row("um-worker", TCP, WORKER_PORTS, GATEWAYS, to(Um), ONLY_2010, &[UnifiedMessaging], UM_2010_WORKER),
    row("rtp", UDP, RTP_PORTS, GATEWAYS, to(Um), ONLY_2010, &[UnifiedMessaging], UM_2010_RTP),
    row("um-gateway-sip", TCP, one(5060), UM_CALLERS_2010, to(UmGateway), ONLY_2010, &[UnifiedMessaging], UM_CALLS),
    row("um-gateway-sips", TCP, one(5061), UM_CALLERS_2010, to(UmGateway), ONLY_2010, &[UnifiedMessaging], UM_CALLS),
    row("sip", TCP, one(5060), GATEWAYS, to(Cas), ONLY_2013, &[UnifiedMessaging], UM_2013_ROUTER),
    row("sips", TCP, one(5061), GATEWAYS, to(Cas), ONLY_2013, &[UnifiedMessaging], UM_2013_ROUTER),
    row("um-worker", TCP, WORKER_PORTS, GATEWAYS, to(Mailbox), ONLY_2013, &[UnifiedMessaging], UM_WORKER),
    row("rtp", UDP, RTP_PORTS, GATEWAYS, to(Mailbox), ONLY_2013, &[UnifiedMessaging], UM_RTP),
    row("um-gateway-sip", TCP, one(5060), UM_CALLERS_2013, to(UmGateway), ONLY_2013, &[UnifiedMessaging], UM_CALLS),
    row("um-gateway-sips", TCP, one(5061), UM_CALLERS_2013, to(UmGateway), ONLY_2013, &[UnifiedMessaging], UM_CALLS),
    row("sip", TCP, one(5060), GATEWAYS, to(Mailbox), FROM_2016, &[UnifiedMessaging], UM_2016_ROUTER),
    row("sips", TCP, one(5061), GATEWAYS, to(Mailbox), FROM_2016, &[UnifiedMessaging], UM_2016_ROUTER),
    row("um-worker", TCP, WORKER_PORTS, GATEWAYS, to(Mailbox), FROM_2016, &[UnifiedMessaging], UM_WORKER),
    row("rtp", UDP, RTP_PORTS, GATEWAYS, to(Mailbox), FROM_2016, &[UnifiedMessaging], UM_RTP),
    row("um-gateway-sip", TCP, one(5060), UM_CALLERS_2016, to(UmGateway), FROM_2016, &[UnifiedMessaging], UM_CALLS),
    row("um-gateway-sips", TCP, one(5061), UM_CALLERS_2016, to(UmGateway), FROM_2016, &[UnifiedMessaging], UM_CALLS),
    // What a domain-joined client needs of its domain controllers (logon, Group Policy, name
    // resolution, time), from the client networks and management hosts; never from the
    // Internet or the Edge.
    row("ad-icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_PING),
    row("ad-icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_PING),
    row("ad-dns", UDP, one(53), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_DNS),
    row("ad-dns", TCP, one(53), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_DNS),
    row("ad-kerberos", UDP, one(88), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_KERBEROS),
    row("ad-kerberos", TCP, one(88), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_KERBEROS),
    row("ad-ntp", UDP, one(123), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], Cite::AdTable("123/UDP", "W32Time")),
    row("ad-rpc-epm", TCP, one(135), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], Cite::AdTable("135/TCP", "RPC Endpoint Mapper")),
    row("ad-ldap", UDP, one(389), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_LDAP),
    row("ad-ldap", TCP, one(389), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_LDAP),
    row("ad-smb", TCP, one(445), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_SMB),
    row("ad-kpasswd", UDP, one(464), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_KPASSWD),
    row("ad-kpasswd", TCP, one(464), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], AD_KPASSWD),
    row("ad-ldaps", TCP, one(636), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], Cite::AdTable("636/TCP", "LDAP SSL")),
    row("ad-gc", TCP, range(3268, 3269), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], Cite::AdTable("3268/TCP | LDAP GC\" and \"3269/TCP", "LDAP GC SSL")),
    row("ad-rpc", TCP, range(49152, 65535), CLIENTS_AND_MANAGEMENT, to(Dc), ALL, &[DcClients], Cite::AdTable("49152-65535/TCP", "RPC for LSA, SAM, NetLogon (*)")),
    // Echo to every server the version has, when the organisation allows it.
    row("icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(Cas), UP_TO_2013, &[IcmpEcho], ICMP_ECHO),
    row("icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(Cas), UP_TO_2013, &[IcmpEcho], ICMP_ECHO),
    row("icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(Mailbox), ALL, &[IcmpEcho], ICMP_ECHO),
    row("icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(Mailbox), ALL, &[IcmpEcho], ICMP_ECHO),
    row("icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(Hub), ONLY_2010, &[IcmpEcho], ICMP_ECHO),
    row("icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(Hub), ONLY_2010, &[IcmpEcho], ICMP_ECHO),
    row("icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(Um), ONLY_2010, &[IcmpEcho], ICMP_ECHO),
    row("icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(Um), ONLY_2010, &[IcmpEcho], ICMP_ECHO),
    row("icmp-echo", ICMP, one(8), CLIENTS_AND_MANAGEMENT, to(EdgeRole), ALL, &[IcmpEcho], ICMP_ECHO),
    row("icmpv6-echo", ICMPV6, one(128), CLIENTS_AND_MANAGEMENT, to(EdgeRole), ALL, &[IcmpEcho], ICMP_ECHO),
];
