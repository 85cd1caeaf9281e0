//! What the daemon's threads share: the data plane, the config and policy in force, the
//! interfaces and the reload bookkeeping. The reload loop writes it; metrics and the HTTP
//! server read it.

use std::sync::{Mutex, RwLock, atomic::AtomicU64};

use crate::{config::Config, dataplane::Dataplane, links::InterfaceStatus, policy::Compiled};

/// State of the last config reload, as Prometheus' own convention names it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReloadStatus {
    /// Whether the last attempt succeeded.
    pub last_successful: bool,
    /// Unix time of the last success.
    pub last_success_seconds: f64,
    /// Successful reloads since start.
    pub successes: u64,
    /// Failed reloads since start (refusals included).
    pub failures: u64,
    /// Reloads refused because they would detach an interface.
    pub refused_detach: u64,
    /// Reloads refused because they would remove too many protected addresses.
    pub refused_removal: u64,
    /// Reloads refused because an interface would lose its accepts list.
    pub refused_opening: u64,
}

/// What the daemon's threads share: the data plane, the policy in force and its bookkeeping.
pub struct Shared {
    /// The loaded program and its maps, for the threads that change them (reload, interfaces).
    pub dataplane: Mutex<Dataplane>,
    /// Its own descriptors on the same pinned maps, for scrapes: reading counters never waits
    /// for a reload that holds `dataplane`.
    pub reader: Mutex<Dataplane>,
    /// The config in force.
    pub config: RwLock<Config>,
    /// The policy in force, for labels.
    pub compiled: RwLock<Compiled>,
    /// Every configured interface and where it stands.
    pub interfaces: RwLock<Vec<InterfaceStatus>>,
    /// Reload bookkeeping.
    pub reload: Mutex<ReloadStatus>,
    /// Flow-table entries, counted in the background (counting walks the table).
    pub flow_entries: AtomicU64,
    /// Flow-table capacity.
    pub flow_capacity: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}
