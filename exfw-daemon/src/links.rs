//! Interfaces that come and go: the kernel's link events (rtnetlink) wake the daemon, which
//! compares every configured interface with its pinned XDP link and re-attaches, or reports the
//! interface missing, so `exfw_interface_attached`, `/readyz` and the log tell the truth.
//!
//! Deleting an interface detaches its XDP link in the kernel while the pin stays; a re-created
//! interface of the same name has a new index. The pinned link's own interface index (0 once
//! detached) against the name's current index tells a live link from a dead one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::sync::mpsc::{Sender, error::TrySendError};

use tracing::{error, info, warn};

use crate::{
    config::Config,
    dataplane::{AttachedMode, Dataplane, ifindex_of},
};

/// Where one configured interface stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceState {
    /// exfw's program filters it, in this mode.
    Attached(AttachedMode),
    /// No interface of this name exists here (deleted, renamed or moved away); exfw attaches
    /// again when it comes back.
    Missing,
    /// `exfw detach IFACE` removed it; it stays detached until the next reload.
    Detached,
    /// Attaching failed; the message says why.
    Failed(String),
}

impl InterfaceState {
    /// Every state's name, in the order metrics list them.
    pub const NAMES: [&'static str; 4] = ["attached", "missing", "detached", "failed"];

    /// The `state` word of logs and `exfw status`.
    pub fn name(&self) -> &'static str {
        match self {
            InterfaceState::Attached(_) => "attached",
            InterfaceState::Missing => "missing",
            InterfaceState::Detached => "detached",
            InterfaceState::Failed(_) => "failed",
        }
    }
}

/// One configured interface and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// The interface name from the config.
    pub name: String,
    /// Its state.
    pub state: InterfaceState,
}

/// Makes every interface of `config` filtered again where that is possible, and returns the
/// states to publish. `previous` tells an interface the operator detached (pin removed after it
/// was attached) from one never attached.
pub fn reconcile(
    dataplane: &mut Dataplane,
    config: &Config,
    previous: &[InterfaceStatus],
) -> Vec<InterfaceStatus> {
    config
        .interfaces
        .iter()
        .map(|iface| {
            let before = previous
                .iter()
                .find(|s| s.name == iface.name)
                .map(|s| &s.state);
            let state = match ifindex_of(&iface.name) {
                None => InterfaceState::Missing,
                Some(index) => match dataplane.pinned_link(&iface.name) {
                    // A live link on this very interface.
                    Some((mode, Some(linked))) if linked == index => InterfaceState::Attached(mode),
                    // A pin that cannot be read as a link proves nothing: not ready.
                    Some((_, None)) => InterfaceState::Failed(format!(
                        "the pinned link of {} cannot be read; `exfw detach {}` and a reload replace it",
                        iface.name, iface.name
                    )),
                    None if matches!(
                        before,
                        Some(InterfaceState::Attached(_) | InterfaceState::Detached)
                    ) =>
                    {
                        InterfaceState::Detached
                    }
                    _ => match dataplane.attach(&iface.name, iface.mode) {
                        Ok(mode) => InterfaceState::Attached(mode),
                        // Deleted while we looked (the next link event brings it back).
                        Err(_) if ifindex_of(&iface.name) != Some(index) => InterfaceState::Missing,
                        Err(e) => InterfaceState::Failed(e.to_string()),
                    },
                },
            };
            if before != Some(&state) {
                report(&iface.name, before, &state);
            }
            InterfaceStatus {
                name: iface.name.clone(),
                state,
            }
        })
        .collect()
}

fn report(iface: &str, before: Option<&InterfaceState>, state: &InterfaceState) {
    let before = before.map_or("unknown", InterfaceState::name);
    match state {
        InterfaceState::Attached(mode) => {
            info!(%iface, before, mode = mode.name(), "interface filtered")
        }
        InterfaceState::Missing => error!(
            %iface,
            before,
            "interface {iface} is gone (deleted, renamed or moved to another namespace): exfw attaches again as soon as an interface of that name appears"
        ),
        InterfaceState::Detached => warn!(
            %iface,
            before,
            "interface {iface} was detached explicitly (exfw detach): unfiltered until the next reload, which attaches it again if the config still names it"
        ),
        InterfaceState::Failed(why) => error!(
            %iface,
            before,
            "attaching to interface {iface} failed, it is unfiltered: {why}"
        ),
    }
}

/// Starts a thread that sends `()` on `wake` whenever the kernel reports a link change (an
/// interface added, deleted, renamed, moved, up or down), or when it lost events (the socket's
/// buffer overran), so the caller re-checks every interface.
pub fn watch_link_events(wake: Sender<()>) -> std::io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket(2) just returned this descriptor.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero is a valid start.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as u16;
    address.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: binding our socket to a sockaddr_nl we own, with its size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::thread::Builder::new()
        .name("exfw-links".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: recv into a buffer we own, with its length.
                let n = unsafe {
                    libc::recv(
                        socket.as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                        0,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        // Lost events: re-check everything.
                        Some(libc::ENOBUFS) => {}
                        Some(libc::EINTR) => continue,
                        _ => {
                            error!(error = %e, "reading link events failed; interfaces are re-checked every few seconds only");
                            return;
                        }
                    }
                }
                // A full channel already holds a wake-up: the next check sees this change too.
                if let Err(TrySendError::Closed(())) = wake.try_send(()) {
                    return;
                }
            }
        })?;
    Ok(())
}
