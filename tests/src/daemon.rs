//! Running the real `exfw` binary inside a test namespace and talking to its HTTP endpoint.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Namespace;

/// The `exfw` binary next to the test executables (cargo test --workspace builds it).
pub fn exfw_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("exfw");
    assert!(
        bin.exists(),
        "{} is missing: run the tests through `cargo xtask test` (or build exfw-daemon first)",
        bin.display()
    );
    bin
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
        let out = std::fs::File::create(log).expect("daemon log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name()))
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

/// GET `path` from `addr` inside `ns`: (status, body), or None when nothing answers.
pub fn http_get(ns: &Namespace, addr: &str, path: &str) -> Option<(u16, String)> {
    let addr = addr.to_string();
    let path = path.to_string();
    ns.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        Some((status, body))
    })
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
