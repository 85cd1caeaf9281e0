//! exfw: an XDP firewall for Exchange organisations. This library holds everything the `exfw`
//! binary does, so the integration tests and benchmarks drive the same code.

pub mod cli;
pub mod config;
pub mod dataplane;
pub mod links;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reload;
pub mod server;

/// The XDP object built from exfw-ebpf by the build script.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("EXFW_EBPF_OBJECT"));
