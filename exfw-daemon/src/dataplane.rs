//! The kernel half through aya: load the embedded XDP object, write a policy generation and flip
//! to it, attach to interfaces, read every counter and drain the drop-event ring buffer.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
    programs::{
        ProgramError, TestRun, TestRunOptions, TestRunResult, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
pub use exfw_common::{AttachMode, AttachedMode};
use exfw_common::{
    CLASS_EXTERNAL, CLASS_PROTECTED, ClassKeyV4, ClassKeyV6, ClassValue, Counter, DropEvent,
    DropKey, FlowKey, FlowValue, GENERATION_BITS, IFACE_ACCEPTS_EXTERNAL, IfaceKey, IfaceValue,
    PortKey, Reason, RuleKey, RuleStats, RuleValue, SpoofKey, Verdict, config, event_stat, limits,
    map_names, program_names, reason_index,
};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::policy::{
    Compiled, Counters, Mode, Policy, PolicyError, Protection,
    encode::{
        IdPlan, MapEntries, Prefixed, class_identities, encode, plan_ids, policy_hash,
        rule_identities, table_use,
    },
};

/// Something the data plane could not do.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused the object (verifier, missing map type, permissions).
    #[error("loading the XDP program failed (run as root on Linux 5.8 or later): {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// The policy is inconsistent; nothing was written.
    #[error("the policy was not applied: {0}")]
    Policy(#[from] PolicyError),
    /// The object lacks a map or program this daemon expects (a build mismatch).
    #[error("the XDP object has no {0}; rebuild with `cargo xtask build`")]
    Missing(&'static str),
    /// The kernel lacks something the program needs.
    #[error(
        "this kernel lacks {0}: exfw needs Linux 5.8 or later (docs/kernels.md lists what each version gets)"
    )]
    KernelTooOld(&'static str),
    /// Another daemon holds the pinned state.
    #[error("another exfw daemon manages {0} (only one may); stop it first (systemctl stop exfw)")]
    Busy(PathBuf),
    /// Nothing is pinned at the path.
    #[error("nothing is pinned at {0}: exfw is not enforcing there")]
    NotPinned(PathBuf),
    /// The pinned maps were made by an exfw build with other map layouts.
    #[error(
        "the state pinned at {dir} is from an incompatible exfw build ({differences}): start this build's daemon to replace it, or run the build that pinned it"
    )]
    IncompatiblePins {
        /// The pin directory.
        dir: PathBuf,
        /// How the pinned maps differ from this build's.
        differences: String,
    },
    /// A file-system step of pinning failed.
    #[error("{what}: {source}")]
    Pin {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel attached through netlink, which cannot be pinned.
    #[error(
        "the kernel attached {0} without a BPF link (Linux 5.9+ needed), so enforcement could not outlive the daemon"
    )]
    NoLinkSupport(String),
}

fn pin_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Pin { what, source }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Program { what, source }
}

/// Where the daemon pins its maps and links by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/exfw";

/// Sizes and pinning chosen at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Confirmed-connection table capacity (a pinned table keeps the size it was created with).
    pub flow_entries: u32,
    /// Unconfirmed-connection table capacity.
    pub pending_entries: u32,
    /// Fragment-cache capacity.
    pub frag_entries: u32,
    /// Pin maps and links here so enforcement outlives the process; `None` for tests and tools.
    pub pin_dir: Option<PathBuf>,
    /// Turn on the program's diagnostics (aya-log, debug level) and read them into `tracing`
    /// under the target `exfw::kernel` ([`Dataplane::take_kernel_log`]); off, the verifier
    /// prunes them.
    pub kernel_log: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            flow_entries: limits::DEFAULT_FLOW_ENTRIES,
            pending_entries: limits::DEFAULT_PENDING_ENTRIES,
            frag_entries: limits::DEFAULT_FRAG_ENTRIES,
            pin_dir: None,
            kernel_log: false,
        }
    }
}

/// The pinned-state directory: `maps/NAME` and `links/MODE/IFACE` (bpffs allows no dots in
/// names, and interface names hold no slashes).
struct Pins {
    dir: PathBuf,
    /// An exclusive flock on the directory while a daemon manages it.
    _lock: Option<File>,
}

impl Pins {
    /// Creates the directories (mounting bpffs if needed) and takes the daemon lock.
    fn acquire(dir: &Path) -> Result<Pins, DataplaneError> {
        ensure_bpffs(dir)?;
        for sub in ["maps", "links/driver", "links/skb"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(pin_err(format!("creating {}", dir.join(sub).display())))?;
        }
        let lock = File::open(dir).map_err(pin_err(format!("opening {}", dir.display())))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DataplaneError::Busy(dir.to_path_buf()));
        }
        Ok(Pins {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    fn link_path(&self, iface: &str, mode: AttachedMode) -> PathBuf {
        self.dir.join("links").join(mode.name()).join(iface)
    }

    /// The pinned link of `iface`, with its mode.
    fn link_for(&self, iface: &str) -> Option<(PathBuf, AttachedMode)> {
        [AttachedMode::Driver, AttachedMode::Skb]
            .into_iter()
            .map(|m| (self.link_path(iface, m), m))
            .find(|(p, _)| p.exists())
    }
}

/// Mounts bpffs on /sys/fs/bpf when the pin directory lives there and it is not mounted.
fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        return Ok(());
    }
    // SAFETY: constant NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Pin {
            what: "mounting bpffs on /sys/fs/bpf".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    warn!(
        "bpffs was not mounted on /sys/fs/bpf: exfw mounted it (pins in it vanish with this mount namespace; systemd mounts it at boot)"
    );
    Ok(())
}

/// Interfaces with a pinned link under `dir`, with their modes.
pub fn pinned_links(dir: &Path) -> Vec<(String, AttachedMode)> {
    let mut out: Vec<(String, AttachedMode)> = [AttachedMode::Driver, AttachedMode::Skb]
        .into_iter()
        .flat_map(|mode| {
            std::fs::read_dir(dir.join("links").join(mode.name()))
                .into_iter()
                .flatten()
                .filter_map(move |e| Some((e.ok()?.file_name().into_string().ok()?, mode)))
        })
        .collect();
    out.sort();
    out
}

/// Refuses, naming the feature, on kernels that lack a map type the program uses.
fn check_kernel() -> Result<(), DataplaneError> {
    use aya::maps::MapType;
    for (map, feature) in [
        (MapType::RingBuf, "the BPF ring buffer (Linux 5.8)"),
        (MapType::LpmTrie, "LPM-trie maps (Linux 4.11)"),
        (MapType::LruHash, "LRU hash maps (Linux 4.10)"),
        (MapType::PerCpuHash, "per-CPU hash maps (Linux 4.6)"),
    ] {
        // A probe that cannot run (no privileges) is not a verdict on the kernel.
        if aya::sys::is_map_supported(map).is_ok_and(|supported| !supported) {
            return Err(DataplaneError::KernelTooOld(feature));
        }
    }
    Ok(())
}

/// The kernel's version as its stable series numbers it: Debian and Ubuntu keep the patch level
/// out of the release string ("6.1.0-50-cloud-amd64" is 6.1.158), so their own records come first.
pub fn kernel_version() -> Option<(u32, u32, u32)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    // Ubuntu: "Ubuntu 5.15.0-91.101-generic 5.15.131".
    let ubuntu = read("/proc/version_signature");
    if let Some(v) = ubuntu.split_whitespace().last().and_then(parse_version) {
        return Some(v);
    }
    // Debian: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)".
    let version = read("/proc/sys/kernel/version");
    let mut words = version.split_whitespace();
    if words.any(|w| w == "Debian")
        && let Some(v) = words.next().and_then(parse_version)
    {
        return Some(v);
    }
    parse_version(read("/proc/sys/kernel/osrelease").trim())
}

/// "6.1.158-1", "5.10.0-32-amd64", "6.18" as (major, minor, patch).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut numbers = text
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    let major = numbers.next()??;
    let minor = numbers.next()??;
    let patch = numbers.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether `bpf_fib_lookup` on this kernel names the route's interface also when the next hop
/// has no neighbour entry: the fix ("bpf: Always return target ifindex in bpf_fib_lookup") is in
/// Linux 6.2 and the stable releases 6.1.13, 5.15.95 and 5.10.169. Before it, the reverse-path
/// check cannot tell where such a route leaves, and fails closed.
pub fn fib_names_ifindex_without_neighbour(version: (u32, u32, u32)) -> bool {
    match version {
        (major, _, _) if major > 6 => true,
        (6, minor, _) if minor >= 2 => true,
        (6, 1, patch) => patch >= 13,
        (5, 15, patch) => patch >= 95,
        (5, 10, patch) => patch >= 169,
        _ => false,
    }
}

/// Whether a daemon holds the pin directory now.
pub fn daemon_running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; released when `file` closes.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// Removes every pinned link and map under `dir` (detaching exfw everywhere) and the directory.
/// Refuses while a daemon holds the directory. Returns the interfaces it detached.
pub fn remove_pinned(dir: &Path) -> Result<Vec<String>, DataplaneError> {
    if !dir.exists() {
        return Err(DataplaneError::NotPinned(dir.to_path_buf()));
    }
    let pins = Pins::acquire(dir)?;
    let detached = pinned_links(dir);
    for (iface, mode) in &detached {
        let path = pins.link_path(iface, *mode);
        std::fs::remove_file(&path).map_err(pin_err(format!("removing {}", path.display())))?;
    }
    for sub in [
        "links/driver",
        "links/skb",
        "links",
        "maps",
        REPLACED_MAPS,
        STAGED_MAPS,
    ] {
        remove_pin_dir(dir, sub)?;
    }
    drop(pins);
    std::fs::remove_dir(dir).map_err(pin_err(format!("removing {}", dir.display())))?;
    Ok(detached.into_iter().map(|(iface, _)| iface).collect())
}

/// Removes the pinned link of one interface (detaching exfw there), whether or not a daemon
/// runs. Returns false when `iface` has no pinned link.
pub fn remove_pinned_link(dir: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let Some((_, mode)) = pinned_links(dir).into_iter().find(|(i, _)| i == iface) else {
        return Ok(false);
    };
    let path = dir.join("links").join(mode.name()).join(iface);
    std::fs::remove_file(&path).map_err(pin_err(format!("removing {}", path.display())))?;
    Ok(true)
}

/// The interface index an XDP link is attached to: 0 once its interface is gone (the kernel
/// detaches the link then, while the pin stays). `None` when the pin cannot be read as a link.
pub fn pinned_link_ifindex(path: &Path) -> Option<u32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    /// `struct bpf_link_info` up to the XDP member: type, id, prog_id, then the union (8-byte
    /// aligned) whose `xdp.ifindex` comes first.
    #[repr(C)]
    #[derive(Default)]
    struct XdpLinkInfo {
        kind: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        ifindex: u32,
        _pad2: u32,
    }
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET reads a NUL-terminated path we own and returns a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut ObjGet,
            size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = XdpLinkInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<XdpLinkInfo>() as u32,
        info: &mut info as *mut XdpLinkInfo as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`, which we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFd,
            size_of::<InfoByFd>(),
        )
    };
    // BPF_LINK_TYPE_XDP is 6.
    (rc == 0 && info.kind == 6).then_some(info.ifindex)
}

/// Waits until every XDP program run that began before the call has ended: XDP runs inside an
/// RCU read-side section, and `membarrier(MEMBARRIER_CMD_GLOBAL)` is a full RCU grace period
/// (`synchronize_rcu`). False where the kernel refuses it (nohz_full CPUs, a seccomp filter).
fn wait_for_running_programs() -> bool {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0 }
}

/// What the config map says about the policy in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyState {
    /// The generation packets are judged by (0: none yet).
    pub generation: u32,
    /// Audit or enforce.
    pub mode: Mode,
    /// [`policy_hash`] of the policy in force.
    pub hash: u64,
    /// Unix seconds when it was written.
    pub applied_at: u64,
}

/// Counters of the drop-event sampler and of table pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events written to the ring buffer.
    pub sampled: u64,
    /// Events the per-CPU rate limit suppressed.
    pub suppressed: u64,
    /// Events lost to a full ring buffer.
    pub lost: u64,
    /// Drops not counted per port because the drop table was full.
    pub drop_stats_full: u64,
    /// Confirmed connections that could not be written.
    pub flow_insert_failed: u64,
    /// Unconfirmed connections that could not be written.
    pub pending_insert_failed: u64,
    /// Spoofed-source drops not counted per interface because the table was full.
    pub spoof_stats_full: u64,
    /// First fragments whose verdict could not be written.
    pub frag_insert_failed: u64,
}

/// How the maps pinned under `dir` differ from this build's definitions (empty: they are
/// this build's layout). Checked before the loader adopts them: a map of another key or value
/// size would make every read overrun its buffer and the program misread every entry. Maps
/// this build adds are not pinned yet and are created; a layout stamp catches changes of
/// meaning that keep the sizes.
fn pinned_map_differences(dir: &Path) -> Result<Vec<(&'static str, String)>, DataplaneError> {
    let object = aya_obj::Object::parse(crate::EBPF_OBJECT).map_err(|e| DataplaneError::Pin {
        what: "reading the embedded object's map definitions".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut differences = Vec::new();
    for name in map_names::ALL {
        let path = dir.join("maps").join(name);
        if !path.exists() {
            continue;
        }
        let def = object
            .maps
            .get(name)
            .ok_or(DataplaneError::Missing("a pinned map's definition"))?;
        let info = aya::maps::MapInfo::from_pin(&path)
            .map_err(map_err(format!("reading {}", path.display())))?;
        let pinned_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        // Sized by the config (the connection tables) or rounded by the loader (the ring):
        // another size there is another capacity, not another layout.
        let sized_elsewhere = [
            map_names::FLOWS,
            map_names::PENDING,
            map_names::FRAGS,
            map_names::EVENTS,
        ]
        .contains(&name);
        for (what, pinned, ours) in [
            ("type", pinned_type, def.map_type()),
            ("key size", info.key_size(), def.key_size()),
            ("value size", info.value_size(), def.value_size()),
            ("flags", info.map_flags(), def.map_flags()),
            (
                "entries",
                info.max_entries(),
                if sized_elsewhere {
                    info.max_entries()
                } else {
                    def.max_entries()
                },
            ),
        ] {
            if pinned != ours {
                differences.push((name, format!("{name}: {what} {pinned}, this build {ours}")));
            }
        }
    }
    if differences.is_empty() && dir.join("maps").join(map_names::CONFIG).exists() {
        let stamp = pinned_config_slot(dir, config::PINNED_LAYOUT)?;
        // 0: pinned by a build before the stamp, whose sizes were checked above.
        if stamp != 0 && stamp != exfw_common::PINNED_LAYOUT {
            differences.push((
                "layout",
                format!("layout {stamp}, this build {}", exfw_common::PINNED_LAYOUT),
            ));
        }
    }
    Ok(differences)
}

/// Where the maps of an incompatible build are set aside when this build's replace them
/// (bpffs refuses names with a dot).
const REPLACED_MAPS: &str = "replaced-maps";
/// Where this build creates its maps beside an incompatible build's, until its start is
/// accepted and they take the place of `maps`.
const STAGED_MAPS: &str = "staged-maps";

/// Removes the pins in `dir/sub` and the directory, if it exists.
fn remove_pin_dir(dir: &Path, sub: &str) -> Result<(), DataplaneError> {
    let path = dir.join(sub);
    if !path.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
        std::fs::remove_file(entry.path())
            .map_err(pin_err(format!("removing {}", entry.path().display())))?;
    }
    std::fs::remove_dir(&path).map_err(pin_err(format!("removing {}", path.display())))
}

/// What the policy whose tables are `v4`, `v6` and `ifaces` protects in `generation`: its
/// protected prefixes, and the interfaces where some class, or the external addresses, may not
/// arrive (one that is gone, or was when the policy was written, is left out).
fn protection_from(
    generation: u32,
    v4: &aya::maps::Map,
    v6: &aya::maps::Map,
    ifaces: &aya::maps::Map,
) -> Result<Protection, DataplaneError> {
    fn read<K: aya::Pod>(
        map: &aya::maps::Map,
        generation: [u8; 4],
        key_generation: impl Fn(&K) -> [u8; 4],
        prefix: impl Fn(&K, u8) -> Option<IpNet>,
        protection: &mut Protection,
        ingress: &mut u64,
    ) -> Result<(), DataplaneError> {
        let trie = LpmTrie::<_, K, ClassValue>::try_from(map).map_err(map_err("class map"))?;
        for item in trie.iter() {
            let (key, value) = item.map_err(map_err("reading a class map"))?;
            let data = key.data();
            if key_generation(&data) != generation {
                continue;
            }
            *ingress &= value.ingress;
            let len = key.prefix_len().saturating_sub(GENERATION_BITS) as u8;
            if value.flags & CLASS_PROTECTED != 0 {
                protection.protected.extend(prefix(&data, len));
            }
        }
        Ok(())
    }
    let mut protection = Protection::default();
    // The slots every class may arrive on.
    let mut ingress = u64::MAX;
    read::<ClassKeyV4>(
        v4,
        generation.to_be_bytes(),
        |k| k.generation,
        |k, len| ipnet::Ipv4Net::new(k.addr.into(), len).ok().map(IpNet::V4),
        &mut protection,
        &mut ingress,
    )?;
    read::<ClassKeyV6>(
        v6,
        generation.to_be_bytes(),
        |k| k.generation,
        |k, len| ipnet::Ipv6Net::new(k.addr.into(), len).ok().map(IpNet::V6),
        &mut protection,
        &mut ingress,
    )?;
    let ifaces = aya::maps::HashMap::<_, IfaceKey, IfaceValue>::try_from(ifaces)
        .map_err(map_err("interface map"))?;
    for item in ifaces.iter() {
        let (key, value) = item.map_err(map_err("reading the interface map"))?;
        let every_source =
            value.flags & IFACE_ACCEPTS_EXTERNAL != 0 && (ingress >> (value.slot & 63)) & 1 != 0;
        if key.generation == generation && key.ifindex != 0 && !every_source {
            let name = interface_name(key.ifindex);
            if ifindex_of(&name) == Some(key.ifindex) {
                protection.restricted_interfaces.insert(name);
            }
        }
    }
    Ok(protection)
}

/// Slot `slot` of the config array pinned under `dir`.
fn pinned_config_slot(dir: &Path, slot: u32) -> Result<u64, DataplaneError> {
    let path = dir.join("maps").join(map_names::CONFIG);
    let data = MapData::from_pin(&path).map_err(map_err(format!("opening {}", path.display())))?;
    let map = aya::maps::Map::Array(data);
    Array::<_, u64>::try_from(&map)
        .map_err(map_err("config map"))?
        .get(&slot, 0)
        .map_err(map_err("reading the pinned config map"))
}

/// What the policy in the maps pinned under `dir` protects, read through this build's
/// definitions: only when the tables it reads have this build's layout (`None` before any
/// policy).
fn pinned_protection(dir: &Path) -> Result<Option<Protection>, DataplaneError> {
    let open = |name: &str| {
        let path = dir.join("maps").join(name);
        MapData::from_pin(&path).map_err(map_err(format!("opening {}", path.display())))
    };
    let generation = pinned_config_slot(dir, config::GENERATION)? as u32;
    if generation == 0 {
        return Ok(None);
    }
    protection_from(
        generation,
        &aya::maps::Map::LpmTrie(open(map_names::CLASS_V4)?),
        &aya::maps::Map::LpmTrie(open(map_names::CLASS_V6)?),
        &aya::maps::Map::HashMap(open(map_names::IFACES)?),
    )
    .map(Some)
}

/// A replacement of an incompatible build's maps under way: this build's are staged beside
/// them until [`Dataplane::commit_replacement`].
struct Replacement {
    /// What the old policy protects, when its tables could be read (what a start is held to).
    protection: Option<Protection>,
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    events: Option<EventRing>,
    kernel_log: Option<KernelLog>,
    generation: u32,
    /// The class ids of the policy this process put in force (`None` before its first apply).
    classes_in_force: Option<BTreeSet<u16>>,
    /// This load staged its maps beside an incompatible build's (see
    /// [`Dataplane::commit_replacement`]).
    replacement: Option<Replacement>,
    /// The interface index each interface of the policy in force was encoded with (0: absent).
    encoded_ifindexes: BTreeMap<String, u32>,
    pins: Option<Pins>,
}

impl Dataplane {
    /// Loads the embedded object into the kernel (nothing is attached yet). With a pin
    /// directory, it takes the daemon lock there and adopts the pinned maps (counters, flows and
    /// the policy in force survive) or creates and pins them.
    pub fn load(options: LoadOptions) -> Result<Self, DataplaneError> {
        let pins = options.pin_dir.as_deref().map(Pins::acquire).transpose()?;
        let mut dataplane = Self::load_with(&options, pins)?;
        // Written by the loader only: `exfw status` opens the same maps and changes nothing.
        let names_ifindex = kernel_version().is_some_and(fib_names_ifindex_without_neighbour);
        let mut cfg = dataplane.config()?;
        cfg.set(
            config::FIB_NO_NEIGH_NAMES_IFINDEX,
            u64::from(names_ifindex),
            0,
        )
        .map_err(map_err("writing the route lookup's behaviour"))?;
        cfg.set(config::PINNED_LAYOUT, exfw_common::PINNED_LAYOUT, 0)
            .map_err(map_err("writing the pinned layout"))?;
        Ok(dataplane)
    }

    /// Opens the state a daemon pinned at `dir`, without the lock and without attaching:
    /// what `exfw status` reads, also while the daemon is down.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        if !dir.join("maps").join(map_names::CONFIG).exists() {
            return Err(DataplaneError::NotPinned(dir.to_path_buf()));
        }
        let pins = Pins {
            dir: dir.to_path_buf(),
            _lock: None,
        };
        Self::load_with(&LoadOptions::default(), Some(pins))
    }

    fn load_with(options: &LoadOptions, pins: Option<Pins>) -> Result<Self, DataplaneError> {
        check_kernel()?;
        let mut replacement = None;
        if let Some(p) = &pins {
            let mut differences = pinned_map_differences(&p.dir)?;
            if p._lock.is_none() {
                // A reader (`exfw status`, scrapes) changes nothing: it neither creates a map
                // that is missing (the loader would pin one) nor reads maps of another layout.
                differences.extend(
                    map_names::ALL
                        .iter()
                        .filter(|n| !p.dir.join("maps").join(n).exists())
                        .map(|n| {
                            (
                                *n,
                                format!("{n}: not pinned (the daemon creates it at its start)"),
                            )
                        }),
                );
                if !differences.is_empty() {
                    return Err(DataplaneError::IncompatiblePins {
                        dir: p.dir.clone(),
                        differences: differences
                            .into_iter()
                            .map(|(_, d)| d)
                            .collect::<Vec<_>>()
                            .join("; "),
                    });
                }
            } else {
                // Maps an interrupted replacement staged are of no use.
                remove_pin_dir(&p.dir, STAGED_MAPS)?;
                if !differences.is_empty() {
                    let policy_tables = [
                        "layout",
                        map_names::CONFIG,
                        map_names::CLASS_V4,
                        map_names::CLASS_V6,
                        map_names::IFACES,
                    ];
                    let readable = !differences
                        .iter()
                        .any(|(name, _)| policy_tables.contains(name));
                    let protection = if readable {
                        pinned_protection(&p.dir)?
                    } else {
                        None
                    };
                    warn!(
                        dir = %p.dir.display(),
                        differences = differences.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("; "),
                        old_policy_readable = readable,
                        "the pinned maps are from an incompatible exfw build: this build's are created beside them and replace them once the start is accepted (counters and connection tables start empty; the old program keeps filtering until this build's is attached)"
                    );
                    let staged = p.dir.join(STAGED_MAPS);
                    std::fs::create_dir(&staged)
                        .map_err(pin_err(format!("creating {}", staged.display())))?;
                    replacement = Some(Replacement { protection });
                }
            }
        }
        // aya-log's level: 0 turns every diagnostic off (a constant the verifier prunes by).
        let log_level: u8 = if options.kernel_log { u8::MAX } else { 0 };
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::FLOWS, options.flow_entries)
            .map_max_entries(map_names::PENDING, options.pending_entries)
            .map_max_entries(map_names::FRAGS, options.frag_entries)
            .override_global("AYA_LOG_LEVEL", &log_level, true);
        let map_dir = if replacement.is_some() {
            STAGED_MAPS
        } else {
            "maps"
        };
        let map_paths: Vec<(&str, PathBuf)> = match &pins {
            Some(p) => map_names::ALL
                .iter()
                .map(|n| (*n, p.dir.join(map_dir).join(n)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        for name in [program_names::FIREWALL, program_names::PASS] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing("XDP program"))?
                .try_into()
                .map_err(prog_err(format!("program {name}")))?;
            program
                .load()
                .map_err(prog_err(format!("the verifier rejected {name}")))?;
        }
        let events = ebpf
            .take_map(map_names::EVENTS)
            .ok_or(DataplaneError::Missing("event ring"))?;
        let events = RingBuf::try_from(events).map_err(map_err("event ring"))?;
        let kernel_log = if options.kernel_log {
            Some(KernelLog(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, TracingLog).map_err(|e| {
                    DataplaneError::Pin {
                        what: "opening the kernel program's log (AYA_LOGS)".into(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?,
            ))
        } else {
            None
        };
        let mut dataplane = Dataplane {
            ebpf,
            events: Some(EventRing(events)),
            kernel_log,
            generation: 0,
            classes_in_force: None,
            replacement,
            encoded_ifindexes: BTreeMap::new(),
            pins,
        };
        dataplane.generation = dataplane.config_slot(config::GENERATION)? as u32;
        if dataplane.generation == 0 {
            dataplane.set_event_rate(100, 100)?;
        }
        Ok(dataplane)
    }

    /// Puts the maps this load staged beside an incompatible build's in their place (the old
    /// ones aside, in one rename each): call once the start is accepted, before anything else
    /// opens the pinned maps. The old program keeps filtering with its own maps until this
    /// build's is attached. Nothing to do without a replacement.
    pub fn commit_replacement(&mut self) -> Result<(), DataplaneError> {
        let (Some(_), Some(p)) = (&self.replacement, &self.pins) else {
            return Ok(());
        };
        remove_pin_dir(&p.dir, REPLACED_MAPS)?;
        let rename = |from: &str, to: &str| {
            let (from, to) = (p.dir.join(from), p.dir.join(to));
            std::fs::rename(&from, &to).map_err(pin_err(format!(
                "moving {} to {}",
                from.display(),
                to.display()
            )))
        };
        rename("maps", REPLACED_MAPS)?;
        rename(STAGED_MAPS, "maps")?;
        info!(dir = %p.dir.display(), "this build's maps replaced the incompatible build's");
        self.replacement = None;
        Ok(())
    }

    /// Unpins the maps a replacement set aside. Safe at any time: a program keeps the maps it
    /// uses whether or not they are pinned; the pins only let `exfw status` of the old build
    /// read them.
    pub fn discard_replaced_maps(&mut self) -> Result<(), DataplaneError> {
        match &self.pins {
            Some(p) => remove_pin_dir(&p.dir, REPLACED_MAPS),
            None => Ok(()),
        }
    }

    /// The generation packets are judged by (0 before the first policy).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<aya::maps::HashMap<&mut MapData, K, V>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing("hash map"))?;
        aya::maps::HashMap::try_from(map).map_err(map_err(name))
    }

    fn config(&mut self) -> Result<Array<&mut MapData, u64>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(map_names::CONFIG)
            .ok_or(DataplaneError::Missing("config map"))?;
        Array::try_from(map).map_err(map_err("config map"))
    }

    fn config_slot(&self, slot: u32) -> Result<u64, DataplaneError> {
        let map = self
            .ebpf
            .map(map_names::CONFIG)
            .ok_or(DataplaneError::Missing("config map"))?;
        let array = Array::<_, u64>::try_from(map).map_err(map_err("config map"))?;
        array
            .get(&slot, 0)
            .map_err(map_err("reading the config map"))
    }

    /// The policy in force, as the config map records it.
    pub fn policy_state(&self) -> Result<PolicyState, DataplaneError> {
        Ok(PolicyState {
            generation: self.config_slot(config::GENERATION)? as u32,
            mode: Mode::from_code(self.config_slot(config::MODE)?),
            hash: self.config_slot(config::POLICY_HASH)?,
            applied_at: self.config_slot(config::APPLIED_AT)?,
        })
    }

    /// Entries in the flow table, counting at most `limit` (walks the table: call it seldom,
    /// and off the threads that serve; the limit ends a walk that evictions keep restarting).
    pub fn flow_entries_at_most(&self, limit: u64) -> u64 {
        let Some(map) = self.ebpf.map(map_names::FLOWS) else {
            return 0;
        };
        aya::maps::HashMap::<_, FlowKey, FlowValue>::try_from(map).map_or(0, |flows| {
            flows
                .keys()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .count() as u64
        })
    }

    /// What the policy in force protects, read back from the pinned class and interface
    /// tables (`None` before any policy): what a start compares a new config with, since the
    /// config that policy came from is not kept. While replacing an incompatible build's maps,
    /// the old policy's, when its tables could be read.
    pub fn protection_in_force(&self) -> Result<Option<Protection>, DataplaneError> {
        if let Some(replacement) = &self.replacement {
            return Ok(replacement.protection.clone());
        }
        if self.generation == 0 {
            return Ok(None);
        }
        let map = |name| {
            self.ebpf
                .map(name)
                .ok_or(DataplaneError::Missing("policy map"))
        };
        protection_from(
            self.generation,
            map(map_names::CLASS_V4)?,
            map(map_names::CLASS_V6)?,
            map(map_names::IFACES)?,
        )
        .map(Some)
    }

    /// The flow table's capacity as the kernel made it (a pinned table keeps the size it was
    /// created with whatever the config says now); `None` without pins.
    pub fn flow_capacity(&self) -> Option<u32> {
        let path = self.pins.as_ref()?.dir.join("maps").join(map_names::FLOWS);
        aya::maps::MapInfo::from_pin(path)
            .ok()
            .map(|info| info.max_entries())
    }

    /// The confirmed connections (walks the table: for tests and tools, not the hot path).
    pub fn confirmed_flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let map = self
            .ebpf
            .map(map_names::FLOWS)
            .ok_or(DataplaneError::Missing("flow table"))?;
        let flows = aya::maps::HashMap::<_, FlowKey, FlowValue>::try_from(map)
            .map_err(map_err("flow table"))?;
        flows
            .iter()
            .map(|item| item.map_err(map_err("reading the flow table")))
            .collect()
    }

    /// Entries in the unconfirmed-connection table (walks the table).
    pub fn pending_entries(&self) -> u64 {
        let Some(map) = self.ebpf.map(map_names::PENDING) else {
            return 0;
        };
        aya::maps::HashMap::<_, FlowKey, FlowValue>::try_from(map)
            .map_or(0, |pending| pending.keys().count() as u64)
    }

    /// Whether the policy in force was encoded with another index for `iface` than the one the
    /// name has now (the interface was re-created): then it must be applied again.
    pub fn interface_index_changed(&self, iface: &str) -> bool {
        ifindex_of(iface).is_some_and(|index| self.encoded_ifindexes.get(iface) != Some(&index))
    }

    /// The pinned link of `iface`: its mode and the interface index it filters (0 once the
    /// interface is gone; `None` when that cannot be read).
    pub fn pinned_link(&self, iface: &str) -> Option<(AttachedMode, Option<u32>)> {
        let (path, mode) = self.pins.as_ref()?.link_for(iface)?;
        Some((mode, pinned_link_ifindex(&path)))
    }

    /// Interfaces this data plane's pin directory holds links for.
    pub fn pinned_links(&self) -> Vec<(String, AttachedMode)> {
        self.pins
            .as_ref()
            .map_or_else(Vec::new, |p| pinned_links(&p.dir))
    }

    /// Hands out ids that survive reloads and restarts ([`plan_ids`]), recorded in the pinned
    /// table `name`.
    fn stable_ids(
        &mut self,
        name: &'static str,
        wanted: &[(u64, Option<u32>)],
        range: std::ops::Range<u32>,
        full: impl Fn() -> PolicyError,
    ) -> Result<IdPlan, DataplaneError> {
        let mut ids = self.hash_map::<u64, u32>(name)?;
        let mut known: BTreeMap<u64, u32> = BTreeMap::new();
        for item in ids.iter() {
            let (hash, id) = item.map_err(map_err(format!("reading {name}")))?;
            known.insert(hash, id);
        }
        let plan = plan_ids(&known, wanted, range).ok_or_else(|| DataplaneError::Policy(full()))?;
        for old in &plan.forget {
            ids.remove(old)
                .map_err(map_err(format!("forgetting an id in {name}")))?;
        }
        for (hash, id) in plan.of.iter().filter(|(_, id)| plan.fresh.contains(id)) {
            ids.insert(hash, id, 0)
                .map_err(map_err(format!("recording an id in {name}")))?;
        }
        Ok(plan)
    }

    /// The stable counter slot of each of `compiled`'s rules, by compiled rule id
    /// ([`plan_ids`] in the pinned `EXFW_RULE_IDS`), for [`Compiled::renumber`]; a slot handed
    /// to a new identity has its counters zeroed first.
    pub fn rule_slots(
        &mut self,
        compiled: &Compiled,
    ) -> Result<BTreeMap<u32, u32>, DataplaneError> {
        let identities = rule_identities(compiled);
        let wanted: Vec<(u64, Option<u32>)> = identities.iter().map(|(h, _)| (*h, None)).collect();
        let slots = self.stable_ids(map_names::RULE_IDS, &wanted, 0..limits::MAX_RULES, || {
            PolicyError::RuleIdOutOfRange {
                service: "(all)".into(),
                id: limits::MAX_RULES,
                limit: limits::MAX_RULES,
            }
        })?;
        // A slot handed to a new identity starts from zero.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| pin_err("counting CPUs")(e))?;
        let map = self
            .ebpf
            .map_mut(map_names::RULE_STATS)
            .ok_or(DataplaneError::Missing("rule counters"))?;
        let mut stats =
            PerCpuArray::<_, RuleStats>::try_from(map).map_err(map_err("rule counters"))?;
        for slot in &slots.fresh {
            let zeros = aya::maps::PerCpuValues::try_from(vec![RuleStats::default(); cpus])
                .map_err(pin_err("zeroing a new rule's counters"))?;
            stats
                .set(*slot, zeros, 0)
                .map_err(map_err("zeroing a new rule's counters"))?;
        }
        Ok(identities
            .iter()
            .map(|(hash, id)| (*id, slots.of[hash]))
            .collect())
    }

    /// The stable id of each of `compiled`'s classes, by compiled class id, for
    /// [`Compiled::renumber_classes`]: a per-role drop counter (keyed by the destination class
    /// id) keeps its meaning whatever classes a reload adds or removes. Ids per class name
    /// ([`plan_ids`] in the pinned `EXFW_CLASS_IDS`), a new name preferring its compiled id;
    /// counters left under an id a new name takes are removed first.
    pub fn class_ids(&mut self, compiled: &Compiled) -> Result<BTreeMap<u16, u16>, DataplaneError> {
        let names = class_identities(compiled);
        let wanted: Vec<(u64, Option<u32>)> = names
            .iter()
            .map(|(id, h)| (*h, Some(u32::from(*id))))
            .collect();
        let generation = self.generation;
        // Ids 1..MAX_CLASSES: 0 is external.
        let range = 1..limits::MAX_CLASSES;
        let room = range.len();
        let ids = self.stable_ids(map_names::CLASS_IDS, &wanted, range, || {
            PolicyError::TableFull {
                table: "class ids",
                used: names.len(),
                room,
            }
        })?;
        // Pinned by a build that numbered classes in compile order, without this table: the
        // same config gives the same ids, so the counters are adopted, not cleared.
        let adopting = ids.was_empty && generation != 0;
        if !ids.fresh.is_empty() && !adopting {
            self.remove_drop_counters(|class| ids.fresh.contains(&u32::from(class)))?;
        }
        Ok(names
            .iter()
            .map(|(id, h)| (*id, ids.of[h] as u16))
            .collect())
    }

    /// Removes the per-port drop counters of the destination classes `doomed` picks.
    fn remove_drop_counters(&mut self, doomed: impl Fn(u16) -> bool) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(map_names::DROP_STATS)
            .ok_or(DataplaneError::Missing("drop map"))?;
        let mut drops =
            PerCpuHashMap::<_, DropKey, Counter>::try_from(map).map_err(map_err("drop map"))?;
        let keys: Vec<DropKey> = drops.keys().filter_map(Result::ok).collect();
        for key in keys.iter().filter(|k| doomed(k.dst_class)) {
            drops
                .remove(key)
                .map_err(map_err("removing a drop counter"))?;
        }
        Ok(())
    }

    /// Limits drop events to `per_sec` per CPU with bursts of `burst` (0 disables them).
    pub fn set_event_rate(&mut self, per_sec: u64, burst: u64) -> Result<(), DataplaneError> {
        let mut cfg = self.config()?;
        cfg.set(config::EVENTS_PER_SEC, per_sec, 0)
            .map_err(map_err("writing the event rate"))?;
        cfg.set(config::EVENTS_BURST, burst, 0)
            .map_err(map_err("writing the event burst"))
    }

    /// Writes `policy` as a new generation, flips to it and removes the old one. On any error
    /// the running generation stays in force and the partial new one is removed.
    pub fn apply(&mut self, policy: &Policy) -> Result<u32, DataplaneError> {
        policy.validate()?;
        self.commit_replacement()?;
        // An interface that is gone (between the reload's check and now, or while the
        // interface watcher re-applies) gets no entry: packets cannot arrive there, and when it
        // comes back with a new index the policy is applied again.
        let ifindexes: Vec<u32> = policy
            .interfaces
            .iter()
            .map(|i| ifindex_of(&i.name).unwrap_or(0))
            .collect();
        let next = self.generation.wrapping_add(1).max(1);
        // Entries a reload interrupted before its flip (a kill, a crash) must not survive
        // into this generation: only the one in force stays.
        let current = self.generation;
        self.remove_generations(|g| g != current)?;
        // Only the generation in force is left: if this process put it in force, the drop
        // counters of classes it lacks go (when membarrier failed at its flip, they are still
        // here).
        if let Some(classes) = self.classes_in_force.clone() {
            self.remove_drop_counters(|class| {
                class != CLASS_EXTERNAL && !classes.contains(&class)
            })?;
        }
        let entries = encode(policy, next, &ifindexes);
        // Refused before anything is written: a policy that fits only once would make every
        // later reload fail, a switch to audit included.
        if let Some(full) = table_use(&entries, policy.rules.len(), policy.classes.len())
            .into_iter()
            .find(|t| !t.fits())
        {
            return Err(DataplaneError::Policy(PolicyError::TableFull {
                table: full.table,
                used: full.used,
                room: full.room,
            }));
        }
        if let Err(e) = self.write_entries(&entries) {
            let _ = self.remove_generations(|g| g == next);
            return Err(e);
        }
        let t = &policy.timeouts;
        let mode = policy.mode.code();
        let mut cfg = self.config()?;
        for (slot, value) in [
            (config::TCP_TIMEOUT_NS, t.tcp.as_nanos() as u64),
            (config::UDP_TIMEOUT_NS, t.udp.as_nanos() as u64),
            (config::OTHER_TIMEOUT_NS, t.other.as_nanos() as u64),
            (config::FRAG_TIMEOUT_NS, t.fragment.as_nanos() as u64),
            (config::PENDING_TIMEOUT_NS, t.pending.as_nanos() as u64),
            (config::TCP_FIN_TIMEOUT_NS, t.tcp_fin.as_nanos() as u64),
            (config::TCP_RST_TIMEOUT_NS, t.tcp_rst.as_nanos() as u64),
            (config::MODE, mode),
            (config::POLICY_HASH, policy_hash(policy)),
            (
                config::APPLIED_AT,
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            // Last: the flip. A packet reads it once and sees one whole generation.
            (config::GENERATION, u64::from(next)),
        ] {
            cfg.set(slot, value, 0)
                .map_err(map_err("writing the config map"))?;
        }
        self.generation = next;
        self.classes_in_force = Some(policy.classes.iter().map(|c| c.id).collect());
        self.encoded_ifindexes = policy
            .interfaces
            .iter()
            .zip(&ifindexes)
            .map(|(i, index)| (i.name.clone(), *index))
            .collect();
        // A packet reads the generation once and then looks up its entries: the old ones go
        // only once every program run that may have read the old number has ended. Without
        // that guarantee they stay until the next apply, which sweeps them before it writes.
        if wait_for_running_programs() {
            // The new generation is in force whatever happens here: a failure only leaves old
            // entries for the next apply to sweep.
            let classes = self.classes_in_force.clone().unwrap_or_default();
            let swept = self.remove_generations(|g| g != next).and_then(|()| {
                // No packet can count under a class the policy no longer has: its drop
                // counters go (the series of a removed role ends rather than linger).
                self.remove_drop_counters(|class| {
                    class != CLASS_EXTERNAL && !classes.contains(&class)
                })
            });
            if let Err(e) = swept {
                warn!(
                    generation = next,
                    "removing the previous generation's entries failed (the next reload retries): {e}"
                );
            }
        } else {
            warn!(
                generation = next,
                "cannot wait for running XDP programs (membarrier); the previous generation's entries stay until the next reload"
            );
        }
        info!(
            generation = next,
            classes = policy.classes.len(),
            rules = policy.rules.len(),
            "policy applied"
        );
        Ok(next)
    }

    fn write_entries(&mut self, entries: &MapEntries) -> Result<(), DataplaneError> {
        fn write<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            items: &[(Prefixed<K>, V)],
        ) -> Result<(), DataplaneError> {
            let map = ebpf
                .map_mut(name)
                .ok_or(DataplaneError::Missing("class or rule map"))?;
            let mut trie = LpmTrie::<_, K, V>::try_from(map).map_err(map_err(name))?;
            for (key, value) in items {
                trie.insert(&Key::new(key.prefix_len, key.key), value, 0)
                    .map_err(map_err(format!("writing {name} (is the table full?)")))?;
            }
            Ok(())
        }
        write(&mut self.ebpf, map_names::CLASS_V4, &entries.class_v4)?;
        write(&mut self.ebpf, map_names::CLASS_V6, &entries.class_v6)?;
        write(&mut self.ebpf, map_names::RULES, &entries.rules)?;
        let mut ports = self.hash_map::<PortKey, u8>(map_names::PORTS)?;
        for key in &entries.ports {
            ports
                .insert(key, 1, 0)
                .map_err(map_err("writing the policy ports (is the table full?)"))?;
        }
        let mut ifaces = self.hash_map::<IfaceKey, IfaceValue>(map_names::IFACES)?;
        for (key, value) in &entries.ifaces {
            ifaces
                .insert(key, value, 0)
                .map_err(map_err("writing the interfaces (is the table full?)"))?;
        }
        Ok(())
    }

    fn remove_generations(
        &mut self,
        doomed: impl Fn(u32) -> bool + Copy,
    ) -> Result<(), DataplaneError> {
        fn sweep<K: aya::Pod, V: aya::Pod>(
            ebpf: &mut Ebpf,
            name: &str,
            generation_of: impl Fn(&K) -> [u8; 4],
            doomed: impl Fn(u32) -> bool,
        ) -> Result<(), DataplaneError> {
            let map = ebpf
                .map_mut(name)
                .ok_or(DataplaneError::Missing("class or rule map"))?;
            let mut trie = LpmTrie::<_, K, V>::try_from(map).map_err(map_err(name))?;
            let keys: Vec<Key<K>> = trie.keys().filter_map(Result::ok).collect();
            for key in keys {
                let data = key.data();
                if doomed(u32::from_be_bytes(generation_of(&data))) {
                    trie.remove(&key)
                        .map_err(map_err(format!("removing an old entry of {name}")))?;
                }
            }
            Ok(())
        }
        sweep::<ClassKeyV4, ClassValue>(
            &mut self.ebpf,
            map_names::CLASS_V4,
            |k| k.generation,
            doomed,
        )?;
        sweep::<ClassKeyV6, ClassValue>(
            &mut self.ebpf,
            map_names::CLASS_V6,
            |k| k.generation,
            doomed,
        )?;
        sweep::<RuleKey, RuleValue>(&mut self.ebpf, map_names::RULES, |k| k.generation, doomed)?;
        self.sweep_hash::<PortKey, u8>(map_names::PORTS, |k| k.generation, doomed)?;
        self.sweep_hash::<IfaceKey, IfaceValue>(map_names::IFACES, |k| k.generation, doomed)
    }

    /// Removes the entries of the hash map `name` whose generation is doomed.
    fn sweep_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        generation_of: impl Fn(&K) -> u32,
        doomed: impl Fn(u32) -> bool,
    ) -> Result<(), DataplaneError> {
        let mut map = self.hash_map::<K, V>(name)?;
        let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
        for key in keys.into_iter().filter(|k| doomed(generation_of(k))) {
            map.remove(&key)
                .map_err(map_err(format!("removing an old entry of {name}")))?;
        }
        Ok(())
    }

    fn firewall(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(program_names::FIREWALL)
            .ok_or(DataplaneError::Missing("firewall program"))?
            .try_into()
            .map_err(prog_err("firewall program"))
    }

    /// Attaches the firewall to `iface` (in the calling thread's network namespace). With a pin
    /// directory, an interface that already has a pinned link gets this program through that
    /// link (bpf_link_update: no moment without a program); a new attachment is pinned.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        if let Some((path, _)) = self.pins.as_ref().and_then(|p| p.link_for(iface))
            && let Some(linked) = pinned_link_ifindex(&path)
            && Some(linked) != ifindex_of(iface)
        {
            // The interface was deleted (the kernel detached the link, the pin stayed) and
            // perhaps re-created, or renamed away: the pinned link filters nothing here.
            warn!(%iface, linked_ifindex = linked, "the pinned link no longer filters {iface} (the interface was deleted, re-created or renamed); attaching anew");
            std::fs::remove_file(&path).map_err(pin_err(format!(
                "removing the dead link {}",
                path.display()
            )))?;
        }
        if let Some((path, pinned_mode)) = self.pins.as_ref().and_then(|p| p.link_for(iface)) {
            let wanted = match mode {
                AttachMode::Driver => Some(AttachedMode::Driver),
                AttachMode::Skb => Some(AttachedMode::Skb),
                AttachMode::Auto => None,
            };
            if wanted.is_some_and(|w| w != pinned_mode) {
                warn!(%iface, pinned = pinned_mode.name(), "keeping the pinned attach mode; `exfw detach` and a restart change it");
            }
            let pinned = PinnedLink::from_pin(&path).map_err(|e| DataplaneError::Pin {
                what: format!("opening the pinned link {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
            let link =
                XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataplaneError::Pin {
                    what: format!("using the pinned link {}", path.display()),
                    source: std::io::Error::other(e.to_string()),
                })?;
            let program = self.firewall()?;
            let id = program.attach_to_link(link).map_err(prog_err(format!(
                "replacing the program on {iface} through its pinned link"
            )))?;
            // aya keeps the link it updated; the pin holds it. Keeping the descriptor would
            // leak one per reload and keep the program attached after `exfw detach IFACE`.
            drop(
                program
                    .take_link(id)
                    .map_err(prog_err(format!("releasing the link of {iface}")))?,
            );
            return Ok(pinned_mode);
        }
        let links_dir = self.pins.as_ref().map(|p| p.dir.join("links"));
        let program = self.firewall()?;
        let (attached, id) = match mode {
            AttachMode::Skb => {
                let id = program
                    .attach(iface, XdpMode::Skb)
                    .map_err(prog_err(format!("attaching to {iface} in skb mode")))?;
                (AttachedMode::Skb, id)
            }
            AttachMode::Driver => {
                let id = program
                    .attach(iface, XdpMode::Driver)
                    .map_err(prog_err(format!(
                        "attaching to {iface} in driver mode (try xdp_mode = \"auto\" or \"skb\")"
                    )))?;
                (AttachedMode::Driver, id)
            }
            AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
                Ok(id) => (AttachedMode::Driver, id),
                Err(e) => {
                    warn!(%iface, error = %e, "driver-mode XDP refused; falling back to skb mode");
                    let id = program
                        .attach(iface, XdpMode::Skb)
                        .map_err(prog_err(format!("attaching to {iface} in skb mode")))?;
                    (AttachedMode::Skb, id)
                }
            },
        };
        if let Some(links_dir) = links_dir {
            let path = links_dir.join(attached.name()).join(iface);
            let link = program
                .take_link(id)
                .map_err(prog_err(format!("taking the link of {iface}")))?;
            let fd_link = FdLink::try_from(link)
                .map_err(|_| DataplaneError::NoLinkSupport(iface.to_string()))?;
            fd_link.pin(&path).map_err(|e| DataplaneError::Pin {
                what: format!("pinning the link of {iface} at {}", path.display()),
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        }
        info!(%iface, mode = attached.name(), "attached");
        Ok(attached)
    }

    /// Attaches the empty program to `iface` in driver mode, unpinned, for as long as this data
    /// plane lives: it registers the interface's XDP receive queue, which a test run naming
    /// the interface as its ingress needs, without judging any real traffic.
    pub fn attach_empty(&mut self, iface: &str) -> Result<(), DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(program_names::PASS)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(prog_err("the empty program"))?;
        program
            .attach(iface, XdpMode::Driver)
            .map_err(prog_err(format!("attaching the empty program to {iface}")))?;
        Ok(())
    }

    /// Detaches `iface` by removing its pinned link (no effect on unpinned attachments).
    pub fn detach(&mut self, iface: &str) -> Result<bool, DataplaneError> {
        match self.pins.as_ref().and_then(|p| p.link_for(iface)) {
            Some((path, _)) => {
                std::fs::remove_file(&path)
                    .map_err(pin_err(format!("removing {}", path.display())))?;
                info!(%iface, "detached");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs a program once per `repeat` on `frame` through BPF_PROG_TEST_RUN, as if it arrived
    /// on the loopback interface (what the kernel assumes without a context).
    pub fn test_run(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, DataplaneError> {
        self.test_run_on(program, frame, repeat, None)
    }

    /// Runs a program on `frame` as if it arrived on interface `ingress` (an ifindex in the
    /// calling thread's network namespace; `None`: loopback). The kernel accepts an ingress
    /// interface from Linux 5.15 on, and only one whose XDP receive queue is registered (an XDP
    /// program is attached to it).
    pub fn test_run_on(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
        ingress: Option<u32>,
    ) -> Result<TestRunResult, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(prog_err(format!("program {program}")))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let ctx: Option<[u8; 24]> = ingress.map(|ifindex| {
            let mut md = [0u8; 24];
            md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            md
        });
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: ctx.as_ref().map(|c| c.as_slice()),
            repeat,
            ..Default::default()
        })
        .map_err(prog_err(format!("test run of {program}")))
    }

    fn per_cpu_array<V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuArray<&MapData, V>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::Missing("counter map"))?;
        PerCpuArray::try_from(map).map_err(map_err(name))
    }

    /// One (verdict, reason) counter summed over CPUs.
    pub fn reason_counter(
        &self,
        verdict: Verdict,
        reason: Reason,
    ) -> Result<Counter, DataplaneError> {
        let map = self.per_cpu_array::<Counter>(map_names::REASON_STATS)?;
        let values = map
            .get(&reason_index(verdict, reason), 0)
            .map_err(map_err("reading reason counters"))?;
        Ok(sum_counters(values.iter()))
    }

    /// One rule's counters summed over CPUs.
    pub fn rule_counter(&self, rule: u32) -> Result<RuleStats, DataplaneError> {
        let map = self.per_cpu_array::<RuleStats>(map_names::RULE_STATS)?;
        let values = map
            .get(&rule, 0)
            .map_err(map_err("reading rule counters"))?;
        Ok(values
            .iter()
            .fold(RuleStats::default(), |acc, s| RuleStats {
                packets: acc.packets + s.packets,
                bytes: acc.bytes + s.bytes,
                new_connections: acc.new_connections + s.new_connections,
            }))
    }

    /// A per-CPU counter map by name; `what` names it in errors.
    fn counter_map<K: aya::Pod>(
        &self,
        name: &'static str,
        what: &'static str,
    ) -> Result<PerCpuHashMap<&MapData, K, Counter>, DataplaneError> {
        let map = self.ebpf.map(name).ok_or(DataplaneError::Missing(what))?;
        PerCpuHashMap::try_from(map).map_err(map_err(what))
    }

    fn drop_map(&self) -> Result<PerCpuHashMap<&MapData, DropKey, Counter>, DataplaneError> {
        self.counter_map(map_names::DROP_STATS, "drop map")
    }

    fn spoofed_map(&self) -> Result<PerCpuHashMap<&MapData, SpoofKey, Counter>, DataplaneError> {
        self.counter_map(map_names::SPOOFED, "spoofed-source counters")
    }

    /// One per-port drop counter summed over CPUs (zero when absent).
    pub fn drop_counter(&self, key: &DropKey) -> Result<Counter, DataplaneError> {
        let drops = self.drop_map()?;
        match drops.get(key, 0) {
            Ok(values) => Ok(sum_counters(values.iter())),
            Err(MapError::KeyNotFound) => Ok(Counter::default()),
            Err(e) => Err(map_err("reading a drop counter")(e)),
        }
    }

    /// One spoofed-source counter summed over CPUs (zero when absent).
    pub fn spoofed_counter(
        &self,
        ifindex: u32,
        verdict: Verdict,
    ) -> Result<Counter, DataplaneError> {
        let spoofed = self.spoofed_map()?;
        let key = SpoofKey {
            ifindex,
            verdict: verdict as u8,
            pad: [0; 3],
        };
        match spoofed.get(&key, 0) {
            Ok(values) => Ok(sum_counters(values.iter())),
            Err(MapError::KeyNotFound) => Ok(Counter::default()),
            Err(e) => Err(map_err("reading a spoofed-source counter")(e)),
        }
    }

    /// Every per-packet counter: reasons, the given rules, and per-port drops.
    pub fn counters(
        &self,
        rules: impl IntoIterator<Item = u32>,
    ) -> Result<Counters, DataplaneError> {
        let mut out = Counters::default();
        for verdict in [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop] {
            for reason in Reason::ALL {
                let c = self.reason_counter(verdict, reason)?;
                if c != Counter::default() {
                    out.reasons.insert((verdict, reason), c);
                }
            }
        }
        for rule in rules {
            let s = self.rule_counter(rule)?;
            if s != RuleStats::default() {
                out.rules.insert(rule, s);
            }
        }
        let drops = self.drop_map()?;
        for item in drops.iter() {
            let (key, values) = item.map_err(map_err("reading drop counters"))?;
            out.drops.insert(key, sum_counters(values.iter()));
        }
        for item in self.spoofed_map()?.iter() {
            let (key, values) = item.map_err(map_err("reading spoofed-source counters"))?;
            let verdict = if key.verdict == Verdict::WouldDrop as u8 {
                Verdict::WouldDrop
            } else {
                Verdict::Drop
            };
            let counter = out
                .spoofed
                .entry((interface_name(key.ifindex), verdict))
                .or_default();
            let sum = sum_counters(values.iter());
            counter.packets += sum.packets;
            counter.bytes += sum.bytes;
        }
        out.drop_stats_full = self.event_stats()?.drop_stats_full;
        Ok(out)
    }

    /// The sampler and table-pressure counters.
    pub fn event_stats(&self) -> Result<EventStats, DataplaneError> {
        let map = self.per_cpu_array::<u64>(map_names::EVENT_STATS)?;
        let read = |slot: u32| -> Result<u64, DataplaneError> {
            Ok(map
                .get(&slot, 0)
                .map_err(map_err("reading event counters"))?
                .iter()
                .sum())
        };
        Ok(EventStats {
            sampled: read(event_stat::SAMPLED)?,
            suppressed: read(event_stat::SUPPRESSED)?,
            lost: read(event_stat::LOST)?,
            drop_stats_full: read(event_stat::DROP_STATS_FULL)?,
            flow_insert_failed: read(event_stat::FLOW_INSERT_FAILED)?,
            pending_insert_failed: read(event_stat::PENDING_INSERT_FAILED)?,
            spoof_stats_full: read(event_stat::SPOOF_STATS_FULL)?,
            frag_insert_failed: read(event_stat::FRAG_INSERT_FAILED)?,
        })
    }

    /// Takes every drop event waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<DropEvent> {
        self.events.as_mut().map_or_else(Vec::new, EventRing::drain)
    }

    /// Hands the drop-event ring to its own reader, so draining never waits for a reload.
    pub fn take_event_ring(&mut self) -> Option<EventRing> {
        self.events.take()
    }

    /// Hands the kernel program's diagnostics to their reader (`None` unless loaded with
    /// [`LoadOptions::kernel_log`]).
    pub fn take_kernel_log(&mut self) -> Option<KernelLog> {
        self.kernel_log.take()
    }
}

/// The kernel program's diagnostics (aya-log records), read into `tracing`.
pub struct KernelLog(aya_log::EbpfLogger<TracingLog>);

impl KernelLog {
    /// Logs every record waiting in the program's log ring under the target `exfw::kernel`.
    pub fn flush(&mut self) {
        self.0.flush();
    }
}

/// Forwards aya-log's records (through the `log` trait) to `tracing`, keeping their level.
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let message = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "exfw::kernel", "{message}"),
            log::Level::Warn => tracing::warn!(target: "exfw::kernel", "{message}"),
            log::Level::Info => tracing::info!(target: "exfw::kernel", "{message}"),
            log::Level::Debug => tracing::debug!(target: "exfw::kernel", "{message}"),
            log::Level::Trace => tracing::trace!(target: "exfw::kernel", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// The sampled drop events the program writes, read by one consumer.
pub struct EventRing(RingBuf<MapData>);

impl EventRing {
    /// Every event waiting in the ring.
    pub fn drain(&mut self) -> Vec<DropEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.0.next() {
            if item.len() >= size_of::<DropEvent>() {
                // SAFETY: the kernel wrote a DropEvent; read_unaligned copes with any alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) });
            }
        }
        out
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of interface `index` in the calling thread's network namespace (the number when it
/// is gone).
pub fn interface_name(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        index.to_string()
    } else {
        // SAFETY: if_indextoname wrote a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

fn sum_counters<'a>(values: impl Iterator<Item = &'a Counter>) -> Counter {
    values.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_with_the_lookup_fix_are_told_apart_from_those_without() {
        for (text, fixed) in [
            ("6.18.44-fc-v782", true),
            ("6.2.0", true),
            ("6.1.158-1", true),
            ("6.1.12", false),
            ("6.1.0-50-cloud-amd64", false),
            ("5.15.131", true),
            ("5.15.94", false),
            ("5.10.223-1", true),
            ("5.10.168", false),
            ("5.14.0-427.el9.x86_64", false),
            ("6.0.19", false),
            ("7.0", true),
        ] {
            let version = parse_version(text).expect(text);
            assert_eq!(
                fib_names_ifindex_without_neighbour(version),
                fixed,
                "{text}"
            );
        }
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_version("6"), None);
    }

    #[test]
    fn this_kernel_can_wait_for_running_programs() {
        // CI's machines run without nohz_full: the old generation is removed at each reload.
        assert!(wait_for_running_programs());
    }
}
