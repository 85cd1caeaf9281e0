//! The lab: an Exchange organisation in network namespaces around a gateway running the real
//! `exfw run`, with real servers (nginx, postfix, dovecot, dnsmasq), small servers of ours (the
//! domain controller's listeners, a MAPI/RPC endpoint mapper, a SIP call router and worker, an
//! IP-PBX) and clients (curl, swaks, dig, ours), Prometheus scraping the gateway, and a table of
//! what each scenario expected and got.
//!
//! The organisation is any example config: the lab reads its version, options and addresses and
//! builds one namespace per server role (the first server of each), the first domain
//! controller, the first DNS server, the client networks (clients, administrators, UM gateways)
//! and the Internet (a client and a remote mail server):
//!
//! ```text
//!                        +------------- gw (exfw on every link) -------------+
//!  inet  203.0.113.9   --+ inet0                      cas0 / mbx0 / hub0 ... +-- one per server role
//!        203.0.113.25    |  (remote mail server)                        dc0  +-- the first domain controller
//!  clients (first host --+ clients0                                    dns0  +-- the first DNS server
//!   of each client net,  |                                                   |
//!   management, UM gws)  +---- Prometheus 127.0.0.1:9090, exfw 127.0.0.1:9720 +
//! ```
//!
//! Every host address is a /32 (/128) behind the gateway's 192.0.2.1 (fe80::1), so every flow
//! between two parts of the organisation crosses the gateway and its XDP program. The lab
//! enforces: an example in audit mode runs in enforce mode here, so the table shows what
//! enforcement would do.
//!
//! Expected verdicts are not written down here: each scenario asks the reference classifier
//! (what `exfw simulate` runs) about its first packet, so the table holds for the config given.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use exfw_common::{Verdict, proto};
use exfw_daemon::{
    config::{self, ExchangeVersion},
    model::Role,
    policy::{Compiled, Reference, Routes, compile, probe},
};
use ipnet::IpNet;

use exfw_tests::{
    daemon::{Daemon, http_get, wait_until},
    netns::{CONNECT_WAIT, Namespace, connect_here, sh, tcp_connect},
};

/// Prometheus in the gateway namespace.
pub const PROMETHEUS: &str = "127.0.0.1:9090";
/// exfw's metrics endpoint in the gateway namespace.
pub const EXFW_METRICS: &str = "127.0.0.1:9720";

const INTERNET_CLIENT: &str = "203.0.113.9";
const INTERNET_CLIENT_V6: &str = "2001:db8:ffff::9";
const REMOTE_MX: &str = "203.0.113.25";
/// The gateway's address on every host link: each host's next hop.
const NEXT_HOP: &str = "192.0.2.1";
const NEXT_HOP_V6: &str = "fe80::1";
/// What Exchange and domain-joined clients use on a domain controller.
const DC_PORTS: [u16; 8] = [88, 135, 389, 445, 464, 636, 3268, 49152];
/// The UDP port the UM worker takes RTP media on.
const RTP_PORT: u16 = 30000;

/// What the lab is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The organisation (its mode, interfaces and metrics address are replaced by the lab's).
    pub config: PathBuf,
    /// Keep generating the scenarios' traffic for at least this long.
    pub duration: Duration,
    /// The repository root (dashboards/, the exfw binary's target directory).
    pub repo: PathBuf,
}

/// One line of the lab's table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was tried.
    pub scenario: String,
    /// "pass" or "drop" (what `exfw simulate` says of the first packet).
    pub expected: &'static str,
    /// "pass" or "drop" as seen by the client, with detail.
    pub observed: String,
    /// The exfw counter that moved.
    pub counter: String,
    /// Expected and observed agree.
    pub ok: bool,
}

/// What a scenario saw: whether the traffic got through, and how.
struct Seen {
    passed: bool,
    detail: String,
}

impl Seen {
    fn new(passed: bool, detail: impl Into<String>) -> Seen {
        Seen {
            passed,
            detail: detail.into(),
        }
    }
}

/// A host of the lab: a namespace behind its own gateway link.
struct Host {
    ns: Namespace,
    /// The gateway's end of the link.
    link: String,
    /// The first IPv4 address (every host of the lab has one).
    v4: String,
    /// The first IPv6 address, if the config gives one.
    v6: Option<String>,
    /// Every address the host holds.
    addresses: Vec<String>,
}

/// Where the organisation's services live, from its version and options.
#[derive(Clone, Copy, Debug)]
struct Shape {
    version: ExchangeVersion,
    edge: bool,
    /// Client access: CAS up to 2013, Mailbox from 2016.
    client_access: Role,
    /// The transport role: Hub on 2010, Mailbox later.
    transport: Role,
    /// Where Internet mail arrives: the Edge, or the no-Edge table's server.
    front_door: Role,
    /// Where clients submit on 587.
    submission: Role,
    /// The UM call router and worker.
    um: Option<(Role, Role)>,
}

impl Shape {
    fn of(org: &config::Organization) -> Shape {
        let v = org.exchange;
        let client_access = if v.client_access_on_mailbox() {
            Role::Mailbox
        } else {
            Role::Cas
        };
        let transport = if v == ExchangeVersion::V2010 {
            Role::Hub
        } else {
            Role::Mailbox
        };
        let front_door = if org.edge_subscribed {
            Role::Edge
        } else if v == ExchangeVersion::V2010 {
            Role::Hub
        } else {
            client_access
        };
        let submission = if v == ExchangeVersion::V2010 {
            Role::Hub
        } else {
            client_access
        };
        let um = org.unified_messaging.then_some(match v {
            ExchangeVersion::V2010 => (Role::Um, Role::Um),
            ExchangeVersion::V2013 => (Role::Cas, Role::Mailbox),
            _ => (Role::Mailbox, Role::Mailbox),
        });
        Shape {
            version: v,
            edge: org.edge_subscribed,
            client_access,
            transport,
            front_door,
            submission,
            um,
        }
    }
}

/// The running lab; dropping it stops every process and removes every namespace and pin.
pub struct Lab {
    children: Vec<(String, Child)>,
    /// (namespace, config directory) of each postfix instance: its master leaves our process
    /// group, so teardown stops it with `postfix stop`.
    postfixes: Vec<(String, String)>,
    daemon: Option<Daemon>,
    stop_listeners: Arc<AtomicBool>,
    resolv_dirs: Vec<PathBuf>,
    work: PathBuf,
    pins: PathBuf,
    compiled: Compiled,
    shape: Shape,
    /// The static RPC ports of a 2010 organisation (RPC Client Access, Address Book).
    static_rpc: Option<(u16, u16)>,
    imap4: bool,
    pop3: bool,
    /// Where the example came from, and whether the lab switched it from audit to enforce.
    origin: String,
    /// The gateway namespace (exfw, Prometheus).
    pub gw: Namespace,
    inet: Host,
    clients: Host,
    /// The IP gateway's address in the client namespace, when Unified Messaging is on.
    um_gateway: Option<String>,
    /// One host per server role present (a multi-role server is one host under each role).
    servers: BTreeMap<Role, usize>,
    hosts: Vec<Host>,
    dc: Option<usize>,
    dns: usize,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The host address of a config entry, if it is one (a prefix is not a host).
fn host_address(net: &IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The first host addresses of a config host, one per family.
fn first_addresses(addresses: &[IpNet]) -> (Option<String>, Option<String>) {
    let pick = |v6: bool| {
        addresses
            .iter()
            .filter_map(host_address)
            .find(|a| a.is_ipv6() == v6)
            .map(|a| a.to_string())
    };
    (pick(false), pick(true))
}

/// A host address inside `net` (its 7th, as a client would be), skipping `taken`.
fn address_in(net: &IpNet, taken: &[String]) -> Option<String> {
    (7u128..250).find_map(|i| {
        let addr = match net {
            IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + i as u32).into()),
            IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + i).into()),
        };
        (net.contains(&addr) && !taken.contains(&addr.to_string())).then(|| addr.to_string())
    })
}

/// The short name of a server role's namespace and link.
fn role_tag(role: Role) -> &'static str {
    match role {
        Role::Cas => "cas",
        Role::Mailbox => "mbx",
        Role::Hub => "hub",
        Role::Um => "um",
        Role::Edge => "edge",
        _ => unreachable!("not a server role"),
    }
}

/// A host the lab will build: its tag (namespace and link name), the groups its link accepts,
/// and its addresses.
struct Planned {
    tag: String,
    accepts: Vec<&'static str>,
    v4: String,
    v6: Option<String>,
    addresses: Vec<String>,
}

impl Planned {
    fn new(tag: &str, accepts: Vec<&'static str>, v4: String, v6: Option<String>) -> Planned {
        let addresses = std::iter::once(v4.clone()).chain(v6.clone()).collect();
        Planned {
            tag: tag.to_string(),
            accepts,
            v4,
            v6,
            addresses,
        }
    }

    fn build(self) -> Host {
        Host {
            ns: Namespace::new(&format!("lab-{}", self.tag)),
            link: format!("{}0", self.tag),
            v4: self.v4,
            v6: self.v6,
            addresses: self.addresses,
        }
    }
}

/// The hosts the lab builds for an organisation: (Internet, clients, UM gateway address,
/// servers by role (index into the list), the list, domain controller, DNS server).
type Plan = (
    Planned,
    Planned,
    Option<String>,
    BTreeMap<Role, usize>,
    Vec<Planned>,
    Option<usize>,
    usize,
);

fn plan(cfg: &config::Config, shape: &Shape) -> anyhow::Result<Plan> {
    let mut servers = BTreeMap::new();
    let mut hosts: Vec<Planned> = Vec::new();
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    let protected_network = !cfg.protected_networks.is_empty();
    for role in Role::SERVER_ROLES {
        let Some(server) = cfg.servers.iter().find(|s| s.roles.contains(&role)) else {
            continue;
        };
        if let Some(&index) = chosen.get(&server.name) {
            servers.insert(role, index);
            continue;
        }
        let (v4, v6) = first_addresses(&server.addresses);
        let v4 = v4.ok_or_else(|| {
            anyhow::anyhow!(
                "the lab needs an IPv4 host address for server `{}`",
                server.name
            )
        })?;
        let mut accepts: Vec<&'static str> = server.roles.iter().map(|r| r.name()).collect();
        if protected_network && hosts.is_empty() {
            accepts.push(Role::ProtectedNetwork.name());
        }
        chosen.insert(server.name.clone(), hosts.len());
        servers.insert(role, hosts.len());
        hosts.push(Planned::new(role_tag(role), accepts, v4, v6));
    }
    for (role, what) in [
        (shape.client_access, "client access"),
        (shape.transport, "transport"),
        (shape.front_door, "Internet mail"),
        (shape.submission, "client submission"),
    ] {
        if !servers.contains_key(&role) {
            anyhow::bail!(
                "the lab needs a `{}` server for {what} in Exchange {}",
                role.name(),
                shape.version.name()
            );
        }
    }
    let lync = !cfg.lync_servers.is_empty();
    let dc = match cfg.domain_controllers.first() {
        Some(host) => {
            let (v4, v6) = first_addresses(&host.addresses);
            let v4 = v4.ok_or_else(|| {
                anyhow::anyhow!("the lab needs an IPv4 host address for `{}`", host.name)
            })?;
            let mut accepts = vec![Role::Dc.name()];
            if lync {
                accepts.push(Role::Lync.name());
            }
            hosts.push(Planned::new("dc", accepts, v4, v6));
            Some(hosts.len() - 1)
        }
        None => None,
    };
    let dns_host = cfg.dns_servers.first().ok_or_else(|| {
        anyhow::anyhow!("the lab needs a [[dns_server]]: the Internet-facing servers resolve the remote domain's MX through it")
    })?;
    let (v4, v6) = first_addresses(&dns_host.addresses);
    let v4 = v4.ok_or_else(|| {
        anyhow::anyhow!("the lab needs an IPv4 host address for `{}`", dns_host.name)
    })?;
    let mut accepts = vec![Role::Dns.name()];
    if lync && dc.is_none() {
        accepts.push(Role::Lync.name());
    }
    hosts.push(Planned::new("dns", accepts, v4, v6));
    let dns = hosts.len() - 1;

    // The client namespace: a client in the first client network of each family, the
    // administrators' host addresses and the first UM gateway.
    let mut taken: Vec<String> = hosts.iter().flat_map(|h| h.addresses.clone()).collect();
    let hosts_of = |nets: &[IpNet]| -> Vec<String> {
        nets.iter()
            .filter_map(host_address)
            .map(|a| a.to_string())
            .collect()
    };
    let management = hosts_of(&cfg.management.sources);
    let um_gateway = cfg
        .um_gateways
        .first()
        .and_then(|g| first_addresses(&g.addresses).0);
    taken.extend(management.iter().cloned());
    taken.extend(um_gateway.iter().cloned());
    let client_net = |v6: bool| {
        cfg.client_networks
            .iter()
            .find(|n| n.addr().is_ipv6() == v6)
    };
    let client_v4 = client_net(false)
        .and_then(|n| address_in(n, &taken))
        .ok_or_else(|| {
            anyhow::anyhow!("the lab needs an IPv4 client network ([clients] networks)")
        })?;
    let client_v6 = client_net(true).and_then(|n| address_in(n, &taken));
    let mut accepts = vec![Role::Clients.name()];
    if !management.is_empty() {
        accepts.push(Role::Management.name());
    }
    if um_gateway.is_some() {
        accepts.push(Role::UmGateway.name());
    }
    let mut clients = Planned::new("clients", accepts, client_v4, client_v6);
    clients.addresses.extend(management);
    clients.addresses.extend(um_gateway.iter().cloned());
    let mut inet = Planned::new(
        "inet",
        vec![Role::External.name()],
        INTERNET_CLIENT.into(),
        Some(INTERNET_CLIENT_V6.into()),
    );
    inet.addresses.push(REMOTE_MX.into());
    let every: Vec<String> = hosts
        .iter()
        .chain([&inet, &clients])
        .flat_map(|h| h.addresses.iter().cloned())
        .collect();
    for a in &every {
        if a == NEXT_HOP {
            anyhow::bail!(
                "the lab uses {NEXT_HOP} as the gateway's address on every link; the config gives it to a host"
            );
        }
        if every.iter().filter(|b| *b == a).count() > 1 {
            anyhow::bail!("the lab would give {a} to two hosts");
        }
    }
    Ok((inet, clients, um_gateway, servers, hosts, dc, dns))
}

impl Lab {
    /// Builds the namespaces, starts the servers, exfw and Prometheus, and waits for each.
    pub fn start(options: &Options) -> anyhow::Result<Lab> {
        exfw_tests::require_root();
        exfw_tests::netns::remove_stale();
        // One directory and pin directory per lab, should a process run several.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let work = std::env::temp_dir().join(format!("exfw-lab-{id}"));
        let pins = PathBuf::from(format!("/sys/fs/bpf/exfw-lab-{id}"));
        let text = std::fs::read_to_string(&options.config)?;
        let name = options.config.display().to_string();
        let original = config::parse(&text, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
        let shape = Shape::of(&original.organization);
        let (inet, clients, um_gateway, servers, planned, dc, dns) = plan(&original, &shape)?;
        let links: Vec<(String, Vec<&'static str>)> = [&inet, &clients]
            .into_iter()
            .chain(&planned)
            .map(|h| (format!("{}0", h.tag), h.accepts.clone()))
            .collect();
        let lab_config = lab_config(&text, &links)?;
        let cfg = config::parse(&lab_config, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
        let compiled = compile(&cfg)?;
        // Nothing is created before the organisation is known to fit the lab; from here on
        // the lab's destructor removes whatever exists.
        std::fs::create_dir_all(&work)?;
        let config_path = work.join("exfw.toml");
        std::fs::write(&config_path, &lab_config)?;
        let origin = format!(
            "{name}: Exchange {}{}{}",
            shape.version.name(),
            if shape.edge {
                " with a subscribed Edge"
            } else {
                " without an Edge"
            },
            if original.mode == exfw_daemon::policy::Mode::Audit {
                " (an audit-mode config: the lab enforces it)"
            } else {
                ""
            }
        );
        let mut lab = Lab {
            children: Vec::new(),
            postfixes: Vec::new(),
            daemon: None,
            stop_listeners: Arc::new(AtomicBool::new(false)),
            resolv_dirs: Vec::new(),
            work: work.clone(),
            pins: pins.clone(),
            compiled,
            shape,
            static_rpc: cfg.organization.static_rpc_ports,
            imap4: cfg.organization.imap4,
            pop3: cfg.organization.pop3,
            origin,
            gw: Namespace::new("lab-gw"),
            inet: inet.build(),
            clients: clients.build(),
            um_gateway,
            servers,
            hosts: planned.into_iter().map(Planned::build).collect(),
            dc,
            dns,
        };
        lab.wire()?;
        lab.start_servers()?;
        lab.daemon = Some(Daemon::start(
            &lab.gw,
            &config_path,
            &pins,
            &work.join("exfw.log"),
        ));
        let daemon = lab.daemon.as_mut().unwrap();
        let gw = &lab.gw;
        wait_until("exfw /readyz", Duration::from_secs(30), || {
            assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
            http_get(gw, EXFW_METRICS, "/readyz").is_some_and(|(s, _)| s == 200)
        });
        lab.start_prometheus(&options.repo)?;
        Ok(lab)
    }

    /// The organisation the lab runs, in a line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The host that plays `role`.
    fn server(&self, role: Role) -> &Host {
        &self.hosts[self.servers[&role]]
    }

    fn dns(&self) -> &Host {
        &self.hosts[self.dns]
    }

    fn dc(&self) -> Option<&Host> {
        self.dc.map(|i| &self.hosts[i])
    }

    fn every_host(&self) -> impl Iterator<Item = &Host> {
        [&self.inet, &self.clients].into_iter().chain(&self.hosts)
    }

    /// The gateway link an address of the lab sits behind (an unknown one: the Internet's).
    fn home_link(&self, addr: &str) -> &str {
        self.every_host()
            .find(|h| h.addresses.iter().any(|a| a == addr))
            .map_or("inet0", |h| h.link.as_str())
    }

    /// The gateway link a lab host's namespace is wired to.
    fn link_of(&self, ns: &Namespace) -> &str {
        self.every_host()
            .find(|h| h.ns.name() == ns.name())
            .map(|h| h.link.as_str())
            .expect("a lab namespace")
    }

    fn wire(&mut self) -> anyhow::Result<()> {
        for host in [&self.inet, &self.clients].into_iter().chain(&self.hosts) {
            let (ns, link) = (&host.ns, host.link.as_str());
            self.gw.veth_to(link, ns);
            for a in &host.addresses {
                if ip(a).is_ipv6() {
                    ns.ip(&[
                        "-6",
                        "addr",
                        "add",
                        &format!("{a}/128"),
                        "dev",
                        "eth0",
                        "nodad",
                    ]);
                } else {
                    ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "eth0"]);
                }
            }
            ns.ip(&["link", "set", "eth0", "up"]);
            self.gw
                .ip(&["addr", "add", &format!("{NEXT_HOP}/32"), "dev", link]);
            self.gw.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{NEXT_HOP_V6}/64"),
                "dev",
                link,
                "nodad",
            ]);
            self.gw.ip(&["link", "set", link, "up"]);
            ns.ip(&["route", "add", &format!("{NEXT_HOP}/32"), "dev", "eth0"]);
            ns.ip(&["route", "add", "default", "via", NEXT_HOP, "dev", "eth0"]);
            if host.addresses.iter().any(|a| ip(a).is_ipv6()) {
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    NEXT_HOP_V6,
                    "dev",
                    "eth0",
                ]);
            }
            for a in &host.addresses {
                if ip(a).is_ipv6() {
                    self.gw
                        .ip(&["-6", "route", "add", &format!("{a}/128"), "dev", link]);
                } else {
                    self.gw
                        .ip(&["route", "add", &format!("{a}/32"), "dev", link]);
                }
            }
        }
        self.gw.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        // Every host resolves through the lab's DNS server (ip netns exec bind-mounts this).
        let resolver = self.dns().v4.clone();
        let names: Vec<String> = self.every_host().map(|h| h.ns.name().to_string()).collect();
        for name in names {
            let dir = PathBuf::from("/etc/netns").join(name);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("resolv.conf"), format!("nameserver {resolver}\n"))?;
            self.resolv_dirs.push(dir);
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.work.join(format!("{name}.log")))?;
        let mut command = Command::new("ip");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                // The lab may block SIGINT/SIGTERM to tear down in order; servers must not inherit that.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                // Its own process group, so teardown reaches the daemons it forks (postfix master).
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = command
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Serves TCP on `addr` inside `ns`: `reply` talks to each connection in turn.
    fn serve_tcp(
        &self,
        ns: &Namespace,
        addr: SocketAddr,
        reply: impl Fn(&mut TcpStream) + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .map_err(|e| anyhow::anyhow!("listening on {addr} in {}: {e}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = self.stop_listeners.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        reply(&mut stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(())
    }

    /// Echoes UDP datagrams on `addr` inside `ns`.
    fn serve_udp_echo(&self, ns: &Namespace, addr: SocketAddr) -> anyhow::Result<()> {
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .map_err(|e| anyhow::anyhow!("UDP on {addr} in {}: {e}", ns.name()))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = self.stop_listeners.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(())
    }

    fn start_servers(&mut self) -> anyhow::Result<()> {
        let w = self.work.clone();
        let wd = w.display().to_string();
        let shape = self.shape;
        // Mailboxes belong to the mail user; the directories must be reachable by postfix and dovecot.
        for dir in ["mail", "remote-mail", "tmp", "dovecot"] {
            std::fs::create_dir_all(w.join(dir))?;
        }
        sh(&["chmod", "755", &wd]);
        sh(&[
            "chown",
            "mail:mail",
            &format!("{wd}/mail"),
            &format!("{wd}/remote-mail"),
        ]);

        // Client access: nginx with a self-signed certificate.
        let ca = self.server(shape.client_access);
        let (ca_ns, ca_v4, ca_v6) = (ca.ns.name().to_string(), ca.v4.clone(), ca.v6.clone());
        sh(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mail.corp.test",
            "-days",
            "2",
            "-keyout",
            &format!("{wd}/key.pem"),
            "-out",
            &format!("{wd}/cert.pem"),
        ]);
        let mut listen = format!("listen {ca_v4}:80; listen {ca_v4}:443 ssl;");
        if let Some(v6) = &ca_v6 {
            listen += &format!(" listen [{v6}]:80; listen [{v6}]:443 ssl;");
        }
        std::fs::write(
            w.join("nginx.conf"),
            format!(
                "user root;\nworker_processes 1;\npid {wd}/nginx.pid;\nerror_log {wd}/nginx-error.log;\ndaemon off;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {wd}/nginx-access.log;\n  client_body_temp_path {wd}/tmp/body; proxy_temp_path {wd}/tmp/proxy; fastcgi_temp_path {wd}/tmp/fcgi; uwsgi_temp_path {wd}/tmp/uwsgi; scgi_temp_path {wd}/tmp/scgi;\n\
                 server {{ {listen} ssl_certificate {wd}/cert.pem; ssl_certificate_key {wd}/key.pem; location / {{ return 200 \"Outlook on the web (exfw lab)\\n\"; }} }}\n}}\n"
            ),
        )?;
        self.spawn(
            "nginx",
            &ca_ns,
            &["nginx", "-c", &format!("{wd}/nginx.conf")],
        )?;

        // Postfix: the transport server delivers corp.test into the mailbox directory; the
        // Edge (or the no-Edge table's front door) takes Internet mail and relays it there;
        // the submission server takes authenticated client mail on 587.
        let transport = self.server(shape.transport).v4.clone();
        let submission = self.server(shape.submission).v4.clone();
        let front_door = self.server(shape.front_door).v4.clone();
        let sub_queue = format!("{wd}/postfix-{}-queue", role_tag(shape.submission));
        let submission_service = "587 inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=dovecot -o smtpd_sasl_path=private/auth \
                          -o smtpd_client_restrictions=permit_sasl_authenticated,reject -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n";
        let mut relayers = String::new();
        for other in [&submission, &front_door] {
            if *other != transport && !relayers.contains(other.as_str()) {
                relayers += &format!(" {other}/32");
            }
        }
        let mut instances: BTreeMap<Role, (String, &str)> = BTreeMap::new();
        instances.insert(
            shape.transport,
            (
                format!(
                    "myhostname = {tag}.corp.test\ninet_interfaces = {transport}\nmynetworks = 127.0.0.0/8{relayers}\n{relay}\
                     virtual_mailbox_domains = corp.test\nvirtual_mailbox_base = {wd}/mail\nvirtual_mailbox_maps = inline:{{ user@corp.test=user/Maildir/ }}\n\
                     virtual_uid_maps = static:8\nvirtual_gid_maps = static:8\nvirtual_minimum_uid = 8\n",
                    tag = role_tag(shape.transport),
                    relay = if shape.edge {
                        format!("relayhost = [{}]:25\n", self.server(Role::Edge).v4)
                    } else {
                        String::new()
                    },
                ),
                if shape.submission == shape.transport {
                    submission_service
                } else {
                    ""
                },
            ),
        );
        // Relays: the Edge or front door (Internet mail in, to the transport server), and the
        // submission server (client mail to the transport server, which sends it on).
        for role in [shape.front_door, shape.submission] {
            if instances.contains_key(&role) {
                continue;
            }
            let host = self.server(role).v4.clone();
            let inbound = role == shape.front_door;
            instances.insert(
                role,
                (
                    format!(
                        "myhostname = {tag}.corp.test\ninet_interfaces = {host}\nmynetworks = 127.0.0.0/8{edge_relays}\n{inbound}{outbound}\
                         smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n",
                        tag = role_tag(role),
                        // The Edge sends the organisation's outbound mail itself.
                        edge_relays = if role == Role::Edge {
                            format!(" {transport}/32")
                        } else {
                            String::new()
                        },
                        inbound = if inbound {
                            format!("relay_domains = corp.test\ntransport_maps = inline:{{ corp.test=smtp:[{transport}]:25 }}\n")
                        } else {
                            String::new()
                        },
                        outbound = if role == Role::Edge {
                            String::new()
                        } else {
                            format!("relayhost = [{transport}]:25\n")
                        },
                    ),
                    if role == shape.submission {
                        submission_service
                    } else {
                        ""
                    },
                ),
            );
        }

        // Dovecot on the client access server: IMAP4 and POP3 (exfw decides who reaches them),
        // and SASL for the submission server's postfix, whose queue holds its socket.
        let mut dovecot_listen = ca_v4.clone();
        if let Some(v6) = &ca_v6 {
            dovecot_listen += &format!(", {v6}");
        }
        std::fs::write(w.join("dovecot/users"), "user:{PLAIN}secret\n")?;
        std::fs::write(
            w.join("dovecot/dovecot.conf"),
            format!(
                "base_dir = {wd}/dovecot/run\nstate_dir = {wd}/dovecot/state\nlog_path = {wd}/dovecot/dovecot.log\n\
                 protocols = imap pop3\nlisten = {dovecot_listen}\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:{wd}/mail/%n/Maildir\nfirst_valid_uid = 8\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%n {wd}/dovecot/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=8 gid=8 home={wd}/mail/%n\n}}\n\
                 service auth {{\n  unix_listener {sub_queue}/private/auth {{\n    mode = 0666\n  }}\n}}\n\
                 default_login_user = dovenull\ndefault_internal_user = dovecot\n"
            ),
        )?;
        // Its SASL socket lives in the submission postfix's queue: create that first.
        let private = format!("{sub_queue}/private");
        std::fs::create_dir_all(&private)?;
        sh(&["chown", "postfix:root", &private]);
        sh(&["chmod", "700", &private]);
        self.spawn(
            "dovecot",
            &ca_ns,
            &["dovecot", "-F", "-c", &format!("{wd}/dovecot/dovecot.conf")],
        )?;
        let socket = PathBuf::from(format!("{private}/auth"));
        self.wait_for("dovecot's auth socket", "dovecot", || socket.exists())?;

        for (role, (main, extra)) in &instances {
            let ns = self.server(*role).ns.name().to_string();
            self.postfix(role_tag(*role), &ns, main, extra)?;
        }
        let remote_cf = format!(
            "myhostname = mail.remote.test\ninet_interfaces = {REMOTE_MX}\nmynetworks = 127.0.0.0/8\n\
             virtual_mailbox_domains = remote.test\nvirtual_mailbox_base = {wd}/remote-mail\nvirtual_mailbox_maps = inline:{{ someone@remote.test=someone/Maildir/ }}\n\
             virtual_uid_maps = static:8\nvirtual_gid_maps = static:8\nvirtual_minimum_uid = 8\n"
        );
        let inet_ns = self.inet.ns.name().to_string();
        self.postfix("remote", &inet_ns, &remote_cf, "")?;

        // DNS for the servers: the remote domain's MX.
        let dns = self.dns();
        let mut dnsmasq: Vec<String> = [
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--mx-host=remote.test,mail.remote.test,10",
            "--log-queries",
            "--log-facility=-",
        ]
        .map(String::from)
        .to_vec();
        dnsmasq.push(format!("--host-record=mail.remote.test,{REMOTE_MX}"));
        for a in &dns.addresses {
            dnsmasq.push(format!("--listen-address={a}"));
        }
        let dns_ns = dns.ns.name().to_string();
        let args: Vec<&str> = dnsmasq.iter().map(String::as_str).collect();
        self.spawn("dnsmasq", &dns_ns, &args)?;

        // The domain controller: listeners on what Exchange and domain members use, and the
        // CLDAP ping (UDP 389).
        if let Some(dc) = self.dc() {
            for a in &dc.addresses {
                for port in DC_PORTS {
                    self.serve_tcp(&dc.ns, SocketAddr::new(ip(a), port), |_| {})?;
                }
                self.serve_udp_echo(&dc.ns, SocketAddr::new(ip(a), 389))?;
            }
        }
        // SMB on the transport server, which the pinhole attempt aims at; an HTTP server on the
        // Internet for revocation lists; EdgeSync on the Edge.
        let t = self.server(shape.transport);
        self.serve_tcp(&t.ns, SocketAddr::new(ip(&t.v4), 445), |_| {})?;
        self.serve_tcp(
            &self.inet.ns,
            SocketAddr::new(ip(INTERNET_CLIENT), 80),
            |_| {},
        )?;
        if shape.edge {
            let edge = self.server(Role::Edge);
            self.serve_tcp(&edge.ns, SocketAddr::new(ip(&edge.v4), 50636), |_| {})?;
        }
        self.start_static_rpc()?;
        self.start_unified_messaging()?;

        // Wait for every server.
        let ca = self.server(shape.client_access);
        let mut waits = vec![
            (&ca.ns, format!("{ca_v4}:443"), "nginx".to_string()),
            (&ca.ns, format!("{ca_v4}:143"), "dovecot".into()),
            (
                &self.inet.ns,
                format!("{REMOTE_MX}:25"),
                "postfix-remote".into(),
            ),
        ];
        for role in instances.keys() {
            let host = self.server(*role);
            let log = format!("postfix-{}", role_tag(*role));
            waits.push((&host.ns, format!("{}:25", host.v4), log));
        }
        let sub = self.server(shape.submission);
        let log = format!("postfix-{}", role_tag(shape.submission));
        waits.push((&sub.ns, format!("{}:587", sub.v4), log));
        for (ns, addr, log) in waits {
            let target: SocketAddr = addr.parse()?;
            self.wait_for(&format!("a server on {addr}"), &log, || {
                ns.run(|| TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())
            })?;
        }
        let front = self.server(shape.front_door).ns.name().to_string();
        let resolver = self.dns().v4.clone();
        self.wait_for("dnsmasq", "dnsmasq", || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &front,
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    &format!("@{resolver}"),
                    "mail.remote.test",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(REMOTE_MX))
        })?;
        Ok(())
    }

    /// Exchange 2010's static RPC ports: an endpoint mapper on 135 that names the port of the
    /// service asked for, and the RPC Client Access (CAS and Mailbox) and Address Book (CAS)
    /// services on theirs.
    fn start_static_rpc(&self) -> anyhow::Result<()> {
        let Some((rpc_ca, rpc_ab)) = self.static_rpc else {
            return Ok(());
        };
        for (role, services) in [
            (Role::Cas, &[("rpc-ca", rpc_ca), ("rpc-ab", rpc_ab)][..]),
            (Role::Mailbox, &[("rpc-ca", rpc_ca)][..]),
        ] {
            let Some(&index) = self.servers.get(&role) else {
                continue;
            };
            let host = &self.hosts[index];
            let known: Vec<(String, u16)> =
                services.iter().map(|(n, p)| (n.to_string(), *p)).collect();
            self.serve_tcp(&host.ns, SocketAddr::new(ip(&host.v4), 135), move |s| {
                let mut line = String::new();
                let _ = BufReader::new(&mut *s).read_line(&mut line);
                let port = known
                    .iter()
                    .find(|(n, _)| *n == line.trim())
                    .map_or(0, |(_, p)| *p);
                let _ = writeln!(s, "{port}");
            })?;
            for (name, port) in services {
                let name = name.to_string();
                self.serve_tcp(&host.ns, SocketAddr::new(ip(&host.v4), *port), move |s| {
                    let _ = writeln!(s, "ready {name}");
                })?;
            }
        }
        Ok(())
    }

    /// Unified Messaging: the call router answers an INVITE with a redirect to the worker,
    /// the worker answers it, the worker echoes RTP, and the IP gateway answers Exchange's SIP.
    fn start_unified_messaging(&self) -> anyhow::Result<()> {
        let (Some((router, worker)), Some(gateway)) = (self.shape.um, &self.um_gateway) else {
            return Ok(());
        };
        let (router, worker) = (self.server(router), self.server(worker));
        let worker_v4 = worker.v4.clone();
        self.serve_tcp(&router.ns, SocketAddr::new(ip(&router.v4), 5060), move |s| {
            let _ = read_sip(s);
            let _ = write!(
                s,
                "SIP/2.0 302 Moved Temporarily\r\nContact: <sip:um@{worker_v4}:5065;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
            );
        })?;
        let ok = |s: &mut TcpStream| {
            let _ = read_sip(s);
            let _ = write!(s, "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        };
        self.serve_tcp(&worker.ns, SocketAddr::new(ip(&worker.v4), 5065), ok)?;
        self.serve_udp_echo(&worker.ns, SocketAddr::new(ip(&worker.v4), RTP_PORT))?;
        self.serve_tcp(&self.clients.ns, SocketAddr::new(ip(gateway), 5060), ok)?;
        Ok(())
    }

    fn postfix(
        &mut self,
        name: &str,
        ns: &str,
        main: &str,
        extra_master: &str,
    ) -> anyhow::Result<()> {
        let wd = self.work.display().to_string();
        let dir = self.work.join(format!("postfix-{name}"));
        std::fs::create_dir_all(&dir)?;
        let queue = format!("{wd}/postfix-{name}-queue");
        let data = format!("{wd}/postfix-{name}-data");
        std::fs::create_dir_all(&queue)?;
        std::fs::create_dir_all(&data)?;
        sh(&["chown", "postfix", &data]);
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\nmaillog_file = /dev/stdout\n\
                 inet_protocols = ipv4\nmydestination =\nalias_maps =\nalias_database =\nsmtp_host_lookup = dns\n{main}"
            ),
        )?;
        // Debian's master.cf without chroot (the lab's queue directories are not chroot jails).
        let master = std::fs::read_to_string("/etc/postfix/master.cf")?;
        let unchrooted: String = master
            .lines()
            .map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                if !l.starts_with('#')
                    && !l.starts_with(' ')
                    && fields.len() >= 8
                    && ["inet", "unix", "fifo", "pass", "unix-dgram"].contains(&fields[1])
                {
                    let mut f = fields.clone();
                    f[4] = "n";
                    f.join(" ")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(
            dir.join("master.cf"),
            format!("{unchrooted}\n{extra_master}"),
        )?;
        let d = dir.display().to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "postfix",
            "-c",
            &d,
            "post-install",
            "create-missing",
        ]);
        sh(&["ip", "netns", "exec", ns, "postfix", "-c", &d, "check"]);
        self.spawn(
            &format!("postfix-{name}"),
            ns,
            &["postfix", "-c", &d, "start-fg"],
        )?;
        self.postfixes.push((ns.to_string(), d));
        Ok(())
    }

    /// Waits for `condition`; on timeout, fails with the tail of `log` (a server's log name).
    fn wait_for(
        &self,
        what: &str,
        log: &str,
        mut condition: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition() {
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(self.work.join(format!("{log}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                anyhow::bail!(
                    "timed out waiting for {what}; the end of {log}.log:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn start_prometheus(&mut self, repo: &Path) -> anyhow::Result<()> {
        let wd = self.work.display().to_string();
        std::fs::write(
            self.work.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: exfw\n    static_configs:\n      - targets: ['{EXFW_METRICS}']\n",
                repo.join("dashboards/exfw-alerts.yml").display()
            ),
        )?;
        let gw = self.gw.name().to_string();
        self.spawn(
            "prometheus",
            &gw,
            &[
                "prometheus",
                &format!("--config.file={wd}/prometheus.yml"),
                &format!("--storage.tsdb.path={wd}/prometheus"),
                &format!("--web.listen-address={PROMETHEUS}"),
            ],
        )?;
        let gw = &self.gw;
        wait_until("Prometheus to be ready", Duration::from_secs(60), || {
            http_get(gw, PROMETHEUS, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        Ok(())
    }

    /// What `exfw simulate` says of a new connection's first packet, arriving on the link its
    /// source sits behind.
    fn expect(&self, src: &str, dst: &str, p: u8, port: u16) -> &'static str {
        self.expect_on(self.home_link(src), src, dst, p, port)
    }

    /// "pass" when every step is expected to pass.
    fn expect_all(&self, steps: &[(&str, &str, u8, u16)]) -> &'static str {
        if steps
            .iter()
            .all(|(s, d, p, port)| self.expect(s, d, *p, *port) == "pass")
        {
            "pass"
        } else {
            "drop"
        }
    }

    /// Opens a TCP connection from `src` (inside `ns`) and runs `talk` on it.
    fn session<T>(
        ns: &Namespace,
        src: &str,
        dst: &str,
        port: u16,
        talk: impl FnOnce(&mut TcpStream) -> std::io::Result<T> + Send,
    ) -> Result<T, String>
    where
        T: Send,
    {
        let (src, dst) = (SocketAddr::new(ip(src), 0), SocketAddr::new(ip(dst), port));
        ns.run(|| {
            let mut stream = connect_here(Some(src), dst, CONNECT_WAIT).map_err(|e| {
                if e == std::io::ErrorKind::TimedOut {
                    format!("{dst}: timed out")
                } else {
                    format!("{dst}: {e}")
                }
            })?;
            stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .map_err(|e| e.to_string())?;
            talk(&mut stream).map_err(|e| format!("{dst}: {e}"))
        })
    }

    /// A SIP request from `src` to `dst`:`port`; the response's first line and Contact.
    fn sip(
        ns: &Namespace,
        src: &str,
        dst: &str,
        port: u16,
        method: &str,
    ) -> Result<String, String> {
        Self::session(ns, src, dst, port, |s| {
            write!(
                s,
                "{method} sip:user@corp.test SIP/2.0\r\nVia: SIP/2.0/TCP {src}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            )?;
            Ok(read_sip(s))
        })
    }

    /// A UDP datagram from `src` to `dst`:`port` and its echo.
    fn udp_echo(ns: &Namespace, src: &str, dst: &str, port: u16) -> Seen {
        let (src, dst) = (SocketAddr::new(ip(src), 0), SocketAddr::new(ip(dst), port));
        ns.run(|| {
            let socket = UdpSocket::bind(src).unwrap();
            socket.set_read_timeout(Some(CONNECT_WAIT)).unwrap();
            socket.send_to(b"exfw lab", dst).unwrap();
            let mut buf = [0u8; 64];
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == b"exfw lab" => Seen::new(true, "echoed"),
                _ => Seen::new(false, "no echo"),
            }
        })
    }

    /// TCP connects from `from` to every port a domain controller serves.
    /// TCP connects from `from` to every port a domain controller serves, each held to its
    /// own expectation (`expected[i]`: port i passes): the row agrees with the table only when
    /// every port did what the reference classifier says.
    fn dc_ports(from: &Host, dc: &Host, expected: &[bool]) -> Seen {
        let observed: Vec<bool> = DC_PORTS
            .iter()
            .map(|p| Self::connect(&from.ns, &from.v4, &dc.v4, *p).passed)
            .collect();
        let connected = observed.iter().filter(|o| **o).count();
        let unlike: Vec<String> = DC_PORTS
            .iter()
            .zip(observed.iter().zip(expected))
            .filter(|(_, (o, e))| o != e)
            .map(|(p, (o, _))| format!("{p} {}", if *o { "passed" } else { "dropped" }))
            .collect();
        let all_expected = expected.iter().all(|e| *e);
        let mut detail = format!("{connected}/{} ports connected", DC_PORTS.len());
        if !unlike.is_empty() {
            detail += &format!("; unlike the reference: {}", unlike.join(", "));
        }
        // A port that behaved otherwise turns the row against its expectation.
        Seen::new(
            if unlike.is_empty() {
                all_expected
            } else {
                !all_expected
            },
            detail,
        )
    }

    /// A MAPI/RPC client: asks the endpoint mapper on 135 for each service's port, then
    /// connects there and reads the service's greeting.
    fn mapi(clients: &Host, server: &Host, services: &[&str]) -> Seen {
        let client = clients.v4.as_str();
        let mut seen = Vec::new();
        for service in services {
            let port = Self::session(&clients.ns, client, &server.v4, 135, |s| {
                writeln!(s, "{service}")?;
                let mut line = String::new();
                BufReader::new(&mut *s).read_line(&mut line)?;
                Ok(line.trim().parse::<u16>().unwrap_or(0))
            });
            let answer = port.and_then(|port| {
                Self::session(&clients.ns, client, &server.v4, port, |s| {
                    let mut line = String::new();
                    BufReader::new(&mut *s).read_line(&mut line)?;
                    Ok(line.trim().to_string())
                })
            });
            match answer {
                Ok(line) if line == format!("ready {service}") => {
                    seen.push(format!("{service} answered"))
                }
                Ok(line) => return Seen::new(false, format!("{service}: {line:?}")),
                Err(e) => return Seen::new(false, e),
            }
        }
        Seen::new(true, format!("endpoint mapper, {}", seen.join(", ")))
    }

    /// Runs every scenario once and returns the table.
    pub fn scenarios(&self) -> Vec<Row> {
        let (tcp, udp) = (proto::TCP, proto::UDP);
        type Scenario<'a> = (String, &'static str, Box<dyn Fn() -> Seen + 'a>);
        let shape = self.shape;
        let mail = self.work.join("mail/user/Maildir");
        let remote = self.work.join("remote-mail/someone/Maildir");
        let wait_mail = |dir: PathBuf, before: usize, what: &'static str| -> Seen {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Self::maildir_count(&dir) <= before {
                if Instant::now() > deadline {
                    return Seen::new(false, format!("accepted, but never {what}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Seen::new(true, what)
        };
        let inet = &self.inet;
        let clients = &self.clients;
        let ca = self.server(shape.client_access);
        let transport = self.server(shape.transport);
        let front = self.server(shape.front_door);
        let sub = self.server(shape.submission);
        let (ca_tag, t_tag, front_tag, sub_tag) = (
            shape.client_access.name(),
            shape.transport.name(),
            shape.front_door.name(),
            shape.submission.name(),
        );
        let client = clients.v4.as_str();
        let http = |ns: &Namespace, src: &str, url: String| -> Seen {
            let (ok, out) = Self::run_tool(
                ns,
                &[
                    "curl",
                    "-sk",
                    "--max-time",
                    "3",
                    "--interface",
                    src,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ],
            );
            if ok {
                Seen::new(true, format!("HTTP {}", out.trim()))
            } else {
                Seen::new(false, "no answer")
            }
        };
        let url = |addr: &str, scheme: &str| {
            if ip(addr).is_ipv6() {
                format!("{scheme}://[{addr}]/owa")
            } else {
                format!("{scheme}://{addr}/owa")
            }
        };
        let mut list: Vec<Scenario> = vec![
            (
                format!("HTTPS (OWA, EAS, EWS) from the Internet to {ca_tag}"),
                self.expect(INTERNET_CLIENT, &ca.v4, tcp, 443),
                Box::new(move || http(&inet.ns, INTERNET_CLIENT, url(&ca.v4, "https"))),
            ),
            (
                format!("HTTP from internal clients to {ca_tag}"),
                self.expect(client, &ca.v4, tcp, 80),
                Box::new(move || http(&clients.ns, client, url(&ca.v4, "http"))),
            ),
        ];
        if let Some(ca_v6) = &ca.v6 {
            list.push((
                "HTTPS over IPv6 from the Internet".into(),
                self.expect(INTERNET_CLIENT_V6, ca_v6, tcp, 443),
                Box::new(move || http(&inet.ns, INTERNET_CLIENT_V6, url(ca_v6, "https"))),
            ));
            if let Some(client_v6) = &clients.v6 {
                list.push((
                    "HTTPS over IPv6 from an IPv6 client".into(),
                    self.expect(client_v6, ca_v6, tcp, 443),
                    Box::new(move || http(&clients.ns, client_v6, url(ca_v6, "https"))),
                ));
                list.push((
                    "IMAP4 over IPv6 from an IPv6 client".into(),
                    self.expect(client_v6, ca_v6, tcp, 143),
                    Box::new(move || Self::connect(&clients.ns, client_v6, ca_v6, 143)),
                ));
            }
        }
        let path = if shape.front_door == shape.transport {
            format!("Internet -> {front_tag}")
        } else {
            format!("Internet -> {front_tag} -> {t_tag}")
        };
        list.push((
            format!("Inbound mail: {path}, delivered"),
            self.expect(INTERNET_CLIENT, &front.v4, tcp, 25),
            Box::new(|| {
                let before = Self::maildir_count(&mail);
                let (ok, out) = Self::run_tool(
                    &inet.ns,
                    &[
                        "swaks",
                        "--server",
                        &front.v4,
                        "--local-interface",
                        INTERNET_CLIENT,
                        "--from",
                        "alice@remote.test",
                        "--to",
                        "user@corp.test",
                        "--timeout",
                        "3",
                        "--h-Subject",
                        "exfw lab inbound",
                    ],
                );
                if !ok {
                    return Seen::new(
                        false,
                        format!("SMTP failed: {}", out.lines().last().unwrap_or_default()),
                    );
                }
                wait_mail(mail.clone(), before, "delivered to the mailbox")
            }),
        ));
        list.push((
            format!(
                "Authenticated submission on 587 at {sub_tag}, out to the Internet{}",
                if shape.edge { " via the Edge" } else { "" }
            ),
            self.expect(client, &sub.v4, tcp, 587),
            Box::new(|| {
                let before = Self::maildir_count(&remote);
                let (ok, out) = Self::run_tool(
                    &clients.ns,
                    &[
                        "swaks",
                        "--server",
                        &sub.v4,
                        "--port",
                        "587",
                        "--local-interface",
                        client,
                        "--auth",
                        "PLAIN",
                        "--auth-user",
                        "user@corp.test",
                        "--auth-password",
                        "secret",
                        "--from",
                        "user@corp.test",
                        "--to",
                        "someone@remote.test",
                        "--timeout",
                        "3",
                    ],
                );
                if !ok {
                    return Seen::new(
                        false,
                        format!(
                            "submission failed: {}",
                            out.lines().last().unwrap_or_default()
                        ),
                    );
                }
                wait_mail(remote.clone(), before, "delivered to remote.test")
            }),
        ));
        for (name, scheme, port, enabled) in [
            ("IMAP4", "imap", 143, self.imap4),
            ("POP3", "pop3", 110, self.pop3),
        ] {
            list.push((
                format!(
                    "{name} login from a client{}",
                    if enabled { "" } else { " (disabled)" }
                ),
                self.expect(client, &ca.v4, tcp, port),
                Box::new(move || {
                    let mut args = vec![
                        "curl".to_string(),
                        "-s".into(),
                        "--max-time".into(),
                        "3".into(),
                        "--interface".into(),
                        client.into(),
                        "-u".into(),
                        "user:secret".into(),
                    ];
                    if scheme == "imap" {
                        args.push(format!("imap://{}/INBOX", ca.v4));
                        args.extend(["--request".into(), "EXAMINE INBOX".into()]);
                    } else {
                        args.push(format!("pop3://{}/", ca.v4));
                    }
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let (ok, out) = Self::run_tool(&clients.ns, &args);
                    if ok && (scheme == "pop3" || out.contains("EXISTS")) {
                        Seen::new(true, "logged in, mailbox listed")
                    } else {
                        Seen::new(false, format!("no {name} session"))
                    }
                }),
            ));
        }
        let dns = self.dns();
        list.push((
            format!("DNS lookup by {front_tag} (next hop MX)"),
            self.expect(&front.v4, &dns.v4, udp, 53),
            Box::new(move || {
                let (_, out) = Self::run_tool(
                    &front.ns,
                    &[
                        "dig",
                        "+short",
                        "+time=2",
                        "+tries=1",
                        &format!("@{}", dns.v4),
                        "MX",
                        "remote.test",
                    ],
                );
                if out.contains("mail.remote.test") {
                    Seen::new(true, "MX answered")
                } else {
                    Seen::new(false, "no answer")
                }
            }),
        ));
        if let Some(dc) = self.dc() {
            let steps = |from: &str| -> Vec<(String, String, u8, u16)> {
                DC_PORTS
                    .iter()
                    .map(|p| (from.to_string(), dc.v4.clone(), tcp, *p))
                    .collect()
            };
            let all = |steps: Vec<(String, String, u8, u16)>| {
                let refs: Vec<(&str, &str, u8, u16)> = steps
                    .iter()
                    .map(|(s, d, p, port)| (s.as_str(), d.as_str(), *p, *port))
                    .collect();
                self.expect_all(&refs)
            };
            let each = |from: &str| -> Vec<bool> {
                DC_PORTS
                    .iter()
                    .map(|p| self.expect(from, &dc.v4, tcp, *p) == "pass")
                    .collect()
            };
            let (from_transport, from_client) = (each(&transport.v4), each(client));
            list.push((
                format!("{t_tag} <-> domain controller: Kerberos, RPC, LDAP, SMB, kpasswd, LDAPS, GC, dynamic RPC"),
                all(steps(&transport.v4)),
                Box::new(move || Self::dc_ports(transport, dc, &from_transport)),
            ));
            list.push((
                "Domain logon from a client: Kerberos, RPC, LDAP, SMB, kpasswd, LDAPS, GC, dynamic RPC".into(),
                all(steps(client)),
                Box::new(move || Self::dc_ports(clients, dc, &from_client)),
            ));
            list.push((
                "DC locator ping (CLDAP, UDP 389) from a client".into(),
                self.expect(client, &dc.v4, udp, 389),
                Box::new(move || Self::udp_echo(&clients.ns, client, &dc.v4, 389)),
            ));
            list.push((
                "LDAP 389 from the Internet to the domain controller".into(),
                self.expect(INTERNET_CLIENT, &dc.v4, tcp, 389),
                Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &dc.v4, 389)),
            ));
        }
        list.push((
            format!("RDP 3389 from the Internet to {ca_tag}"),
            self.expect(INTERNET_CLIENT, &ca.v4, tcp, 3389),
            Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &ca.v4, 3389)),
        ));
        list.push((
            format!("SMB 445 from the Internet to {t_tag}"),
            self.expect(INTERNET_CLIENT, &transport.v4, tcp, 445),
            Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &transport.v4, 445)),
        ));
        if shape.front_door != shape.transport {
            list.push((
                format!("SMTP from the Internet straight to {t_tag}"),
                self.expect(INTERNET_CLIENT, &transport.v4, tcp, 25),
                Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &transport.v4, 25)),
            ));
        }
        list.push((
            format!("Anonymous SMTP from a client to {front_tag} (what the Internet gets)"),
            self.expect(client, &front.v4, tcp, 25),
            Box::new(move || Self::connect(&clients.ns, client, &front.v4, 25)),
        ));
        list.push((
            format!("HTTP from {t_tag} to the Internet (revocation lists, updates)"),
            self.expect(&transport.v4, INTERNET_CLIENT, tcp, 80),
            Box::new(move || Self::connect(&transport.ns, &transport.v4, INTERNET_CLIENT, 80)),
        ));
        if shape.edge {
            let edge = self.server(Role::Edge);
            list.push((
                format!("EdgeSync 50636 from {t_tag} to the Edge"),
                self.expect(&transport.v4, &edge.v4, tcp, 50636),
                Box::new(move || Self::connect(&transport.ns, &transport.v4, &edge.v4, 50636)),
            ));
            list.push((
                "EdgeSync 50636 from the Internet to the Edge".into(),
                self.expect(INTERNET_CLIENT, &edge.v4, tcp, 50636),
                Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &edge.v4, 50636)),
            ));
            if let Some(dc) = self.dc() {
                list.push((
                    "Edge -> domain controller LDAP 389".into(),
                    self.expect(&edge.v4, &dc.v4, tcp, 389),
                    Box::new(move || Self::connect(&edge.ns, &edge.v4, &dc.v4, 389)),
                ));
            }
            list.push((
                format!("Attacker: the Edge claims {t_tag} relaying to it, then SMB from port 25"),
                self.expect_sequence(&[
                    ("edge0", &transport.v4, 445, &edge.v4, 25),
                    ("edge0", &edge.v4, 25, &transport.v4, 445),
                ]),
                Box::new(move || {
                    let forged =
                        self.forge_syn(&edge.ns, &edge.ns, &transport.v4, 445, &edge.v4, 25);
                    // Port 25 is postfix's: the Edge's attacker sends the SYN raw.
                    let smb =
                        self.forge_syn(&edge.ns, &transport.ns, &edge.v4, 25, &transport.v4, 445);
                    Seen::new(
                        forged.passed || smb.passed,
                        format!("forged relay {}; SMB {}", forged.detail, smb.detail),
                    )
                }),
            ));
        }
        let claimed = self.dc().map_or(ca.v4.as_str(), |dc| dc.v4.as_str());
        list.push((
            format!(
                "Attacker: the Internet claims {}'s address, SMB to {t_tag}",
                if self.dc.is_some() { "the DC" } else { ca_tag }
            ),
            self.expect_on("inet0", claimed, &transport.v4, tcp, 445),
            Box::new(move || {
                self.forge_syn(&inet.ns, &transport.ns, claimed, 40445, &transport.v4, 445)
            }),
        ));
        if let Some((rpc_ca, rpc_ab)) = self.static_rpc {
            let cas = self.server(Role::Cas);
            list.push((
                "Outlook MAPI/RPC from a client: endpoint mapper, RPC Client Access, Address Book on cas".into(),
                self.expect_all(&[
                    (client, &cas.v4, tcp, 135),
                    (client, &cas.v4, tcp, rpc_ca),
                    (client, &cas.v4, tcp, rpc_ab),
                ]),
                Box::new(move || Self::mapi(clients, cas, &["rpc-ca", "rpc-ab"])),
            ));
            if let Some(&index) = self.servers.get(&Role::Mailbox) {
                let mbx = &self.hosts[index];
                list.push((
                    "Outlook MAPI/RPC from a client: endpoint mapper, RPC Client Access on mailbox"
                        .into(),
                    self.expect_all(&[(client, &mbx.v4, tcp, 135), (client, &mbx.v4, tcp, rpc_ca)]),
                    Box::new(move || Self::mapi(clients, mbx, &["rpc-ca"])),
                ));
            }
            list.push((
                "MAPI/RPC endpoint mapper from the Internet to cas".into(),
                self.expect(INTERNET_CLIENT, &cas.v4, tcp, 135),
                Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &cas.v4, 135)),
            ));
        }
        if let (Some((router, worker)), Some(gateway)) = (shape.um, &self.um_gateway) {
            let (router_host, worker_host) = (self.server(router), self.server(worker));
            let gateway = gateway.as_str();
            list.push((
                format!(
                    "UM: a call from the IP gateway: INVITE to the call router on {}, redirected to the worker on {}",
                    router.name(),
                    worker.name()
                ),
                self.expect_all(&[
                    (gateway, &router_host.v4, tcp, 5060),
                    (gateway, &worker_host.v4, tcp, 5065),
                ]),
                Box::new(move || {
                    let redirect = match Self::sip(&clients.ns, gateway, &router_host.v4, 5060, "INVITE") {
                        Ok(r) => r,
                        Err(e) => return Seen::new(false, format!("call router: {e}")),
                    };
                    let Some(contact) = redirect
                        .split("sip:um@")
                        .nth(1)
                        .and_then(|rest| rest.split(';').next())
                        .and_then(|hp| hp.parse::<SocketAddr>().ok())
                    else {
                        return Seen::new(false, format!("no redirect: {redirect:?}"));
                    };
                    match Self::sip(&clients.ns, gateway, &contact.ip().to_string(), contact.port(), "INVITE") {
                        Ok(r) if r.starts_with("SIP/2.0 200") => {
                            Seen::new(true, format!("302 to {contact}, 200 OK"))
                        }
                        Ok(r) => Seen::new(false, format!("worker said {r:?}")),
                        Err(e) => Seen::new(false, format!("302 to {contact}, then {e}")),
                    }
                }),
            ));
            list.push((
                format!("UM: RTP media (UDP {RTP_PORT}) from the IP gateway to the worker"),
                self.expect(gateway, &worker_host.v4, udp, RTP_PORT),
                Box::new(move || Self::udp_echo(&clients.ns, gateway, &worker_host.v4, RTP_PORT)),
            ));
            list.push((
                format!(
                    "UM: Exchange ({}) places a call through the IP gateway (SIP 5060)",
                    router.name()
                ),
                self.expect(&router_host.v4, gateway, tcp, 5060),
                Box::new(move || {
                    match Self::sip(&router_host.ns, &router_host.v4, gateway, 5060, "OPTIONS") {
                        Ok(r) if r.starts_with("SIP/2.0 200") => Seen::new(true, "200 OK"),
                        Ok(r) => Seen::new(false, format!("gateway said {r:?}")),
                        Err(e) => Seen::new(false, e),
                    }
                }),
            ));
            list.push((
                "UM: SIP from the Internet to the call router".into(),
                self.expect(INTERNET_CLIENT, &router_host.v4, tcp, 5060),
                Box::new(move || Self::connect(&inet.ns, INTERNET_CLIENT, &router_host.v4, 5060)),
            ));
        }
        list.into_iter()
            .map(|(scenario, expected, run)| {
                let before = self.scrape();
                let seen = run();
                // The counters are read after the daemon's next scrape-free read: they are kernel counters.
                let after = self.scrape();
                let observed = if seen.passed { "pass" } else { "drop" };
                Row {
                    scenario,
                    expected,
                    observed: format!("{observed}: {}", seen.detail),
                    counter: Self::moved(&before, &after, !seen.passed),
                    ok: observed == expected,
                }
            })
            .collect()
    }

    /// What `exfw simulate --scenario` says of the last of `steps`, each (link, source, source
    /// port, destination, destination port) of a TCP SYN; the route back to every source leaves
    /// through the source's own link.
    fn expect_sequence(&self, steps: &[(&str, &str, u16, &str, u16)]) -> &'static str {
        let mut routes = Routes::assume_ingress();
        for (_, src, ..) in steps {
            routes.add(IpNet::from(ip(src)), self.home_link(src));
        }
        let mut reference = Reference::new(self.compiled.policy.clone(), routes);
        let mut last = None;
        for (i, (link, src, sport, dst, dport)) in steps.iter().enumerate() {
            let mut probe = probe::Probe::new(ip(src), ip(dst), proto::TCP, *dport, true);
            probe.sport = *sport;
            last = Some(reference.classify(&probe.frame(), link, i as u64));
        }
        if last.is_some_and(|o| o.verdict == Verdict::Drop) {
            "drop"
        } else {
            "pass"
        }
    }

    /// Sends a forged TCP SYN from `link`'s host (whatever source it claims) and reports whether
    /// it reached `target_link`'s host.
    fn forge_syn(
        &self,
        link: &Namespace,
        target: &Namespace,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
    ) -> Seen {
        let mut probe = probe::Probe::new(ip(src), ip(dst), proto::TCP, dport, true);
        probe.sport = sport;
        let mut frame = probe.frame();
        frame[..6].copy_from_slice(&self.gw.mac(self.link_of(link)));
        frame[6..12].copy_from_slice(&link.mac("eth0"));
        let sniffer = target.sniffer("eth0");
        link.inject("eth0", &frame);
        let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
            unreachable!("the lab forges IPv4")
        };
        if sniffer.saw(CONNECT_WAIT, |f| {
            exfw_tests::netns::is_tcp_syn(f, s, d, dport)
        }) {
            Seen {
                passed: true,
                detail: "reached the target".into(),
            }
        } else {
            Seen {
                passed: false,
                detail: "never reached the target".into(),
            }
        }
    }

    /// What `exfw simulate` says of a first packet arriving on `iface` (the gateway's route back
    /// to the source leaves through the source's own link).
    fn expect_on(&self, iface: &str, src: &str, dst: &str, p: u8, port: u16) -> &'static str {
        let mut routes = Routes::assume_ingress();
        routes.add(IpNet::from(ip(src)), self.home_link(src));
        let out = Reference::new(self.compiled.policy.clone(), routes).classify(
            &probe::frame(ip(src), ip(dst), p, port, true),
            iface,
            0,
        );
        if out.verdict == Verdict::Drop {
            "drop"
        } else {
            "pass"
        }
    }

    fn connect(ns: &Namespace, src: &str, dst: &str, port: u16) -> Seen {
        let (src, dst) = (SocketAddr::new(ip(src), 0), SocketAddr::new(ip(dst), port));
        match tcp_connect(ns, Some(src), dst) {
            Ok(_) => Seen {
                passed: true,
                detail: "connected".into(),
            },
            Err(std::io::ErrorKind::TimedOut) => Seen {
                passed: false,
                detail: "timed out".into(),
            },
            Err(e) => Seen {
                passed: true,
                detail: format!("reached the host ({e})"),
            },
        }
    }

    fn run_tool(ns: &Namespace, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .output()
            .expect("run a lab client");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn maildir_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("new")).map_or(0, |d| d.count())
    }

    fn scrape(&self) -> BTreeMap<String, f64> {
        let body = http_get(&self.gw, EXFW_METRICS, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(series, v)| Some((series.to_string(), v.parse().ok()?)))
            })
            .collect()
    }

    /// The counter a scenario moved: for one that passed, rule counters first, then per-port
    /// drops, then reasons; for one that dropped, the drop counters first (the closing packets
    /// of the scenario before may still move rule counters).
    fn moved(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
        dropped: bool,
    ) -> String {
        let delta = |prefix: &str| -> Vec<(String, f64)> {
            let mut v: Vec<(String, f64)> = after
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter_map(|(k, v)| {
                    let d = v - before.get(k).copied().unwrap_or(0.0);
                    (d > 0.0).then(|| (k.clone(), d))
                })
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        };
        let passed = [
            "exfw_spoofed_packets_total",
            "exfw_rule_new_connections_total",
            "exfw_rule_packets_total",
            "exfw_port_drops_total",
            "exfw_packets_total{verdict=\"pass\",reason=\"trusted\"}",
        ];
        let order = if dropped {
            [passed[0], passed[3], passed[1], passed[2], passed[4]]
        } else {
            passed
        };
        for prefix in order {
            let moved = delta(prefix);
            if !moved.is_empty() {
                return moved
                    .iter()
                    .take(3)
                    .map(|(k, d)| {
                        format!(
                            "{} +{d}",
                            k.replace("exfw_", "").replace(",verdict=\"pass\"", "")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
        }
        "none".into()
    }

    /// Evaluates a PromQL expression at Prometheus: the result series, or the error it gave.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let encoded: String = expr
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (status, body) = http_get(
            &self.gw,
            PROMETHEUS,
            &format!("/api/v1/query?query={encoded}"),
        )
        .ok_or("Prometheus did not answer")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("HTTP {status}: {}", v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until Prometheus has scraped exfw twice after now (so rates over the lab's traffic exist).
    pub fn wait_for_scrapes(&self) {
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        wait_until(
            "Prometheus to scrape exfw after the traffic",
            Duration::from_secs(30),
            || {
                self.query("timestamp(exfw_build_info)")
                    .ok()
                    .and_then(|r| {
                        r.first().and_then(|s| {
                            s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())
                        })
                    })
                    .is_some_and(|ts| ts > t0 + 1.5)
            },
        );
    }

    /// The lab's pin directory.
    pub fn pin_dir(&self) -> PathBuf {
        self.pins.clone()
    }

    /// The lab's working directory (configs, logs, mail).
    pub fn work_dir(&self) -> PathBuf {
        self.work.clone()
    }

    /// Where things are, for `--keep`.
    pub fn describe(&self) -> String {
        let shells: Vec<String> = self
            .every_host()
            .map(|h| format!("{} ({})", h.ns.name(), h.link.trim_end_matches('0')))
            .collect();
        format!(
            "exfw metrics:  ip netns exec {gw} curl -s http://{EXFW_METRICS}/metrics\nPrometheus:    ip netns exec {gw} curl -s 'http://{PROMETHEUS}/api/v1/query?query=exfw_build_info'\n\
             exfw status:   exfw status --pin-dir {pins}\nshells:        ip netns exec NAME bash, NAME one of: {shells}\nlogs:          {work}",
            gw = self.gw.name(),
            pins = self.pins.display(),
            shells = shells.join(", "),
            work = self.work.display()
        )
    }
}

/// Reads a SIP message up to its blank line (the lab's SIP has no bodies).
fn read_sip(s: &mut TcpStream) -> String {
    let mut message = Vec::new();
    let mut byte = [0u8; 1];
    while !message.ends_with(b"\r\n\r\n") && message.len() < 8192 {
        match s.read(&mut byte) {
            Ok(1) => message.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&message).into_owned()
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_listeners.store(true, Ordering::Relaxed);
        for (ns, dir) in &self.postfixes {
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "postfix", "-c", dir, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for (name, child) in self.children.iter_mut().rev() {
            // SAFETY: signalling the process group we gave our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    eprintln!("lab: {name} did not stop on SIGTERM; killing it");
                    // SAFETY: as above.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(daemon) = self.daemon.take() {
            daemon.signal(libc::SIGTERM);
            let _ = daemon.wait(Duration::from_secs(10));
        }
        if self.pins.exists() {
            let _ = exfw_daemon::dataplane::remove_pinned(&self.pins);
        }
        for dir in &self.resolv_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // /etc/netns itself, if the lab left it empty.
        let _ = std::fs::remove_dir("/etc/netns");
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The organisation's config in enforce mode, with the lab's links (each accepting the groups
/// that live behind it) and metrics address.
fn lab_config(text: &str, links: &[(String, Vec<&'static str>)]) -> anyhow::Result<String> {
    let mut value: toml::Table = text.parse()?;
    value.insert("mode".into(), toml::Value::String("enforce".into()));
    let interfaces: Vec<toml::Value> = links
        .iter()
        .map(|(name, accepts)| {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String(name.clone()));
            t.insert("xdp_mode".into(), toml::Value::String("driver".into()));
            t.insert(
                "accepts".into(),
                toml::Value::Array(
                    accepts
                        .iter()
                        .map(|a| toml::Value::String((*a).into()))
                        .collect(),
                ),
            );
            toml::Value::Table(t)
        })
        .collect();
    value.insert("interface".into(), toml::Value::Array(interfaces));
    let mut metrics = toml::Table::new();
    metrics.insert("listen".into(), toml::Value::String(EXFW_METRICS.into()));
    value.insert("metrics".into(), toml::Value::Table(metrics));
    Ok(toml::to_string(&value)?)
}

/// Prints the table.
pub fn print_table(rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(8);
    let w2 = rows.iter().map(|r| r.observed.len()).max().unwrap_or(8);
    println!(
        "{:<w0$}  {:<8}  {:<w2$}  EXFW COUNTER THAT MOVED",
        "SCENARIO", "EXPECTED", "OBSERVED"
    );
    for r in rows {
        println!(
            "{:<w0$}  {:<8}  {:<w2$}  {}{}",
            r.scenario,
            r.expected,
            r.observed,
            r.counter,
            if r.ok { "" } else { "   <-- MISMATCH" }
        );
    }
}
