//! compile(config, model) -> Policy: address classes, trusted flags and rules with stable ids,
//! plus what `explain` needs (roles of each class, provenance of each rule). Deterministic: the
//! same config gives the same policy, byte for byte.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use exfw_common::{CLASS_EXTERNAL, proto};
use ipnet::IpNet;

use super::{Accepts, Class, Interface, Policy, PolicyError, PortRange, Rule, Timeouts};
use crate::{
    config::{Config, DcAccess, Endpoint},
    model::{Provenance, Role, Service, catalogue, source},
};

/// A compiled policy with what explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// What the data plane and the reference classifier run.
    pub policy: Policy,
    /// Rules towards the gateway's own addresses: the XDP program passes that traffic to the
    /// host (reason `local`), whose input chain (`exfw export --format nft-gateway`) enforces these.
    pub host_rules: Vec<HostRule>,
    /// The roles each class stands for (class id -> roles); external (0) is implicit.
    pub class_roles: BTreeMap<u16, Vec<Role>>,
    /// Why each rule exists (rule id -> provenance).
    pub provenance: BTreeMap<u32, Vec<Provenance>>,
}

/// A rule the gateway's own firewall enforces, with why it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// The rule (its id is only an order).
    pub rule: Rule,
    /// Why it exists.
    pub why: Vec<Provenance>,
}

impl Compiled {
    /// Gives every rule the counter slot `slot_of` returns for it, keeping provenance in step.
    pub fn renumber(&mut self, mut slot_of: impl FnMut(&Rule) -> u32) {
        let mut provenance = BTreeMap::new();
        for rule in &mut self.policy.rules {
            let slot = slot_of(rule);
            if let Some(why) = self.provenance.remove(&rule.id) {
                provenance.insert(slot, why);
            }
            rule.id = slot;
        }
        self.policy.rules.sort_by_key(|r| r.id);
        self.provenance = provenance;
    }

    /// Gives every class the id `new_id` maps its compiled id to (external stays 0), in the
    /// policy, the gateway's own rules and the roles of each class.
    pub fn renumber_classes(&mut self, new_id: &BTreeMap<u16, u16>) {
        let map = |id: u16| new_id.get(&id).copied().unwrap_or(id);
        self.policy.renumber_classes(new_id);
        for host in &mut self.host_rules {
            host.rule.renumber_classes(map);
        }
        self.class_roles = std::mem::take(&mut self.class_roles)
            .into_iter()
            .map(|(id, roles)| (map(id), roles))
            .collect();
    }

    /// A rule's identity: what keeps its counters across reloads (service, destination,
    /// protocol, ports).
    pub fn rule_identity(&self, rule: &Rule) -> String {
        format!(
            "{}|{}|{}|{}-{}",
            rule.service,
            self.policy.class_name(rule.dst_class),
            rule.proto,
            rule.ports.first,
            rule.ports.last
        )
    }

    /// The host rule that lets `src` reach the gateway class `dst` on `proto`/`port`, if any.
    pub fn host_rule(&self, src: u16, dst: u16, proto: u8, port: u16) -> Option<&HostRule> {
        self.host_rules
            .iter()
            .filter(|h| {
                let r = &h.rule;
                r.dst_class == dst
                    && r.proto == proto
                    && r.ports.contains(port)
                    && r.src_classes.contains(&src)
            })
            .min_by_key(|h| (h.rule.ports.width(), h.rule.id))
    }

    /// The classes of every trusted role, which pass to each other unconditionally.
    pub fn trusted_classes(&self) -> Vec<&Class> {
        self.policy.classes.iter().filter(|c| c.trusted).collect()
    }
}

/// Compiles a validated configuration.
pub fn compile(config: &Config) -> Result<Compiled, PolicyError> {
    let mut classes = ClassBuilder::default();
    // Servers: one class per distinct role set, so combined servers keep every role's rules.
    let mut by_roles: BTreeMap<Vec<Role>, Vec<IpNet>> = BTreeMap::new();
    for server in &config.servers {
        by_roles
            .entry(server.roles.iter().copied().collect())
            .or_default()
            .extend(&server.addresses);
    }
    for (roles, prefixes) in by_roles {
        classes.add(roles, prefixes);
    }
    let hosts = |list: &[crate::config::Host]| {
        list.iter()
            .flat_map(|h| h.addresses.iter().copied())
            .collect::<Vec<_>>()
    };
    let dc = classes.add_named(
        Role::Dc.name().into(),
        vec![Role::Dc],
        hosts(&config.domain_controllers),
    );
    if config.organization.domain_controller_access == DcAccess::Unfiltered {
        // Still trusted with Exchange; judged only when the source is protected (the Edge).
        classes.unprotect(dc);
    }
    classes.add(vec![Role::Lync], hosts(&config.lync_servers));
    classes.add(vec![Role::Dns], hosts(&config.dns_servers));
    classes.add(vec![Role::UmGateway], hosts(&config.um_gateways));
    classes.add(vec![Role::Clients], config.client_networks.clone());
    classes.add(
        vec![Role::Gateway],
        config.management.gateway_addresses.clone(),
    );
    for network in &config.protected_networks {
        classes.add_named(
            format!("protected-network {}", network.name),
            vec![Role::ProtectedNetwork],
            network.addresses.clone(),
        );
    }
    // Management and allow sources: a class per prefix, which also inherits the rules of the
    // class it would otherwise fall into (clients, another source, or external).
    let mut derived: BTreeSet<IpNet> = config.management.sources.iter().copied().collect();
    for allow in &config.allows {
        for from in &allow.from {
            if let Endpoint::Prefix(net) = from {
                derived.insert(*net);
            }
        }
    }
    let mut derived: Vec<IpNet> = derived.into_iter().collect();
    derived.sort_by_key(|n| (n.prefix_len(), *n));
    let management: BTreeSet<IpNet> = config.management.sources.iter().copied().collect();
    let mut derived_ids = BTreeMap::new();
    for net in &derived {
        let (name, roles) = if management.contains(net) {
            (format!("management {net}"), vec![Role::Management])
        } else {
            (format!("allow-source {net}"), vec![])
        };
        let id = classes.add_named(name, roles, vec![*net]);
        derived_ids.insert(*net, id);
    }

    let mut rules = RuleBuilder::default();
    let roles_of = |role: Role| classes.with_role(role);
    for service in catalogue(&config.organization) {
        rules.add_service(&service, &roles_of);
    }
    for port in &config.management.ports {
        let service = Service {
            name: "management".into(),
            proto: proto::TCP,
            ports: PortRange::single(*port),
            from: vec![Role::Management],
            to: Role::Gateway,
            provenance: Provenance::cite(
                source::EXFW,
                "section \"Management access\": management access to the gateway must never be blocked ([management] in the config)",
            ),
        };
        rules.add_service(&service, &roles_of);
    }
    if config.organization.icmp_echo {
        for (protocol, kind) in [(proto::ICMP, 8), (proto::ICMPV6, 128)] {
            let service = Service {
                name: if protocol == proto::ICMP {
                    "icmp-echo"
                } else {
                    "icmpv6-echo"
                }
                .into(),
                proto: protocol,
                ports: PortRange::single(kind),
                from: vec![Role::Management],
                to: Role::Gateway,
                provenance: Provenance::cite(
                    source::EXFW,
                    "section \"ICMP\": echo is configurable (icmp_echo), management hosts may ping the gateway",
                ),
            };
            rules.add_service(&service, &roles_of);
        }
    }
    for allow in &config.allows {
        let mut sources = BTreeSet::new();
        let mut from_external = false;
        for from in &allow.from {
            match from {
                Endpoint::Role(role) => {
                    sources.extend(roles_of(*role));
                    from_external |= *role == Role::External;
                }
                Endpoint::Prefix(net) => {
                    sources.insert(derived_ids[net]);
                }
            }
        }
        let why = Provenance::config(format!("[[allow]] `{}`: {}", allow.name, allow.reason));
        for to in &allow.to {
            // Internal clients get at least what the Internet gets, except towards the domain
            // controllers, whose client access `domain_controller_access` decides.
            let mut sources = sources.clone();
            if from_external && *to != Role::Dc {
                sources.extend(roles_of(Role::Clients));
            }
            for dst in roles_of(*to) {
                for (first, last) in &allow.ports {
                    rules.add(
                        &allow.name,
                        dst,
                        allow.proto,
                        PortRange {
                            first: *first,
                            last: *last,
                        },
                        &sources,
                        &why,
                    );
                }
            }
        }
    }
    // Inheritance, shortest prefixes first so chains resolve.
    let mut parents = BTreeMap::new();
    for net in &derived {
        let child = derived_ids[net];
        let parent = classes.parent_of(net, child);
        parents.insert(child, parent);
        for entry in rules.entries.values_mut() {
            if entry.0.contains(&parent) {
                entry.0.insert(child);
            }
        }
    }
    let interfaces = config
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            reverse_path: i.reverse_path,
            accepts: match &i.accepts {
                None => Accepts::Any,
                Some(groups) => {
                    Accepts::Classes(classes.accepted(groups, &derived, &derived_ids, &parents))
                }
            },
        })
        .collect();
    let (rules, mut provenance) = rules.finish(&classes);
    let (host_rules, rules): (Vec<Rule>, Vec<Rule>) = rules.into_iter().partition(|r| {
        classes
            .classes
            .iter()
            .any(|c| c.id == r.dst_class && c.local)
    });
    let host_rules = host_rules
        .into_iter()
        .map(|rule| HostRule {
            why: provenance.remove(&rule.id).unwrap_or_default(),
            rule,
        })
        .collect();
    let secs = Duration::from_secs;
    let limits = &config.limits;
    let policy = Policy {
        mode: config.mode,
        timeouts: Timeouts {
            tcp: secs(limits.tcp_idle_seconds),
            udp: secs(limits.udp_idle_seconds),
            other: secs(limits.other_idle_seconds),
            fragment: secs(limits.fragment_seconds),
            pending: secs(limits.pending_seconds),
            tcp_fin: secs(limits.tcp_fin_seconds),
            tcp_rst: secs(limits.tcp_rst_seconds),
        },
        classes: classes.classes,
        rules,
        interfaces,
    };
    policy.validate()?;
    Ok(Compiled {
        policy,
        host_rules,
        class_roles: classes.roles,
        provenance,
    })
}

#[derive(Default)]
struct ClassBuilder {
    classes: Vec<Class>,
    roles: BTreeMap<u16, Vec<Role>>,
}

impl ClassBuilder {
    fn add(&mut self, roles: Vec<Role>, prefixes: Vec<IpNet>) {
        let name = roles.iter().map(|r| r.name()).collect::<Vec<_>>().join("+");
        self.add_named(name, roles, prefixes);
    }

    fn add_named(&mut self, name: String, roles: Vec<Role>, prefixes: Vec<IpNet>) -> u16 {
        if prefixes.is_empty() {
            return CLASS_EXTERNAL;
        }
        let id = self.classes.len() as u16 + 1;
        let mut prefixes: Vec<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        prefixes.sort();
        prefixes.dedup();
        self.classes.push(Class {
            id,
            name,
            protected: roles.iter().any(|r| r.protected()),
            trusted: roles.iter().any(|r| r.trusted()),
            local: roles.iter().any(|r| r.local()),
            prefixes,
        });
        self.roles.insert(id, roles);
        id
    }

    /// Leaves a class's traffic unfiltered unless the other end is protected.
    fn unprotect(&mut self, id: u16) {
        if let Some(class) = self.classes.iter_mut().find(|c| c.id == id) {
            class.protected = false;
        }
    }

    fn with_role(&self, role: Role) -> Vec<u16> {
        if role == Role::External {
            return vec![CLASS_EXTERNAL];
        }
        self.roles
            .iter()
            .filter(|(_, roles)| roles.contains(&role))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The classes an interface accepting `groups` accepts: those with one of the roles, 0 for
    /// `external`, and derived source classes whose parent is accepted (management sources
    /// also when `management` is listed).
    fn accepted(
        &self,
        groups: &[Role],
        derived: &[IpNet],
        derived_ids: &BTreeMap<IpNet, u16>,
        parents: &BTreeMap<u16, u16>,
    ) -> BTreeSet<u16> {
        let mut set: BTreeSet<u16> = self
            .roles
            .iter()
            .filter(|(_, roles)| roles.iter().any(|r| groups.contains(r)))
            .map(|(id, _)| *id)
            .collect();
        if groups.contains(&Role::External) {
            set.insert(CLASS_EXTERNAL);
        }
        // Shortest prefixes first: a parent is decided before its children.
        for net in derived {
            let id = derived_ids[net];
            if parents.get(&id).is_some_and(|p| set.contains(p)) {
                set.insert(id);
            }
        }
        set
    }

    /// The class `net` would belong to without its own class: the longest strictly wider prefix.
    fn parent_of(&self, net: &IpNet, own: u16) -> u16 {
        self.classes
            .iter()
            .filter(|c| c.id != own)
            .flat_map(|c| c.prefixes.iter().map(move |p| (c.id, p)))
            .filter(|(_, p)| p.prefix_len() < net.prefix_len() && p.contains(net))
            .max_by_key(|(_, p)| p.prefix_len())
            .map_or(CLASS_EXTERNAL, |(id, _)| id)
    }
}

/// (service, destination class, protocol, ports): what makes a rule one rule.
type RuleKey = (String, u16, u8, PortRange);
/// A rule's merged sources and reasons.
type RuleSources = (BTreeSet<u16>, BTreeSet<Provenance>);
/// Why each rule exists, by rule id.
type Provenances = BTreeMap<u32, Vec<Provenance>>;

#[derive(Default)]
struct RuleBuilder {
    entries: BTreeMap<RuleKey, RuleSources>,
}

impl RuleBuilder {
    fn add_service(&mut self, s: &Service, roles_of: &impl Fn(Role) -> Vec<u16>) {
        let sources: BTreeSet<u16> = s.from.iter().flat_map(|r| roles_of(*r)).collect();
        for dst in roles_of(s.to) {
            self.add(&s.name, dst, s.proto, s.ports, &sources, &s.provenance);
        }
    }

    fn add(
        &mut self,
        service: &str,
        dst: u16,
        proto: u8,
        ports: PortRange,
        sources: &BTreeSet<u16>,
        why: &Provenance,
    ) {
        let entry = self
            .entries
            .entry((service.to_string(), dst, proto, ports))
            .or_default();
        entry.0.extend(sources);
        entry.1.insert(why.clone());
    }

    /// Numbers the rules in (service, destination name, protocol, ports) order.
    fn finish(self, classes: &ClassBuilder) -> (Vec<Rule>, Provenances) {
        let name = |id: u16| {
            classes
                .classes
                .iter()
                .find(|c| c.id == id)
                .map_or("external".to_string(), |c| c.name.clone())
        };
        let mut sorted: Vec<(RuleKey, RuleSources)> = self
            .entries
            .into_iter()
            .filter(|(_, (sources, _))| !sources.is_empty())
            .collect();
        sorted.sort_by_key(|((service, dst, proto, ports), _)| {
            (service.clone(), name(*dst), *proto, *ports)
        });
        let mut rules = Vec::new();
        let mut provenance = BTreeMap::new();
        for (i, ((service, dst_class, proto, ports), (src_classes, why))) in
            sorted.into_iter().enumerate()
        {
            let id = i as u32;
            rules.push(Rule {
                id,
                service,
                dst_class,
                src_classes,
                proto,
                ports,
            });
            provenance.insert(id, why.into_iter().collect());
        }
        (rules, provenance)
    }
}
