//! The lab: an Exchange organisation in network namespaces around a gateway running the real
//! `exfw run`, with real servers (nginx, postfix, dovecot, dnsmasq) and clients (curl, swaks,
//! dig), Prometheus scraping the gateway, and a table of what each scenario expected and got.
//!
//! ```text
//!                       +-------------------- gw (exfw on every link) ------------------+
//!  inet  203.0.113.9  --+ inet0                                                 mbx0    +-- mbx   192.0.2.21  nginx, postfix, dovecot
//!        203.0.113.25   |  (remote mail server: postfix)                        edge0   +-- edge  192.0.2.130 postfix
//!  clients 198.51.100.7-+ clients0                                              dc0     +-- dc    192.0.2.5   listeners
//!        .200 .250      |                                                       dns0    +-- dns   192.0.2.153 dnsmasq
//!                       +----------- Prometheus 127.0.0.1:9090, exfw 127.0.0.1:9720 ----+
//! ```
//!
//! Expected verdicts are not written down here: each scenario asks the reference classifier
//! (what `exfw simulate` runs) about its first packet, so the table holds for the config given.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, TcpListener},
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
    config,
    policy::{Compiled, Reference, Routes, compile, probe},
};
use socket2::{Domain, Socket, Type};

use crate::{
    daemon::{Daemon, http_get, wait_until},
    netns::{Namespace, sh},
};

/// Where Prometheus listens inside the gateway namespace.
pub const PROMETHEUS: &str = "127.0.0.1:9090";
/// Where exfw serves metrics inside the gateway namespace.
pub const EXFW_METRICS: &str = "127.0.0.1:9720";

const MAILBOX: &str = "192.0.2.21";
const MAILBOX_V6: &str = "2001:db8:21::21";
const EDGE: &str = "192.0.2.130";
const DC: &str = "192.0.2.5";
const DNS: &str = "192.0.2.153";
const INTERNET_CLIENT: &str = "203.0.113.9";
const INTERNET_CLIENT_V6: &str = "2001:db8:ffff::9";
const REMOTE_MX: &str = "203.0.113.25";
const CLIENT: &str = "198.51.100.7";
const DC_PORTS: [u16; 6] = [88, 135, 389, 445, 3268, 49152];
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the lab is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The organisation (its interfaces and metrics address are replaced by the lab's).
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
    /// The gateway namespace (exfw, Prometheus).
    pub gw: Namespace,
    inet: Namespace,
    clients: Namespace,
    mbx: Namespace,
    edge: Namespace,
    dc: Namespace,
    dns: Namespace,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The gateway link a lab host's namespace is wired to.
fn link_of(ns: &Namespace, lab: &Lab) -> &'static str {
    [
        (&lab.inet, "inet0"),
        (&lab.clients, "clients0"),
        (&lab.mbx, "mbx0"),
        (&lab.edge, "edge0"),
        (&lab.dc, "dc0"),
        (&lab.dns, "dns0"),
    ]
    .into_iter()
    .find(|(n, _)| n.name() == ns.name())
    .map(|(_, link)| link)
    .expect("a lab namespace")
}

/// The gateway link an address of the lab sits behind.
fn home_link(addr: &str) -> &'static str {
    match addr {
        MAILBOX | MAILBOX_V6 => "mbx0",
        EDGE => "edge0",
        DC => "dc0",
        DNS => "dns0",
        a if a.starts_with("198.51.100.") => "clients0",
        _ => "inet0",
    }
}

impl Lab {
    /// Builds the namespaces, starts the servers, exfw and Prometheus, and waits for each.
    pub fn start(options: &Options) -> anyhow::Result<Lab> {
        crate::require_root();
        crate::netns::remove_stale();
        let id = std::process::id();
        let work = std::env::temp_dir().join(format!("exfw-lab-{id}"));
        std::fs::create_dir_all(&work)?;
        let pins = PathBuf::from(format!("/sys/fs/bpf/exfw-lab-{id}"));
        let text = std::fs::read_to_string(&options.config)?;
        let lab_config = lab_config(&text)?;
        let config_path = work.join("exfw.toml");
        std::fs::write(&config_path, &lab_config)?;
        let cfg = config::parse(&lab_config, &options.config.display().to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !cfg.organization.edge_subscribed
            || cfg.organization.exchange < config::ExchangeVersion::V2016
        {
            anyhow::bail!(
                "the lab builds an Exchange 2016 or later organisation with a subscribed Edge; {} is not one",
                options.config.display()
            );
        }
        let compiled = compile(&cfg)?;
        let mut lab = Lab {
            children: Vec::new(),
            postfixes: Vec::new(),
            daemon: None,
            stop_listeners: Arc::new(AtomicBool::new(false)),
            resolv_dirs: Vec::new(),
            work: work.clone(),
            pins: pins.clone(),
            compiled,
            gw: Namespace::new("lab-gw"),
            inet: Namespace::new("lab-inet"),
            clients: Namespace::new("lab-clients"),
            mbx: Namespace::new("lab-mbx"),
            edge: Namespace::new("lab-edge"),
            dc: Namespace::new("lab-dc"),
            dns: Namespace::new("lab-dns"),
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

    fn wire(&mut self) -> anyhow::Result<()> {
        // Subnets: the Internet and the client network.
        for (ns, dev, addresses, gateway) in [
            (
                &self.inet,
                "inet0",
                vec!["203.0.113.9/24", "203.0.113.25/24", "2001:db8:ffff::9/64"],
                vec!["203.0.113.1/24", "2001:db8:ffff::1/64"],
            ),
            (
                &self.clients,
                "clients0",
                vec!["198.51.100.7/24", "198.51.100.200/24", "198.51.100.250/24"],
                vec!["198.51.100.1/24"],
            ),
        ] {
            self.gw.veth_to(dev, ns);
            for a in &addresses {
                ns.ip(&["addr", "add", a, "dev", "eth0", "nodad"]);
            }
            for g in &gateway {
                self.gw.ip(&["addr", "add", g, "dev", dev, "nodad"]);
            }
            ns.ip(&["link", "set", "eth0", "up"]);
            self.gw.ip(&["link", "set", dev, "up"]);
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                gateway[0].split('/').next().unwrap(),
            ]);
            if let Some(g6) = gateway.get(1) {
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    g6.split('/').next().unwrap(),
                ]);
            }
        }
        // Servers: point-to-point links, each server a /32 behind the gateway's 192.0.2.1.
        for (ns, dev, address, v6) in [
            (&self.mbx, "mbx0", MAILBOX, Some(MAILBOX_V6)),
            (&self.edge, "edge0", EDGE, None),
            (&self.dc, "dc0", DC, None),
            (&self.dns, "dns0", DNS, None),
        ] {
            self.gw.veth_to(dev, ns);
            ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"]);
            self.gw.ip(&["addr", "add", "192.0.2.1/32", "dev", dev]);
            ns.ip(&["link", "set", "eth0", "up"]);
            self.gw.ip(&["link", "set", dev, "up"]);
            ns.ip(&["route", "add", "192.0.2.1/32", "dev", "eth0"]);
            ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"]);
            self.gw
                .ip(&["route", "add", &format!("{address}/32"), "dev", dev]);
            if let Some(v6) = v6 {
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
                self.gw.ip(&[
                    "-6",
                    "addr",
                    "add",
                    "2001:db8:21::1/128",
                    "dev",
                    dev,
                    "nodad",
                ]);
                ns.ip(&["-6", "route", "add", "2001:db8:21::1/128", "dev", "eth0"]);
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    "2001:db8:21::1",
                    "dev",
                    "eth0",
                ]);
                self.gw
                    .ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", dev]);
            }
        }
        self.gw.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        // Every server resolves through the lab's DNS server (ip netns exec bind-mounts this).
        for ns in [&self.mbx, &self.edge, &self.inet, &self.clients] {
            let dir = PathBuf::from("/etc/netns").join(ns.name());
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("resolv.conf"), format!("nameserver {DNS}\n"))?;
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

    fn start_servers(&mut self) -> anyhow::Result<()> {
        let w = self.work.clone();
        let wd = w.display().to_string();
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

        // Client access on the Mailbox server: nginx with a self-signed certificate.
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
        std::fs::write(
            w.join("nginx.conf"),
            format!(
                "user root;\nworker_processes 1;\npid {wd}/nginx.pid;\nerror_log {wd}/nginx-error.log;\ndaemon off;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {wd}/nginx-access.log;\n  client_body_temp_path {wd}/tmp/body; proxy_temp_path {wd}/tmp/proxy; fastcgi_temp_path {wd}/tmp/fcgi; uwsgi_temp_path {wd}/tmp/uwsgi; scgi_temp_path {wd}/tmp/scgi;\n\
                 server {{ listen {MAILBOX}:80; listen {MAILBOX}:443 ssl; listen [{MAILBOX_V6}]:443 ssl; ssl_certificate {wd}/cert.pem; ssl_certificate_key {wd}/key.pem; location / {{ return 200 \"Outlook on the web (exfw lab)\\n\"; }} }}\n}}\n"
            ),
        )?;
        let mbx = self.mbx.name().to_string();
        self.spawn("nginx", &mbx, &["nginx", "-c", &format!("{wd}/nginx.conf")])?;

        // Postfix: Edge (Internet <-> organisation), Mailbox (delivery, submission), remote.
        let edge_cf = format!(
            "myhostname = edge.corp.test\ninet_interfaces = {EDGE}\nmynetworks = 127.0.0.0/8 {MAILBOX}/32\nrelay_domains = corp.test\n\
             transport_maps = inline:{{ corp.test=smtp:[{MAILBOX}]:25 }}\nsmtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
        );
        let mbx_queue = format!("{wd}/postfix-mbx-queue");
        let mbx_cf = format!(
            "myhostname = mail.corp.test\ninet_interfaces = {MAILBOX}\nmynetworks = 127.0.0.0/8\nrelayhost = [{EDGE}]:25\n\
             virtual_mailbox_domains = corp.test\nvirtual_mailbox_base = {wd}/mail\nvirtual_mailbox_maps = inline:{{ user@corp.test=user/Maildir/ }}\n\
             virtual_uid_maps = static:8\nvirtual_gid_maps = static:8\nvirtual_minimum_uid = 8\n"
        );
        let remote_cf = format!(
            "myhostname = mail.remote.test\ninet_interfaces = {REMOTE_MX}\nmynetworks = 127.0.0.0/8\n\
             virtual_mailbox_domains = remote.test\nvirtual_mailbox_base = {wd}/remote-mail\nvirtual_mailbox_maps = inline:{{ someone@remote.test=someone/Maildir/ }}\n\
             virtual_uid_maps = static:8\nvirtual_gid_maps = static:8\nvirtual_minimum_uid = 8\n"
        );
        let submission = "587 inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=dovecot -o smtpd_sasl_path=private/auth \
                          -o smtpd_client_restrictions=permit_sasl_authenticated,reject -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n";
        // Dovecot on the Mailbox server: IMAP4 (and POP3 when enabled) and SASL for postfix.
        let pop3 = self
            .compiled
            .policy
            .rules
            .iter()
            .any(|r| r.service.starts_with("pop3"));
        std::fs::write(w.join("dovecot/users"), "user:{PLAIN}secret\n")?;
        std::fs::write(
            w.join("dovecot/dovecot.conf"),
            format!(
                "base_dir = {wd}/dovecot/run\nstate_dir = {wd}/dovecot/state\nlog_path = {wd}/dovecot/dovecot.log\n\
                 protocols = imap{}\nlisten = {MAILBOX}\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:{wd}/mail/%n/Maildir\nfirst_valid_uid = 8\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%n {wd}/dovecot/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=8 gid=8 home={wd}/mail/%n\n}}\n\
                 service auth {{\n  unix_listener {mbx_queue}/private/auth {{\n    mode = 0666\n  }}\n}}\n\
                 default_login_user = dovenull\ndefault_internal_user = dovecot\n",
                if pop3 { " pop3" } else { "" }
            ),
        )?;
        // Its SASL socket lives in the Mailbox postfix queue: create that first, start postfix after.
        let private = format!("{mbx_queue}/private");
        std::fs::create_dir_all(&private)?;
        sh(&["chown", "postfix:root", &private]);
        sh(&["chmod", "700", &private]);
        self.spawn(
            "dovecot",
            &mbx,
            &["dovecot", "-F", "-c", &format!("{wd}/dovecot/dovecot.conf")],
        )?;
        let socket = PathBuf::from(format!("{private}/auth"));
        self.wait_for("dovecot's auth socket", "dovecot", || socket.exists())?;

        let edge_ns = self.edge.name().to_string();
        let inet_ns = self.inet.name().to_string();
        for (name, ns, main, extra) in [
            ("edge", &edge_ns, edge_cf, ""),
            ("mbx", &mbx, mbx_cf, submission),
            ("remote", &inet_ns, remote_cf, ""),
        ] {
            self.postfix(name, ns, &main, extra)?;
        }

        // DNS for the Internet-facing servers: the remote domain's MX.
        let dns = self.dns.name().to_string();
        self.spawn(
            "dnsmasq",
            &dns,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                &format!("--listen-address={DNS}"),
                "--bind-interfaces",
                "--mx-host=remote.test,mail.remote.test,10",
                &format!("--host-record=mail.remote.test,{REMOTE_MX}"),
                &format!("--host-record=mail.corp.test,{MAILBOX}"),
                "--log-queries",
                "--log-facility=-",
            ],
        )?;

        // The domain controller: listeners on the ports Exchange uses; SMB on the Mailbox
        // server, which the pinhole attempt aims at.
        let mut listeners: Vec<TcpListener> = self.dc.run(|| {
            DC_PORTS
                .iter()
                .map(|p| TcpListener::bind((DC, *p)).expect("DC listener"))
                .collect()
        });
        listeners.push(
            self.mbx
                .run(|| TcpListener::bind((MAILBOX, 445)).expect("SMB listener")),
        );
        for listener in listeners {
            listener.set_nonblocking(true)?;
            let stop = self.stop_listeners.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }

        // Wait for every server.
        for (ns, addr, log) in [
            (&self.mbx, format!("{MAILBOX}:443"), "nginx"),
            (&self.mbx, format!("{MAILBOX}:587"), "postfix-mbx"),
            (&self.mbx, format!("{MAILBOX}:143"), "dovecot"),
            (&self.edge, format!("{EDGE}:25"), "postfix-edge"),
            (&self.inet, format!("{REMOTE_MX}:25"), "postfix-remote"),
        ] {
            let target: SocketAddr = addr.parse()?;
            self.wait_for(&format!("a server on {addr}"), log, || {
                ns.run(|| {
                    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200))
                        .is_ok()
                })
            })?;
        }
        let edge = self.edge.name().to_string();
        self.wait_for("dnsmasq", "dnsmasq", || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &edge,
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    &format!("@{DNS}"),
                    "mail.remote.test",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(REMOTE_MX))
        })?;
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
        self.expect_on(home_link(src), src, dst, p, port)
    }

    /// What `exfw simulate --scenario` says of the last of `steps`, each (link, source, source
    /// port, destination, destination port) of a TCP SYN; the route back to every source leaves
    /// through the source's own link.
    fn expect_sequence(&self, steps: &[(&str, &str, u16, &str, u16)]) -> &'static str {
        let mut routes = Routes::assume_ingress();
        for (_, src, ..) in steps {
            routes.add(ipnet::IpNet::from(ip(src)), home_link(src));
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
        frame[..6].copy_from_slice(&self.gw.mac(link_of(link, self)));
        frame[6..12].copy_from_slice(&link.mac("eth0"));
        let sniffer = target.sniffer("eth0");
        link.inject("eth0", &frame);
        let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
            unreachable!("the lab forges IPv4")
        };
        if sniffer.saw(CONNECT_TIMEOUT, |f| {
            crate::netns::is_tcp_syn(f, s, d, dport)
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
        routes.add(ipnet::IpNet::from(ip(src)), home_link(src));
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
        ns.run(|| {
            let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
            socket.bind(&src.into()).unwrap();
            match socket.connect_timeout(&dst.into(), CONNECT_TIMEOUT) {
                Ok(()) => Seen {
                    passed: true,
                    detail: "connected".into(),
                },
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Seen {
                    passed: false,
                    detail: "timed out".into(),
                },
                Err(e) => Seen {
                    passed: true,
                    detail: format!("reached the host ({})", e.kind()),
                },
            }
        })
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

    /// The counter a scenario moved: rule counters first, then per-port drops, then reasons.
    fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
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
        for prefix in [
            "exfw_spoofed_packets_total",
            "exfw_rule_new_connections_total",
            "exfw_rule_packets_total",
            "exfw_port_drops_total",
            "exfw_packets_total{verdict=\"pass\",reason=\"trusted\"}",
        ] {
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

    /// Runs every scenario once and returns the table.
    pub fn scenarios(&self) -> Vec<Row> {
        let tcp = proto::TCP;
        type Scenario<'a> = (String, &'static str, Box<dyn Fn() -> Seen + 'a>);
        let mail = self.work.join("mail/user/Maildir");
        let remote = self.work.join("remote-mail/someone/Maildir");
        let wait_mail = |dir: PathBuf, before: usize, what: &'static str| -> Seen {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Self::maildir_count(&dir) <= before {
                if Instant::now() > deadline {
                    return Seen {
                        passed: false,
                        detail: format!("accepted, but never {what}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Seen {
                passed: true,
                detail: what.to_string(),
            }
        };
        let curl = |ns: &Namespace, src: &'static str, url: String| -> Seen {
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
                Seen {
                    passed: true,
                    detail: format!("HTTP {}", out.trim()),
                }
            } else {
                Seen {
                    passed: false,
                    detail: "no answer".into(),
                }
            }
        };
        let list: Vec<Scenario> = vec![
            (
                "HTTPS (OWA, EAS, EWS) from the Internet".into(),
                self.expect(INTERNET_CLIENT, MAILBOX, tcp, 443),
                Box::new(|| {
                    curl(
                        &self.inet,
                        INTERNET_CLIENT,
                        format!("https://{MAILBOX}/owa"),
                    )
                }),
            ),
            (
                "HTTP from internal clients".into(),
                self.expect(CLIENT, MAILBOX, tcp, 80),
                Box::new(|| curl(&self.clients, CLIENT, format!("http://{MAILBOX}/"))),
            ),
            (
                "HTTPS over IPv6 from the Internet".into(),
                self.expect(INTERNET_CLIENT_V6, MAILBOX_V6, tcp, 443),
                Box::new(|| {
                    curl(
                        &self.inet,
                        INTERNET_CLIENT_V6,
                        format!("https://[{MAILBOX_V6}]/owa"),
                    )
                }),
            ),
            (
                "Inbound mail: Internet -> Edge -> Mailbox".into(),
                self.expect(INTERNET_CLIENT, EDGE, tcp, 25),
                Box::new(|| {
                    let before = Self::maildir_count(&mail);
                    let (ok, out) = Self::run_tool(
                        &self.inet,
                        &[
                            "swaks",
                            "--server",
                            EDGE,
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
                        return Seen {
                            passed: false,
                            detail: format!(
                                "SMTP failed: {}",
                                out.lines().last().unwrap_or_default()
                            ),
                        };
                    }
                    wait_mail(mail.clone(), before, "delivered to the mailbox")
                }),
            ),
            (
                "Authenticated submission on 587, out via Edge".into(),
                self.expect(CLIENT, MAILBOX, tcp, 587),
                Box::new(|| {
                    let before = Self::maildir_count(&remote);
                    let (ok, out) = Self::run_tool(
                        &self.clients,
                        &[
                            "swaks",
                            "--server",
                            MAILBOX,
                            "--port",
                            "587",
                            "--local-interface",
                            CLIENT,
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
                        return Seen {
                            passed: false,
                            detail: format!(
                                "submission failed: {}",
                                out.lines().last().unwrap_or_default()
                            ),
                        };
                    }
                    wait_mail(
                        remote.clone(),
                        before,
                        "delivered to remote.test through the Edge",
                    )
                }),
            ),
            (
                "IMAP4 login from a client".into(),
                self.expect(CLIENT, MAILBOX, tcp, 143),
                Box::new(|| {
                    let (ok, out) = Self::run_tool(
                        &self.clients,
                        &[
                            "curl",
                            "-s",
                            "--max-time",
                            "3",
                            "--interface",
                            CLIENT,
                            "-u",
                            "user:secret",
                            &format!("imap://{MAILBOX}/INBOX"),
                            "--request",
                            "EXAMINE INBOX",
                        ],
                    );
                    if ok && out.contains("EXISTS") {
                        Seen {
                            passed: true,
                            detail: "logged in, INBOX listed".into(),
                        }
                    } else {
                        Seen {
                            passed: false,
                            detail: "no IMAP session".into(),
                        }
                    }
                }),
            ),
            (
                "DNS lookup by the Edge (next hop MX)".into(),
                self.expect(EDGE, DNS, proto::UDP, 53),
                Box::new(|| {
                    let (_, out) = Self::run_tool(
                        &self.edge,
                        &[
                            "dig",
                            "+short",
                            "+time=2",
                            "+tries=1",
                            &format!("@{DNS}"),
                            "MX",
                            "remote.test",
                        ],
                    );
                    if out.contains("mail.remote.test") {
                        Seen {
                            passed: true,
                            detail: "MX answered".into(),
                        }
                    } else {
                        Seen {
                            passed: false,
                            detail: "no answer".into(),
                        }
                    }
                }),
            ),
            (
                "Mailbox <-> domain controller on Kerberos, RPC, LDAP, SMB, GC, dynamic RPC".into(),
                self.expect(MAILBOX, DC, tcp, 49152),
                Box::new(|| {
                    let connected = DC_PORTS
                        .iter()
                        .filter(|p| Self::connect(&self.mbx, MAILBOX, DC, **p).passed)
                        .count();
                    Seen {
                        passed: connected == DC_PORTS.len(),
                        detail: format!("{connected}/{} ports connected", DC_PORTS.len()),
                    }
                }),
            ),
            (
                "RDP 3389 from the Internet to Mailbox".into(),
                self.expect(INTERNET_CLIENT, MAILBOX, tcp, 3389),
                Box::new(|| Self::connect(&self.inet, INTERNET_CLIENT, MAILBOX, 3389)),
            ),
            (
                "SMB 445 from the Internet to Mailbox".into(),
                self.expect(INTERNET_CLIENT, MAILBOX, tcp, 445),
                Box::new(|| Self::connect(&self.inet, INTERNET_CLIENT, MAILBOX, 445)),
            ),
            (
                "SMTP from the Internet straight to Mailbox".into(),
                self.expect(INTERNET_CLIENT, MAILBOX, tcp, 25),
                Box::new(|| Self::connect(&self.inet, INTERNET_CLIENT, MAILBOX, 25)),
            ),
            (
                "EdgeSync 50636 from the Internet to Edge".into(),
                self.expect(INTERNET_CLIENT, EDGE, tcp, 50636),
                Box::new(|| Self::connect(&self.inet, INTERNET_CLIENT, EDGE, 50636)),
            ),
            (
                "POP3 110 while disabled".into(),
                self.expect(INTERNET_CLIENT, MAILBOX, tcp, 110),
                Box::new(|| Self::connect(&self.inet, INTERNET_CLIENT, MAILBOX, 110)),
            ),
            (
                "Edge -> domain controller LDAP 389".into(),
                self.expect(EDGE, DC, tcp, 389),
                Box::new(|| Self::connect(&self.edge, EDGE, DC, 389)),
            ),
            (
                "Attacker: the Internet claims the DC's address, SMB to Mailbox".into(),
                self.expect_on("inet0", DC, MAILBOX, tcp, 445),
                Box::new(|| self.forge_syn(&self.inet, &self.mbx, DC, 40445, MAILBOX, 445)),
            ),
            (
                "Attacker: the Edge claims the Mailbox relaying to it, then SMB from port 25"
                    .into(),
                self.expect_sequence(&[
                    ("edge0", MAILBOX, 445, EDGE, 25),
                    ("edge0", EDGE, 25, MAILBOX, 445),
                ]),
                Box::new(|| {
                    let forged = self.forge_syn(&self.edge, &self.edge, MAILBOX, 445, EDGE, 25);
                    // Port 25 is postfix's: the Edge's attacker sends the SYN raw.
                    let smb = self.forge_syn(&self.edge, &self.mbx, EDGE, 25, MAILBOX, 445);
                    Seen {
                        passed: forged.passed || smb.passed,
                        detail: format!("forged relay {}; SMB {}", forged.detail, smb.detail),
                    }
                }),
            ),
        ];
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
                    counter: Self::moved(&before, &after),
                    ok: observed == expected,
                }
            })
            .collect()
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

    /// The lab's working directory (configs, logs, mail).
    pub fn work_dir(&self) -> PathBuf {
        self.work.clone()
    }

    /// Where things are, for `--keep`.
    pub fn describe(&self) -> String {
        format!(
            "exfw metrics:  ip netns exec {gw} curl -s http://{EXFW_METRICS}/metrics\nPrometheus:    ip netns exec {gw} curl -s 'http://{PROMETHEUS}/api/v1/query?query=exfw_build_info'\n\
             exfw status:   exfw status --pin-dir {pins}\nshells:        ip netns exec {inet} bash (Internet), {clients} (clients), {mbx} (Mailbox), {edge} (Edge)\nlogs:          {work}",
            gw = self.gw.name(),
            pins = self.pins.display(),
            inet = self.inet.name(),
            clients = self.clients.name(),
            mbx = self.mbx.name(),
            edge = self.edge.name(),
            work = self.work.display()
        )
    }
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

/// The organisation's config with the lab's interfaces and metrics address.
fn lab_config(text: &str) -> anyhow::Result<String> {
    let mut value: toml::Table = text.parse()?;
    // Each link accepts the sources that live behind it (Lync has no link here: the domain
    // controller's takes it, so the group is accepted somewhere, as `exfw check` requires).
    let interfaces: Vec<toml::Value> = [
        ("inet0", &["external"][..]),
        ("clients0", &["clients", "management"]),
        ("mbx0", &["mailbox", "protected-network"]),
        ("edge0", &["edge"]),
        ("dc0", &["dc", "lync"]),
        ("dns0", &["dns"]),
    ]
    .iter()
    .map(|(name, accepts)| {
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String((*name).into()));
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
