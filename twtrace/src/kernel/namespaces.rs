//! Every network namespace on the host: found, described once, read inside, and retired when
//! it disappears. A container host has one per pod or container, each with its own port range,
//! TIME_WAIT bucket limit, counters and sockets; events carry only the namespace's inode
//! (`ns.inum`), so views need this registry to say whose namespace it is and what its
//! settings are.
//!
//! # Where namespaces are found
//!
//! - **Bind mounts** of `/proc/PID/ns/net`: `/run/netns/NAME` (`ip netns add`, and CNI plugins'
//!   `cni-UUID`), `/run/docker/netns/ID` (Docker's sandboxes). A mount keeps its namespace
//!   alive with no process in it. Only files on nsfs count: a leftover plain file in
//!   `/run/netns` (an `ip netns add` that failed half-way) is not a namespace.
//! - **Processes**: `/proc/PID/ns/net` is a magic link reading `net:[INODE]`; one pass over
//!   `/proc` reads that link alone per process (readlink(2), no open). Reading another user's
//!   link needs ptrace read access (root, or CAP_SYS_PTRACE): processes whose link cannot be
//!   read are counted ([`RefreshReport::unreadable`]), so a partial picture says it is one.
//!
//! Not found: a namespace held only by a thread that entered it with setns(2) (threads are not
//! scanned, to keep the pass one readlink per process), by an open descriptor, or by sockets
//! a process made there before leaving. Such a namespace reads as retired.
//!
//! # Identity
//!
//! A namespace is its nsfs inode number, `ns.inum` in the kernel, what events carry as
//! `netns` (u32; allocated from an IDA in proc_alloc_inum(), so a freed namespace's number is
//! given to a later one). An inode seen again after its namespace was retired is a new
//! namespace: it is described afresh, with the next [`NetnsInfo::generation`]. An inode that
//! changes hands between two looks is told by its holders: mounts none of which held it
//! before; or, when every mount is gone and only processes hold it, by the namespace's cookie
//! (`SO_NETNS_COOKIE`, 5.14+, never reused), read when it was described and again then.
//!
//! # Entering
//!
//! setns(2) with CLONE_NEWNET affects only the calling thread, so reads happen on a
//! short-lived thread (one per read, or one for a batch of namespaces in [`refresh`]); its
//! /proc/thread-self/net, /proc/sys/net and new sockets are then the namespace's. The
//! namespace file is opened first and its inode checked against the expected one before
//! setns: a `/proc/PID/ns/net` path can belong to another process by then (PIDs are reused).
//! setns needs CAP_SYS_ADMIN. The registry never keeps a namespace file open: that would keep
//! a deleted namespace (and its TIME_WAIT sockets) alive.
//!
//! [`refresh`]: NetnsRegistry::refresh

use std::{
    collections::HashMap,
    fmt,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::cgroup::{self, Workload};
use crate::event::Sysctls;

/// A network namespace: its nsfs inode number (`ns.inum`, the `netns` of events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NetnsId(pub u32);

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for NetnsId {
    fn from(inode: u32) -> Self {
        Self(inode)
    }
}

/// The namespace a `/proc/PID/ns/net` link names: its text is `net:[4026531840]`.
pub fn parse_ns_link(target: &str) -> Option<NetnsId> {
    target.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok().map(NetnsId)
}

/// The network namespace of process `pid` (readlink of `/proc/PID/ns/net`).
pub fn netns_of_pid(pid: u32) -> std::io::Result<NetnsId> {
    netns_of(&Path::new("/proc").join(pid.to_string()))
}

fn netns_of(proc_pid: &Path) -> std::io::Result<NetnsId> {
    let target = std::fs::read_link(proc_pid.join("ns/net"))?;
    target
        .to_str()
        .and_then(parse_ns_link)
        .ok_or_else(|| std::io::Error::other(format!("unexpected namespace link `{}`", target.display())))
}

/// What a person calls a namespace, best first: its `ip netns` name, `host` for PID 1's, the
/// container or pod of a process in it, a process in it, else the mount that holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetnsName {
    /// Named under `/run/netns` (`ip netns add NAME`).
    IpNetns { name: String },
    /// The namespace of PID 1: the host's, as this process sees it.
    Host,
    /// The container or pod a member process's cgroup names. A pod is named without a
    /// container: all of a pod's containers share its namespace (the process found first is
    /// usually its sandbox's `pause`).
    Workload { workload: Workload },
    /// A process in it, when its cgroup names no container: `pid 4242 (sleep)`.
    Process { pid: u32, comm: String },
    /// Known only by a bind mount outside `/run/netns` (`/run/docker/netns/ID`).
    Mount { path: PathBuf },
}

impl NetnsName {
    /// The order of [`choose_name`]: a better name replaces a worse one, never the reverse
    /// (a namespace whose `ip netns` name is deleted while a process holds it keeps it).
    fn strength(&self) -> u8 {
        match self {
            Self::IpNetns { name } if !name.starts_with("cni-") => 5,
            Self::Host => 4,
            Self::Workload { .. } => 3,
            Self::IpNetns { .. } => 2,
            Self::Process { .. } => 1,
            Self::Mount { .. } => 0,
        }
    }
}

impl fmt::Display for NetnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IpNetns { name } => f.write_str(name),
            Self::Host => f.write_str("host"),
            Self::Workload { workload } => write!(f, "{workload}"),
            Self::Process { pid, comm } => write!(f, "pid {pid} ({comm})"),
            Self::Mount { path } => match (path.parent(), path.file_name()) {
                (Some(dir), Some(file)) if dir.ends_with("docker/netns") => {
                    write!(f, "docker sandbox {}", file.to_string_lossy())
                }
                _ => write!(f, "{}", path.display()),
            },
        }
    }
}

/// A process seen in a namespace when it was described.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), empty if it exited before it was read.
    pub comm: String,
    /// What its cgroup path names, if anything.
    pub workload: Option<Workload>,
}

/// Whether a namespace is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetnsState {
    Live,
    /// No process or mount held it at the last look: it is gone (or held in a way the scan
    /// cannot see, see the module documentation). Kept so that late events stay named.
    Retired,
}

/// One namespace, described once (its member, name and settings are not re-read while it
/// lives; [`NetnsRegistry::sysctls`] reads the settings afresh).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetnsInfo {
    pub id: NetnsId,
    /// 0 for the first namespace with this inode, +1 each time the inode comes back for a
    /// new namespace after the previous one was retired.
    pub generation: u32,
    pub name: NetnsName,
    /// How to enter it: the best path known now (a mount, else `/proc/PID/ns/net`).
    pub enter: PathBuf,
    /// The bind mounts that hold it (`/run/netns/NAME`, `/run/docker/netns/ID`).
    pub mounts: Vec<PathBuf>,
    /// The first process seen in it, if any.
    pub member: Option<Member>,
    /// Its settings when described; `None` when they could not be read (see `sysctls_error`).
    pub sysctls: Option<Sysctls>,
    pub sysctls_error: Option<String>,
    /// The kernel's cookie for it (`SO_NETNS_COOKIE`, 5.14+), read inside it when described:
    /// unlike the inode it is never given to another namespace. `None` on older kernels, or
    /// when its settings were not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
    pub state: NetnsState,
    pub first_seen: SystemTime,
    pub retired_at: Option<SystemTime>,
}

impl NetnsInfo {
    pub fn is_live(&self) -> bool {
        self.state == NetnsState::Live
    }

    /// Its `ip netns` name, if it has one (also when it is named otherwise, as CNI's
    /// `cni-UUID` namespaces are named after their pod).
    pub fn ip_netns_name(&self) -> Option<&str> {
        self.mounts.iter().find_map(|m| ip_netns_name(m))
    }
}

fn ip_netns_name(path: &Path) -> Option<&str> {
    path.parent().filter(|dir| dir.ends_with("netns") && !dir.ends_with("docker/netns"))?;
    path.file_name()?.to_str()
}

/// The name of a namespace from what is known of it (pure: no I/O).
///
/// Order: an `ip netns` name a person chose; `host`; a member's container or pod; a CNI
/// plugin's generated `cni-UUID` name (its pod is more telling when a member names it); a
/// member process; another mount. A systemd unit does not name a namespace: a process that
/// ran `unshare -n` inside a service is not the service.
pub fn choose_name(mounts: &[PathBuf], is_host: bool, member: Option<&Member>) -> Option<NetnsName> {
    let ip_names: Vec<&str> = mounts.iter().filter_map(|m| ip_netns_name(m)).collect();
    if let Some(name) = ip_names.iter().find(|n| !n.starts_with("cni-")) {
        return Some(NetnsName::IpNetns { name: (*name).to_owned() });
    }
    if is_host {
        return Some(NetnsName::Host);
    }
    if let Some(workload) = member.and_then(|m| m.workload.as_ref()).filter(|w| w.is_container_or_pod()) {
        let workload = match workload {
            Workload::Pod { uid, qos, .. } => Workload::Pod { uid: uid.clone(), qos: *qos, container: None },
            other => other.clone(),
        };
        return Some(NetnsName::Workload { workload });
    }
    if let Some(name) = ip_names.first() {
        return Some(NetnsName::IpNetns { name: (*name).to_owned() });
    }
    if let Some(m) = member {
        return Some(NetnsName::Process { pid: m.pid, comm: m.comm.clone() });
    }
    mounts.first().map(|path| NetnsName::Mount { path: path.clone() })
}

/// Errors of reads inside a namespace, and of a scan that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {id} is gone: no process or mount holds it any more")]
    Gone { id: NetnsId },
    #[error(
        "network namespace {id} is unknown: no name under /run/netns or /run/docker/netns and no process in it found"
    )]
    Unknown { id: NetnsId },
    #[error("entering network namespace {id} through {}: {source} (setns needs CAP_SYS_ADMIN)", path.display())]
    Enter { id: NetnsId, path: PathBuf, source: std::io::Error },
    #[error("reading inside network namespace {id}: {source}")]
    Read { id: NetnsId, source: std::io::Error },
    #[error("listing {}: {source}", path.display())]
    Scan { path: PathBuf, source: std::io::Error },
}

/// Where the registry looks, and how much it may do.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// procfs (`/proc`).
    pub proc_root: PathBuf,
    /// `ip netns` names (`/run/netns`; `/var/run` is a link to `/run` on current systems).
    pub ip_netns_dir: PathBuf,
    /// Other directories of namespace bind mounts (`/run/docker/netns`).
    pub other_mount_dirs: Vec<PathBuf>,
    /// Read each new namespace's [`Sysctls`] when describing it (needs CAP_SYS_ADMIN).
    pub read_sysctls: bool,
    /// At most this many `/proc` entries examined by one [`NetnsRegistry::lookup_or_discover`].
    pub max_scan: usize,
    /// After a [`NetnsRegistry::lookup_or_discover`] finds nothing, the same inode is not
    /// searched again for this long: events of a namespace with no process (or netns 0 from
    /// kernels before 6.11) must not each cost a /proc scan.
    pub miss_ttl: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            proc_root: "/proc".into(),
            ip_netns_dir: "/run/netns".into(),
            other_mount_dirs: vec!["/run/docker/netns".into()],
            read_sysctls: true,
            // pid_max's ceiling on 64-bit kernels is 4194304; hosts run far fewer processes.
            max_scan: 1 << 22,
            miss_ttl: Duration::from_secs(1),
        }
    }
}

/// What one [`NetnsRegistry::refresh`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefreshReport {
    /// Namespaces described for the first time (or again, a new generation). One that
    /// vanished while it was being read is in `retired` too.
    pub added: Vec<NetnsId>,
    /// Namespaces no longer found, now retired.
    pub retired: Vec<NetnsId>,
    /// Live namespaces after the refresh.
    pub live: usize,
    /// Processes examined.
    pub processes: usize,
    /// Processes whose namespace link could not be read (permission): a namespace only they
    /// are in is missing, or retired if it was known.
    pub unreadable: usize,
    pub took: Duration,
}

/// A namespace's counters by name (`kernel::netstat`).
pub type Counters = std::collections::BTreeMap<String, i64>;

/// The namespaces of the host, keyed by inode: see the module documentation.
pub struct NetnsRegistry {
    config: RegistryConfig,
    entries: HashMap<NetnsId, NetnsInfo>,
    misses: HashMap<NetnsId, Instant>,
    /// nsfs's device: every namespace file has it, a stale plain file does not.
    nsfs_dev: Option<u64>,
}

impl Default for NetnsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// What one pass found of one namespace: its mounts and the first process seen in it.
#[derive(Default)]
struct Sighting {
    mounts: Vec<PathBuf>,
    first_pid: Option<u32>,
}

impl NetnsRegistry {
    /// An empty registry looking at the host's /proc, /run/netns and /run/docker/netns.
    /// Nothing is read until [`Self::refresh`] or [`Self::lookup_or_discover`].
    pub fn new() -> Self {
        Self::with_config(RegistryConfig::default())
    }

    pub fn with_config(config: RegistryConfig) -> Self {
        // The real nsfs, whatever proc_root is: mounts are always real files.
        let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
        Self { config, entries: HashMap::new(), misses: HashMap::new(), nsfs_dev }
    }

    /// The namespace with this inode, live or retired.
    pub fn get(&self, id: NetnsId) -> Option<&NetnsInfo> {
        self.entries.get(&id)
    }

    /// The live namespace named `name` under /run/netns.
    pub fn by_ip_netns_name(&self, name: &str) -> Option<&NetnsInfo> {
        self.entries.values().find(|e| e.is_live() && e.ip_netns_name() == Some(name))
    }

    /// Live namespaces, in no particular order.
    pub fn live(&self) -> impl Iterator<Item = &NetnsInfo> {
        self.entries.values().filter(|e| e.is_live())
    }

    /// Every namespace known, live and retired.
    pub fn all(&self) -> impl Iterator<Item = &NetnsInfo> {
        self.entries.values()
    }

    /// Forgets namespaces retired longer ago than `age`; returns how many.
    pub fn prune_retired(&mut self, age: Duration) -> usize {
        let now = SystemTime::now();
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.retired_at.is_none_or(|at| now.duration_since(at).map_or(true, |elapsed| elapsed <= age)));
        before - self.entries.len()
    }

    /// One pass: mounts, then one readlink per process. New namespaces are described (a
    /// member's comm and cgroup, their settings read inside them on one thread), known ones get
    /// their mounts and way in updated, vanished ones are retired. Errors only when /proc
    /// itself cannot be listed; a namespace or process that vanishes meanwhile is no error.
    pub fn refresh(&mut self) -> Result<RefreshReport, NetnsError> {
        let started = Instant::now();
        let mut seen = self.scan_mounts();
        let (processes, unreadable) = self.scan_proc(None, &mut seen)?;
        let host = self.host_netns();
        let mut report = RefreshReport { processes, unreadable, ..RefreshReport::default() };
        let mut new = Vec::new();
        for (id, sighting) in seen.iter() {
            match self.entries.get(id) {
                Some(entry) if entry.is_live() && self.still_the_same(entry, sighting) => {
                    self.update(*id, sighting, host)
                }
                // Unknown, retired, or an inode the kernel gave to a new namespace since the
                // last look: described (anew, as the next generation).
                _ => new.push((*id, sighting)),
            }
        }
        report.added = self.describe(new, host);
        for entry in self.entries.values_mut() {
            if entry.is_live() && !seen.contains_key(&entry.id) {
                retire(entry);
                report.retired.push(entry.id);
            }
        }
        // Namespaces found vanished while their settings were read.
        report.retired.extend(report.added.iter().filter(|id| !self.entries[*id].is_live()));
        report.live = self.live().count();
        report.took = started.elapsed();
        Ok(report)
    }

    /// The namespace of an event: known already, or searched for now (mounts, then /proc
    /// until a process in it is found, at most `max_scan` entries) and described. A retired
    /// namespace not found again is returned as it was (retired) so late events stay named;
    /// `None` when nothing is known of it (misses are remembered for `miss_ttl`).
    pub fn lookup_or_discover(&mut self, id: NetnsId) -> Option<&NetnsInfo> {
        if self.entries.get(&id).is_some_and(NetnsInfo::is_live) {
            return self.entries.get(&id);
        }
        if id.0 == 0 || self.misses.get(&id).is_some_and(|at| at.elapsed() < self.config.miss_ttl) {
            return self.entries.get(&id);
        }
        let mut seen: HashMap<NetnsId, Sighting> =
            self.scan_mounts().into_iter().filter(|(found, _)| *found == id).collect();
        if !seen.contains_key(&id) {
            // A scan that fails (no /proc) finds nothing: the same as a miss.
            let _ = self.scan_proc(Some(id), &mut seen);
            seen.retain(|found, _| *found == id);
        }
        match seen.get(&id) {
            Some(sighting) => {
                self.misses.remove(&id);
                let host = self.host_netns();
                self.describe(vec![(id, sighting)], host);
            }
            None => {
                self.misses.retain(|_, at| at.elapsed() < self.config.miss_ttl);
                self.misses.insert(id, Instant::now());
            }
        }
        self.entries.get(&id)
    }

    /// Runs `f` on a thread inside namespace `id` (see the module documentation). If its way
    /// in is stale (the process gone, the mount removed), another is searched for once; if
    /// none is left the namespace is retired and `Gone` returned.
    pub fn run_in<T: Send + 'static>(
        &mut self,
        id: NetnsId,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, NetnsError> {
        let path = self.way_in(id)?;
        let f = match enter_and_run(id, &path, self.nsfs_dev, f) {
            Entered::Ran(Ok(value)) => return Ok(value),
            Entered::Ran(Err(source)) => return Err(NetnsError::Read { id, source }),
            Entered::Refused(source) => return Err(NetnsError::Enter { id, path, source }),
            Entered::Stale(f) => f,
        };
        // Stale: look for the namespace again (a mount, another process in it).
        let mut seen: HashMap<NetnsId, Sighting> =
            self.scan_mounts().into_iter().filter(|(found, _)| *found == id).collect();
        if !seen.contains_key(&id) {
            let _ = self.scan_proc(Some(id), &mut seen);
        }
        // Found again, but only through mounts none of which held it: the kernel gave the
        // inode to a new namespace (`ip netns del A; ip netns add B` between two reads). That
        // one is not this entry (its name and settings are A's): this one is gone, and the
        // next refresh describes the new one as the inode's next generation.
        let reused_meanwhile =
            self.entries.get(&id).zip(seen.get(&id)).is_some_and(|(e, s)| !self.still_the_same(e, s));
        let (Some(sighting), false) = (seen.get(&id), reused_meanwhile) else {
            if let Some(entry) = self.entries.get_mut(&id) {
                retire(entry);
            }
            return Err(NetnsError::Gone { id });
        };
        let host = self.host_netns();
        self.update(id, sighting, host);
        let path = self.way_in(id)?;
        match enter_and_run(id, &path, self.nsfs_dev, f) {
            Entered::Ran(Ok(value)) => Ok(value),
            Entered::Ran(Err(source)) => Err(NetnsError::Read { id, source }),
            Entered::Refused(source) => Err(NetnsError::Enter { id, path, source }),
            Entered::Stale(_) => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    retire(entry);
                }
                Err(NetnsError::Gone { id })
            }
        }
    }

    /// The namespace's settings, read now inside it (and kept as its description's).
    pub fn sysctls(&mut self, id: NetnsId) -> Result<Sysctls, NetnsError> {
        self.sysctls_each(&[id]).pop().expect("one read per namespace asked for").1
    }

    /// The namespace's TcpExt counters (`/proc/net/netstat` as seen inside it).
    pub fn netstat(&mut self, id: NetnsId) -> Result<Counters, NetnsError> {
        self.netstat_each(&[id]).pop().expect("one read per namespace asked for").1
    }

    /// The counters of each namespace of `ids` (see [`Self::read_each`]).
    pub fn netstat_each(&mut self, ids: &[NetnsId]) -> Vec<(NetnsId, Result<Counters, NetnsError>)> {
        self.read_each(ids, super::netstat::read_here)
    }

    /// The settings of each namespace of `ids`, read now (see [`Self::read_each`]) and kept
    /// as their descriptions', as [`Self::sysctls`] does.
    pub fn sysctls_each(&mut self, ids: &[NetnsId]) -> Vec<(NetnsId, Result<Sysctls, NetnsError>)> {
        let read = self.read_each(ids, sysctls_here);
        for (id, result) in &read {
            if let (Ok(sysctls), Some(entry)) = (result, self.entries.get_mut(id)) {
                entry.sysctls = Some(sysctls.clone());
                entry.sysctls_error = None;
            }
        }
        read
    }

    /// `f` inside each namespace of `ids`, on one thread that enters each in turn: one thread
    /// a round, not one per namespace (hundreds are read every second). Ways in gone stale (a
    /// process exited, a mount removed) share one look over mounts and /proc, not one each: a
    /// scan per vanished namespace, with hundreds coming and going, held the event loop for
    /// seconds in a busy emulated guest.
    fn read_each<T: Send + 'static>(
        &mut self,
        ids: &[NetnsId],
        f: fn() -> std::io::Result<T>,
    ) -> Vec<(NetnsId, Result<T, NetnsError>)> {
        let mut out = Vec::with_capacity(ids.len());
        let mut targets = Vec::with_capacity(ids.len());
        for id in ids {
            match self.way_in(*id) {
                Ok(path) => targets.push((*id, path)),
                Err(e) => out.push((*id, Err(e))),
            }
        }
        let order: Vec<(NetnsId, PathBuf)> = targets.clone();
        let results = read_in_each(targets, self.nsfs_dev, f);
        let mut stale = Vec::new();
        for ((id, path), result) in order.into_iter().zip(results) {
            match result {
                Batch::Read(value) => out.push((id, Ok(value))),
                Batch::Refused(source) => out.push((id, Err(NetnsError::Enter { id, path, source }))),
                Batch::Failed(source) => out.push((id, Err(NetnsError::Read { id, source }))),
                Batch::Stale => stale.push(id),
            }
        }
        if stale.is_empty() {
            return out;
        }
        let mut seen = self.scan_mounts();
        let _ = self.scan_proc(None, &mut seen);
        let host = self.host_netns();
        for id in stale {
            let found = seen.get(&id).filter(|s| self.entries.get(&id).is_none_or(|e| self.still_the_same(e, s)));
            match found {
                Some(sighting) => {
                    self.update(id, sighting, host);
                    out.push((id, self.run_in(id, f)));
                }
                // Gone, or its inode now another namespace's (the refresh describes that one).
                None => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        retire(entry);
                    }
                    out.push((id, Err(NetnsError::Gone { id })));
                }
            }
        }
        out
    }

    /// The namespace's TCP sockets (sock_diag, as `ss` inside it).
    pub fn tcp_sockets(&mut self, id: NetnsId) -> Result<Vec<crate::event::ExistingSocket>, NetnsError> {
        let mut sockets = self.run_in(id, super::sockdiag::tcp_sockets)?;
        for socket in &mut sockets {
            socket.netns = id.0;
        }
        Ok(sockets)
    }

    /// The initial namespace: PID 1's, or, where its link cannot be read (a hardened PID 1
    /// refuses even root without the same capabilities), kthreadd's (PID 2): kernel threads
    /// always run in `init_net`.
    /// Whether `sighting` (of a live entry's inode) is still that entry's namespace, not a new
    /// one the kernel gave the inode to. Mounts tell it apart without I/O (see [`reused`]). A
    /// namespace whose mounts are all gone and that only processes hold now is either the same
    /// one, kept by a process that entered it (`ip netns exec NAME sleep; ip netns del NAME`), or
    /// a new one made by a process (`unshare -n`) on the freed inode: only the cookie tells,
    /// read inside through that process (one setns, once per such change). Without a cookie
    /// (before 5.14) it is taken to be the same one.
    fn still_the_same(&self, entry: &NetnsInfo, sighting: &Sighting) -> bool {
        if reused(entry, sighting) {
            return false;
        }
        let (Some(known), Some(pid), true, true) =
            (entry.cookie, sighting.first_pid, sighting.mounts.is_empty(), !entry.mounts.is_empty())
        else {
            return true;
        };
        let path = self.config.proc_root.join(pid.to_string()).join("ns/net");
        match enter_and_run(entry.id, &path, self.nsfs_dev, || Ok(cookie_here())) {
            Entered::Ran(Ok(now)) => same_cookie(known, now),
            // The process left or exited meanwhile, or may not be entered: nothing learnt.
            _ => true,
        }
    }

    fn host_netns(&self) -> Option<NetnsId> {
        ["1", "2"].iter().find_map(|pid| netns_of(&self.config.proc_root.join(pid)).ok())
    }

    fn way_in(&self, id: NetnsId) -> Result<PathBuf, NetnsError> {
        match self.entries.get(&id) {
            Some(entry) if entry.is_live() => Ok(entry.enter.clone()),
            Some(_) => Err(NetnsError::Gone { id }),
            None => Err(NetnsError::Unknown { id }),
        }
    }

    /// Namespace files in the mount directories, by inode. A directory that is missing or
    /// unreadable has none; an entry that vanishes meanwhile is skipped.
    fn scan_mounts(&self) -> HashMap<NetnsId, Sighting> {
        let mut seen: HashMap<NetnsId, Sighting> = HashMap::new();
        let Some(nsfs_dev) = self.nsfs_dev else { return seen };
        for dir in std::iter::once(&self.config.ip_netns_dir).chain(&self.config.other_mount_dirs) {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            for path in paths {
                // stat follows the bind mount to the namespace's nsfs inode.
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                let Ok(inode) = u32::try_from(meta.ino()) else { continue };
                if meta.dev() == nsfs_dev {
                    seen.entry(NetnsId(inode)).or_default().mounts.push(path);
                }
            }
        }
        seen
    }

    /// One pass over /proc: the first process of each namespace into `seen`. With `only`, stops
    /// at the first process in that namespace. Returns (processes examined, unreadable).
    fn scan_proc(
        &self,
        only: Option<NetnsId>,
        seen: &mut HashMap<NetnsId, Sighting>,
    ) -> Result<(usize, usize), NetnsError> {
        let root = &self.config.proc_root;
        let entries = std::fs::read_dir(root).map_err(|source| NetnsError::Scan { path: root.clone(), source })?;
        let (mut processes, mut unreadable) = (0, 0);
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            processes += 1;
            if only.is_some() && processes > self.config.max_scan {
                break;
            }
            let id = match netns_of(&entry.path()) {
                Ok(id) => id,
                // Exited meanwhile (or a zombie, whose namespaces are gone already).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(_) => {
                    unreadable += 1;
                    continue;
                }
            };
            if only.is_some_and(|wanted| wanted != id) {
                continue;
            }
            let sighting = seen.entry(id).or_default();
            if sighting.first_pid.is_none() {
                sighting.first_pid = Some(pid);
            }
            if only.is_some() {
                break;
            }
        }
        Ok((processes, unreadable))
    }

    /// Updates a live entry from a new sighting: mounts, way in, a first member if it had none
    /// (its cgroup is read then, once), and the name that follows from them. No other I/O.
    fn update(&mut self, id: NetnsId, sighting: &Sighting, host: Option<NetnsId>) {
        let proc_root = self.config.proc_root.clone();
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.mounts = sighting.mounts.clone();
        if entry.member.is_none() {
            entry.member = sighting.first_pid.map(|pid| member(&proc_root, pid));
        }
        entry.enter = way_in(&proc_root, &sighting.mounts, sighting.first_pid).unwrap_or_else(|| entry.enter.clone());
        if let Some(name) = choose_name(&entry.mounts, host == Some(id), entry.member.as_ref()) {
            if name.strength() > entry.name.strength() {
                entry.name = name;
            }
        }
    }

    /// Describes new namespaces (or new generations of retired inodes) and inserts them;
    /// their settings are read on one thread that enters each in turn. Returns their ids.
    fn describe(&mut self, new: Vec<(NetnsId, &Sighting)>, host: Option<NetnsId>) -> Vec<NetnsId> {
        let proc_root = self.config.proc_root.clone();
        let mut infos = Vec::with_capacity(new.len());
        for (id, sighting) in new {
            let Some(enter) = way_in(&proc_root, &sighting.mounts, sighting.first_pid) else { continue };
            let member = sighting.first_pid.map(|pid| member(&proc_root, pid));
            let Some(name) = choose_name(&sighting.mounts, host == Some(id), member.as_ref()) else { continue };
            let generation = self.entries.get(&id).map_or(0, |old| old.generation + 1);
            infos.push(NetnsInfo {
                id,
                generation,
                name,
                enter,
                mounts: sighting.mounts.clone(),
                member,
                sysctls: None,
                sysctls_error: None,
                cookie: None,
                state: NetnsState::Live,
                first_seen: SystemTime::now(),
                retired_at: None,
            });
        }
        if self.config.read_sysctls && !infos.is_empty() {
            let targets = infos.iter().map(|i| (i.id, i.enter.clone())).collect();
            let results = read_in_each(targets, self.nsfs_dev, || Ok((sysctls_here(), cookie_here())));
            for (info, result) in infos.iter_mut().zip(results) {
                match result {
                    Batch::Read((sysctls, cookie)) => {
                        info.cookie = cookie;
                        match sysctls {
                            Ok(sysctls) => info.sysctls = Some(sysctls),
                            Err(e) => info.sysctls_error = Some(e.to_string()),
                        }
                    }
                    // Vanished between the scan and the read: retired, not an error.
                    Batch::Stale => retire(info),
                    Batch::Refused(e) | Batch::Failed(e) => info.sysctls_error = Some(e.to_string()),
                }
            }
        }
        let ids = infos.iter().map(|i| i.id).collect();
        for info in infos {
            self.entries.insert(info.id, info);
        }
        ids
    }
}

/// Whether a live entry's inode now belongs to another namespace. The kernel hands a freed
/// nsfs inode number to the next namespace made (the lowest free one), so on a host where pods
/// come and go an inode is reused within seconds. Every bind mount that held the old namespace
/// gone and others holding this one is the sign (`ip netns del` then `ip netns add`, a pod's
/// sandbox replaced); a namespace known only by its processes cannot be told apart this way.
fn reused(entry: &NetnsInfo, sighting: &Sighting) -> bool {
    !entry.mounts.is_empty() && !sighting.mounts.is_empty() && !entry.mounts.iter().any(|m| sighting.mounts.contains(m))
}

fn retire(entry: &mut NetnsInfo) {
    if entry.is_live() {
        entry.state = NetnsState::Retired;
        entry.retired_at = Some(SystemTime::now());
    }
}

/// The settings of this thread's namespace (a reader thread that entered it).
fn sysctls_here() -> std::io::Result<Sysctls> {
    super::netns::sysctls(None)
}

/// This thread's namespace's cookie (`SO_NETNS_COOKIE` on a Unix socket made here: every
/// socket reports its namespace's), `None` before 5.14, which lacks the option (ENOPROTOOPT).
fn cookie_here() -> Option<u64> {
    // SAFETY: a socket of our own, closed below; getsockopt writes at most `len` bytes into a
    // u64.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let got =
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len);
        libc::close(fd);
        (got == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
    }
}

/// Whether a cookie read now is the one read when the namespace was described; unknown now
/// (the option refused) is no evidence of a new namespace.
fn same_cookie(known: u64, now: Option<u64>) -> bool {
    now.is_none_or(|now| now == known)
}

/// The best way in: an `ip netns` mount, another mount, else the process's link.
fn way_in(proc_root: &Path, mounts: &[PathBuf], first_pid: Option<u32>) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| ip_netns_name(m).is_some())
        .or(mounts.first())
        .cloned()
        .or_else(|| first_pid.map(|pid| proc_root.join(pid.to_string()).join("ns/net")))
}

fn member(proc_root: &Path, pid: u32) -> Member {
    let dir = proc_root.join(pid.to_string());
    let comm = std::fs::read_to_string(dir.join("comm")).map(|c| c.trim_end().to_owned()).unwrap_or_default();
    // A process that exited meanwhile, or whose cgroup names nothing: no workload.
    let workload = cgroup::of_process_in(proc_root, pid).ok().flatten();
    Member { pid, comm, workload }
}

/// Opens a namespace file and checks it is namespace `id` (and on nsfs).
fn open_checked(id: NetnsId, path: &Path, nsfs_dev: Option<u64>) -> Result<std::fs::File, OpenFailure> {
    let file = std::fs::File::open(path).map_err(OpenFailure::classify)?;
    let meta = file.metadata().map_err(OpenFailure::classify)?;
    let on_nsfs = nsfs_dev.is_none_or(|dev| meta.dev() == dev);
    if !on_nsfs || meta.ino() != u64::from(id.0) {
        // The path now leads elsewhere: a reused PID, a re-created name.
        return Err(OpenFailure::Stale);
    }
    Ok(file)
}

enum OpenFailure {
    /// The path no longer leads to this namespace.
    Stale,
    Refused(std::io::Error),
}

impl OpenFailure {
    fn classify(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            Self::Stale
        } else {
            Self::Refused(e)
        }
    }
}

fn setns(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: a valid namespace descriptor; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

enum Entered<T, F> {
    Ran(std::io::Result<T>),
    /// Not entered: the way in is stale; `f` is handed back for another try.
    Stale(F),
    Refused(std::io::Error),
}

fn enter_and_run<T: Send + 'static, F: FnOnce() -> std::io::Result<T> + Send + 'static>(
    id: NetnsId,
    path: &Path,
    nsfs_dev: Option<u64>,
    f: F,
) -> Entered<T, F> {
    let file = match open_checked(id, path, nsfs_dev) {
        Ok(file) => file,
        Err(OpenFailure::Stale) => return Entered::Stale(f),
        Err(OpenFailure::Refused(e)) => return Entered::Refused(e),
    };
    // The open descriptor pins the namespace: it cannot vanish between here and the read.
    let outcome = std::thread::spawn(move || match setns(&file) {
        Ok(()) => Ok(f()),
        Err(e) => Err(e),
    })
    .join();
    match outcome {
        Ok(Ok(result)) => Entered::Ran(result),
        Ok(Err(refused)) => Entered::Refused(refused),
        Err(_) => Entered::Ran(Err(std::io::Error::other("the namespace reader thread panicked"))),
    }
}

/// Runs `f` inside namespace `id` entered through `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`), after checking that `path` is that namespace. For callers that hold a
/// path of their own; the registry's [`NetnsRegistry::run_in`] also finds a new way in.
pub fn run_in_netns<T: Send + 'static>(
    id: NetnsId,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, NetnsError> {
    let nsfs_dev = std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
    match enter_and_run(id, path, nsfs_dev, f) {
        Entered::Ran(Ok(value)) => Ok(value),
        Entered::Ran(Err(source)) => Err(NetnsError::Read { id, source }),
        Entered::Refused(source) => Err(NetnsError::Enter { id, path: path.to_owned(), source }),
        Entered::Stale(_) => Err(NetnsError::Gone { id }),
    }
}

enum Batch<T> {
    Read(T),
    Stale,
    /// Opened, but setns(2) refused (no CAP_SYS_ADMIN there): as [`NetnsError::Enter`].
    Refused(std::io::Error),
    Failed(std::io::Error),
}

/// Runs `f` inside each namespace in turn on one thread (setns into each: it only ever
/// affects that thread, which ends after the last). One thread for hundreds of namespaces
/// instead of one each.
fn read_in_each<T: Send + 'static>(
    targets: Vec<(NetnsId, PathBuf)>,
    nsfs_dev: Option<u64>,
    f: fn() -> std::io::Result<T>,
) -> Vec<Batch<T>> {
    let count = targets.len();
    let reader = std::thread::spawn(move || {
        targets
            .into_iter()
            .map(|(id, path)| match open_checked(id, &path, nsfs_dev) {
                Err(OpenFailure::Stale) => Batch::Stale,
                Err(OpenFailure::Refused(e)) => Batch::Refused(e),
                Ok(file) => match setns(&file) {
                    Err(e) => Batch::Refused(e),
                    Ok(()) => f().map_or_else(Batch::Failed, Batch::Read),
                },
            })
            .collect::<Vec<_>>()
    });
    reader.join().unwrap_or_else(|_| {
        (0..count).map(|_| Batch::Failed(std::io::Error::other("the namespace reader thread panicked"))).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_inode_held_by_other_mounts_only_is_a_new_namespace() {
        let info = |mounts: &[&str]| NetnsInfo {
            id: NetnsId(4026532314),
            generation: 0,
            name: NetnsName::IpNetns { name: "old".into() },
            enter: PathBuf::from("/run/netns/old"),
            mounts: mounts.iter().map(PathBuf::from).collect(),
            member: None,
            sysctls: None,
            sysctls_error: None,
            cookie: None,
            state: NetnsState::Live,
            first_seen: SystemTime::UNIX_EPOCH,
            retired_at: None,
        };
        let seen = |mounts: &[&str]| Sighting { mounts: mounts.iter().map(PathBuf::from).collect(), first_pid: None };
        // `ip netns del old; ip netns add new`, and the kernel gave `new` the freed inode.
        assert!(reused(&info(&["/run/netns/old"]), &seen(&["/run/netns/new"])));
        // A second name for the same namespace, or one of its names removed: the same one.
        assert!(!reused(&info(&["/run/netns/old"]), &seen(&["/run/netns/old", "/run/netns/alias"])));
        assert!(!reused(&info(&["/run/netns/old", "/run/netns/alias"]), &seen(&["/run/netns/alias"])));
        // Known by processes only, before or now: the mounts cannot tell (the cookie may).
        assert!(!reused(&info(&[]), &seen(&["/run/netns/new"])));
        assert!(!reused(&info(&["/run/netns/old"]), &seen(&[])));
    }

    #[test]
    fn a_cookie_tells_a_new_namespace_on_an_old_inode() {
        assert!(same_cookie(7, Some(7)));
        assert!(!same_cookie(7, Some(8)), "another namespace on the inode");
        assert!(same_cookie(7, None), "unknown now is no evidence either way");
    }

    /// This process's namespace has a cookie on 5.14+, the same each time it is read.
    #[test]
    fn the_cookie_of_a_namespace_is_stable() {
        match (cookie_here(), cookie_here()) {
            (Some(a), Some(b)) => assert_eq!(a, b),
            (None, None) => eprintln!("no SO_NETNS_COOKIE here (5.14+)"),
            other => panic!("{other:?}"),
        }
    }

    use super::*;
    use crate::kernel::cgroup::{Container, ContainerId, QosClass, Runtime};

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(NetnsId(4026531840)));
        assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link("net:[]"), None);
        assert_eq!(parse_ns_link("net:[99999999999]"), None, "inodes are 32-bit");
    }

    fn docker() -> Workload {
        Workload::Container(Container {
            runtime: Some(Runtime::Docker),
            id: ContainerId::new("3f2a1b9c0d1e4f5a").unwrap(),
        })
    }

    #[test]
    fn names_in_order_of_what_a_person_recognises() {
        let m = |workload: Option<Workload>| Member { pid: 4242, comm: "sleep".into(), workload };
        let named = vec![PathBuf::from("/run/netns/blue")];
        let cni = vec![PathBuf::from("/run/netns/cni-1234")];
        let docker_mount = vec![PathBuf::from("/run/docker/netns/0a1b2c3d4e5f")];
        let name =
            |mounts: &[PathBuf], host, member: Option<&Member>| choose_name(mounts, host, member).unwrap().to_string();

        assert_eq!(name(&named, true, Some(&m(Some(docker())))), "blue");
        assert_eq!(name(&[], true, Some(&m(Some(docker())))), "host");
        assert_eq!(name(&docker_mount, false, Some(&m(Some(docker())))), "docker:3f2a1b9c0d1e");
        // A CNI name is generated: the pod says more. Without a member it is all there is.
        let pod = Workload::Pod {
            uid: "1234abcd-5678-90ab-cdef-1234567890ab".into(),
            qos: QosClass::Burstable,
            container: Some(Container { runtime: None, id: ContainerId::new("0123456789abcdef").unwrap() }),
        };
        assert_eq!(name(&cni, false, Some(&m(Some(pod)))), "pod 1234abcd-5678-90ab-cdef-1234567890ab");
        assert_eq!(name(&cni, false, None), "cni-1234");
        // A systemd unit does not name a namespace: the process does.
        let unit = Workload::Unit { name: "session-3.scope".into(), user: Some(0) };
        assert_eq!(name(&[], false, Some(&m(Some(unit)))), "pid 4242 (sleep)");
        assert_eq!(name(&docker_mount, false, None), "docker sandbox 0a1b2c3d4e5f");
        assert_eq!(choose_name(&[], false, None), None);
    }

    /// A fake /proc: `PID/ns/net` links with `net:[N]` targets (readlink reads the target
    /// text, whatever it points at), `PID/comm`, `PID/cgroup`.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("twtrace-fakeproc-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn process(&self, pid: u32, netns: u32, comm: &str, cgroup: &str) {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::os::unix::fs::symlink(format!("net:[{netns}]"), dir.join("ns/net")).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        }

        fn exit(&self, pid: u32) {
            std::fs::remove_dir_all(self.0.join(pid.to_string())).unwrap();
        }

        fn registry(&self) -> NetnsRegistry {
            NetnsRegistry::with_config(RegistryConfig {
                proc_root: self.0.clone(),
                ip_netns_dir: self.0.join("no-such-dir"),
                other_mount_dirs: vec![],
                read_sysctls: false,
                ..RegistryConfig::default()
            })
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const DOCKER_ID: &str = "3f2a1b9c0d1e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";

    #[test]
    fn registry_describes_updates_and_retires() {
        let proc = FakeProc::new("registry");
        proc.process(1, 100, "init", "/init.scope");
        proc.process(20, 100, "sshd", "/system.slice/sshd.service");
        proc.process(300, 200, "nginx", &format!("/system.slice/docker-{DOCKER_ID}.scope"));
        proc.process(301, 200, "worker", &format!("/system.slice/docker-{DOCKER_ID}.scope"));
        proc.process(400, 300, "sleep", "/user.slice/user-0.slice/session-1.scope");
        std::fs::create_dir_all(proc.0.join("self")).unwrap(); // not a PID: skipped
        let mut reg = proc.registry();

        let report = reg.refresh().unwrap();
        let mut added = report.added.clone();
        added.sort();
        assert_eq!(added, vec![NetnsId(100), NetnsId(200), NetnsId(300)]);
        assert_eq!((report.processes, report.unreadable, report.live), (5, 0, 3));
        assert_eq!(reg.get(NetnsId(100)).unwrap().name, NetnsName::Host);
        let docker = reg.get(NetnsId(200)).unwrap();
        assert_eq!(docker.name.to_string(), "docker:3f2a1b9c0d1e");
        assert_eq!(docker.enter, proc.0.join("300/ns/net"), "the first member is the way in");
        assert_eq!(docker.member.as_ref().unwrap().comm, "nginx");
        assert_eq!(reg.get(NetnsId(300)).unwrap().name.to_string(), "pid 400 (sleep)");

        // The first member exits: the namespace lives on through the other, which becomes the
        // way in; the name (described once) stays.
        proc.exit(300);
        let report = reg.refresh().unwrap();
        assert!(report.added.is_empty() && report.retired.is_empty(), "{report:?}");
        let docker = reg.get(NetnsId(200)).unwrap();
        assert_eq!(docker.enter, proc.0.join("301/ns/net"));
        assert_eq!(docker.name.to_string(), "docker:3f2a1b9c0d1e");

        // The last process leaves: retired, no error, still there for late events.
        proc.exit(400);
        let report = reg.refresh().unwrap();
        assert_eq!(report.retired, vec![NetnsId(300)]);
        assert_eq!(report.live, 2);
        assert_eq!(reg.get(NetnsId(300)).unwrap().state, NetnsState::Retired);
        assert!(matches!(reg.sysctls(NetnsId(300)), Err(NetnsError::Gone { .. })));
        assert!(matches!(reg.sysctls(NetnsId(999)), Err(NetnsError::Unknown { .. })));

        // The inode comes back for a new namespace: a new generation, described afresh.
        proc.process(500, 300, "curl", "/");
        let report = reg.refresh().unwrap();
        assert_eq!(report.added, vec![NetnsId(300)]);
        let again = reg.get(NetnsId(300)).unwrap();
        assert_eq!((again.generation, again.name.to_string()), (1, "pid 500 (curl)".to_owned()));
        assert!(again.is_live());

        assert_eq!(reg.prune_retired(Duration::ZERO), 0, "nothing retired now");
        proc.exit(500);
        reg.refresh().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(reg.prune_retired(Duration::ZERO), 1);
        assert!(reg.get(NetnsId(300)).is_none());
    }

    #[test]
    fn lookup_scans_only_until_a_member_and_remembers_misses() {
        let proc = FakeProc::new("lookup");
        proc.process(1, 100, "init", "/init.scope");
        proc.process(7, 700, "sleep", "/");
        let mut reg = proc.registry();
        let found = reg.lookup_or_discover(NetnsId(700)).expect("found through pid 7");
        assert_eq!(found.name.to_string(), "pid 7 (sleep)");
        assert_eq!(reg.all().count(), 1, "only the namespace asked for is described");
        assert!(reg.lookup_or_discover(NetnsId(800)).is_none());
        // A process of 800 appears, but the miss is remembered for miss_ttl.
        proc.process(8, 800, "late", "/");
        assert!(reg.lookup_or_discover(NetnsId(800)).is_none(), "no rescan within miss_ttl");
        reg.config.miss_ttl = Duration::ZERO;
        assert_eq!(reg.lookup_or_discover(NetnsId(800)).unwrap().name.to_string(), "pid 8 (late)");
        assert!(reg.lookup_or_discover(NetnsId(0)).is_none(), "netns 0: no namespace");
    }

    #[test]
    fn unreadable_processes_are_counted_not_fatal() {
        let proc = FakeProc::new("unreadable");
        proc.process(1, 100, "init", "/");
        // A link with an unexpected target: counted as unreadable.
        std::fs::create_dir_all(proc.0.join("2/ns")).unwrap();
        std::os::unix::fs::symlink("garbage", proc.0.join("2/ns/net")).unwrap();
        // A process dir without ns (a zombie's are gone): skipped, not counted.
        std::fs::create_dir_all(proc.0.join("3")).unwrap();
        let report = proc.registry().refresh().unwrap();
        assert_eq!((report.processes, report.unreadable, report.live), (3, 1, 1));
        // No /proc at all is the one error of a refresh.
        let mut none = NetnsRegistry::with_config(RegistryConfig {
            proc_root: proc.0.join("missing"),
            ..RegistryConfig::default()
        });
        assert!(matches!(none.refresh(), Err(NetnsError::Scan { .. })));
    }

    /// A namespace whose way in no longer leads to it when its settings are read (here: a
    /// fake /proc's links point nowhere, as a process that exited after the scan would) is
    /// retired by the refresh, not reported as an error.
    #[test]
    fn vanishing_while_described_retires_without_error() {
        let proc = FakeProc::new("vanish");
        proc.process(42, 4242, "short", "/");
        let mut reg = proc.registry();
        reg.config.read_sysctls = true;
        let report = reg.refresh().expect("no error");
        assert_eq!(
            (report.added.clone(), report.retired.clone(), report.live),
            (vec![NetnsId(4242)], vec![NetnsId(4242)], 0)
        );
        let info = reg.get(NetnsId(4242)).unwrap();
        assert_eq!((info.state, info.sysctls.as_ref()), (NetnsState::Retired, None));
        assert_eq!(info.name.to_string(), "pid 42 (short)", "still named for late events");
    }

    /// This process's own namespace, for real: found, and readable inside when we may setns.
    #[test]
    fn finds_its_own_namespace() {
        let own = netns_of_pid(std::process::id()).unwrap();
        let mut reg = NetnsRegistry::new();
        let report = reg.refresh().unwrap();
        let info = reg.get(own).expect("our namespace is found").clone();
        assert!(info.is_live());
        assert!(report.live >= 1);
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let direct = super::super::netns::sysctls(None).unwrap();
            assert_eq!(info.sysctls.as_ref(), Some(&direct), "{:?}", info.sysctls_error);
            assert_eq!(reg.sysctls(own).unwrap(), direct);
        }
    }
}
