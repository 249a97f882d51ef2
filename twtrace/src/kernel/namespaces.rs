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
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::kube::PodDirectory;
use crate::event::Sysctls;

mod enter;
mod later;
mod naming;
pub use enter::run_in_netns;
use enter::{Batch, Entered, cookie_here, enter_and_run, read_in_each, same_cookie, sysctls_here, way_in};
use naming::ip_netns_name;
pub use naming::{Member, NetnsName, choose_name};

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
    /// The kubelet's pod log directories (`/var/log/pods`), which name the pod of a member
    /// process's pod UID (`kernel::kube`).
    pub kubelet_pod_logs: PathBuf,
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
            kubelet_pod_logs: PodDirectory::default_root(),
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
    /// Pod UIDs to Kubernetes names.
    pods: PodDirectory,
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
        let pods = PodDirectory::new(config.kubelet_pod_logs.clone());
        Self { config, entries: HashMap::new(), misses: HashMap::new(), nsfs_dev, pods }
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
    /// (its cgroup is read then, once), its pod's name if the kubelet has named it since, and
    /// the name that follows from them.
    fn update(&mut self, id: NetnsId, sighting: &Sighting, host: Option<NetnsId>) {
        let proc_root = self.config.proc_root.clone();
        let Some(entry) = self.entries.get(&id) else { return };
        let (had_member, unnamed_pod) = (
            entry.member.is_some(),
            entry.member.as_ref().filter(|m| m.pod.is_none()).and_then(|m| m.pod_uid()).map(str::to_owned),
        );
        let new_member = match (had_member, sighting.first_pid) {
            (false, Some(pid)) => self.members(vec![pid]).pop(),
            _ => None,
        };
        let pod = unnamed_pod.and_then(|uid| Some(self.pods.lookup(&uid)?.pod.clone()));
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.mounts = sighting.mounts.clone();
        if new_member.is_some() {
            entry.member = new_member;
        }
        if let (Some(pod), Some(member)) = (pod, entry.member.as_mut()) {
            member.pod = Some(pod);
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
        // Every new member's cgroup in one read (one thread in the host's cgroup namespace).
        let mut members = self.members(new.iter().filter_map(|(_, s)| s.first_pid).collect()).into_iter();
        for (id, sighting) in new {
            let member = sighting.first_pid.and_then(|_| members.next());
            let Some(enter) = way_in(&proc_root, &sighting.mounts, sighting.first_pid) else { continue };
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

#[cfg(test)]
mod tests;
