//! Builds the XDP program with Debian's rustc for bpfel-unknown-none and hands its path to the
//! crate as `EXFW_EBPF_OBJECT`, so the daemon always embeds the object built from these sources.
//! Set `EXFW_EBPF_OBJECT` to embed a prebuilt object instead.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Debian's toolchain, which ships a prebuilt `core` for bpfel-unknown-none (see xtask setup).
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    println!("cargo:rerun-if-env-changed=EXFW_EBPF_OBJECT");
    let object = match env::var("EXFW_EBPF_OBJECT") {
        Ok(path) => PathBuf::from(path),
        Err(_) => build_ebpf(),
    };
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=EXFW_EBPF_OBJECT={}", object.display());
}

fn build_ebpf() -> PathBuf {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let ebpf = root.join("exfw-ebpf");
    for watched in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf.join(watched).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("exfw-common/src").display()
    );
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !Path::new(tool).exists() {
            panic!(
                "{tool} is missing: run `cargo xtask setup` (or any `cargo xtask` command) first"
            );
        }
    }
    // Inside OUT_DIR, like every build script's output: it follows CARGO_TARGET_DIR and the
    // profile, and `cargo clean` removes it.
    let target_dir = PathBuf::from(env::var("OUT_DIR").unwrap()).join("ebpf");
    let mut cmd = Command::new(DEBIAN_CARGO);
    // Start from a clean slate: the outer cargo's variables (rustc, flags, jobserver) belong to
    // the host toolchain.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key.starts_with("RUSTDOC")
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let cargo_bin = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env::var("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin");
    let path = format!(
        "{}:{}",
        cargo_bin.display(),
        env::var("PATH").unwrap_or_default()
    );
    let status = cmd
        .current_dir(&ebpf)
        .env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {DEBIAN_CARGO}: {e}"));
    if !status.success() {
        panic!("building exfw-ebpf failed ({status}); `cargo xtask setup` installs the toolchain");
    }
    target_dir.join("bpfel-unknown-none/release/exfw")
}
