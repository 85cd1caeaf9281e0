//! The XDP program on the real kernel path, without the daemon: BPF_PROG_TEST_RUN against the
//! reference classifier, real sockets through network namespaces, pinned state, the nftables
//! export, and the attacks of docs/security.md. These suites also run in the VM kernel matrix
//! (`cargo xtask vm-test`).
//!
//! Every test needs root: a plain `cargo test` lists them as ignored; `cargo xtask test` runs
//! them as root, where a missing privilege or kernel feature fails them.

mod attacks;
mod compiled;
mod corpus;
mod differential;
mod netns;
mod nftables;
mod pinning;
