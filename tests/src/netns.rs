//! Network namespaces for tests: created with `ip netns`, entered per thread with setns(2),
//! deleted on drop (also when the test panics), so nothing outlives the test.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted when dropped.
pub struct Namespace {
    name: String,
}

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Namespace {
    /// Creates a namespace named `exfw-<role>-<pid>-<n>`, with loopback up.
    pub fn new(role: &str) -> Namespace {
        let name = format!(
            "exfw-{role}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate-address detection: addresses (link-local ones included) are usable at
        // once instead of tentative for the first seconds.
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the veth pair `link` here and `eth0` in `peer`.
    pub fn veth_to(&self, link: &str, peer: &Namespace) {
        self.ip(&[
            "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
        ]);
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// `ip netns exec NAME ARGS...`.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; the thread is ours and ends with the scope.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Spawns a thread that lives in this namespace and runs `f` (for servers).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let name = self.name.clone();
        std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; the thread is ours.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {name}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
    }
}

impl Namespace {
    /// Sends a raw Ethernet frame out of `dev` in this namespace (AF_PACKET): what a host on
    /// that link can put on the wire, forged addresses included.
    pub fn inject(&self, dev: &str, frame: &[u8]) {
        self.inject_many(dev, std::iter::once(frame));
    }

    /// Sends every frame of `frames` out of `dev` through one AF_PACKET socket; returns how
    /// many were sent.
    pub fn inject_many<'f>(
        &self,
        dev: &str,
        frames: impl Iterator<Item = &'f [u8]> + Send,
    ) -> usize {
        let dev = std::ffi::CString::new(dev).unwrap();
        self.run(|| {
            let (socket, mut addr) = packet_socket(&dev, 0);
            let fd = socket.as_raw_fd();
            addr.sll_halen = 6;
            // SAFETY: sends from buffers we own on a descriptor we own.
            unsafe {
                let mut sent = 0;
                for frame in frames {
                    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                    let since = std::time::Instant::now();
                    loop {
                        let n = libc::sendto(
                            fd,
                            frame.as_ptr().cast(),
                            frame.len(),
                            0,
                            (&raw const addr).cast(),
                            size_of::<libc::sockaddr_ll>() as u32,
                        );
                        let error = std::io::Error::last_os_error();
                        if n < 0
                            && error.raw_os_error() == Some(libc::ENOBUFS)
                            && since.elapsed() < std::time::Duration::from_secs(5)
                        {
                            // The link's queue is full: wait until the socket may send again.
                            let mut pfd = libc::pollfd {
                                fd,
                                events: libc::POLLOUT,
                                revents: 0,
                            };
                            libc::poll(&mut pfd, 1, 10);
                            continue;
                        }
                        assert_eq!(n, frame.len() as isize, "AF_PACKET send: {error}");
                        break;
                    }
                    sent += 1;
                }
                sent
            }
        })
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let text = self.ip(&["link", "show", dev]);
        let hex = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC address for {dev} in {text}"));
        let mut mac = [0u8; 6];
        for (b, part) in mac.iter_mut().zip(hex.split(':')) {
            *b = u8::from_str_radix(part, 16).unwrap();
        }
        mac
    }
}

/// A fresh AF_PACKET socket and an address naming `dev` and `protocol` (network byte order). The
/// socket receives nothing until it is bound to that address, so a sniffer sees only its link.
fn packet_socket(dev: &std::ffi::CStr, protocol: u16) -> (std::os::fd::OwnedFd, libc::sockaddr_ll) {
    // SAFETY: plain socket calls; the descriptor is owned by the returned OwnedFd, and a zeroed
    // sockaddr_ll is a valid value.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let socket = std::os::fd::FromRawFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = libc::if_nametoindex(dev.as_ptr()) as i32;
        assert!(
            addr.sll_ifindex > 0,
            "no interface {dev:?} in this namespace"
        );
        (socket, addr)
    }
}

/// A raw socket on one link of a namespace: what crossed the link, whoever it was for.
pub struct Sniffer {
    fd: std::os::fd::OwnedFd,
}

impl Namespace {
    /// Starts capturing every frame on `dev` (from now on).
    pub fn sniffer(&self, dev: &str) -> Sniffer {
        let dev = std::ffi::CString::new(dev).unwrap();
        self.run(|| {
            let (socket, addr) = packet_socket(&dev, (libc::ETH_P_ALL as u16).to_be());
            let fd = socket.as_raw_fd();
            // SAFETY: binds and configures a descriptor we own, from values we own.
            unsafe {
                let rc = libc::bind(
                    fd,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let timeout = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as u32,
                );
            }
            Sniffer { fd: socket }
        })
    }
}

impl Sniffer {
    /// True when a frame matching `matches` arrives over the link (frames this host sends are
    /// not counted) within `within`.
    pub fn saw(&self, within: std::time::Duration, matches: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + within;
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < deadline {
            // SAFETY: a zeroed sockaddr_ll is valid to receive into.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: reading into buffers we own, from a descriptor we own.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING && matches(&buf[..n as usize]) {
                return true;
            }
        }
        false
    }
}

/// True for an IPv4 TCP frame (no VLAN) from `src` to `dst` port `dport` with SYN set.
pub fn is_tcp_syn(
    frame: &[u8],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    dport: u16,
) -> bool {
    frame.len() >= 54
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 6
        && frame[26..30] == src.octets()
        && frame[30..34] == dst.octets()
        && frame[14 + usize::from(frame[14] & 0x0f) * 4 + 2..][..2] == dport.to_be_bytes()
        && frame[14 + usize::from(frame[14] & 0x0f) * 4 + 13] & 0x02 != 0
}

/// How long a connection attempt waits before it counts as dropped: long enough to see the
/// SYN the kernel retransmits one second after a lost first one.
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Connects from `src` (any local address when `None`) to `dst` in the calling thread's
/// namespace, waiting at most `wait`; the error kind when it fails (`TimedOut` when a firewall
/// swallowed the SYN).
pub fn connect_here(
    src: Option<std::net::SocketAddr>,
    dst: std::net::SocketAddr,
    wait: std::time::Duration,
) -> Result<std::net::TcpStream, std::io::ErrorKind> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| e.kind())?;
    if let Some(src) = src {
        socket.set_reuse_address(true).map_err(|e| e.kind())?;
        socket.bind(&src.into()).map_err(|e| e.kind())?;
    }
    socket
        .connect_timeout(&dst.into(), wait)
        .map_err(|e| e.kind())?;
    Ok(socket.into())
}

/// [`connect_here`] inside `ns`, waiting [`CONNECT_WAIT`].
pub fn tcp_connect(
    ns: &Namespace,
    src: Option<std::net::SocketAddr>,
    dst: std::net::SocketAddr,
) -> Result<std::net::TcpStream, std::io::ErrorKind> {
    ns.run(|| connect_here(src, dst, CONNECT_WAIT))
}

/// Whether a TCP connection from `src` to `dst` inside `ns` completes (false: it timed out, a
/// firewall swallowed the SYN). Any other failure panics: neither passed nor dropped, the
/// test's own setup is wrong.
pub fn tcp_connects(
    ns: &Namespace,
    src: Option<std::net::SocketAddr>,
    dst: std::net::SocketAddr,
) -> bool {
    match tcp_connect(ns, src, dst) {
        Ok(_) => true,
        Err(std::io::ErrorKind::TimedOut) => false,
        Err(e) => panic!("connect {src:?} -> {dst}: {e}, neither passed nor dropped"),
    }
}

/// A gateway namespace with one link per leg: `link` on the gateway, `eth0` in the leg's own
/// namespace. The gateway takes the first host address of every subnet a leg uses, forwards,
/// and sends what no subnet covers out of the first leg; each leg routes everything through
/// the gateway.
pub struct Network {
    /// The router, where the firewall runs on every link.
    pub gateway: Namespace,
    /// (link name on the gateway, the namespace behind it), in the order given.
    pub legs: Vec<(String, Namespace)>,
}

impl Network {
    /// Builds the network: `legs` of (link name, addresses as `address/prefix-length`).
    pub fn new(legs: &[(&str, &[&str])]) -> Network {
        remove_stale();
        let gateway = Namespace::new("gw");
        let mut built = Vec::new();
        let mut gateway_of: Vec<(ipnet::IpNet, String)> = Vec::new();
        for (link, addresses) in legs {
            let ns = Namespace::new(link);
            gateway.veth_to(link, &ns);
            for address in *addresses {
                let with_len: ipnet::IpNet = address
                    .parse()
                    .unwrap_or_else(|_| panic!("{address}: want address/length"));
                ns.ip(&["addr", "add", address, "dev", "eth0", "nodad"]);
                let subnet = with_len.trunc();
                if !gateway_of.iter().any(|(s, _)| *s == subnet) {
                    let gw = first_host(&subnet);
                    gateway.ip(&["addr", "add", &gw, "dev", link, "nodad"]);
                    gateway_of.push((subnet, gw.split('/').next().unwrap().to_string()));
                }
            }
            ns.ip(&["link", "set", "eth0", "up"]);
            gateway.ip(&["link", "set", link, "up"]);
            for v6 in [false, true] {
                let hop = addresses
                    .iter()
                    .map(|a| a.parse::<ipnet::IpNet>().unwrap().trunc())
                    .find(|n| matches!(n, ipnet::IpNet::V6(_)) == v6)
                    .map(|subnet| {
                        gateway_of
                            .iter()
                            .find(|(s, _)| *s == subnet)
                            .unwrap()
                            .1
                            .clone()
                    });
                if let Some(hop) = hop {
                    ns.ip(&[
                        if v6 { "-6" } else { "-4" },
                        "route",
                        "add",
                        "default",
                        "via",
                        &hop,
                    ]);
                }
            }
            built.push((link.to_string(), ns));
        }
        gateway.exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        gateway.ip(&["-4", "route", "add", "default", "dev", legs[0].0]);
        gateway.ip(&["-6", "route", "add", "default", "dev", legs[0].0]);
        Network {
            gateway,
            legs: built,
        }
    }

    /// The namespace behind `link`.
    pub fn leg(&self, link: &str) -> &Namespace {
        &self
            .legs
            .iter()
            .find(|(l, _)| l == link)
            .unwrap_or_else(|| panic!("no leg {link}"))
            .1
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth ends and XDP attachments with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Removes namespaces left by test processes that no longer exist (a killed earlier run).
pub fn remove_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        // exfw-<role>-<pid>-<n>, where the role may hold dashes itself (lab-gw).
        let pid = name
            .strip_prefix("exfw-")
            .and_then(|rest| rest.rsplit('-').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Three namespaces: `outside` -- `gateway` (forwarding) -- `inside`, joined by veth pairs
/// (`out0`/`eth0` and `in0`/`eth0`). The gateway takes the first host address of every subnet
/// the other two use and routes everything else out of `out0`; outside routes the inside
/// subnets through it, inside routes everything.
pub struct Topology {
    /// The Internet side.
    pub outside: Namespace,
    /// The router, where the firewall runs on `out0` and `in0`.
    pub gateway: Namespace,
    /// The protected side.
    pub inside: Namespace,
}

fn first_host(net: &ipnet::IpNet) -> String {
    match net {
        ipnet::IpNet::V4(n) => format!(
            "{}/{}",
            std::net::Ipv4Addr::from(u32::from(n.network()) + 1),
            n.prefix_len()
        ),
        ipnet::IpNet::V6(n) => format!(
            "{}/{}",
            std::net::Ipv6Addr::from(u128::from(n.network()) + 1),
            n.prefix_len()
        ),
    }
}

impl Topology {
    /// Re-creates the outside link (`out0`/`eth0`) after it was deleted, with the addresses
    /// and routes of a topology built with outside address 203.0.113.2/24: what a re-created
    /// VLAN or a reloaded driver looks like to exfw.
    pub fn recreate_outside_link(&self) {
        self.gateway.veth_to("out0", &self.outside);
        self.outside
            .ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0", "nodad"]);
        self.outside.ip(&["link", "set", "eth0", "up"]);
        self.gateway
            .ip(&["addr", "add", "203.0.113.1/24", "dev", "out0", "nodad"]);
        self.gateway.ip(&["link", "set", "out0", "up"]);
        self.gateway.ip(&["route", "add", "default", "dev", "out0"]);
        self.outside
            .ip(&["route", "add", "default", "via", "203.0.113.1"]);
    }

    /// Servers on `ports` on every inside address (they accept and close; kept while held).
    pub fn listen(&self, ports: &[u16]) -> Vec<std::net::TcpListener> {
        self.inside.run(|| {
            ports
                .iter()
                .map(|p| std::net::TcpListener::bind(format!("0.0.0.0:{p}")).unwrap())
                .collect()
        })
    }

    /// Builds the topology; addresses are `address/prefix-length`.
    pub fn new(outside_addresses: &[&str], inside_addresses: &[&str]) -> Topology {
        let Network { gateway, mut legs } =
            Network::new(&[("out0", outside_addresses), ("in0", inside_addresses)]);
        let (_, inside) = legs.pop().expect("the inside leg");
        let (_, outside) = legs.pop().expect("the outside leg");
        Topology {
            outside,
            gateway,
            inside,
        }
    }
}
