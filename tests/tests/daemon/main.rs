//! The `exfw` binary as an operator runs it, on the real kernel path: its lifecycle, reloads
//! under traffic, a bad day (interfaces and config files vanishing, signals at the wrong time),
//! and the systemd unit and Debian package it ships in.
//!
//! Every test needs root: a plain `cargo test` lists them as ignored; `cargo xtask test` builds
//! the binaries and the package and runs them as root.

mod lifecycle;
mod packaging;
mod resilience;
mod traffic;
