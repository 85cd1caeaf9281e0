//! exfw: an XDP firewall for Exchange organisations. This library holds everything the `exfw`
//! binary does, so the integration tests and benchmarks drive the same code.
//!
//! The modules are layers, and each imports only from the layers below it (docs/architecture.md,
//! "Layers"; the test `layers::every_module_imports_only_downward` holds the code to it):
//!
//! | layer | modules | job |
//! | --- | --- | --- |
//! | vocabulary | the `exfw-common` crate | codes, names, shared constants, pure predicates |
//! | config | [`config`] | the TOML file, with located errors |
//! | model | [`model`] | Exchange roles and the port catalogue |
//! | policy | [`policy`] | the policy value, compiler, reference classifier, map encoding |
//! | dataplane | [`dataplane`] | aya: load, write, attach, read |
//! | daemon | [`links`], [`state`], [`metrics`], [`server`], [`reload`] | the running service |
//! | cli | [`cli`] | the `exfw` commands |

pub mod cli;
pub mod config;
pub mod dataplane;
pub mod links;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reload;
pub mod server;
pub mod state;

/// The XDP object built from exfw-ebpf by the build script.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("EXFW_EBPF_OBJECT"));

#[cfg(test)]
mod layers;
