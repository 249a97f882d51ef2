//! A Kubernetes node's pods in small, laid out as the kubelet and containerd lay them out (for
//! `serve.rs`; no kubelet, no runtime): a network namespace registered by CNI as
//! `/run/netns/cni-UUID`, a sandbox process (`pause`) in it and in the pod's cgroup (under
//! the systemd driver `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID
//! with _>.slice/cri-containerd-<ID>.scope`, under the cgroupfs driver
//! `kubepods/besteffort/pod<UID>/<ID>`), and the kubelet's log directory
//! `NAMESPACE_NAME_UID/CONTAINER/` under a directory of the test's own (twtrace reads it from
//! `TWTRACE_KUBELET_POD_LOGS`). Everything made is removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::support::{self, Netns};

/// The cgroup v2 hierarchy's mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host), if there is one.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS... - FSTYPE SOURCE SUPER_OPTIONS
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

#[derive(Clone, Copy, Debug)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// The pod's container's cgroup, relative to the hierarchy's root, as the kubelet (BestEffort
/// QoS) and containerd make it.
pub fn container_cgroup(driver: Driver, uid: &str, container_id: &str) -> String {
    match driver {
        Driver::Systemd => format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{container_id}.scope",
            uid.replace('-', "_")
        ),
        Driver::Cgroupfs => format!("kubepods/besteffort/pod{uid}/{container_id}"),
    }
}

/// Directories made under a cgroup hierarchy, removed (deepest first) on drop, once the
/// processes put in them are gone.
pub struct CgroupDirs {
    made: Vec<PathBuf>,
}

impl CgroupDirs {
    /// `root/relative`, made with whatever parents are missing.
    pub fn make(root: &Path, relative: &str) -> (Self, PathBuf) {
        let mut made = Vec::new();
        let mut path = root.to_owned();
        for part in relative.split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                made.push(path.clone());
            }
        }
        (Self { made }, path)
    }
}

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // A cgroup goes only once empty: its processes have just been killed and reaped.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A pod: its names, its network namespace, its sandbox process in its cgroup, its log
/// directory. Drop order: the process, then the cgroups, the namespace and the directory.
pub struct KubeletPod {
    pub namespace: String,
    pub name: String,
    pause: Child,
    _cgroup: CgroupDirs,
    pub netns: Netns,
    log_dir: PathBuf,
}

impl KubeletPod {
    /// Pod `namespace/name` with container `container`, `n`th of this test process (for its
    /// UID and IDs), under `cgroup_root` with `driver`, logs under `logs`.
    pub fn new(
        cgroup_root: &Path,
        logs: &Path,
        driver: Driver,
        (namespace, name, container): (&str, &str, &str),
        n: u32,
    ) -> Self {
        // The kubelet makes the log directory before it asks for the sandbox.
        write_log_dir(&log_dir(logs, namespace, name, n), container);
        Self::new_unlogged(cgroup_root, logs, driver, (namespace, name), n)
    }

    /// The pod without its log directory, which [`Self::log`] writes later: what twtrace sees
    /// of a pod made after it last read the directory (by its cgroup alone, until the next
    /// read names it).
    pub fn new_unlogged(
        cgroup_root: &Path,
        logs: &Path,
        driver: Driver,
        (namespace, name): (&str, &str),
        n: u32,
    ) -> Self {
        let (uid, container_id) = ids(n);
        let log_dir = log_dir(logs, namespace, name, n);
        // containerd: the namespace, registered by its CNI plugins as cni-UUID.
        let netns_name = format!("cni-{}", ids(n + 1000).0);
        let _ = support::output(Command::new("ip").args(["netns", "del", &netns_name]));
        support::run(Command::new("ip").args(["netns", "add", &netns_name]));
        support::run(Command::new("ip").args(["-n", &netns_name, "link", "set", "lo", "up"]));
        let netns = Netns { name: netns_name };
        // The sandbox: a process in the namespace (nsenter leaves /sys alone, unlike `ip netns
        // exec`), then moved into the pod's container cgroup.
        let (cgroup, dir) = CgroupDirs::make(cgroup_root, &container_cgroup(driver, &uid, &container_id));
        let pause = support::spawn(
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", netns.name))
                .args(["--", "sleep", "3600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        std::fs::write(dir.join("cgroup.procs"), pause.id().to_string()).expect("move the sandbox into its cgroup");
        Self { namespace: namespace.into(), name: name.into(), pause, _cgroup: cgroup, netns, log_dir }
    }

    /// Writes the pod's log directory with `container`'s.
    pub fn log(&self, container: &str) {
        write_log_dir(&self.log_dir, container);
    }

    pub fn pause_pid(&self) -> u32 {
        self.pause.id()
    }
}

impl Drop for KubeletPod {
    fn drop(&mut self) {
        let _ = self.pause.kill();
        let _ = self.pause.wait();
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// The kubelet's log directory of pod `namespace/name` (`n`th: its UID), under `logs`.
fn log_dir(logs: &Path, namespace: &str, name: &str, n: u32) -> PathBuf {
    logs.join(format!("{namespace}_{name}_{}", ids(n).0))
}

fn write_log_dir(dir: &Path, container: &str) {
    std::fs::create_dir_all(dir.join(container)).unwrap();
    std::fs::write(dir.join(container).join("0.log"), "").unwrap();
}

/// A pod UID (a UUID) and a container ID (64 hex digits), distinct per test process and `n`.
pub fn ids(n: u32) -> (String, String) {
    let pid = std::process::id();
    (format!("{pid:08x}-0000-4000-8000-{n:012x}"), format!("{pid:08x}{n:056x}"))
}
