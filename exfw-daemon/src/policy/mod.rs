//! The policy value shared by the kernel data plane and the reference classifier.
//!
//! A [`Policy`] is what the role-model compiler produces and what the data plane writes into its
//! maps: address classes (with the protected and trusted flags), rules keyed by destination class,
//! protocol and port range with a set of source classes, the mode and the timeouts.

mod classify;
mod compile;
pub mod encode;
pub mod export;
pub mod probe;
pub mod scenario;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

pub use classify::{Counters, Outcome, Reference, Routes};
pub use compile::{Compiled, HostRule, compile};
use exfw_common::{CLASS_EXTERNAL, limits};
pub use exfw_common::{Mode, PortRange, Reason, Verdict};
use ipnet::IpNet;

/// The interface of [`Policy::without_source_validation`].
pub const ANY_INTERFACE: &str = "any";

/// How long state lives in the kernel tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle lifetime of a confirmed TCP connection.
    pub tcp: Duration,
    /// Idle lifetime of a confirmed UDP flow.
    pub udp: Duration,
    /// Idle lifetime of other confirmed flows (ICMP echo, other protocols).
    pub other: Duration,
    /// Lifetime of a first fragment's cached verdict.
    pub fragment: Duration,
    /// Lifetime of a connection that has not completed its handshake.
    pub pending: Duration,
    /// Lifetime of a TCP connection after a FIN (at most its idle lifetime).
    pub tcp_fin: Duration,
    /// Lifetime of a TCP connection after a RST (at most its idle lifetime).
    pub tcp_rst: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(3600),
            udp: Duration::from_secs(60),
            other: Duration::from_secs(60),
            fragment: Duration::from_secs(10),
            pending: Duration::from_secs(10),
            tcp_fin: Duration::from_secs(120),
            tcp_rst: Duration::from_secs(10),
        }
    }
}

/// A group of addresses that share a role: what rules name as source and destination.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Class {
    /// Class id, 1.. (0 is the implicit "external" class).
    pub id: u16,
    /// Name for explanations and metric labels (for example the role).
    pub name: String,
    /// Traffic to or from these hosts is subject to the policy.
    pub protected: bool,
    /// Trusted classes pass to each other on every port and protocol.
    pub trusted: bool,
    /// The gateway's own addresses: traffic to them is passed to the host's own firewall.
    pub local: bool,
    /// The addresses.
    pub prefixes: Vec<IpNet>,
}

/// Which source classes may arrive on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Accepts {
    /// Every source (only the reverse-path check, if on, validates them).
    #[default]
    Any,
    /// Only these classes (0: external, unlisted addresses).
    Classes(BTreeSet<u16>),
}

impl Accepts {
    /// True when `class`'s addresses may arrive as sources.
    pub fn accepts(&self, class: u16) -> bool {
        match self {
            Accepts::Any => true,
            Accepts::Classes(set) => set.contains(&class),
        }
    }
}

/// An interface the program runs on, and how sources arriving there are validated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Strict reverse-path check: the route back to the source must leave through here.
    pub reverse_path: bool,
    /// The source classes that may arrive here.
    pub accepts: Accepts,
}

/// Traffic that passes: from any of `src_classes` to `dst_class` on `proto` and `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable identity and counter slot, `0..MAX_RULES`.
    pub id: u32,
    /// Service name (https, smtp-inbound, ...).
    pub service: String,
    /// Destination class.
    pub dst_class: u16,
    /// Source classes (0 = external).
    pub src_classes: BTreeSet<u16>,
    /// IP protocol number.
    pub proto: u8,
    /// Destination ports (ICMP types for ICMP).
    pub ports: PortRange,
}

impl Rule {
    /// Replaces the rule's class ids with what `map` makes of them.
    pub fn renumber_classes(&mut self, map: impl Fn(u16) -> u16) {
        self.dst_class = map(self.dst_class);
        self.src_classes = self.src_classes.iter().map(|id| map(*id)).collect();
    }
}

/// What a policy in force protects, as far as a reload or a start must not take it away by
/// accident: read from the running config, or back from the pinned kernel tables at a start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protection {
    /// Protected prefixes: servers, domain controllers, Lync/Skype servers, protected networks.
    pub protected: BTreeSet<IpNet>,
    /// Interfaces that accept only some source groups.
    pub restricted_interfaces: BTreeSet<String>,
}

/// A complete policy: everything one generation of the data plane holds.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Policy {
    /// Enforce or audit.
    pub mode: Mode,
    /// Flow and fragment lifetimes.
    pub timeouts: Timeouts,
    /// Address classes; unlisted addresses are external.
    pub classes: Vec<Class>,
    /// The allowlist.
    pub rules: Vec<Rule>,
    /// The interfaces, in slot order (a packet on any other interface drops).
    pub interfaces: Vec<Interface>,
}

/// A policy that cannot be written to the data plane.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Class ids start at 1.
    #[error("class `{0}` uses id 0, which is reserved for external addresses")]
    ReservedClassId(String),
    /// Two classes share an id.
    #[error("class id {0} is used twice")]
    DuplicateClassId(u16),
    /// The same prefix belongs to two classes.
    #[error("prefix {prefix} is in both class `{first}` and class `{second}`")]
    DuplicatePrefix {
        /// The prefix.
        prefix: IpNet,
        /// One class.
        first: String,
        /// The other class.
        second: String,
    },
    /// A kernel table cannot hold the policy twice (the running generation and the new one).
    #[error(
        "the policy needs {used} {table}, more than the {room} one generation may take (each kernel table holds the running policy and the new one during a reload): split the config or use wider prefixes"
    )]
    TableFull {
        /// The table.
        table: &'static str,
        /// Entries needed.
        used: usize,
        /// Entries one generation may take.
        room: usize,
    },
    /// Too many prefixes for the kernel tables.
    #[error("{count} prefixes exceed the limit of {limit} per address family")]
    TooManyPrefixes {
        /// How many.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// Rule id outside the counter table.
    #[error("rule `{service}` has id {id}; ids must be below {limit}")]
    RuleIdOutOfRange {
        /// The rule's service.
        service: String,
        /// Its id.
        id: u32,
        /// The limit.
        limit: u32,
    },
    /// Two rules share an id.
    #[error("rule id {0} is used twice")]
    DuplicateRuleId(u32),
    /// A rule names a class that does not exist.
    #[error("rule `{service}` names class {class}, which is not defined")]
    UnknownClass {
        /// The rule's service.
        service: String,
        /// The class id.
        class: u16,
    },
    /// A rule with first > last.
    #[error("rule `{service}` has the empty port range {first}-{last}")]
    EmptyPortRange {
        /// The rule's service.
        service: String,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// A rule with no sources.
    #[error("rule `{0}` has no source class")]
    NoSources(String),
    /// More interfaces than the kernel's source masks hold.
    #[error("{count} interfaces exceed the limit of {limit}")]
    TooManyInterfaces {
        /// How many.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// Two interfaces share a name.
    #[error("interface `{0}` is named twice")]
    DuplicateInterface(String),
    /// An interface accepts a class that does not exist.
    #[error("interface `{iface}` accepts class {class}, which is not defined")]
    UnknownAcceptedClass {
        /// The interface.
        iface: String,
        /// The class id.
        class: u16,
    },
}

impl Policy {
    /// Checks everything the data plane relies on.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut names: HashMap<u16, &str> = HashMap::new();
        let mut prefixes: HashMap<IpNet, &str> = HashMap::new();
        let (mut v4, mut v6) = (0usize, 0usize);
        for class in &self.classes {
            if class.id == CLASS_EXTERNAL {
                return Err(PolicyError::ReservedClassId(class.name.clone()));
            }
            if names.insert(class.id, &class.name).is_some() {
                return Err(PolicyError::DuplicateClassId(class.id));
            }
            for prefix in &class.prefixes {
                let prefix = prefix.trunc();
                if let Some(first) = prefixes.insert(prefix, &class.name) {
                    return Err(PolicyError::DuplicatePrefix {
                        prefix,
                        first: first.to_string(),
                        second: class.name.clone(),
                    });
                }
                match prefix {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
            }
        }
        // Two generations live in the tables during a swap.
        let limit = limits::MAX_CLASS_PREFIXES / 2;
        if v4.max(v6) > limit as usize {
            return Err(PolicyError::TooManyPrefixes {
                count: v4.max(v6),
                limit,
            });
        }
        if self.interfaces.len() > limits::MAX_INTERFACES as usize {
            return Err(PolicyError::TooManyInterfaces {
                count: self.interfaces.len(),
                limit: limits::MAX_INTERFACES,
            });
        }
        let mut iface_names = BTreeSet::new();
        for iface in &self.interfaces {
            if !iface_names.insert(iface.name.as_str()) {
                return Err(PolicyError::DuplicateInterface(iface.name.clone()));
            }
            if let Accepts::Classes(set) = &iface.accepts
                && let Some(class) = set
                    .iter()
                    .find(|c| **c != CLASS_EXTERNAL && !names.contains_key(c))
            {
                return Err(PolicyError::UnknownAcceptedClass {
                    iface: iface.name.clone(),
                    class: *class,
                });
            }
        }
        let mut ids = BTreeSet::new();
        for rule in &self.rules {
            if rule.id >= limits::MAX_RULES {
                return Err(PolicyError::RuleIdOutOfRange {
                    service: rule.service.clone(),
                    id: rule.id,
                    limit: limits::MAX_RULES,
                });
            }
            if !ids.insert(rule.id) {
                return Err(PolicyError::DuplicateRuleId(rule.id));
            }
            if rule.ports.first > rule.ports.last {
                return Err(PolicyError::EmptyPortRange {
                    service: rule.service.clone(),
                    first: rule.ports.first,
                    last: rule.ports.last,
                });
            }
            if rule.src_classes.is_empty() {
                return Err(PolicyError::NoSources(rule.service.clone()));
            }
            for class in std::iter::once(rule.dst_class).chain(rule.src_classes.iter().copied()) {
                if class != CLASS_EXTERNAL && !names.contains_key(&class) {
                    return Err(PolicyError::UnknownClass {
                        service: rule.service.clone(),
                        class,
                    });
                }
            }
        }
        Ok(())
    }

    /// The interface with this name, and its slot.
    pub fn interface(&self, name: &str) -> Option<(usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == name)
    }

    /// The same policy, judged as if every packet arrived where its source belongs: one
    /// interface, [`ANY_INTERFACE`], that accepts every source and checks no route. What the
    /// rule model says, for explanations and case tables.
    pub fn without_source_validation(&self) -> Policy {
        Policy {
            interfaces: vec![Interface {
                name: ANY_INTERFACE.into(),
                reverse_path: false,
                accepts: Accepts::Any,
            }],
            ..self.clone()
        }
    }

    /// What the rule model says of one frame opening a connection, arriving where its source
    /// belongs (no source validation, empty connection tables).
    pub fn judge_first(&self, frame: &[u8]) -> Outcome {
        Reference::new(self.without_source_validation(), Routes::assume_ingress()).classify(
            frame,
            ANY_INTERFACE,
            0,
        )
    }

    /// Gives every class the id `new_id` returns for it (external stays 0), everywhere a class
    /// id appears: classes, rules and the interfaces' accepted sources.
    pub fn renumber_classes(&mut self, new_id: &BTreeMap<u16, u16>) {
        let map = |id: u16| new_id.get(&id).copied().unwrap_or(id);
        for class in &mut self.classes {
            class.id = map(class.id);
        }
        self.classes.sort_by_key(|c| c.id);
        for rule in &mut self.rules {
            rule.renumber_classes(map);
        }
        for iface in &mut self.interfaces {
            if let Accepts::Classes(set) = &mut iface.accepts {
                *set = set.iter().map(|id| map(*id)).collect();
            }
        }
    }

    /// The class with this id.
    pub fn class(&self, id: u16) -> Option<&Class> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// The rule with this id.
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// A class's name, "external" for id 0.
    pub fn class_name(&self, id: u16) -> &str {
        self.class(id).map_or("external", |c| c.name.as_str())
    }

    /// The (protocol, port) pairs that single-port rules name: per-port drop counters keep these
    /// ports and fold every other port into "other".
    pub fn named_ports(&self) -> BTreeSet<(u8, u16)> {
        self.rules
            .iter()
            .filter(|r| r.ports.first == r.ports.last)
            .map(|r| (r.proto, r.ports.first))
            .collect()
    }

    /// The rule that decides traffic from `src` to `dst` on `proto`/`port`: among the rules that
    /// match, the one with the narrowest port range, then the lowest id.
    pub fn matching_rule(&self, src: u16, dst: u16, proto: u8, port: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| {
                r.dst_class == dst
                    && r.proto == proto
                    && r.ports.contains(port)
                    && r.src_classes.contains(&src)
            })
            .min_by_key(|r| (r.ports.width(), r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(id: u16, name: &str, prefixes: &[&str]) -> Class {
        Class {
            id,
            name: name.into(),
            protected: true,
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn rule(id: u32, dst: u16, src: &[u16], ports: PortRange) -> Rule {
        Rule {
            id,
            service: format!("r{id}"),
            dst_class: dst,
            src_classes: src.iter().copied().collect(),
            proto: 6,
            ports,
        }
    }

    #[test]
    fn validate_rejects_each_inconsistency() {
        let ok = Policy {
            classes: vec![class(1, "cas", &["192.0.2.0/24"])],
            rules: vec![rule(0, 1, &[0], PortRange::single(443))],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let mut p = ok.clone();
        p.classes.push(class(1, "again", &[]));
        assert_eq!(p.validate(), Err(PolicyError::DuplicateClassId(1)));
        let mut p = ok.clone();
        p.classes.push(class(2, "dup", &["192.0.2.7/24"]));
        assert!(matches!(
            p.validate(),
            Err(PolicyError::DuplicatePrefix { .. })
        ));
        let mut p = ok.clone();
        p.rules.push(rule(0, 1, &[0], PortRange::single(80)));
        assert_eq!(p.validate(), Err(PolicyError::DuplicateRuleId(0)));
        let mut p = ok.clone();
        p.rules.push(rule(1, 9, &[0], PortRange::single(80)));
        assert!(matches!(
            p.validate(),
            Err(PolicyError::UnknownClass { class: 9, .. })
        ));
        let mut p = ok.clone();
        p.rules
            .push(rule(1, 1, &[0], PortRange { first: 9, last: 8 }));
        assert!(matches!(
            p.validate(),
            Err(PolicyError::EmptyPortRange { .. })
        ));
        let mut p = ok.clone();
        p.rules
            .push(rule(limits::MAX_RULES, 1, &[0], PortRange::ANY));
        assert!(matches!(
            p.validate(),
            Err(PolicyError::RuleIdOutOfRange { .. })
        ));
        let mut p = ok;
        p.classes.push(class(0, "zero", &[]));
        assert!(matches!(p.validate(), Err(PolicyError::ReservedClassId(_))));
    }

    #[test]
    fn narrowest_range_then_lowest_id_wins() {
        let p = Policy {
            classes: vec![class(1, "cas", &["192.0.2.0/24"])],
            rules: vec![
                rule(
                    5,
                    1,
                    &[0],
                    PortRange {
                        first: 1000,
                        last: 2000,
                    },
                ),
                rule(3, 1, &[0], PortRange::single(1500)),
                rule(
                    2,
                    1,
                    &[0, 1],
                    PortRange {
                        first: 1000,
                        last: 2000,
                    },
                ),
            ],
            ..Default::default()
        };
        assert_eq!(p.matching_rule(0, 1, 6, 1500).unwrap().id, 3);
        assert_eq!(p.matching_rule(0, 1, 6, 1501).unwrap().id, 2);
        assert_eq!(p.matching_rule(1, 1, 6, 1501).unwrap().id, 2);
        assert!(p.matching_rule(1, 1, 17, 1501).is_none());
    }
}
