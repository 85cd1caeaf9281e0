//! Running the real `exfw` binary inside a test namespace and talking to its HTTP endpoint.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Namespace;

/// The `exfw` binary of the same build: beside this executable (a binary such as exfw-lab) or
/// one directory up (test executables live in deps/).
pub fn exfw_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    [
        dir.join("exfw"),
        dir.parent().map(|d| d.join("exfw")).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| {
        panic!(
            "no exfw binary beside {}: run through `cargo xtask test` or `cargo xtask lab`",
            exe.display()
        )
    })
}

/// A running `exfw run` in a network namespace; killed on drop.
pub struct Daemon {
    child: Child,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `exfw run` in `ns` (network namespace only, so bpffs is shared with the test).
    pub fn start(ns: &Namespace, config: &Path, pin_dir: &Path, log: &Path) -> Daemon {
        Daemon::start_under(&[], ns, config, pin_dir, log)
    }

    /// Starts `exfw run` as [`Daemon::start`] does, through `wrapper` (a command and its
    /// arguments that execs the rest, such as `setpriv --bounding-set=...`).
    pub fn start_under(
        wrapper: &[&str],
        ns: &Namespace,
        config: &Path,
        pin_dir: &Path,
        log: &Path,
    ) -> Daemon {
        Daemon::start_with(wrapper, &[], ns, config, pin_dir, log)
    }

    /// Starts `exfw run` as [`Daemon::start_under`] does, with `env` added to its environment
    /// (such as `RUST_LOG`).
    pub fn start_with(
        wrapper: &[&str],
        env: &[(&str, &str)],
        ns: &Namespace,
        config: &Path,
        pin_dir: &Path,
        log: &Path,
    ) -> Daemon {
        let out = std::fs::File::create(log).expect("daemon log");
        let child = Command::new("nsenter")
            .envs(env.iter().copied())
            .arg(format!("--net=/run/netns/{}", ns.name()))
            .args(wrapper)
            .arg(exfw_binary())
            .args(["run", "--config"])
            .arg(config)
            .arg("--pin-dir")
            .arg(pin_dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn exfw run");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its status code.
    pub fn wait(mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the daemon to exit (at most `limit`): its exit code and its whole log.
    pub fn exit_and_log(self, limit: Duration) -> (Option<i32>, String) {
        let log = self.log.clone();
        let code = self.wait(limit);
        (code, std::fs::read_to_string(log).unwrap_or_default())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `addr` in the calling thread's namespace (HTTP/1.0, so the body is never
/// chunked): (status, body), or None when
/// nothing answers.
pub fn http_get_here(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Some((status, body))
}

/// GET `path` from `addr` inside `ns`.
pub fn http_get(ns: &Namespace, addr: &str, path: &str) -> Option<(u16, String)> {
    ns.run(|| http_get_here(addr, path))
}

/// Polls until `condition` holds; panics with `what` and the daemon log after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample `name{labels...}` in an exposition (labels given as `k="v"` parts
/// that must all appear), summed over matching series.
pub fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let metric_name = series.split('{').next().unwrap_or(series);
        if metric_name == name && labels.iter().all(|l| series.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

/// Where the test configs make the daemon listen (inside the gateway namespace).
pub const METRICS: &str = "127.0.0.1:9720";

/// A 2019 organisation with one Mailbox server at 192.0.2.2, exfw on the gateway's `out0` and
/// `in0` in driver mode, metrics on [`METRICS`]: the daemon tests' starting point.
pub const GATEWAY_CONFIG: &str = r#"version = 1
mode = "enforce"

[organization]
exchange = "2019"
http = false
icmp_echo = false

[[server]]
name = "EX01"
roles = ["mailbox"]
addresses = ["192.0.2.2"]

[[interface]]
name = "out0"
xdp_mode = "driver"
accepts = ["external"]

[[interface]]
name = "in0"
xdp_mode = "driver"
accepts = ["mailbox"]

[metrics]
listen = "127.0.0.1:9720"
"#;

/// `exfw detach --pin-dir PINS [IFACE...]`: its output, whatever the outcome.
pub fn exfw_detach(pins: &Path, interfaces: &[&str]) -> std::process::Output {
    Command::new(exfw_binary())
        .args(["detach", "--pin-dir"])
        .arg(pins)
        .args(interfaces)
        .output()
        .expect("run exfw detach")
}

/// `exfw status [--format json]` for `pins`, run in `gateway` (interface names resolve per
/// network namespace); panics unless it succeeds.
pub fn exfw_status(gateway: &Namespace, pins: &Path, json: bool) -> String {
    let out = exfw_status_output(gateway, pins, json);
    assert!(
        out.status.success(),
        "exfw status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `exfw status [--format json]` for `pins`, run in `gateway`: its output, whatever the outcome.
pub fn exfw_status_output(gateway: &Namespace, pins: &Path, json: bool) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", gateway.name()))
        .arg(exfw_binary())
        .args([
            "status",
            "--format",
            if json { "json" } else { "text" },
            "--pin-dir",
        ])
        .arg(pins)
        .output()
        .expect("run exfw status")
}

/// Whether a TCP connection from `outside` to the inside server 192.0.2.2 on `port` completes
/// (long enough for a SYN the kernel retransmits after a lost first one).
pub fn connects(outside: &Namespace, port: u16) -> bool {
    let dst: std::net::SocketAddr = format!("192.0.2.2:{port}").parse().unwrap();
    crate::netns::tcp_connects(outside, None, dst)
}

/// `count` more Mailbox servers at 10.x addresses, as `[[server]]` tables to append to a config.
pub fn more_servers(count: u32) -> String {
    (0..count)
        .map(|i| {
            format!(
                "\n[[server]]\nname = \"MBX{i:06}\"\nroles = [\"mailbox\"]\naddresses = [\"10.{}.{}.{}\"]\n",
                1 + i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect()
}

/// Writes a config the way editors do: a new file renamed over the old one.
pub fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The daemon's /metrics body (it must answer 200).
pub fn scrape(gateway: &Namespace) -> String {
    let (status, body) =
        http_get(gateway, METRICS, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// One metric's value from a fresh scrape.
pub fn value(gateway: &Namespace, name: &str, labels: &[&str]) -> f64 {
    metric(&scrape(gateway), name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
}

/// A test's work directory and pin directory, removed (and detached) however the test ends.
pub struct Scratch {
    /// Config files and daemon logs.
    pub work: PathBuf,
    /// The bpffs pin directory.
    pub pins: PathBuf,
}

impl Scratch {
    /// Fresh directories named after `tag` and this process.
    pub fn new(tag: &str) -> Scratch {
        let id = std::process::id();
        let work = std::env::temp_dir().join(format!("exfw-{tag}-{id}"));
        std::fs::create_dir_all(&work).unwrap();
        Scratch {
            work,
            pins: PathBuf::from(format!("/sys/fs/bpf/exfw-{tag}-{id}")),
        }
    }

    /// The config file path.
    pub fn config(&self) -> PathBuf {
        self.work.join("exfw.toml")
    }

    /// A log file path.
    pub fn log(&self, name: &str) -> PathBuf {
        self.work.join(format!("{name}.log"))
    }

    /// Starts `exfw run` with this scratch's config and pins, for a start that must end by
    /// itself: its exit status and log.
    pub fn start_and_exit(&self, ns: &Namespace, log: &str) -> (Option<i32>, String) {
        Daemon::start(ns, &self.config(), &self.pins, &self.log(log))
            .exit_and_log(Duration::from_secs(30))
    }

    /// Starts `exfw run` in `ns` with this scratch's config and pins, and waits for /readyz.
    pub fn start_ready(&self, ns: &Namespace, log: &str) -> Daemon {
        self.start_ready_with(ns, log, &[])
    }

    /// [`Scratch::start_ready`] with `env` added to the daemon's environment.
    pub fn start_ready_with(&self, ns: &Namespace, log: &str, env: &[(&str, &str)]) -> Daemon {
        let mut daemon =
            Daemon::start_with(&[], env, ns, &self.config(), &self.pins, &self.log(log));
        wait_until("/readyz", Duration::from_secs(30), || {
            assert!(daemon.alive(), "exfw run exited:\n{}", daemon.log_text());
            http_get(ns, METRICS, "/readyz").is_some_and(|(s, _)| s == 200)
        });
        daemon
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
        if self.pins.exists() {
            let _ = Command::new(exfw_binary())
                .args(["detach", "--pin-dir"])
                .arg(&self.pins)
                .status();
            let _ = std::fs::remove_dir_all(&self.pins);
        }
    }
}

/// Connects from a namespace, over and over, to 192.0.2.2:443 (must connect) and :3389 (must
/// not) until finished, each attempt given `timeout`: proof that enforcement had no gap across
/// a restart.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<ProbeCount>,
}

/// What a [`Prober`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeCount {
    /// Rounds of both probes.
    pub rounds: usize,
    /// Connections to 3389 that succeeded (must be 0).
    pub denied_connected: usize,
    /// Connections to 443 that failed (must be 0).
    pub allowed_failed: usize,
}

impl Prober {
    /// Starts probing from `outside` in a thread of its own.
    pub fn start(outside: &Namespace, timeout: Duration) -> Prober {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            outside.spawn(move || {
                let mut count = ProbeCount::default();
                while !stop.load(Ordering::Relaxed) || count.rounds < 3 {
                    for port in [3389u16, 443] {
                        let dst: std::net::SocketAddr =
                            format!("192.0.2.2:{port}").parse().unwrap();
                        let connected = crate::netns::connect_here(None, dst, timeout).is_ok();
                        match (port, connected) {
                            (3389, true) => count.denied_connected += 1,
                            (443, false) => count.allowed_failed += 1,
                            _ => {}
                        }
                    }
                    count.rounds += 1;
                }
                count
            })
        };
        Prober { stop, thread }
    }

    /// Stops after at least three rounds and says what was seen.
    pub fn finish(self) -> ProbeCount {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the prober panicked")
    }
}

/// Replaces the pinned drop-counter map under `pins` with one whose key is 12 bytes: what an
/// older build with another `DropKey` would have left there. (Raw BPF_MAP_CREATE and
/// BPF_OBJ_PIN: the kernel matrix's VMs have no bpftool.)
pub fn pin_foreign_drop_map(pins: &Path) {
    use std::os::unix::ffi::OsStrExt;
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    let path = pins.join("maps").join(exfw_common::map_names::DROP_STATS);
    std::fs::remove_file(&path).expect("remove the pinned drop map");
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, ...
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_PERCPU_HASH, 12, 16, 64]);
    // SAFETY: attr is a zeroed bpf_attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // For BPF_OBJ_PIN: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut pin = [0u64; 16];
    pin[0] = name.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: pin is a zeroed bpf_attr of the size passed; name outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, pin.as_ptr(), size_of_val(&pin)) };
    let pinned = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor created above; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN {}: {pinned}", path.display());
}
