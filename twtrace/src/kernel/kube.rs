//! Kubernetes names from what every node has, without the API server: a pod's UID comes from
//! its cgroup path (`cgroup`), and the kubelet's pod log directories map the UID to the pod's
//! namespace and name.
//!
//! # `/var/log/pods`
//!
//! The kubelet makes one directory per pod, `/var/log/pods/NAMESPACE_NAME_UID/`, before it asks
//! the runtime for the pod's sandbox (so before its network namespace exists), with one
//! subdirectory per container (`CONTAINER/0.log`, ...): the layout fluent-bit, promtail and
//! Vector read (kubelet 1.14+; older kubelets wrote `/var/log/pods/UID/`, which names
//! nothing). None of the three parts can hold `_`: a namespace is a DNS label, a pod name a
//! DNS subdomain, a UID hex digits and dashes. The directory stays until the pod is deleted.
//!
//! `TWTRACE_KUBELET_POD_LOGS` names another directory (a test's, or a kubelet with a moved
//! `--root-dir` whose logs were moved too).

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the kubelet writes pod logs, unless `TWTRACE_KUBELET_POD_LOGS` says otherwise.
pub const POD_LOGS: &str = "/var/log/pods";
pub const POD_LOGS_ENV: &str = "TWTRACE_KUBELET_POD_LOGS";

/// A pod as the kubelet names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// With dashes, as `kubectl get pod -o jsonpath='{.metadata.uid}'` prints it.
    pub uid: String,
}

impl PodRef {
    /// The pod a log directory's name says (`NAMESPACE_NAME_UID`), if it is one.
    pub fn from_log_dir(dir_name: &str) -> Option<Self> {
        let mut parts = dir_name.split('_');
        let (Some(namespace), Some(name), Some(uid), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let uid_ok = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        (is_dns_label(namespace) && is_dns_subdomain(name) && uid_ok).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for PodRef {
    /// `shop/web-7d9f8c6b5-x2x4q`, as `kubectl` users write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Kubernetes namespace and pod name a network namespace's name says, when it is a pod's
/// `namespace/name` (what [`PodRef`] displays). No other name twtrace gives has this shape:
/// `ip netns` names and container names hold no `/`, and `pid N (comm)` holds spaces.
pub fn pod_of_name(name: &str) -> Option<(&str, &str)> {
    let (namespace, pod) = name.split_once('/')?;
    (is_dns_label(namespace) && is_dns_subdomain(pod)).then_some((namespace, pod))
}

/// RFC 1123 label, as Kubernetes checks namespace names: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at
/// most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// RFC 1123 subdomain, as Kubernetes checks pod names: labels joined by dots, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A pod found under the log directory: its names and its containers' names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletPod {
    pub pod: PodRef,
    /// Subdirectories: one per container that has run (init containers included), sorted.
    pub containers: Vec<String>,
}

/// The pods the kubelet's log directory shows, by UID. Read again when a UID is asked for that
/// it does not know, at most once per [`PodDirectory::RESCAN`]: a pod's directory is made
/// before its sandbox, so a pod seen in a cgroup is normally there at the first look.
#[derive(Debug)]
pub struct PodDirectory {
    root: PathBuf,
    pods: HashMap<String, KubeletPod>,
    scanned: Option<Instant>,
}

impl PodDirectory {
    /// The shortest time between two reads of the directory.
    pub const RESCAN: Duration = Duration::from_secs(1);

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), pods: HashMap::new(), scanned: None }
    }

    /// `/var/log/pods`, or the directory `TWTRACE_KUBELET_POD_LOGS` names.
    pub fn default_root() -> PathBuf {
        std::env::var_os(POD_LOGS_ENV).filter(|v| !v.is_empty()).map_or_else(|| PathBuf::from(POD_LOGS), PathBuf::from)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pod with this UID (dashes or underscores), reading the directory again if it is not
    /// known and the last read is older than [`Self::RESCAN`].
    pub fn lookup(&mut self, uid: &str) -> Option<&KubeletPod> {
        let uid = uid.replace('_', "-").to_ascii_lowercase();
        if !self.pods.contains_key(&uid) && self.scanned.is_none_or(|at| at.elapsed() >= Self::RESCAN) {
            self.rescan();
        }
        self.pods.get(&uid)
    }

    /// Reads the directory: a missing one (not a Kubernetes node) holds no pod.
    fn rescan(&mut self) {
        self.scanned = Some(Instant::now());
        self.pods.clear();
        let Ok(entries) = std::fs::read_dir(&self.root) else { return };
        for entry in entries.flatten() {
            let Some(pod) = entry.file_name().to_str().and_then(PodRef::from_log_dir) else { continue };
            let mut containers: Vec<String> = std::fs::read_dir(entry.path())
                .map(|dir| {
                    dir.flatten()
                        .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                        .filter_map(|c| c.file_name().to_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            containers.sort();
            self.pods.insert(pod.uid.clone(), KubeletPod { pod, containers });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f8e2a10-5b7c-4d2e-9a1f-0c6b8d4e2f71";

    #[test]
    fn log_directory_names() {
        let pod = PodRef::from_log_dir(&format!("shop_web-7d9f8c6b5-x2x4q_{UID}")).unwrap();
        assert_eq!((pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()), ("shop", "web-7d9f8c6b5-x2x4q", UID));
        assert_eq!(pod.to_string(), "shop/web-7d9f8c6b5-x2x4q");
        // A static pod: a 32-digit hash for a UID, a dotted name (the node's name appended).
        let etcd =
            PodRef::from_log_dir("kube-system_etcd-node-1.example.com_f5b2b1c1d0e9f8a7b6c5d4e3f2a1b0c9").unwrap();
        assert_eq!(etcd.to_string(), "kube-system/etcd-node-1.example.com");
        for bad in [
            UID,                         // the old layout: the UID alone
            "shop_web",                  // no UID
            "shop_web_x_y",              // four parts
            &format!("Shop_web_{UID}"),  // upper case
            &format!("shop_-web_{UID}"), // a label starting with a dash
            "shop_web_not-a-uid",        // not hex
            &format!("_web_{UID}"),      // empty namespace
        ] {
            assert_eq!(PodRef::from_log_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn pod_names_are_told_from_other_namespace_names() {
        assert_eq!(pod_of_name("shop/web-7d9f8c6b5-x2x4q"), Some(("shop", "web-7d9f8c6b5-x2x4q")));
        for other in ["host", "cni-1234", "docker:3f2a1b9c0d1e", "pid 12 (kworker/0:1)", "pod 1234", "/run/x", "a/b/c"]
        {
            assert_eq!(pod_of_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_directory_of_pods_by_uid_with_their_containers() {
        let root = std::env::temp_dir().join(format!("twtrace-kube-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pod_dir = root.join(format!("shop_web-7d9f8c6b5-x2x4q_{UID}"));
        for c in ["web", "istio-proxy"] {
            std::fs::create_dir_all(pod_dir.join(c)).unwrap();
            std::fs::write(pod_dir.join(c).join("0.log"), "").unwrap();
        }
        std::fs::create_dir_all(root.join("not-a-pod")).unwrap();
        let mut pods = PodDirectory::new(&root);
        // The systemd driver's escaped form finds it too.
        let found = pods.lookup(&UID.replace('-', "_")).cloned().expect("found");
        assert_eq!(found.pod.to_string(), "shop/web-7d9f8c6b5-x2x4q");
        assert_eq!(found.containers, ["istio-proxy", "web"]);
        // A pod made after the last read is found once RESCAN has passed, not before.
        let later = "0a1b2c3d-0000-4000-8000-000000000001";
        std::fs::create_dir_all(root.join(format!("db_pg-0_{later}"))).unwrap();
        assert!(pods.lookup(later).is_none(), "within RESCAN of the last read");
        pods.scanned = Some(Instant::now() - PodDirectory::RESCAN);
        assert_eq!(pods.lookup(later).map(|p| p.pod.to_string()), Some("db/pg-0".into()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(PodDirectory::new(root.join("missing")).lookup(UID).is_none());
    }
}
