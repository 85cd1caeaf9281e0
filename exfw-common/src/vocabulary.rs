//! The words the config, explanations, metric labels and the kernel's config map share: modes,
//! attach modes, roles and port ranges, each with its one spelling. The kernel reads none of
//! these types; they live here so every layer above takes them from one place.

use core::fmt;

use crate::{MODE_AUDIT, MODE_ENFORCE};

/// Enforce drops what the policy denies; audit passes it and counts it as would-drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Drop what no rule allows.
    #[default]
    Enforce,
    /// Pass everything; count what enforce would drop.
    Audit,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 2] = [Mode::Enforce, Mode::Audit];

    /// The spelling used in the config file, `status` and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }

    /// The mode spelled `name`.
    pub fn from_name(name: &str) -> Option<Mode> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The value of the kernel's `config::MODE` slot.
    pub const fn code(self) -> u64 {
        match self {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Audit => MODE_AUDIT,
        }
    }

    /// The mode a `config::MODE` slot holds (anything but audit enforces, as the kernel reads it).
    pub const fn from_code(code: u64) -> Mode {
        if code == MODE_AUDIT {
            Mode::Audit
        } else {
            Mode::Enforce
        }
    }
}

/// How the config asks exfw to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver (native) mode, falling back to skb (generic) mode where the driver refuses.
    #[default]
    Auto,
    /// Driver mode or fail.
    Driver,
    /// Generic mode, which every interface supports at a higher cost.
    Skb,
}

impl AttachMode {
    /// Every attach mode.
    pub const ALL: [AttachMode; 3] = [AttachMode::Auto, AttachMode::Driver, AttachMode::Skb];

    /// The spelling used in the config file.
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Driver => AttachedMode::Driver.name(),
            AttachMode::Skb => AttachedMode::Skb.name(),
        }
    }

    /// The attach mode spelled `name`.
    pub fn from_name(name: &str) -> Option<AttachMode> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The mode an attachment got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the network stack.
    Skb,
}

impl AttachedMode {
    /// "driver" or "skb": in `status`, metric labels and pin names.
    pub const fn name(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Skb => "skb",
        }
    }
}

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
    pub const fn name(self) -> &'static str {
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

    /// Trusted roles pass to each other on every port and protocol (Microsoft's ground rules).
    pub const fn trusted(self) -> bool {
        matches!(
            self,
            Role::Cas | Role::Mailbox | Role::Hub | Role::Um | Role::Dc | Role::Lync
        )
    }

    /// Protected roles: traffic to or from them is subject to the policy.
    pub const fn protected(self) -> bool {
        self.trusted() || matches!(self, Role::Edge | Role::ProtectedNetwork)
    }

    /// The gateway's own addresses: traffic to them is the host firewall's to judge.
    pub const fn local(self) -> bool {
        matches!(self, Role::Gateway)
    }
}

/// An inclusive range of destination ports (ICMP: types; other protocols: 0..=65535).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
    /// Every port.
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };
    /// True when `port` is inside.
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
    /// Number of ports inside.
    pub const fn width(&self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }
}

/// As people write it and metric labels carry it: `443`, `5065-5068`, `any`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PortRange::ANY {
            f.write_str("any")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}
