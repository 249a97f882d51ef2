//! The DaemonSet's pod played by a real container runtime: `podman kube play` of the pod
//! template in deploy/kubernetes/parts/daemonset.yaml, with exactly its securityContext and
//! capabilities, running the image `cargo xtask dist` made; `serve` must answer over TLS and
//! count the TIME_WAIT sockets loopback churn leaves.
//!
//! What the play changes, each because podman 4.3 (Debian 12's) is not a kubelet:
//! - `kind: Pod` with the template's spec: podman plays Pods and Deployments, not DaemonSets.
//! - The listener on 127.0.0.1 and a free port, instead of `$(NODE_IP):9977`: the kubelet
//!   expands `$(VAR)` from `env` (NODE_IP from `status.hostIP`); podman passes it on as is,
//!   so the `env` goes too.
//! - No `ports:`: podman refuses port mappings beside `hostNetwork` (a host-network pod's
//!   port is the node's anyway).
//! - The `twtrace-web` Secret volume read from a directory (web.yml and a fresh certificate):
//!   podman 4.3 has no Secret objects to mount.
//! - The kubelet's pod log directories (`/var/log/pods`, a hostPath of type Directory, which
//!   podman, like the kubelet, refuses when it is missing) read from an empty scratch
//!   directory: this machine is no node, and a test must not depend on what was left on it.
//! - The runtime and rlimits from a containers.conf ([`super::oci::ULIMITS`]).
//!
//! And what podman 4.3 does not honour, said here rather than hidden: `hostPID` (the
//! container gets a PID namespace of its own, so pods are named only through /run/netns and
//! the log directories, not through their processes), and the probes (run as health checks
//! inside the container, where a FROM-scratch image has no client to run them).

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_norway::Value;

use super::oci::{RUNTIME, ULIMITS};

/// The pod's name in podman: its container is `POD-twtrace`.
const POD: &str = "twtrace-play";

/// Plays the pod, checks it, takes it down. Returns what it saw, in a sentence.
pub fn serve_pod(image: &str, binary: &Path, scratch: &Path) -> anyhow::Result<String> {
    let _ = std::fs::remove_dir_all(scratch);
    let (web, pod_logs) = (scratch.join("web"), scratch.join("pods"));
    std::fs::create_dir_all(&web)?;
    std::fs::create_dir_all(&pod_logs)?;
    crate::run_cmd(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(web.join("tls.key"))
            .arg("-out")
            .arg(web.join("tls.crt"))
            .stderr(std::process::Stdio::null()),
    )?;
    std::fs::write(web.join("web.yml"), "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")?;
    let conf = scratch.join("containers.conf");
    let ulimits: Vec<String> = ULIMITS.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(
        &conf,
        format!("[containers]\ndefault_ulimits = [{}]\n[engine]\nruntime = \"{RUNTIME}\"\n", ulimits.join(", ")),
    )?;
    let port = free_port()?;
    let daemonset = std::fs::read_to_string(crate::deploy::deploy_dir().join("kubernetes/parts/daemonset.yaml"))?;
    let (pod, capabilities) = pod_of(&daemonset, image, port, &web, &pod_logs)?;
    let manifest = scratch.join("pod.yaml");
    std::fs::write(&manifest, serde_norway::to_string(&pod)?)?;
    let podman = |args: &[&str]| -> anyhow::Result<Output> {
        Command::new("podman").env("CONTAINERS_CONF", &conf).args(args).output().context("podman")
    };
    let manifest_arg = manifest.to_str().context("a UTF-8 path")?;
    let played = podman(&["kube", "play", "--replace", manifest_arg])?;
    let result = (|| {
        ensure!(played.status.success(), "podman kube play failed: {}", String::from_utf8_lossy(&played.stderr));
        check(binary, port, &podman, &capabilities)
    })();
    let logs = podman(&["logs", &format!("{POD}-twtrace")]).ok();
    let _ = podman(&["kube", "down", manifest_arg]);
    let _ = std::fs::remove_dir_all(scratch);
    result.with_context(|| {
        let logs = logs.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
        format!("the DaemonSet's pod under podman; its log:\n{logs}")
    })
}

/// The DaemonSet's pod template as a Pod podman plays (see the module's list), and the
/// capabilities its container adds, as podman names them (`CAP_BPF`).
fn pod_of(
    daemonset: &str,
    image: &str,
    port: u16,
    web: &Path,
    pod_logs: &Path,
) -> anyhow::Result<(Value, Vec<String>)> {
    let ds: Value = serde_norway::from_str(daemonset)?;
    ensure!(ds["kind"] == "DaemonSet", "daemonset.yaml holds a {:?}", ds["kind"]);
    let template = &ds["spec"]["template"];
    let mut spec = template["spec"].clone();
    let containers = spec["containers"].as_sequence_mut().context("containers")?;
    ensure!(containers.len() == 1, "one container");
    let c = &mut containers[0];
    c["image"] = image.into();
    let args = c["args"].as_sequence_mut().context("args")?;
    for arg in args.iter_mut() {
        let text = arg.as_str().context("an arg")?;
        if text.starts_with("--listen=") {
            *arg = format!("--listen=127.0.0.1:{port}").into();
        }
    }
    if let Some(c) = c.as_mapping_mut() {
        c.remove("ports");
        c.remove("env");
    }
    let capabilities = c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .context("capabilities to add")?
        .iter()
        .map(|c| Ok(format!("CAP_{}", c.as_str().context("a capability")?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let volumes = spec["volumes"].as_sequence_mut().context("volumes")?;
    let secret = volumes.iter_mut().find(|v| v.get("secret").is_some()).context("the web-config Secret volume")?;
    let name = secret["name"].clone();
    *secret = serde_norway::from_str(&format!(
        "{{name: {}, hostPath: {{path: {:?}, type: Directory}}}}",
        name.as_str().unwrap_or("web-config"),
        web.display().to_string()
    ))?;
    let logs = volumes
        .iter_mut()
        .find(|v| v["hostPath"]["path"] == "/var/log/pods")
        .context("the kubelet's pod log directories' volume")?;
    logs["hostPath"]["path"] = pod_logs.display().to_string().into();
    let mut pod: Value = serde_norway::from_str(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {POD}}}\n"))?;
    pod["metadata"]["labels"] = template["metadata"]["labels"].clone();
    pod["spec"] = spec;
    Ok((pod, capabilities))
}

/// serve answers over TLS, runs with the manifest's capabilities and nothing else, on a
/// read-only root, and counts the churn's TIME_WAIT sockets.
fn check(
    binary: &Path,
    port: u16,
    podman: &dyn Fn(&[&str]) -> anyhow::Result<Output>,
    capabilities: &[String],
) -> anyhow::Result<String> {
    let metrics = |path: &str| -> Option<String> {
        let out = Command::new("curl")
            .args(["-sfk", "--max-time", "5", &format!("https://127.0.0.1:{port}{path}")])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let births = |text: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix("twtrace_timewait_births_total ")).and_then(|v| v.trim().parse().ok())
    };
    let before = loop {
        if let Some(n) = metrics("/metrics").as_deref().and_then(births) {
            break n;
        }
        if Instant::now() > deadline {
            bail!("serve in the pod did not answer on https://127.0.0.1:{port}/metrics within 60 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let inspect = podman(&[
        "inspect",
        &format!("{POD}-twtrace"),
        "--format",
        "{{.EffectiveCaps}} {{.HostConfig.ReadonlyRootfs}}",
    ])?;
    let inspect = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    let mut want = capabilities.to_vec();
    want.sort();
    ensure!(
        inspect.starts_with(&format!("[{}] true", want.join(" "))),
        "the container runs with {inspect}, not with exactly [{}] on a read-only root",
        want.join(" ")
    );
    let churn = Command::new(binary)
        .args(["churn", "--rate", "200", "--duration", "2s", "--closer", "client", "--json"])
        .output()?;
    ensure!(churn.status.success(), "churn failed: {}", String::from_utf8_lossy(&churn.stderr));
    let made: serde_json::Value = serde_json::from_slice(&churn.stdout)?;
    let connections = made["connections"].as_u64().context("churn's connections")?;
    ensure!(connections > 0, "churn made no connection: {made}");
    // The last TIME_WAIT sockets are born as the FINs cross, after the churn's end.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let after = metrics("/metrics").as_deref().and_then(births).unwrap_or(before);
        // At least the churn's: the host may make TIME_WAIT sockets of its own meanwhile.
        if after - before >= connections {
            return Ok(format!(
                "the DaemonSet's pod ran under podman kube play with {} and counted {} TIME_WAIT births for {connections} \
                 connections",
                want.join(" "),
                after - before
            ));
        }
        if Instant::now() > deadline {
            bail!("serve in the pod counted {} TIME_WAIT births for {connections} connections", after - before);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pod keeps the template's security settings and volumes, with only the listed
    /// changes.
    #[test]
    fn the_pod_is_the_templates_with_only_the_listed_changes() {
        let daemonset =
            std::fs::read_to_string(crate::deploy::deploy_dir().join("kubernetes/parts/daemonset.yaml")).unwrap();
        let (pod, caps) =
            pod_of(&daemonset, "localhost/twtrace:0.1.0", 4242, Path::new("/tmp/web"), Path::new("/tmp/pods")).unwrap();
        assert_eq!(caps, ["CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]);
        assert_eq!(pod["kind"], "Pod");
        let ds: Value = serde_norway::from_str(&daemonset).unwrap();
        let (c, original) = (&pod["spec"]["containers"][0], &ds["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(c["securityContext"], original["securityContext"]);
        assert_eq!(c["volumeMounts"], original["volumeMounts"]);
        assert_eq!(pod["spec"]["hostPID"], true);
        assert_eq!(pod["spec"]["hostNetwork"], true);
        assert_eq!(c["args"][0], "serve");
        assert_eq!(c["args"][1], "--listen=127.0.0.1:4242");
        assert!(c.get("ports").is_none());
        let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
        assert_eq!(volumes.len(), ds["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap().len());
        assert_eq!(volumes[0]["hostPath"]["path"], "/tmp/web");
        let logs = volumes.iter().find(|v| v["name"] == "pod-logs").unwrap();
        assert_eq!(logs["hostPath"], serde_norway::from_str::<Value>("{path: /tmp/pods, type: Directory}").unwrap());
    }
}
