//! What a person calls a network namespace, from what is known of it: its mounts, whether it
//! is the host's, and a process in it (its cgroup, and the Kubernetes pod that names).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::NetnsRegistry;
use crate::kernel::{cgroup::Workload, kube::PodRef};

/// What a person calls a namespace, best first (see [`choose_name`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetnsName {
    /// A Kubernetes pod's, named by the kubelet's log directory for the pod UID in a member
    /// process's cgroup: `shop/web-7d9f8c6b5-x2x4q`.
    KubernetesPod { pod: PodRef },
    /// Named under `/run/netns` (`ip netns add NAME`, or a runtime's generated name).
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
    pub(super) fn strength(&self) -> u8 {
        match self {
            Self::KubernetesPod { .. } => 6,
            Self::IpNetns { name } if !generated(name) => 5,
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
            Self::KubernetesPod { pod } => write!(f, "{pod}"),
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
    /// The Kubernetes pod of that workload's pod UID, when the kubelet's log directory names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

impl Member {
    /// The UID of the pod its cgroup names, if any.
    pub fn pod_uid(&self) -> Option<&str> {
        match &self.workload {
            Some(Workload::Pod { uid, .. }) => Some(uid),
            _ => None,
        }
    }
}

/// The file name of an `ip netns` mount (`/run/netns/NAME`, not Docker's sandboxes).
pub(super) fn ip_netns_name(path: &Path) -> Option<&str> {
    path.parent().filter(|dir| dir.ends_with("netns") && !dir.ends_with("docker/netns"))?;
    path.file_name()?.to_str()
}

/// Whether an `ip netns` name is a runtime's, not a person's: containerd's CNI plugins register
/// a pod's namespace as `cni-UUID`, CRI-O as the bare UUID.
fn generated(name: &str) -> bool {
    let uuid = |s: &str| {
        s.len() == 36
            && s.bytes()
                .enumerate()
                .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
    };
    name.starts_with("cni-") || uuid(name)
}

/// The name of a namespace from what is known of it (pure: no I/O).
///
/// Order: the host's (an `ip netns` name a person gave it, else `host`); a Kubernetes pod's
/// `namespace/name`; an `ip netns` name a person chose; a member's container, or its pod by
/// UID when the kubelet's log directory does not name it; a runtime's generated `ip netns`
/// name (`cni-UUID`, kept as the `netns_name` label of the exporter); a member process; another
/// mount. A systemd unit does not name a namespace: a process that ran `unshare -n` inside a
/// service is not the service.
pub fn choose_name(mounts: &[PathBuf], is_host: bool, member: Option<&Member>) -> Option<NetnsName> {
    let ip_names: Vec<&str> = mounts.iter().filter_map(|m| ip_netns_name(m)).collect();
    let chosen = ip_names.iter().find(|n| !generated(n)).map(|name| NetnsName::IpNetns { name: (*name).to_owned() });
    if is_host {
        return Some(chosen.unwrap_or(NetnsName::Host));
    }
    if let Some(pod) = member.and_then(|m| m.pod.as_ref()) {
        return Some(NetnsName::KubernetesPod { pod: pod.clone() });
    }
    if chosen.is_some() {
        return chosen;
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

impl NetnsRegistry {
    /// Processes `pids` as members: their comm, their cgroup's workload (read as the host sees
    /// it, see [`crate::kernel::cgroup::of_processes_as_host`]) and the pod the kubelet names for its UID.
    pub(super) fn members(&mut self, pids: Vec<u32>) -> Vec<Member> {
        let proc_root = &self.config.proc_root;
        let workloads = crate::kernel::cgroup::of_processes_as_host(proc_root, pids.clone());
        let mut out = Vec::with_capacity(pids.len());
        for (i, pid) in pids.into_iter().enumerate() {
            let dir = proc_root.join(pid.to_string());
            let comm = std::fs::read_to_string(dir.join("comm")).map(|c| c.trim_end().to_owned()).unwrap_or_default();
            // A process that exited meanwhile, or whose cgroup names nothing: no workload.
            let workload = workloads.get(i).and_then(|w| w.as_ref().ok().cloned().flatten());
            let mut member = Member { pid, comm, workload, pod: None };
            if let Some(uid) = member.pod_uid() {
                member.pod = self.pods.lookup(uid).map(|p| p.pod.clone());
            }
            out.push(member);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::cgroup::{Container, ContainerId, QosClass, Runtime};

    const UID: &str = "3f8e2a10-5b7c-4d2e-9a1f-0c6b8d4e2f71";

    fn pod_member(pod: Option<PodRef>) -> Member {
        let workload = Workload::Pod {
            uid: UID.into(),
            qos: QosClass::BestEffort,
            container: Some(Container {
                runtime: Some(Runtime::Containerd),
                id: ContainerId::new("0123456789abcdef").unwrap(),
            }),
        };
        Member { pid: 4242, comm: "pause".into(), workload: Some(workload), pod }
    }

    fn web() -> PodRef {
        PodRef { namespace: "shop".into(), name: "web-7d9f8c6b5-x2x4q".into(), uid: UID.into() }
    }

    /// A pod's name wins over a runtime's generated `ip netns` name, and over a person's too (a
    /// pod's namespace is the kubelet's); the host stays `host`; without the kubelet's log
    /// directory, the pod is named by its UID, still over a generated name.
    #[test]
    fn a_pods_name_wins_over_generated_names() {
        let cni = vec![PathBuf::from(format!("/run/netns/cni-{UID}"))];
        let crio = vec![PathBuf::from(format!("/run/netns/{UID}"))];
        let named = |mounts: &[PathBuf], host, m: &Member| choose_name(mounts, host, Some(m)).unwrap().to_string();
        assert_eq!(named(&cni, false, &pod_member(Some(web()))), "shop/web-7d9f8c6b5-x2x4q");
        assert_eq!(named(&crio, false, &pod_member(Some(web()))), "shop/web-7d9f8c6b5-x2x4q");
        assert_eq!(
            named(&[PathBuf::from("/run/netns/blue")], false, &pod_member(Some(web()))),
            "shop/web-7d9f8c6b5-x2x4q"
        );
        assert_eq!(named(&cni, true, &pod_member(Some(web()))), "host", "a hostNetwork pod's process");
        assert_eq!(named(&cni, false, &pod_member(None)), format!("pod {UID}"));
        assert_eq!(named(&crio, false, &pod_member(None)), format!("pod {UID}"));
        assert_eq!(choose_name(&crio, false, None).unwrap().to_string(), UID, "nothing better known");
        // The order a name may be replaced in, as more is learnt.
        let pod = NetnsName::KubernetesPod { pod: web() };
        let generated = NetnsName::IpNetns { name: format!("cni-{UID}") };
        let person = NetnsName::IpNetns { name: "blue".into() };
        assert!(pod.strength() > person.strength() && person.strength() > generated.strength());
        assert!(!super::generated("blue") && !super::generated("cni") && super::generated(UID));
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!((json["kind"].as_str(), json["pod"]["namespace"].as_str()), (Some("kubernetes_pod"), Some("shop")));
    }
}
