//! Who a process is, in words a person recognises, from its cgroup path: the Docker, Podman,
//! containerd or CRI-O container, the Kubernetes pod, or the systemd unit. Used to name network
//! namespaces (a container's or pod's namespace is named after it) and, later, event owners.
//!
//! Pure functions over the text of `/proc/PID/cgroup`, plus [`of_process`] to read it. Nothing
//! here asks a container runtime or the Kubernetes API: the cgroup path is all there is, so a
//! pod is known by its UID and a container by its ID (short form, 12 hex digits, as `docker
//! ps` prints it), never by name.
//!
//! # `/proc/PID/cgroup`
//!
//! One line per hierarchy, `ID:CONTROLLERS:PATH`. cgroup v2 (the unified hierarchy, the only
//! one on systemd 247+ distributions by default: Debian 11+, Ubuntu 21.10+, Fedora 31+, RHEL 9)
//! has a single line `0::/PATH`. cgroup v1 and hybrid systems have one line per controller
//! (`4:memory:/docker/ID`, `1:name=systemd:/system.slice/x.service`) and possibly a `0::` line
//! too; a runtime puts its containers in the same place in every hierarchy, but some lines can
//! be `/` or another manager's path, so each line is classified and the most specific answer
//! wins (a pod with its container over a container over a pod alone over a systemd unit).
//! Paths are relative to the reader's cgroup namespace: read from the host's.
//!
//! # The paths runtimes make
//!
//! Runtimes name cgroups after the container through one of two drivers: **systemd** (a
//! transient scope `PREFIX-ID.scope` in a slice; the default for Docker 20.10+ on cgroup v2,
//! Podman, CRI-O, and for kubelet from Kubernetes 1.22+ with containerd 1.5+ when configured,
//! and the kubeadm default since 1.22) or **cgroupfs** (plain directories; Docker's default on
//! cgroup v1, kubelet's default before 1.22). IDs are 64 hex digits.
//!
//! | runtime | systemd driver | cgroupfs driver |
//! | --- | --- | --- |
//! | Docker (Engine 1.x–27) | `/system.slice/docker-ID.scope` | `/docker/ID` |
//! | Podman (1.x–5) | `/machine.slice/libpod-ID.scope[/container]`, rootless `/user.slice/user-UID.slice/user@UID.service/user.slice/libpod-ID.scope` | `/libpod_parent/libpod-ID` |
//! | containerd (CRI, 1.1+) | `…/kubepods-QOS-podUID.slice/cri-containerd-ID.scope` | `/kubepods/QOS/podUID/ID` |
//! | CRI-O (1.x) | `…/kubepods-QOS-podUID.slice/crio-ID.scope` | `/kubepods/QOS/podUID/crio-ID` |
//! | nerdctl (containerd, 0.x–2) | `/system.slice/nerdctl-ID.scope` | |
//!
//! Kubernetes (kubelet, 1.x; QoS cgroups since 1.6) puts a pod under its QoS class:
//! Guaranteed pods directly under `kubepods`, Burstable and BestEffort under `kubepods/burstable`
//! and `kubepods/besteffort`. With the systemd driver each level is a slice whose name repeats
//! its parents': `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice`,
//! with the UID's dashes escaped as underscores (systemd reserves `-` for the hierarchy). The
//! kubelet's cgroup root can be changed (`--cgroup-root`; kind nodes use `/kubelet.slice/
//! kubelet-kubepods.slice/…` and `/kubelet/kubepods/…`), and the whole tree can sit inside a
//! container (kind, Docker-in-Docker: `/docker/ID/kubepods/…`): a pod is recognised wherever
//! its slice or `pod<UID>` directory is, under any component naming `kubepods`. Static pods
//! have a 32-hex-digit UID (a hash of their manifest) instead of a UUID.
//!
//! CRI-O and Podman also make `crio-conmon-ID.scope` / `libpod-conmon-ID.scope` for the
//! container's monitor process (conmon), which lives in the host's namespaces: those are
//! classified as plain systemd scopes, not as the container.
//!
//! systemd (any version with the unified or `name=systemd` hierarchy): services and scopes
//! under slices, `/system.slice/nginx.service`, `/system.slice/system-getty.slice/
//! getty@tty1.service`, a login session `/user.slice/user-1000.slice/session-3.scope`, the
//! user manager's units `/user.slice/user-1000.slice/user@1000.service/app.slice/x.service`,
//! PID 1 itself `/init.scope`.

use std::{fmt, path::Path};

/// A container runtime, as its cgroup names show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
}

impl Runtime {
    /// The name people use: `docker`, `podman`, `containerd`, `cri-o`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A container ID: lowercase hex, normally 64 digits. Shown in its short form, the 12 digits
/// `docker ps` and `crictl ps` print.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    /// Digits of the short form.
    pub const SHORT: usize = 12;

    /// The ID when `text` is one: at least [`Self::SHORT`] lowercase hex digits (runtimes
    /// write 64). `exact`: exactly 64, for bare directory names (cgroupfs driver) where only
    /// the shape says it is a container.
    fn parse(text: &str, exact: bool) -> Option<Self> {
        let hex = text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let long_enough = if exact { text.len() == 64 } else { text.len() >= Self::SHORT };
        (hex && long_enough).then(|| Self(text.to_owned()))
    }

    /// An ID given by a person or another tool: at least 12 lowercase hex digits.
    pub fn new(text: &str) -> Option<Self> {
        Self::parse(text, false)
    }

    /// The full ID.
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The first 12 digits.
    pub fn short(&self) -> &str {
        &self.0[..Self::SHORT.min(self.0.len())]
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// A container: its runtime when the path says (the cgroupfs driver under kubelet does not),
/// and its ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Container {
    pub runtime: Option<Runtime>,
    pub id: ContainerId,
}

impl fmt::Display for Container {
    /// `docker:3f2a1b9c0d1e`, or the short ID alone when the runtime is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.runtime {
            Some(runtime) => write!(f, "{runtime}:{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// A Kubernetes pod's quality-of-service class, which decides its place in the cgroup tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Requests equal limits for every container: directly under `kubepods`.
    Guaranteed,
    Burstable,
    BestEffort,
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        })
    }
}

/// What a cgroup path says a process belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Workload {
    /// A container outside Kubernetes (Docker, Podman, nerdctl).
    Container(Container),
    /// A Kubernetes pod (UID with dashes, as `kubectl get pod -o jsonpath='{.metadata.uid}'`
    /// prints it), and the container in it when the path goes that deep (the pod's own slice
    /// holds no process on cgroup v2).
    Pod { uid: String, qos: QosClass, container: Option<Container> },
    /// A systemd unit (service or scope; a slice only when nothing deeper is named), with the
    /// user whose `user-UID.slice` it is under, if any.
    Unit { name: String, user: Option<u32> },
}

impl Workload {
    /// Whether this names a container or a pod (what names a namespace), not a unit.
    pub fn is_container_or_pod(&self) -> bool {
        !matches!(self, Self::Unit { .. })
    }

    /// The container, if the path names one.
    pub fn container(&self) -> Option<&Container> {
        match self {
            Self::Container(c) | Self::Pod { container: Some(c), .. } => Some(c),
            _ => None,
        }
    }

    /// How specific an answer is, to choose among the lines of `/proc/PID/cgroup`.
    fn rank(&self) -> u8 {
        match self {
            Self::Pod { container: Some(_), .. } => 4,
            Self::Container(_) => 3,
            Self::Pod { container: None, .. } => 2,
            Self::Unit { name, .. } if !name.ends_with(".slice") => 1,
            Self::Unit { .. } => 0,
        }
    }
}

impl fmt::Display for Workload {
    /// `docker:3f2a1b9c0d1e`; `pod 1234abcd-… container containerd:3f2a1b9c0d1e`;
    /// `nginx.service`; `session-3.scope (user 1000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Container(c) => write!(f, "{c}"),
            Self::Pod { uid, container: Some(c), .. } => write!(f, "pod {uid} container {c}"),
            Self::Pod { uid, container: None, .. } => write!(f, "pod {uid}"),
            Self::Unit { name, user: Some(uid) } => write!(f, "{name} (user {uid})"),
            Self::Unit { name, user: None } => f.write_str(name),
        }
    }
}

/// The workload of a process from the text of its `/proc/PID/cgroup` (v1, v2 or hybrid): the
/// most specific answer over its lines; `None` when no line names anything (`0::/`, a path of
/// another manager).
pub fn parse_proc_cgroup(text: &str) -> Option<Workload> {
    let mut best: Option<Workload> = None;
    for line in text.lines() {
        // ID:CONTROLLERS:PATH; the path itself may contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if let Some(w) = classify_path(path) {
            if best.as_ref().is_none_or(|b| w.rank() > b.rank()) {
                best = Some(w);
            }
        }
    }
    best
}

/// The workload one cgroup path names (`/system.slice/docker-ID.scope`, ...): see the module
/// documentation for the forms recognised.
pub fn classify_path(path: &str) -> Option<Workload> {
    // Deleted cgroups read as `/path (deleted)` in some kernels' output of a dying task.
    let path = path.trim().trim_end_matches(" (deleted)");
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if let Some(pod) = pod(&parts) {
        return Some(pod);
    }
    // The innermost container wins (Docker-in-Docker: /docker/OUTER/docker/INNER).
    for i in (0..parts.len()).rev() {
        if let Some(c) = container_component(&parts, i, false) {
            return Some(Workload::Container(c));
        }
    }
    unit(&parts)
}

/// A pod: a systemd pod slice (`…kubepods…-pod<UID>.slice`) or a cgroupfs `pod<UID>`
/// directory below a component naming `kubepods`; then the container below it, if any.
fn pod(parts: &[&str]) -> Option<Workload> {
    // Innermost first: kind's nodes nest a whole kubelet tree in a container.
    for i in (0..parts.len()).rev() {
        let c = parts[i];
        let found = if let Some(stem) = c.strip_suffix(".slice") {
            // kubepods-burstable-pod1234abcd_5678_....slice; kubepods-pod<UID>.slice when
            // Guaranteed. The prefix must name kubepods: other slices can contain "-pod".
            stem.rsplit_once("-pod")
                .filter(|(prefix, _)| prefix.contains("kubepods"))
                .and_then(|(prefix, uid)| Some((pod_uid(uid)?, qos_of(prefix.rsplit('-').next()?))))
        } else if let Some(uid) = c.strip_prefix("pod") {
            let under_kubepods = parts[..i].iter().any(|p| p.contains("kubepods"));
            let qos = if i > 0 { qos_of(parts[i - 1]) } else { QosClass::Guaranteed };
            if under_kubepods { pod_uid(uid).map(|uid| (uid, qos)) } else { None }
        } else {
            None
        };
        if let Some((uid, qos)) = found {
            let container = (i + 1 < parts.len()).then(|| container_component(parts, i + 1, true)).flatten();
            return Some(Workload::Pod { uid, qos, container });
        }
    }
    None
}

/// The QoS class a parent component names; Guaranteed pods sit directly under `kubepods`.
fn qos_of(component: &str) -> QosClass {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    if name.ends_with("besteffort") {
        QosClass::BestEffort
    } else if name.ends_with("burstable") {
        QosClass::Burstable
    } else {
        QosClass::Guaranteed
    }
}

/// A pod UID: a UUID (dashes, or underscores under the systemd driver) or a static pod's 32
/// hex digits; returned with dashes.
fn pod_uid(text: &str) -> Option<String> {
    let uid = text.replace('_', "-");
    let ok = matches!(uid.len(), 32 | 36) && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// The container component `parts[i]` names. `in_pod`: a bare 64-hex directory is a
/// container (kubelet's cgroupfs driver); elsewhere only under a `docker` directory.
fn container_component(parts: &[&str], i: usize, in_pod: bool) -> Option<Container> {
    let c = parts[i];
    if let Some(stem) = c.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("docker-", Runtime::Docker),
            ("libpod-", Runtime::Podman),
            ("cri-containerd-", Runtime::Containerd),
            ("nerdctl-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
        ] {
            // libpod-conmon-ID / crio-conmon-ID are the monitor's scopes: not the container.
            if let Some(id) = stem.strip_prefix(prefix).and_then(|id| ContainerId::parse(id, false)) {
                return Some(Container { runtime: Some(runtime), id });
            }
        }
        return None;
    }
    // cgroupfs driver forms.
    if let Some(id) = c.strip_prefix("crio-").and_then(|id| ContainerId::parse(id, false)) {
        return Some(Container { runtime: Some(Runtime::CriO), id });
    }
    if let Some(id) = c.strip_prefix("libpod-").and_then(|id| ContainerId::parse(id, false)) {
        return Some(Container { runtime: Some(Runtime::Podman), id });
    }
    let id = ContainerId::parse(c, true)?;
    if in_pod {
        return Some(Container { runtime: None, id });
    }
    (i > 0 && parts[i - 1] == "docker").then_some(Container { runtime: Some(Runtime::Docker), id })
}

/// The innermost systemd service or scope (else slice), and the user of a `user-UID.slice`.
fn unit(parts: &[&str]) -> Option<Workload> {
    let user = parts.iter().find_map(|p| p.strip_prefix("user-")?.strip_suffix(".slice")?.parse::<u32>().ok());
    let name = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .or_else(|| parts.iter().rev().find(|p| p.ends_with(".slice")))?;
    // The user manager itself (user@1000.service) already says whose it is.
    let user = user.filter(|_| !name.starts_with("user@"));
    Some(Workload::Unit { name: (*name).to_owned(), user })
}

/// Reading a process's cgroup failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The process is gone (it exited, or the PID was never there).
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("reading /proc/{pid}/cgroup: {source}")]
    Read { pid: u32, source: std::io::Error },
}

/// The workload of process `pid`, from `/proc/PID/cgroup` (readable by anyone for any
/// process, unlike its namespace links). `Ok(None)`: the process is in no recognised cgroup.
pub fn of_process(pid: u32) -> Result<Option<Workload>, CgroupError> {
    of_process_in(std::path::Path::new("/proc"), pid)
}

/// [`of_process`] under another procfs mount (tests, a host's /proc seen from a container).
pub fn of_process_in(proc_root: &Path, pid: u32) -> Result<Option<Workload>, CgroupError> {
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")) {
        Ok(text) => Ok(parse_proc_cgroup(&text)),
        // ESRCH: the task exited between open and read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(CgroupError::Gone { pid })
        }
        Err(source) => Err(CgroupError::Read { pid, source }),
    }
}

/// The workloads of `pids`, their cgroups read as the host's cgroup namespace sees them.
///
/// `/proc/PID/cgroup` gives paths relative to the reader's cgroup namespace: in a container
/// with one of its own (the default on cgroup v2), another pod's path is `/../../..` up to
/// the common ancestor and down again, and under the cgroupfs driver that cuts off the
/// `kubepods` component a pod is recognised by. So the reads happen on a thread that entered
/// the cgroup namespace of PID 1 (else of kthreadd, PID 2, where PID 1 hides its namespace
/// links), when it is not ours (hostPID gives a container the host's PID 1). setns(2) with
/// CLONE_NEWCGROUP affects only that thread and needs CAP_SYS_ADMIN; without it, or without
/// the host's /proc, the reads happen here, as before.
pub fn of_processes_as_host(proc_root: &Path, pids: Vec<u32>) -> Vec<Result<Option<Workload>, CgroupError>> {
    let proc_root = proc_root.to_owned();
    let read = move |pids: Vec<u32>| pids.into_iter().map(|pid| of_process_in(&proc_root, pid)).collect::<Vec<_>>();
    let Some(host) = host_cgroup_ns() else { return read(pids) };
    std::thread::spawn(move || {
        let entered = std::fs::File::open(&host).and_then(|ns| {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid namespace descriptor; affects only this thread, which ends here.
            match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWCGROUP) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        if let Err(e) = entered {
            log::debug!(
                "entering the host's cgroup namespace ({}): {e}; cgroup paths are read in ours",
                host.display()
            );
        }
        read(pids)
    })
    .join()
    .unwrap_or_else(|_| Vec::new())
}

/// The host's cgroup namespace (PID 1's, else kthreadd's) when it is not this process's.
fn host_cgroup_ns() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let ours = std::fs::metadata("/proc/self/ns/cgroup").ok()?.ino();
    let host =
        ["/proc/1/ns/cgroup", "/proc/2/ns/cgroup"].into_iter().find_map(|p| Some((p, std::fs::metadata(p).ok()?)));
    host.filter(|(_, meta)| meta.ino() != ours).map(|(path, _)| path.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a1b9c0d1e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-5678-90ab-cdef-1234567890ab";
    const UID_SYSTEMD: &str = "1234abcd_5678_90ab_cdef_1234567890ab";

    fn v2(path: &str) -> Option<Workload> {
        parse_proc_cgroup(&format!("0::{path}\n"))
    }

    fn container(runtime: Option<Runtime>, id: &str) -> Container {
        Container { runtime, id: ContainerId(id.into()) }
    }

    fn pod(qos: QosClass, c: Option<Container>) -> Workload {
        Workload::Pod { uid: UID.into(), qos, container: c }
    }

    #[test]
    fn docker_systemd_and_cgroupfs_drivers() {
        let expected = Workload::Container(container(Some(Runtime::Docker), ID));
        assert_eq!(v2(&format!("/system.slice/docker-{ID}.scope")), Some(expected.clone()));
        assert_eq!(v2(&format!("/docker/{ID}")), Some(expected.clone()));
        // cgroup v1 (Docker's default there): the same path in every controller.
        let v1 = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(parse_proc_cgroup(&v1), Some(expected.clone()));
        // Rootless Docker under the user's systemd.
        assert_eq!(
            v2(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope")),
            Some(expected.clone())
        );
        assert_eq!(expected.to_string(), "docker:3f2a1b9c0d1e");
        // Docker-in-Docker: the inner container.
        assert_eq!(
            v2(&format!("/docker/{ID}/docker/{ID2}")),
            Some(Workload::Container(container(Some(Runtime::Docker), ID2)))
        );
    }

    #[test]
    fn podman_rootful_rootless_and_cgroupfs() {
        let podman = Workload::Container(container(Some(Runtime::Podman), ID));
        let expected = Some(podman.clone());
        assert_eq!(v2(&format!("/machine.slice/libpod-{ID}.scope")), expected);
        // Podman 4+ runs the payload in a `container` child of the scope.
        assert_eq!(v2(&format!("/machine.slice/libpod-{ID}.scope/container")), expected);
        assert_eq!(
            v2(&format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope")),
            expected
        );
        assert_eq!(v2(&format!("/libpod_parent/libpod-{ID}")), expected);
        // A Podman pod's slice, then the container.
        assert_eq!(v2(&format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope")), expected);
        assert_eq!(podman.to_string(), "podman:3f2a1b9c0d1e");
        // conmon, in the host's namespaces, is not the container.
        assert_eq!(
            v2(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            Some(Workload::Unit { name: format!("libpod-conmon-{ID}.scope"), user: None })
        );
    }

    #[test]
    fn containerd_cri_systemd_driver_every_qos_class() {
        let c = Some(container(Some(Runtime::Containerd), ID));
        assert_eq!(
            v2(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            )),
            Some(pod(QosClass::Burstable, c.clone()))
        );
        assert_eq!(
            v2(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            )),
            Some(pod(QosClass::BestEffort, c.clone()))
        );
        assert_eq!(
            v2(&format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope")),
            Some(pod(QosClass::Guaranteed, c.clone()))
        );
        assert_eq!(
            pod(QosClass::Burstable, c).to_string(),
            "pod 1234abcd-5678-90ab-cdef-1234567890ab container containerd:3f2a1b9c0d1e"
        );
        // kind's nodes: the kubelet's root is kubelet.slice.
        assert_eq!(
            v2(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            )),
            Some(pod(QosClass::BestEffort, Some(container(Some(Runtime::Containerd), ID))))
        );
    }

    #[test]
    fn kubelet_cgroupfs_driver_every_qos_class() {
        // containerd (and dockershim) under the cgroupfs driver: a bare ID, runtime unknown.
        let c = Some(container(None, ID));
        assert_eq!(v2(&format!("/kubepods/burstable/pod{UID}/{ID}")), Some(pod(QosClass::Burstable, c.clone())));
        assert_eq!(v2(&format!("/kubepods/besteffort/pod{UID}/{ID}")), Some(pod(QosClass::BestEffort, c.clone())));
        assert_eq!(v2(&format!("/kubepods/pod{UID}/{ID}")), Some(pod(QosClass::Guaranteed, c.clone())));
        assert_eq!(pod(QosClass::Guaranteed, c).to_string(), format!("pod {UID} container 3f2a1b9c0d1e"));
        // cgroup v1 lines, as kubelet makes them in each controller.
        let v1 = format!(
            "11:memory:/kubepods/besteffort/pod{UID}/{ID}\n10:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&v1), Some(pod(QosClass::BestEffort, Some(container(None, ID)))));
        // A kind node on cgroup v1: the kubelet tree inside the node's Docker container.
        assert_eq!(
            v2(&format!("/docker/{ID2}/kubepods/burstable/pod{UID}/{ID}")),
            Some(pod(QosClass::Burstable, Some(container(None, ID))))
        );
        // A static pod: its UID is a 32-digit hash.
        let static_uid = "f5b2b1c1d0e9f8a7b6c5d4e3f2a1b0c9";
        assert_eq!(
            v2(&format!("/kubepods/pod{static_uid}/{ID}")),
            Some(Workload::Pod {
                uid: static_uid.into(),
                qos: QosClass::Guaranteed,
                container: Some(container(None, ID))
            })
        );
    }

    #[test]
    fn crio_systemd_and_cgroupfs_drivers() {
        let c = Some(container(Some(Runtime::CriO), ID));
        assert_eq!(
            v2(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"
            )),
            Some(pod(QosClass::BestEffort, c.clone()))
        );
        assert_eq!(
            v2(&format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope")),
            Some(pod(QosClass::Guaranteed, c.clone()))
        );
        assert_eq!(v2(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")), Some(pod(QosClass::Burstable, c.clone())));
        assert_eq!(pod(QosClass::Burstable, c).to_string(), format!("pod {UID} container cri-o:3f2a1b9c0d1e"));
        // conmon sits in the pod's slice but is not a container: the pod alone.
        assert_eq!(
            v2(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
            )),
            Some(pod(QosClass::Burstable, None))
        );
    }

    #[test]
    fn a_pod_without_a_container_component() {
        let w = v2(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"));
        assert_eq!(w, Some(pod(QosClass::Burstable, None)));
        assert_eq!(w.unwrap().to_string(), format!("pod {UID}"));
    }

    #[test]
    fn systemd_services_scopes_and_user_slices() {
        let unit = |name: &str, user: Option<u32>| Some(Workload::Unit { name: name.into(), user });
        assert_eq!(v2("/system.slice/nginx.service"), unit("nginx.service", None));
        assert_eq!(v2("/system.slice/nginx.service").unwrap().to_string(), "nginx.service");
        assert_eq!(v2("/system.slice/system-getty.slice/getty@tty1.service"), unit("getty@tty1.service", None));
        assert_eq!(v2("/init.scope"), unit("init.scope", None));
        // A service's own child cgroup (delegation): still the service.
        assert_eq!(v2("/system.slice/containerd.service/sub"), unit("containerd.service", None));
        let session = v2("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(session, unit("session-3.scope", Some(1000)));
        assert_eq!(session.unwrap().to_string(), "session-3.scope (user 1000)");
        assert_eq!(
            v2("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-4242.scope"),
            unit("app-gnome-firefox-4242.scope", Some(1000))
        );
        assert_eq!(v2("/user.slice/user-1000.slice/user@1000.service/init.scope"), unit("init.scope", Some(1000)));
        assert_eq!(v2("/user.slice/user-1000.slice/user@1000.service"), unit("user@1000.service", None));
        // v1 with the name=systemd hierarchy naming the unit and others at the root.
        assert_eq!(
            parse_proc_cgroup("5:memory:/\n1:name=systemd:/system.slice/sshd.service\n0::/\n"),
            unit("sshd.service", None)
        );
    }

    #[test]
    fn nothing_recognised() {
        assert_eq!(v2("/"), None);
        assert_eq!(parse_proc_cgroup(""), None);
        assert_eq!(parse_proc_cgroup("garbage\n\n::\n"), None);
        // This project's own test machine: a hybrid hierarchy, one controller placed by its
        // manager under a path that names nothing known.
        assert_eq!(
            parse_proc_cgroup("9:name=systemd:/\n4:memory:/process_api/1df25b9720c7783927d03f0a00fbfb4c\n0::/\n"),
            None
        );
        // Not IDs: too short, upper case, a 64-hex directory not under docker or a pod.
        assert_eq!(
            v2("/system.slice/docker-abc.scope"),
            Some(Workload::Unit { name: "docker-abc.scope".into(), user: None })
        );
        assert_eq!(v2(&format!("/lxc/{ID}")), None);
        assert_eq!(v2(&format!("/docker/{}", ID.to_uppercase())), None);
        // "-pod" in a slice not under kubepods is not a pod.
        assert_eq!(
            v2(&format!("/system.slice/foo-pod{UID_SYSTEMD}.slice")),
            Some(Workload::Unit { name: format!("foo-pod{UID_SYSTEMD}.slice"), user: None })
        );
    }

    #[test]
    fn the_most_specific_line_wins() {
        let text = format!("3:cpu:/system.slice/docker.service\n2:memory:/docker/{ID}\n0::/\n");
        assert_eq!(parse_proc_cgroup(&text), Some(Workload::Container(container(Some(Runtime::Docker), ID))));
    }

    #[test]
    fn serialises_with_kinds() {
        let w = pod(QosClass::BestEffort, Some(container(Some(Runtime::CriO), ID)));
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["kind"], "pod");
        assert_eq!(json["qos"], "besteffort");
        assert_eq!(json["container"]["runtime"], "cri-o");
        assert_eq!(json["container"]["id"], ID);
        let back: Workload = serde_json::from_value(json).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn reads_this_process() {
        // Whatever this machine's manager did, reading our own cgroup works; a gone PID says so.
        of_process(std::process::id()).expect("own cgroup");
        assert!(matches!(of_process(u32::MAX - 1), Err(CgroupError::Gone { .. })));
        // As the host sees it: the same here (not in a cgroup namespace of our own), one
        // answer per process, a gone one said so.
        let both = of_processes_as_host(Path::new("/proc"), vec![std::process::id(), u32::MAX - 1]);
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].as_ref().unwrap(), &of_process(std::process::id()).unwrap());
        assert!(matches!(both[1], Err(CgroupError::Gone { .. })));
    }
}
