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
use crate::kernel::cgroup::{Container, ContainerId, QosClass, Runtime, Workload};

#[test]
fn parses_namespace_links() {
    assert_eq!(parse_ns_link("net:[4026531840]"), Some(NetnsId(4026531840)));
    assert_eq!(parse_ns_link("mnt:[4026531840]"), None);
    assert_eq!(parse_ns_link("net:[]"), None);
    assert_eq!(parse_ns_link("net:[99999999999]"), None, "inodes are 32-bit");
}

fn docker() -> Workload {
    Workload::Container(Container { runtime: Some(Runtime::Docker), id: ContainerId::new("3f2a1b9c0d1e4f5a").unwrap() })
}

#[test]
fn names_in_order_of_what_a_person_recognises() {
    let m = |workload: Option<Workload>| Member { pid: 4242, comm: "sleep".into(), workload, pod: None };
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
            kubelet_pod_logs: self.0.join("pods"),
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
    let mut none =
        NetnsRegistry::with_config(RegistryConfig { proc_root: proc.0.join("missing"), ..RegistryConfig::default() });
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

/// A pod's namespace is named `namespace/name` from the kubelet's log directory for the pod UID
/// its member's cgroup shows (systemd and cgroupfs drivers alike), also when that directory
/// appears after the namespace was first described.
#[test]
fn pods_are_named_from_the_kubelets_log_directories() {
    let proc = FakeProc::new("kubelet");
    let uid = "3f8e2a10-5b7c-4d2e-9a1f-0c6b8d4e2f71";
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let systemd = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    proc.process(1, 100, "init", "/init.scope");
    proc.process(10, 200, "pause", &systemd);
    let late = "0a1b2c3d-0000-4000-8000-000000000001";
    proc.process(20, 300, "pause", &format!("/kubepods/burstable/pod{late}/{id}"));
    std::fs::create_dir_all(proc.0.join(format!("pods/shop_web-7d9f8c6b5-x2x4q_{uid}/web"))).unwrap();
    let mut reg = proc.registry();
    reg.refresh().unwrap();
    assert_eq!(reg.get(NetnsId(200)).unwrap().name.to_string(), "shop/web-7d9f8c6b5-x2x4q");
    let member = reg.get(NetnsId(200)).unwrap().member.clone().unwrap();
    assert_eq!(member.pod.map(|p| p.uid), Some(uid.to_owned()));
    // No directory for the other pod yet: its UID, until the kubelet makes one.
    assert_eq!(reg.get(NetnsId(300)).unwrap().name.to_string(), format!("pod {late}"));
    std::fs::create_dir_all(proc.0.join(format!("pods/db_pg-0_{late}/postgres"))).unwrap();
    std::thread::sleep(crate::kernel::kube::PodDirectory::RESCAN);
    reg.refresh().unwrap();
    assert_eq!(reg.get(NetnsId(300)).unwrap().name.to_string(), "db/pg-0");
}
