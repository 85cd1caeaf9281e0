//! `cargo xtask vm-test`: the kernel-facing suites inside qemu on Debian's cloud kernels.
//!
//! Kernels come from Debian's archive through a private apt configuration (the machine's own
//! sources stay untouched) and are cached under target/vm/. The initramfs holds busybox, `ip`,
//! the `kernel` test harness and the shared libraries it links, the kernel's veth module, and an init
//! that runs the suites and prints a result line the host reads from the serial console.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::run;

/// A kernel of the matrix: the Debian suite that ships it.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// "5.10", "6.1", "6.12".
    pub name: &'static str,
    /// The Debian suite whose cloud kernel it is.
    pub suite: &'static str,
}

/// The matrix.
pub const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
    },
];

/// The test executable run inside each VM: exfw-tests' `kernel` harness.
const HARNESS: &str = "kernel";
/// Its modules run inside each VM: BPF_PROG_TEST_RUN differential, real traffic through
/// namespaces in driver and skb mode, pin-and-restart, and the attacks.
const SUITES: [&str; 4] = ["differential", "netns", "pinning", "attacks"];
/// How long one VM may take before it is killed.
const VM_TIMEOUT: Duration = Duration::from_secs(900);
const RESULT_MARKER: &str = "EXFW-VM-RESULT";
/// Kernel modules the suites need that the cloud kernels build as modules (paths under
/// lib/modules/VERSION/kernel, without a compression suffix).
const MODULES: &[&str] = &["drivers/net/veth.ko"];

fn vm_dir() -> PathBuf {
    PathBuf::from("target/vm")
}

/// apt options that use a private sources list, lists and cache under target/vm/apt.
fn apt_options() -> Result<Vec<String>> {
    let apt = std::fs::canonicalize(vm_dir())?.join("apt");
    std::fs::create_dir_all(apt.join("lists/partial"))?;
    std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
    let sources = apt.join("sources.list");
    let suites: Vec<String> = KERNELS
        .iter()
        .map(|k| format!("deb http://deb.debian.org/debian {} main\n", k.suite))
        .collect();
    std::fs::write(&sources, suites.concat())?;
    Ok(vec![
        format!("-o=Dir::Etc::SourceList={}", sources.display()),
        "-o=Dir::Etc::SourceParts=/dev/null".into(),
        format!("-o=Dir::State::Lists={}", apt.join("lists").display()),
        format!("-o=Dir::Cache={}", apt.join("cache").display()),
        "-o=APT::Sandbox::User=root".into(),
    ])
}

/// Downloads (once) and unpacks the suite's cloud kernel; returns its unpacked root.
fn fetch_kernel(kernel: Kernel) -> Result<PathBuf> {
    let root = vm_dir().join("kernels").join(kernel.name);
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    std::fs::create_dir_all(vm_dir().join("kernels"))?;
    let options = apt_options()?;
    if !vm_dir()
        .join("apt/lists")
        .read_dir()?
        .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("_dists_")))
    {
        run(Command::new("apt-get")
            .args(&options)
            .args(["update", "-qq"]))?;
    }
    let show = Command::new("apt-cache")
        .args(&options)
        .args(["show", &format!("linux-image-cloud-amd64/{}", kernel.suite)])
        .output()?;
    let text = String::from_utf8_lossy(&show.stdout);
    let package = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .and_then(|d| d.split([' ', ',']).next())
        .with_context(|| format!("no cloud kernel found for {}", kernel.suite))?
        .to_string();
    let unsigned = format!("{package}-unsigned");
    let downloads = std::fs::canonicalize(vm_dir().join("kernels"))?;
    let fetched = Command::new("apt-get")
        .args(&options)
        .args(["download", "-qq", &unsigned])
        .current_dir(&downloads)
        .status()?;
    if !fetched.success() {
        run(Command::new("apt-get")
            .args(&options)
            .args(["download", "-qq", &package])
            .current_dir(&downloads))?;
    }
    let deb = std::fs::read_dir(&downloads)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&package)
        })
        .context("the kernel package was not downloaded")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    Ok(root)
}

/// Builds the `kernel` test harness and returns its path.
fn test_executable() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args([
            "test",
            "--locked",
            "--no-run",
            "--message-format=json",
            "-p",
            "exfw-tests",
            "--test",
            HARNESS,
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the test harness failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["profile"]["test"] == true
                && msg["target"]["name"] == HARNESS
        })
        .and_then(|msg| msg["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no `{HARNESS}` test executable"))
}

/// The shared libraries (and loader) an executable needs, as ldd resolves them on the host.
fn libraries(exe: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = Command::new("ldd").arg(exe).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

fn copy_into(root: &Path, file: &Path) -> Result<()> {
    let target = root.join(file.strip_prefix("/").unwrap_or(file));
    std::fs::create_dir_all(target.parent().unwrap())?;
    std::fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
# Real binaries (iproute2's ip) before busybox's applets.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /sys/fs/bpf /run/netns
mount -t bpf bpf /sys/fs/bpf
for m in /modules/*.ko; do insmod "$m" 2>/dev/null; done
ip link set lo up
# Emulated CPUs are slow: a fraction of the host's million differential frames.
export EXFW_DIFF_PACKETS=120000 EXFW_FLOOD_FRAMES=100000
echo "EXFW-VM kernel $(uname -r)"
result=pass
for name in $(cat /tests/suites); do
    echo "EXFW-VM suite $name starting"
    if /tests/kernel --test-threads=1 --ignored "$name::"; then echo "EXFW-VM suite $name passed"; else echo "EXFW-VM suite $name FAILED"; result=fail; fi
done
echo "EXFW-VM-RESULT $result"
poweroff -f
"#;

/// Builds target/vm/initramfs-KERNEL.cpio.gz for the unpacked kernel at `kernel_root`.
fn initramfs(kernel: Kernel, kernel_root: &Path, harness: &Path) -> Result<PathBuf> {
    let root = vm_dir().join(format!("initramfs-{}", kernel.name));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "tests",
        "modules", "etc",
    ] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static is missing")?;
    std::fs::write(root.join("init"), INIT)?;
    run(Command::new("chmod").arg("755").arg(root.join("init")))?;
    let ip = PathBuf::from("/usr/bin/ip");
    let ip = if ip.exists() {
        ip
    } else {
        PathBuf::from("/sbin/ip")
    };
    let mut needed: BTreeSet<PathBuf> = libraries(&ip)?;
    copy_into(&root, &ip)?;
    std::fs::copy(&ip, root.join("sbin/ip"))?;
    std::fs::copy(harness, root.join("tests").join(HARNESS))?;
    std::fs::write(root.join("tests/suites"), SUITES.join("\n") + "\n")?;
    needed.extend(libraries(harness)?);
    for lib in needed {
        copy_into(&root, &lib)?;
    }
    for module in MODULES {
        // Plain, or compressed (newer Debian kernels): busybox insmod wants it plain.
        // lib/modules, or usr/lib/modules in merged-/usr packages (trixie).
        let candidates = ["lib/modules", "usr/lib/modules"]
            .iter()
            .filter_map(|dir| std::fs::read_dir(kernel_root.join(dir)).ok())
            .flatten()
            .flatten()
            .flat_map(|e| {
                ["", ".xz", ".zst"]
                    .map(|ext| e.path().join("kernel").join(format!("{module}{ext}")))
            });
        let Some(path) = candidates.into_iter().find(|p| p.exists()) else {
            continue;
        };
        let plain = root
            .join("modules")
            .join(Path::new(module).file_name().unwrap());
        let tool = match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => Some("xz"),
            Some("zst") => Some("zstd"),
            _ => None,
        };
        match tool {
            None => {
                std::fs::copy(&path, &plain)?;
            }
            Some(tool) => {
                let out = Command::new(tool)
                    .args(["-dc"])
                    .arg(&path)
                    .output()
                    .with_context(|| format!("running {tool}"))?;
                if !out.status.success() {
                    bail!("{tool} could not decompress {}", path.display());
                }
                std::fs::write(&plain, out.stdout)?;
            }
        }
    }
    let image = std::fs::canonicalize(vm_dir())?.join(format!("initramfs-{}.cpio.gz", kernel.name));
    let script = format!(
        "cd {} && find . | cpio --quiet -o -H newc | gzip -1 > {}",
        root.display(),
        image.display()
    );
    run(Command::new("sh").args(["-c", &script]))?;
    Ok(image)
}

/// What one boot showed.
struct Boot {
    passed: bool,
    /// The init script ran (the kernel got that far).
    init_started: bool,
    took: Duration,
}

/// Boots the kernel with the initramfs under qemu (TCG) and streams its console.
fn boot(kernel: Kernel, kernel_root: &Path, initrd: &Path) -> Result<Boot> {
    let vmlinuz = std::fs::read_dir(kernel_root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz")
        })
        .context("no vmlinuz in the kernel package")?;
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        // One vCPU, and no cmpxchg16b: under software emulation the 6.12 guest double-faulted
        // on the slab allocator's per-CPU cmpxchg16b (with one or two vCPUs, qemu64 or max,
        // during boot or in any suite). Without the instruction the kernel uses its own
        // emulation of it, as it does on CPUs that lack it.
        .args([
            "-cpu",
            "max,-cx16",
            "-accel",
            "tcg",
            "-m",
            "2048",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let name = kernel.name;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[{name}] {line}");
            let _ = tx.send(line);
        }
    });
    let mut result = None;
    let mut init_started = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                init_started |= line.contains("EXFW-VM kernel");
                if let Some(rest) = line.split(RESULT_MARKER).nth(1) {
                    result = Some(rest.trim().starts_with("pass"));
                }
                if line.contains("Kernel panic") {
                    eprintln!("vm-test: kernel {name} panicked");
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if started.elapsed() > VM_TIMEOUT {
            eprintln!("vm-test: kernel {name} timed out after {VM_TIMEOUT:?}");
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(Boot {
        passed: result == Some(true),
        init_started,
        took: started.elapsed(),
    })
}

/// Runs the suites on the named kernels ("all" for the matrix); fails if any kernel fails.
pub fn vm_test(which: &str) -> Result<()> {
    let kernels: Vec<Kernel> = match which {
        "all" => KERNELS.to_vec(),
        name => vec![
            *KERNELS
                .iter()
                .find(|k| k.name == name)
                .with_context(|| format!("unknown kernel {name}: use 5.10, 6.1, 6.12 or all"))?,
        ],
    };
    std::fs::create_dir_all(vm_dir())?;
    let harness = test_executable()?;
    let mut summary = Vec::new();
    for kernel in kernels {
        let root = fetch_kernel(kernel)?;
        let initrd = initramfs(kernel, &root, &harness)?;
        let mut run = boot(kernel, &root, &initrd)?;
        if !run.init_started {
            // The kernel died before init, so before any test: a fault of the emulated boot,
            // not a result. Once more; a fault after init counts as a failure.
            eprintln!(
                "vm-test: kernel {} never reached init; booting it once more",
                kernel.name
            );
            run = boot(kernel, &root, &initrd)?;
        }
        summary.push((kernel.name, run.passed, run.took));
    }
    println!("\nkernel  result  boot + tests");
    for (name, passed, took) in &summary {
        println!(
            "{name:<7} {:<7} {:.0} s",
            if *passed { "pass" } else { "FAIL" },
            took.as_secs_f64()
        );
    }
    let passed = summary.iter().filter(|s| s.1).count();
    println!(
        "vm-test: {passed} passed, {} failed",
        summary.len() - passed
    );
    if summary.iter().any(|(_, passed, _)| !passed) {
        bail!(
            "vm-test failed on {:?}",
            summary
                .iter()
                .filter(|s| !s.1)
                .map(|s| s.0)
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
