//! The TOML configuration: a strict schema (unknown keys are errors), versioned, and a validation
//! pass that reports every problem at once with its file, line and column.
//!
//! The reference for operators is docs/config.md; the examples live in examples/.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::Path,
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use exfw_common::{AttachMode, Mode, Role, proto};

/// The configuration format this build reads.
pub const CONFIG_VERSION: i64 = 1;
/// Where `exfw run` looks when no path is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/exfw/exfw.toml";
const CLIENT_NETWORK: &str = "client network";

/// The longest lifetime a `[limits]` key may give, in seconds.
const MAX_LIFETIME_SECONDS: i64 = 7 * 24 * 3600;

/// The largest config file exfw reads: ten times what 100,000 servers take, small enough that
/// a wrong path (a log, a disk image) fails at once instead of exhausting memory.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024 * 1024;

/// The longest name a server, host, network or allow entry may have.
const MAX_NAME_LENGTH: usize = 63;

/// The share of protected addresses a reload may remove unless the config raises it.
pub const DEFAULT_MAX_PROTECTED_REMOVAL_PERCENT: u8 = 50;

/// The default metrics address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9720";

/// One problem in a config file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to change.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The Exchange version of the organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExchangeVersion {
    /// Exchange Server 2010.
    V2010,
    /// Exchange Server 2013.
    V2013,
    /// Exchange Server 2016.
    V2016,
    /// Exchange Server 2019.
    V2019,
    /// Exchange Server Subscription Edition.
    SubscriptionEdition,
}

impl ExchangeVersion {
    /// The spelling used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeVersion::V2010 => "2010",
            ExchangeVersion::V2013 => "2013",
            ExchangeVersion::V2016 => "2016",
            ExchangeVersion::V2019 => "2019",
            ExchangeVersion::SubscriptionEdition => "se",
        }
    }

    /// 2016 and later serve client access on the Mailbox role.
    pub fn client_access_on_mailbox(self) -> bool {
        self >= ExchangeVersion::V2016
    }

    /// Why the server role `role` does not exist in this version, if it does not.
    pub fn role_missing(self, role: Role) -> Option<String> {
        match role {
            Role::Cas if self.client_access_on_mailbox() => Some(format!(
                "Exchange {} has no separate Client Access role: client access runs on the Mailbox role; use \"mailbox\"",
                self.name()
            )),
            Role::Hub | Role::Um if self != ExchangeVersion::V2010 => Some(format!(
                "the {} role exists only up to Exchange 2010; in Exchange {} it runs on the Mailbox role; use \"mailbox\"",
                if role == Role::Hub {
                    "Hub Transport"
                } else {
                    "Unified Messaging"
                },
                self.name()
            )),
            _ => None,
        }
    }
}

/// What the domain controllers behind the gateway serve beyond Exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum DcAccess {
    /// Exchange and Lync/Skype, plus the Active Directory client services (logon, Group
    /// Policy, name resolution, time) from the client networks and management hosts.
    #[default]
    Clients,
    /// Exchange and Lync/Skype only: the gateway carries no client logons.
    ExchangeOnly,
    /// Not filtered: traffic to the domain controllers is judged only when its source is
    /// protected (so the Edge stays out); another firewall guards them.
    Unfiltered,
}

impl DcAccess {
    /// The spelling used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            DcAccess::Clients => "clients",
            DcAccess::ExchangeOnly => "exchange-only",
            DcAccess::Unfiltered => "unfiltered",
        }
    }
}

// ---- The file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Spanned<i64>,
    mode: Spanned<String>,
    organization: RawOrganization,
    #[serde(default, rename = "server")]
    servers: Vec<RawServer>,
    #[serde(default, rename = "domain_controller")]
    domain_controllers: Vec<RawHost>,
    #[serde(default, rename = "lync_server")]
    lync_servers: Vec<RawHost>,
    #[serde(default, rename = "dns_server")]
    dns_servers: Vec<RawHost>,
    #[serde(default, rename = "um_gateway")]
    um_gateways: Vec<RawHost>,
    #[serde(default, rename = "protected_network")]
    protected_networks: Vec<RawHost>,
    #[serde(default)]
    clients: RawClients,
    #[serde(default, rename = "allow")]
    allows: Vec<RawAllow>,
    #[serde(default)]
    management: RawManagement,
    #[serde(default, rename = "interface")]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    reload: RawReload,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    exchange: Spanned<String>,
    edge_subscribed: Option<Spanned<bool>>,
    #[serde(default)]
    pop3: bool,
    #[serde(default)]
    imap4: bool,
    #[serde(default = "yes")]
    http: bool,
    #[serde(default)]
    smtp_client_on_25: bool,
    #[serde(default)]
    outbound_proxy_through_cas: bool,
    rpc_client_access_port: Option<Spanned<i64>>,
    address_book_port: Option<Spanned<i64>>,
    unified_messaging: Option<Spanned<bool>>,
    #[serde(default = "yes")]
    icmp_echo: bool,
    domain_controller_access: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Spanned<String>,
    roles: Spanned<Vec<Spanned<String>>>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    site: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClients {
    #[serde(default)]
    networks: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Range(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    name: Spanned<String>,
    from: Spanned<Vec<Spanned<String>>>,
    to: Spanned<Vec<Spanned<String>>>,
    proto: Spanned<String>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    reason: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    gateway_addresses: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    #[serde(default)]
    xdp_mode: Option<Spanned<String>>,
    accepts: Option<Spanned<Vec<Spanned<String>>>>,
    reverse_path: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    flow_entries: Option<Spanned<i64>>,
    pending_entries: Option<Spanned<i64>>,
    tcp_idle_seconds: Option<Spanned<i64>>,
    udp_idle_seconds: Option<Spanned<i64>>,
    other_idle_seconds: Option<Spanned<i64>>,
    fragment_seconds: Option<Spanned<i64>>,
    pending_seconds: Option<Spanned<i64>>,
    tcp_fin_seconds: Option<Spanned<i64>>,
    tcp_rst_seconds: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReload {
    max_protected_removal_percent: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

// ---- The validated configuration -----------------------------------------------------------

/// Version options of the organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    /// Exchange version.
    pub exchange: ExchangeVersion,
    /// An Edge Transport server is subscribed to the organisation.
    pub edge_subscribed: bool,
    /// POP3 is enabled.
    pub pop3: bool,
    /// IMAP4 is enabled.
    pub imap4: bool,
    /// Unencrypted HTTP on 80 is allowed.
    pub http: bool,
    /// Authenticated client SMTP submission also on 25.
    pub smtp_client_on_25: bool,
    /// Outbound mail is proxied through Client Access (FrontEndProxyEnabled).
    pub outbound_proxy_through_cas: bool,
    /// Exchange 2010 static ports: (RPC Client Access, Address Book).
    pub static_rpc_ports: Option<(u16, u16)>,
    /// Unified Messaging SIP/RTP is in use.
    pub unified_messaging: bool,
    /// ICMP echo to Exchange servers from clients and management hosts.
    pub icmp_echo: bool,
    /// What the domain controllers serve beyond Exchange.
    pub domain_controller_access: DcAccess,
}

/// An Exchange server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
    /// Its AD site, for documentation.
    pub site: Option<String>,
}

/// A named host or group of hosts (domain controller, Lync server, DNS server, UM gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
}

/// Where an extra allow entry's traffic comes from or goes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// Every host of a role (`external` included).
    Role(Role),
    /// Addresses.
    Prefix(IpNet),
}

/// An inclusive port range.
pub type Ports = (u16, u16);

/// An extra allow entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    /// Its name (the service label).
    pub name: String,
    /// Sources.
    pub from: Vec<Endpoint>,
    /// Destination roles.
    pub to: Vec<Role>,
    /// IP protocol number.
    pub proto: u8,
    /// Port ranges (all ports when the protocol has none).
    pub ports: Vec<Ports>,
    /// Why it is needed (mandatory).
    pub reason: String,
}

/// Management access to the gateway that must never be blocked.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Management {
    /// Administrators' networks.
    pub sources: Vec<IpNet>,
    /// The gateway's own addresses.
    pub gateway_addresses: Vec<IpNet>,
    /// TCP ports on the gateway (default 22).
    pub ports: Vec<u16>,
}

/// An interface to attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// XDP attach mode.
    pub mode: AttachMode,
    /// The groups whose addresses may arrive here as sources (`None`: every group).
    pub accepts: Option<Vec<Role>>,
    /// Strict reverse-path check through the routing table (default on).
    pub reverse_path: bool,
}

/// Table sizes and lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Confirmed-connection table entries.
    pub flow_entries: u32,
    /// Unconfirmed-connection table entries.
    pub pending_entries: u32,
    /// TCP flow idle lifetime, seconds.
    pub tcp_idle_seconds: u64,
    /// UDP flow idle lifetime, seconds.
    pub udp_idle_seconds: u64,
    /// Other flow idle lifetime, seconds.
    pub other_idle_seconds: u64,
    /// Fragment verdict lifetime, seconds.
    pub fragment_seconds: u64,
    /// Lifetime of a connection that has not completed its handshake, seconds.
    pub pending_seconds: u64,
    /// Lifetime of a TCP connection after a FIN, seconds.
    pub tcp_fin_seconds: u64,
    /// Lifetime of a TCP connection after a RST, seconds.
    pub tcp_rst_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            flow_entries: exfw_common::limits::DEFAULT_FLOW_ENTRIES,
            pending_entries: exfw_common::limits::DEFAULT_PENDING_ENTRIES,
            tcp_idle_seconds: 3600,
            udp_idle_seconds: 60,
            other_idle_seconds: 60,
            fragment_seconds: 10,
            pending_seconds: 10,
            tcp_fin_seconds: 120,
            tcp_rst_seconds: 10,
        }
    }
}

/// What a reload may take away before the daemon refuses it as an accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadLimits {
    /// The largest share (percent) of the running config's protected addresses a reload may
    /// remove; 100 allows any.
    pub max_protected_removal_percent: u8,
}

impl Default for ReloadLimits {
    fn default() -> Self {
        ReloadLimits {
            max_protected_removal_percent: DEFAULT_MAX_PROTECTED_REMOVAL_PERCENT,
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Enforce or audit.
    pub mode: Mode,
    /// The organisation's version and options.
    pub organization: Organization,
    /// Exchange servers.
    pub servers: Vec<Server>,
    /// Domain controllers.
    pub domain_controllers: Vec<Host>,
    /// Lync / Skype for Business servers.
    pub lync_servers: Vec<Host>,
    /// DNS servers used by Internet-facing servers.
    pub dns_servers: Vec<Host>,
    /// UM IP gateways and IP-PBXs.
    pub um_gateways: Vec<Host>,
    /// Networks the servers live in: unclaimed addresses there are protected.
    pub protected_networks: Vec<Host>,
    /// Internal client networks.
    pub client_networks: Vec<IpNet>,
    /// Extra allow entries.
    pub allows: Vec<Allow>,
    /// Management access to the gateway.
    pub management: Management,
    /// Interfaces to attach to.
    pub interfaces: Vec<Interface>,
    /// Table sizes and lifetimes.
    pub limits: Limits,
    /// Metrics listen address.
    pub metrics_listen: SocketAddr,
    /// How much protection one reload may remove without being refused.
    pub reload: ReloadLimits,
    /// What `exfw check` and `exfw run` warn about: valid, but probably not what was meant.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Every address exfw protects: servers, domain controllers (unless left unfiltered),
    /// Lync/Skype servers and protected networks (what a reload must not lose by accident: a
    /// switch to `domain_controller_access = "unfiltered"` counts as removing the DCs).
    pub fn protected_addresses(&self) -> BTreeSet<IpNet> {
        let dcs: &[Host] = if self.organization.domain_controller_access == DcAccess::Unfiltered {
            &[]
        } else {
            &self.domain_controllers
        };
        let hosts = dcs
            .iter()
            .chain(&self.lync_servers)
            .chain(&self.protected_networks)
            .flat_map(|h| h.addresses.iter());
        self.servers
            .iter()
            .flat_map(|s| s.addresses.iter())
            .chain(hosts)
            .copied()
            .collect()
    }
}

// ---- Validation ----------------------------------------------------------------------------

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker<'_> {
    fn located(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = self.located(span, message);
        self.errors.push(e);
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let w = self.located(span, message);
        self.warnings.push(w);
    }

    /// Refuses a name outside the safe set: names end up in logs, metric labels and the
    /// exported nftables ruleset, where a quote or a newline would change its meaning.
    fn name(&mut self, value: &Spanned<String>, what: &str) {
        let name = value.get_ref();
        if !is_safe_name(name) {
            self.error(
                value.span(),
                format!(
                    "{what} name {name:?} is not allowed: use 1 to {MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            );
        }
    }

    fn prefix(&mut self, value: &Spanned<String>, what: &str) -> Option<IpNet> {
        match parse_prefix(value.get_ref()) {
            Some(net) => Some(net),
            None => {
                self.error(
                    value.span(),
                    format!(
                        "`{}` is not an IP address or prefix ({what}); write for example 192.0.2.10, 192.0.2.0/24 or 2001:db8::10",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn port(&mut self, value: &Spanned<i64>, what: &str, min: i64) -> Option<u16> {
        let v = *value.get_ref();
        if (min..=65535).contains(&v) {
            Some(v as u16)
        } else {
            self.error(
                value.span(),
                format!("port {v} is out of range for {what}: use {min} to 65535"),
            );
            None
        }
    }

    fn seconds(&mut self, value: &Option<Spanned<i64>>, default: u64, what: &str) -> u64 {
        match value {
            None => default,
            Some(v) if (1..=MAX_LIFETIME_SECONDS).contains(v.get_ref()) => *v.get_ref() as u64,
            Some(v) => {
                self.error(
                    v.span(),
                    format!(
                        "{what} = {} is out of range: use 1 to {MAX_LIFETIME_SECONDS} seconds (7 days)",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn entries(&mut self, value: &Option<Spanned<i64>>, default: u32, what: &str) -> u32 {
        match value {
            None => default,
            Some(v) if (1024..=16_777_216).contains(v.get_ref()) => *v.get_ref() as u32,
            Some(v) => {
                self.error(
                    v.span(),
                    format!("{what} must be between 1024 and 16777216"),
                );
                default
            }
        }
    }
}

/// Whether `name` is 1 to 63 ASCII letters, digits, '.', '_' or '-', starting with a letter or
/// digit: safe in logs, labels and nftables comments without quoting.
pub fn is_safe_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LENGTH
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses `192.0.2.10` (a host) or `192.0.2.0/24` (a network; host bits are an error).
fn parse_prefix(text: &str) -> Option<IpNet> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(IpNet::from(addr));
    }
    let net: IpNet = text.parse().ok()?;
    (net.trunc() == net).then_some(net)
}

/// Reads and validates a config file: a regular file, not writable by every user, at most
/// [`MAX_CONFIG_BYTES`] long.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = read_config_file(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message,
        }])
    })?;
    parse(&text, &file)
}

/// The text of the config file, or what is wrong with the file itself.
fn read_config_file(path: &Path) -> Result<String, String> {
    use std::{
        io::Read,
        os::unix::fs::{OpenOptionsExt, PermissionsExt},
    };
    // Non-blocking, so a FIFO put in the file's place is refused below instead of hanging the
    // reload until someone writes to it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read the config file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the config file: {e}"))?;
    if !meta.is_file() {
        return Err(
            "the config path is not a regular file (a directory, a pipe?): point exfw at the TOML file"
                .into(),
        );
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(format!(
            "the config file is writable by every user (mode {:o}), so anyone on this host could change the firewall: chmod o-w {}",
            meta.permissions().mode() & 0o7777,
            path.display()
        ));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the config file: {e}"))?;
    Ok(text)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: format!(
                "the config is {} bytes, more than the {MAX_CONFIG_BYTES} exfw reads: is this the right file?",
                text.len()
            ),
        }]));
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_column(text, s.start));
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut config = validate(&mut c, raw);
    c.errors.sort_by_key(|e| (e.line, e.column));
    if c.errors.is_empty() {
        c.warnings.sort_by_key(|e| (e.line, e.column));
        config.warnings = c.warnings;
        Ok(config)
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn validate(c: &mut Checker, raw: RawConfig) -> Config {
    if *raw.version.get_ref() != CONFIG_VERSION {
        c.error(
            raw.version.span(),
            format!(
                "config version {} is not supported: this exfw reads version {CONFIG_VERSION}",
                raw.version.get_ref()
            ),
        );
    }
    let mode = Mode::from_name(raw.mode.get_ref()).unwrap_or_else(|| {
        c.error(
            raw.mode.span(),
            format!(
                "mode `{}` is unknown: use \"{}\" (count, never drop) or \"{}\"",
                raw.mode.get_ref(),
                Mode::Audit.name(),
                Mode::Enforce.name()
            ),
        );
        Mode::Audit
    });
    let organization = validate_organization(c, &raw);
    let version = organization.exchange;

    // Every address with its owner, to find overlaps.
    let mut owners: Vec<(IpNet, String, bool, Range<usize>)> = Vec::new();
    let mut names: BTreeMap<String, ()> = BTreeMap::new();
    let mut servers = Vec::new();
    for s in &raw.servers {
        c.name(&s.name, "server");
        if names.insert(s.name.get_ref().to_lowercase(), ()).is_some() {
            c.error(
                s.name.span(),
                format!("server name `{}` is used twice", s.name.get_ref()),
            );
        }
        let mut roles = BTreeSet::new();
        for r in s.roles.get_ref() {
            match Role::server_role(r.get_ref()) {
                Some(role) => {
                    if let Some(problem) = version.role_missing(role) {
                        c.error(
                            r.span(),
                            format!("server `{}`: {problem}", s.name.get_ref()),
                        );
                    }
                    roles.insert(role);
                }
                None => c.error(
                    r.span(),
                    format!(
                        "server `{}`: unknown role `{}`; server roles are {}",
                        s.name.get_ref(),
                        r.get_ref(),
                        Role::SERVER_ROLES.map(|r| r.name()).join(", ")
                    ),
                ),
            }
        }
        if s.roles.get_ref().is_empty() {
            c.error(
                s.roles.span(),
                format!("server `{}` has no role", s.name.get_ref()),
            );
        }
        if roles.contains(&Role::Edge) && roles.len() > 1 {
            c.error(
                s.roles.span(),
                format!(
                    "server `{}`: an Edge Transport server cannot hold another role; it sits in the perimeter network and is not domain joined",
                    s.name.get_ref()
                ),
            );
        }
        let addresses = host_addresses(c, &s.name, &s.addresses, "server", &mut owners, true);
        servers.push(Server {
            name: s.name.get_ref().clone(),
            roles,
            addresses,
            site: s.site.clone(),
        });
    }
    if let Some(flag) = raw
        .organization
        .edge_subscribed
        .as_ref()
        .filter(|f| *f.get_ref())
        && !servers.iter().any(|s| s.roles.contains(&Role::Edge))
    {
        c.error(
            flag.span(),
            "edge_subscribed = true but no server has the role \"edge\"",
        );
    }
    let unsubscribed_edge = raw
        .servers
        .iter()
        .find(|s| {
            s.roles
                .get_ref()
                .iter()
                .any(|r| r.get_ref() == Role::Edge.name())
        })
        .filter(|_| !organization.edge_subscribed);
    if let Some(s) = unsubscribed_edge {
        c.error(
            s.roles.span(),
            format!(
                "server `{}` is an Edge Transport server but [organization] edge_subscribed is not true; set it (exfw models subscribed Edge servers)",
                s.name.get_ref()
            ),
        );
    }
    let mut hosts = |list: &[RawHost], kind: &str, protected: bool, c: &mut Checker| -> Vec<Host> {
        list.iter()
            .map(|h| {
                c.name(&h.name, kind);
                Host {
                    name: h.name.get_ref().clone(),
                    addresses: host_addresses(
                        c,
                        &h.name,
                        &h.addresses,
                        kind,
                        &mut owners,
                        protected,
                    ),
                }
            })
            .collect()
    };
    let domain_controllers = hosts(&raw.domain_controllers, "domain controller", true, c);
    let lync_servers = hosts(&raw.lync_servers, "Lync/Skype server", true, c);
    let dns_servers = hosts(&raw.dns_servers, "DNS server", false, c);
    let um_gateways = hosts(&raw.um_gateways, "UM gateway", false, c);
    if let Some(flag) = raw
        .organization
        .unified_messaging
        .as_ref()
        .filter(|f| *f.get_ref())
        && um_gateways.is_empty()
    {
        c.error(
            flag.span(),
            "unified_messaging = true needs at least one [[um_gateway]] (the IP gateways or IP-PBXs that send SIP and RTP)",
        );
    }
    report_overlapping_hosts(c, &owners);
    let client_networks: Vec<IpNet> = raw
        .clients
        .networks
        .iter()
        .filter_map(|n| c.prefix(n, "client network"))
        .collect();
    // Protected addresses must not sit inside client or other external ranges.
    let mut unprotected: Vec<(IpNet, String, Range<usize>)> = raw
        .clients
        .networks
        .iter()
        .filter_map(|n| {
            parse_prefix(n.get_ref()).map(|p| (p, CLIENT_NETWORK.to_string(), n.span()))
        })
        .collect();
    let management = validate_management(c, &raw.management, &mut unprotected);
    for (gateway, span) in
        management
            .gateway_addresses
            .iter()
            .zip(raw.management.gateway_addresses.iter().filter(|s| {
                parse_prefix(s.get_ref()).is_some_and(|n| n.prefix_len() == n.max_prefix_len())
            }))
    {
        if let Some((_, owner, _, _)) = owners.iter().find(|(net, ..)| net.contains(gateway)) {
            c.error(
                span.span(),
                format!("gateway address {gateway} is an address of {owner}: the gateway's own addresses belong to no host"),
            );
        }
    }
    let allows = raw
        .allows
        .iter()
        .map(|a| validate_allow(c, a, &mut unprotected))
        .collect();
    // Protected hosts may not overlap any client or source range; other hosts (DNS servers, UM
    // gateways) may sit inside client networks but not inside a management or allow source.
    for (net, owner, protected, span) in &owners {
        for (range, what, _) in &unprotected {
            if !protected && what == CLIENT_NETWORK {
                continue;
            }
            if range.contains(net) || net.contains(range) {
                c.error(
                    span.clone(),
                    format!(
                        "{owner} address {net} overlaps the {what} {range}: a host exfw protects or routes to cannot also be a client or source range; fix one of them"
                    ),
                );
            }
        }
    }
    let protected_networks: Vec<Host> = raw
        .protected_networks
        .iter()
        .map(|n| {
            c.name(&n.name, "protected network");
            let mut scratch = Vec::new();
            let addresses = host_addresses(c, &n.name, &n.addresses, "protected network", &mut scratch, true);
            for (net, owner, _, span) in scratch {
                for (range, what, _) in &unprotected {
                    if range.contains(&net) || net.contains(range) {
                        c.error(span.clone(), format!("{owner} {net} overlaps the {what} {range}: a protected network cannot hold client or source ranges; fix one of them"));
                    }
                }
            }
            Host {
                name: n.name.get_ref().clone(),
                addresses,
            }
        })
        .collect();
    report_overlapping_networks(c, &raw.protected_networks);
    for (net, owner, protected, span) in &owners {
        if let Some(network) = protected_networks
            .iter()
            .find(|n| !protected && n.addresses.iter().any(|p| p.contains(net)))
        {
            c.warn(
                span.clone(),
                format!(
                    "{owner} ({net}) lies in protected network `{}`, but exfw protects no DNS server or UM gateway: anything may reach it as transit; move it out of the network or filter it elsewhere",
                    network.name
                ),
            );
        }
    }
    let interfaces = raw
        .interfaces
        .iter()
        .map(|i| validate_interface(c, i))
        .collect::<Vec<_>>();
    check_source_validation(
        c,
        &raw,
        &interfaces,
        &servers,
        &domain_controllers,
        &lync_servers,
        &protected_networks,
    );
    if !domain_controllers.is_empty() && raw.organization.domain_controller_access.is_none() {
        c.warn(
            raw.organization.exchange.span(),
            "domain_controller_access is not set: the domain controllers serve the client networks' logons (DNS, Kerberos, LDAP, SMB, RPC), the default since this release; set domain_controller_access = \"clients\" to confirm, or \"exchange-only\" to keep clients away from them",
        );
    }
    check_unprotected_sources(
        c,
        &raw,
        &interfaces,
        &[
            (!dns_servers.is_empty(), Role::Dns),
            (!um_gateways.is_empty(), Role::UmGateway),
            (!client_networks.is_empty(), Role::Clients),
        ],
    );
    // A config that protects nothing or names no link is most likely cut short (a partial copy,
    // an editor's half-saved file): refusing it keeps the policy in force.
    let end = c.text.trim_end().len();
    if interfaces.is_empty() {
        c.error(
            end..end,
            "the config names no [[interface]], so exfw would filter nothing (a file cut short looks like this too): add an [[interface]] for each link the servers' traffic crosses",
        );
    }
    if servers.is_empty() && domain_controllers.is_empty() && protected_networks.is_empty() {
        c.error(
            end..end,
            "the config names no [[server]], [[domain_controller]] or [[protected_network]], so exfw would protect nothing (a file cut short looks like this too): describe the hosts it protects",
        );
    }
    let defaults = Limits::default();
    let limits = Limits {
        flow_entries: c.entries(
            &raw.limits.flow_entries,
            defaults.flow_entries,
            "flow_entries",
        ),
        pending_entries: c.entries(
            &raw.limits.pending_entries,
            defaults.pending_entries,
            "pending_entries",
        ),
        tcp_idle_seconds: c.seconds(
            &raw.limits.tcp_idle_seconds,
            defaults.tcp_idle_seconds,
            "tcp_idle_seconds",
        ),
        udp_idle_seconds: c.seconds(
            &raw.limits.udp_idle_seconds,
            defaults.udp_idle_seconds,
            "udp_idle_seconds",
        ),
        other_idle_seconds: c.seconds(
            &raw.limits.other_idle_seconds,
            defaults.other_idle_seconds,
            "other_idle_seconds",
        ),
        fragment_seconds: c.seconds(
            &raw.limits.fragment_seconds,
            defaults.fragment_seconds,
            "fragment_seconds",
        ),
        pending_seconds: c.seconds(
            &raw.limits.pending_seconds,
            defaults.pending_seconds,
            "pending_seconds",
        ),
        tcp_fin_seconds: c.seconds(
            &raw.limits.tcp_fin_seconds,
            defaults.tcp_fin_seconds,
            "tcp_fin_seconds",
        ),
        tcp_rst_seconds: c.seconds(
            &raw.limits.tcp_rst_seconds,
            defaults.tcp_rst_seconds,
            "tcp_rst_seconds",
        ),
    };
    let metrics_listen = match &raw.metrics.listen {
        None => DEFAULT_METRICS_LISTEN.parse().unwrap(),
        Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
            c.error(
                l.span(),
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:9720",
                    l.get_ref()
                ),
            );
            DEFAULT_METRICS_LISTEN.parse().unwrap()
        }),
    };
    let reload = ReloadLimits {
        max_protected_removal_percent: match &raw.reload.max_protected_removal_percent {
            None => DEFAULT_MAX_PROTECTED_REMOVAL_PERCENT,
            Some(v) if (0..=100).contains(v.get_ref()) => *v.get_ref() as u8,
            Some(v) => {
                c.error(
                    v.span(),
                    format!(
                        "max_protected_removal_percent = {} is out of range: use 0 to 100 (percent of the protected addresses one reload may remove)",
                        v.get_ref()
                    ),
                );
                DEFAULT_MAX_PROTECTED_REMOVAL_PERCENT
            }
        },
    };
    Config {
        mode,
        organization,
        servers,
        domain_controllers,
        lync_servers,
        dns_servers,
        um_gateways,
        protected_networks,
        client_networks,
        allows,
        management,
        interfaces,
        limits,
        metrics_listen,
        reload,
        warnings: Vec::new(),
    }
}

/// The name, attach mode, accepted groups and reverse-path mode of one `[[interface]]`.
fn validate_interface(c: &mut Checker, i: &RawInterface) -> Interface {
    let name = i.name.get_ref().clone();
    if name.len() > 15 || !is_safe_name(&name) {
        c.error(
            i.name.span(),
            format!("{name:?} is not an interface name exfw accepts: 1 to 15 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        );
    }
    let mode = match &i.xdp_mode {
        None => AttachMode::Auto,
        Some(m) => AttachMode::from_name(m.get_ref()).unwrap_or_else(|| {
            c.error(
                m.span(),
                format!(
                    "xdp_mode `{}` is unknown: use \"{}\", \"{}\" or \"{}\"",
                    m.get_ref(),
                    AttachMode::Auto.name(),
                    AttachMode::Driver.name(),
                    AttachMode::Skb.name()
                ),
            );
            AttachMode::Auto
        }),
    };
    let reverse_path = match i
        .reverse_path
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("strict", _)) => true,
        Some(("off", _)) => false,
        Some((other, span)) => {
            c.error(span, format!("reverse_path `{other}` is unknown: use \"strict\" (the route back to a source must leave through this interface) or \"off\""));
            true
        }
    };
    if reverse_path && name == "lo" {
        // Loopback traffic is the host's own: the route back to 127.0.0.1 is local, never out
        // of lo, so a strict check would drop all of it (scrapes of /metrics included).
        c.error(
            i.name.span(),
            "interface `lo` carries the host's own traffic, which the reverse-path check cannot validate (the route back is local): set reverse_path = \"off\" for lo, or leave lo out",
        );
    }
    let accepts = i.accepts.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            c.error(list.span(), format!("interface `{name}`: accepts is empty, so every packet arriving there would drop; list the groups that live behind it (for example [\"external\"] or [\"mailbox\", \"dc\"]), or remove the key to accept every group"));
        }
        let mut roles = Vec::new();
        for entry in list.get_ref() {
            match Role::endpoint_role(entry.get_ref()) {
                Some(Role::Gateway) => c.error(entry.span(), format!("interface `{name}`: the gateway's own addresses never arrive as sources from outside; remove \"gateway\"")),
                Some(role) if !roles.contains(&role) => roles.push(role),
                Some(_) => {}
                None => c.error(entry.span(), format!(
                    "interface `{name}`: `{}` is not a group; groups are {}",
                    entry.get_ref(),
                    Role::ENDPOINT_ROLES.iter().filter(|r| **r != Role::Gateway).map(|r| r.name()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        roles
    });
    Interface {
        name,
        mode,
        accepts,
        reverse_path,
    }
}

/// Every protected group must be accepted as a source somewhere, and something must validate
/// sources at all when trusted groups exist.
#[allow(clippy::too_many_arguments)]
fn check_source_validation(
    c: &mut Checker,
    raw: &RawConfig,
    interfaces: &[Interface],
    servers: &[Server],
    domain_controllers: &[Host],
    lync_servers: &[Host],
    protected_networks: &[Host],
) {
    if interfaces.is_empty() {
        return;
    }
    let accepted = |roles: &[Role]| {
        interfaces.iter().any(|i| match &i.accepts {
            None => true,
            Some(list) => roles.iter().any(|r| list.contains(r)),
        })
    };
    let anchor = raw.interfaces[0]
        .accepts
        .as_ref()
        .map_or(raw.interfaces[0].name.span(), |a| a.span());
    let mut missing: Vec<String> = Vec::new();
    for s in servers {
        let roles: Vec<Role> = s.roles.iter().copied().collect();
        if !accepted(&roles) {
            missing.push(format!(
                "server `{}` ({})",
                s.name,
                roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    for (list, role) in [
        (domain_controllers, Role::Dc),
        (lync_servers, Role::Lync),
        (protected_networks, Role::ProtectedNetwork),
    ] {
        if !list.is_empty() && !accepted(&[role]) {
            missing.push(format!("every {} (\"{}\")", role.name(), role.name()));
        }
    }
    if !missing.is_empty() {
        c.error(anchor.clone(), format!(
            "no interface accepts {} as a source, so every packet from there would drop as spoofed: add the group to the accepts list of the interface it sits behind",
            missing.join(", ")
        ));
    }
    let trusted = servers.iter().any(|s| s.roles.iter().any(|r| r.trusted()))
        || !domain_controllers.is_empty()
        || !lync_servers.is_empty();
    if trusted && interfaces.iter().all(|i| i.accepts.is_none()) {
        if interfaces.iter().all(|i| !i.reverse_path) {
            c.error(anchor, "nothing validates sources: no interface lists the groups it accepts and reverse_path is \"off\" everywhere, so anyone can send as a domain controller or an Exchange server and pass as trusted; add accepts = [...] to each interface or turn reverse_path back to \"strict\"");
        } else {
            c.warn(anchor, "sources are validated by the routing table alone (reverse_path): list the groups each interface accepts (accepts = [...]) so that a spoofed Exchange server or domain controller address is refused where routing cannot tell (one interface, or both sides routed alike)");
        }
    }
}

/// Warns about groups the rules serve that no interface accepts as a source: their traffic
/// would all drop as spoofed (valid, since the group may simply not be behind this gateway).
fn check_unprotected_sources(
    c: &mut Checker,
    raw: &RawConfig,
    interfaces: &[Interface],
    groups: &[(bool, Role)],
) {
    if interfaces.is_empty() {
        return;
    }
    let missing: Vec<&str> = groups
        .iter()
        .filter(|(present, role)| {
            *present
                && interfaces
                    .iter()
                    .all(|i| i.accepts.as_ref().is_some_and(|list| !list.contains(role)))
        })
        .map(|(_, role)| role.name())
        .collect();
    if missing.is_empty() {
        return;
    }
    let anchor = raw.interfaces[0]
        .accepts
        .as_ref()
        .map_or(raw.interfaces[0].name.span(), |a| a.span());
    c.warn(
        anchor,
        format!(
            "no interface accepts {} as a source, so whatever they send drops as spoofed_source: add the group to the accepts list of the interface it sits behind",
            missing
                .iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// Reports protected networks that overlap each other.
fn report_overlapping_networks(c: &mut Checker, raw: &[RawHost]) {
    let mut seen: Vec<(IpNet, String)> = Vec::new();
    for n in raw {
        for a in n.addresses.as_ref().map_or(&[][..], |a| a.get_ref()) {
            let Some(net) = parse_prefix(a.get_ref()) else {
                continue;
            };
            if let Some((other, owner)) = seen
                .iter()
                .find(|(o, _)| o.contains(&net) || net.contains(o))
            {
                c.error(a.span(), format!("protected network `{}` {net} overlaps {other} of protected network `{owner}`", n.name.get_ref()));
            }
            seen.push((net, n.name.get_ref().clone()));
        }
    }
}

fn validate_organization(c: &mut Checker, raw: &RawConfig) -> Organization {
    let o = &raw.organization;
    let exchange = match o.exchange.get_ref().to_lowercase().as_str() {
        "2010" => ExchangeVersion::V2010,
        "2013" => ExchangeVersion::V2013,
        "2016" => ExchangeVersion::V2016,
        "2019" => ExchangeVersion::V2019,
        "se" | "subscription-edition" => ExchangeVersion::SubscriptionEdition,
        other => {
            c.error(
                o.exchange.span(),
                format!("Exchange version `{other}` is not supported: use \"2010\", \"2013\", \"2016\", \"2019\" or \"se\""),
            );
            ExchangeVersion::V2019
        }
    };
    let mut static_rpc_ports = None;
    match (&o.rpc_client_access_port, &o.address_book_port) {
        (None, None) => {}
        (ca, ab) if exchange != ExchangeVersion::V2010 => {
            for p in [ca, ab].into_iter().flatten() {
                c.error(
                    p.span(),
                    format!(
                        "static RPC ports exist only on Exchange 2010; Exchange {} serves Outlook over HTTPS (443): remove this key",
                        exchange.name()
                    ),
                );
            }
        }
        (Some(ca), Some(ab)) => {
            let ca_port = c.port(ca, "rpc_client_access_port", 1024);
            let ab_port = c.port(ab, "address_book_port", 1024);
            if let (Some(x), Some(y)) = (ca_port, ab_port) {
                if x == y {
                    c.error(ab.span(), "address_book_port must differ from rpc_client_access_port");
                }
                static_rpc_ports = Some((x, y));
            }
        }
        (Some(one), None) | (None, Some(one)) => c.error(
            one.span(),
            "set both rpc_client_access_port and address_book_port (the two static ports you configured on the Client Access servers)",
        ),
    }
    let unified_messaging = o.unified_messaging.as_ref().is_some_and(|f| *f.get_ref());
    if let Some(flag) = o
        .unified_messaging
        .as_ref()
        .filter(|_| unified_messaging && exchange >= ExchangeVersion::V2019)
    {
        c.error(
            flag.span(),
            format!("Exchange {} has no Unified Messaging (removed in 2019): set unified_messaging = false", exchange.name()),
        );
    }
    if o.outbound_proxy_through_cas
        && (exchange != ExchangeVersion::V2013
            || o.edge_subscribed.as_ref().is_some_and(|f| *f.get_ref()))
    {
        c.warn(
            o.exchange.span(),
            "outbound_proxy_through_cas has no effect here: outbound mail goes through a Client Access server only on Exchange 2013 without an Edge (FrontEndProxyEnabled)",
        );
    }
    let domain_controller_access = match &o.domain_controller_access {
        None => DcAccess::default(),
        Some(value) => {
            let access = [
                DcAccess::Clients,
                DcAccess::ExchangeOnly,
                DcAccess::Unfiltered,
            ]
            .into_iter()
            .find(|a| a.name() == value.get_ref().as_str());
            match access {
                Some(DcAccess::Unfiltered) => {
                    c.warn(
                        value.span(),
                        "domain controllers are not filtered: whatever this gateway routes to them passes unless it comes from the Edge or another protected host; use \"clients\" unless another firewall guards them",
                    );
                    DcAccess::Unfiltered
                }
                Some(access) => access,
                None => {
                    c.error(
                        value.span(),
                        format!(
                            "domain_controller_access `{}` is not known: use \"clients\" (Active Directory client services from the client networks), \"exchange-only\" or \"unfiltered\"",
                            value.get_ref()
                        ),
                    );
                    DcAccess::default()
                }
            }
        }
    };
    Organization {
        exchange,
        edge_subscribed: o.edge_subscribed.as_ref().is_some_and(|f| *f.get_ref()),
        pop3: o.pop3,
        imap4: o.imap4,
        http: o.http,
        smtp_client_on_25: o.smtp_client_on_25,
        outbound_proxy_through_cas: o.outbound_proxy_through_cas,
        static_rpc_ports,
        unified_messaging,
        icmp_echo: o.icmp_echo,
        domain_controller_access,
    }
}

fn host_addresses(
    c: &mut Checker,
    name: &Spanned<String>,
    addresses: &Option<Spanned<Vec<Spanned<String>>>>,
    kind: &str,
    owners: &mut Vec<(IpNet, String, bool, Range<usize>)>,
    protected: bool,
) -> Vec<IpNet> {
    let addresses: &[Spanned<String>] = addresses.as_ref().map_or(&[], |a| a.get_ref());
    if addresses.is_empty() {
        c.error(
            name.span(),
            format!(
                "{kind} `{}` has no address: add addresses = [\"192.0.2.10\"]",
                name.get_ref()
            ),
        );
    }
    let owner = format!("{kind} `{}`", name.get_ref());
    let mut out = Vec::new();
    for a in addresses {
        let Some(net) = c.prefix(a, &owner) else {
            continue;
        };
        owners.push((net, owner.clone(), protected, a.span()));
        out.push(net);
    }
    out
}

/// Reports every host address that overlaps an earlier one, in O(n log n): sorted by first
/// address (wider first on a tie), an entry overlaps iff it starts before the widest end so far.
fn report_overlapping_hosts(c: &mut Checker, owners: &[(IpNet, String, bool, Range<usize>)]) {
    let key = |n: &IpNet| -> (bool, u128, u128) {
        match n {
            IpNet::V4(v) => (
                false,
                u32::from(v.network()).into(),
                u32::from(v.broadcast()).into(),
            ),
            IpNet::V6(v) => (true, u128::from(v.network()), u128::from(v.broadcast())),
        }
    };
    let mut order: Vec<usize> = (0..owners.len()).collect();
    order.sort_by_key(|i| {
        let (v6, first, last) = key(&owners[*i].0);
        (v6, first, std::cmp::Reverse(last), owners[*i].3.start)
    });
    let mut widest: Option<(bool, u128, usize)> = None;
    for i in order {
        let (v6, first, last) = key(&owners[i].0);
        match widest {
            Some((fam, end, j)) if fam == v6 && first <= end => {
                let (net, owner, _, span) = &owners[i];
                let (other, other_owner, _, _) = &owners[j];
                c.error(
                    span.clone(),
                    format!("{owner} address {net} overlaps {other} of {other_owner}: each address belongs to one host"),
                );
                if last > end {
                    widest = Some((v6, last, i));
                }
            }
            _ => widest = Some((v6, last, i)),
        }
    }
}

fn validate_management(
    c: &mut Checker,
    raw: &RawManagement,
    unprotected: &mut Vec<(IpNet, String, Range<usize>)>,
) -> Management {
    let sources: Vec<IpNet> = raw
        .sources
        .iter()
        .filter_map(|s| c.prefix(s, "management source"))
        .collect();
    for (s, net) in raw.sources.iter().zip(&sources) {
        unprotected.push((*net, "management source".into(), s.span()));
    }
    let gateway_addresses = raw
        .gateway_addresses
        .iter()
        .filter_map(|s| {
            let net = c.prefix(s, "gateway address")?;
            if net.prefix_len() != net.max_prefix_len() {
                // Every address inside would be passed to the host as the gateway's own, and
                // the host forwards what is not really its own: a hole in what exfw protects.
                c.error(
                    s.span(),
                    format!("gateway address {net} is a network: list the gateway's own addresses one by one (for example 192.0.2.1)"),
                );
                return None;
            }
            Some(net)
        })
        .collect();
    let mut ports: Vec<u16> = raw
        .ports
        .iter()
        .filter_map(|p| c.port(p, "management", 1))
        .collect();
    if ports.is_empty() {
        ports.push(22);
    }
    Management {
        sources,
        gateway_addresses,
        ports,
    }
}

fn validate_allow(
    c: &mut Checker,
    a: &RawAllow,
    unprotected: &mut Vec<(IpNet, String, Range<usize>)>,
) -> Allow {
    let name = a.name.get_ref().clone();
    c.name(&a.name, "allow");
    let reason = match &a.reason {
        Some(r) if !r.get_ref().trim().is_empty() => r.get_ref().clone(),
        Some(r) => {
            c.error(r.span(), format!("allow `{name}`: the reason is empty; say why this traffic is needed (a ticket, an application)"));
            String::new()
        }
        None => {
            c.error(
                a.name.span(),
                format!("allow `{name}` has no reason: add reason = \"...\" saying why this traffic is needed"),
            );
            String::new()
        }
    };
    let mut from = Vec::new();
    for f in a.from.get_ref() {
        if let Some(role) = Role::endpoint_role(f.get_ref()) {
            from.push(Endpoint::Role(role));
        } else if let Some(net) = c.prefix(f, &format!("allow `{name}` source (or a role name)")) {
            unprotected.push((net, format!("source of allow `{name}`"), f.span()));
            from.push(Endpoint::Prefix(net));
        }
    }
    if a.from.get_ref().is_empty() {
        c.error(a.from.span(), format!("allow `{name}`: from is empty"));
    }
    let mut to = Vec::new();
    for t in a.to.get_ref() {
        match Role::endpoint_role(t.get_ref()) {
            Some(role) => to.push(role),
            None => c.error(
                t.span(),
                format!(
                    "allow `{name}`: destination `{}` is not a role; destinations are roles ({})",
                    t.get_ref(),
                    Role::ENDPOINT_ROLES.map(|r| r.name()).join(", ")
                ),
            ),
        }
    }
    if a.to.get_ref().is_empty() {
        c.error(a.to.span(), format!("allow `{name}`: to is empty"));
    }
    let proto = proto::parse(a.proto.get_ref()).unwrap_or_else(|| {
        c.error(
            a.proto.span(),
            format!(
                "allow `{name}`: protocol `{}` is unknown: use tcp, udp, icmp, icmpv6 or a number",
                a.proto.get_ref()
            ),
        );
        6
    });
    let has_ports = matches!(proto, 6 | 17);
    let mut ports = Vec::new();
    for p in &a.ports {
        let parsed = match p.get_ref() {
            RawPort::Number(n) if (0..=65535).contains(n) => Some((*n as u16, *n as u16)),
            RawPort::Number(n) => {
                c.error(
                    p.span(),
                    format!("allow `{name}`: port {n} is out of range: use 0 to 65535"),
                );
                None
            }
            RawPort::Range(r) => {
                let parts = r.split_once('-').and_then(|(x, y)| {
                    Some((x.trim().parse::<u16>().ok()?, y.trim().parse::<u16>().ok()?))
                });
                match parts {
                    Some((x, y)) if x <= y => Some((x, y)),
                    _ => {
                        c.error(p.span(), format!("allow `{name}`: `{r}` is not a port range such as \"5065-5068\" (first <= last, at most 65535)"));
                        None
                    }
                }
            }
        };
        ports.extend(parsed);
    }
    if has_ports && a.ports.is_empty() {
        c.error(
            a.name.span(),
            format!(
                "allow `{name}`: list the ports, for example ports = [8443] or [\"5065-5068\"]"
            ),
        );
    }
    if !has_ports && !matches!(proto, 1 | 58) && !a.ports.is_empty() {
        c.error(
            a.ports[0].span(),
            format!("allow `{name}`: protocol {proto} has no ports; remove ports"),
        );
    }
    if ports.is_empty() {
        ports.push((0, 65535));
    }
    Allow {
        name,
        from,
        to,
        proto,
        ports,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_from_one() {
        let text = "a = 1\nbb = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
    }

    #[test]
    fn prefixes_reject_host_bits() {
        assert_eq!(
            parse_prefix("192.0.2.10"),
            Some("192.0.2.10/32".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("192.0.2.0/24"),
            Some("192.0.2.0/24".parse().unwrap())
        );
        assert_eq!(parse_prefix("192.0.2.1/24"), None);
        assert_eq!(
            parse_prefix("2001:db8::/32"),
            Some("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(parse_prefix("300.1.1.1"), None);
    }

    #[test]
    fn names_are_limited_to_a_charset_safe_in_labels_and_rulesets() {
        for good in ["EX01", "dc-ams.corp", "lob_relay", "a"] {
            assert!(is_safe_name(good), "{good}");
        }
        let long = "x".repeat(MAX_NAME_LENGTH + 1);
        for bad in [
            "",
            "x\" accept; #",
            "a b",
            "-dash",
            "tab\t",
            "ümlaut",
            "new\nline",
            &long,
        ] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_config_file_itself_is_checked_before_it_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("exfw-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let message = |path: &Path| load(path).unwrap_err().0[0].message.clone();
        assert!(
            message(&dir).contains("not a regular file"),
            "{}",
            message(&dir)
        );
        let file = dir.join("exfw.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(message(&file).contains("chmod o-w"), "{}", message(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!message(&file).contains("chmod"), "{}", message(&file));
        std::fs::remove_file(&file).unwrap();
        assert!(message(&file).contains("cannot read"), "{}", message(&file));
        std::fs::remove_dir(&dir).unwrap();
        let huge = " ".repeat(MAX_CONFIG_BYTES + 1);
        assert!(
            parse(&huge, "big.toml").unwrap_err().0[0]
                .message
                .contains("right file")
        );
    }
}
