//! Where the bench's load runs and what the bpftrace rows need: a namespace of its own,
//! tracefs mounted.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::run_cmd;

pub const NETNS: &str = "twtrace-bench";
/// Room for every TIME_WAIT socket of a 60 s run at 25k connections/s.
const TW_BUCKETS: &str = "net.ipv4.tcp_max_tw_buckets=2000000";

/// tracefs at /sys/kernel/tracing for the bench's duration: mounted if it was not (and
/// unmounted after), left alone if it was.
pub struct Tracefs {
    mounted_here: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

impl Tracefs {
    pub fn ensure() -> anyhow::Result<Self> {
        if Path::new(TRACEFS).join("events").exists() {
            return Ok(Self { mounted_here: false });
        }
        eprintln!("xtask: bench: mounting tracefs at {TRACEFS} for bpftrace (unmounted after)");
        run_cmd(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))
            .context("mounting tracefs (bpftrace needs it to find tracepoints)")?;
        Ok(Self { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
}

/// The churn's own namespace: its TIME_WAIT sockets and port range do not touch the host's.
pub struct Netns;

impl Netns {
    pub fn create() -> anyhow::Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).stderr(Stdio::null()).status();
        crate::run_cmd(Command::new("ip").args(["netns", "add", NETNS]))?;
        crate::run_cmd(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        crate::run_cmd(Command::new("ip").args(["netns", "exec", NETNS, "sysctl", "-qw", TW_BUCKETS]))?;
        Ok(Self)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        // The kernel tears the namespace (and its TIME_WAIT sockets) down in a work queue:
        // let that finish before the next measurement starts.
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Several namespaces of the bench's, made fresh (a stale one of the same name is deleted
/// first) with `sysctl -w` assignments inside each, and deleted together on drop. Quiet:
/// the namespace ladder makes a thousand.
pub struct Namespaces {
    names: Vec<String>,
}

fn quietly(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdout(Stdio::null()).output().with_context(|| crate::describe(cmd))?;
    if !out.status.success() {
        anyhow::bail!("`{}` failed: {}", crate::describe(cmd), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Namespaces {
    pub fn create(names: &[String], sysctls: &[String]) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let mut made = Self { names: Vec::with_capacity(names.len()) };
        for name in names {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
            quietly(Command::new("ip").args(["netns", "add", name]))?;
            made.names.push(name.clone());
            quietly(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
            if !sysctls.is_empty() {
                quietly(Command::new("ip").args(["netns", "exec", name, "sysctl", "-qw"]).args(sysctls))?;
            }
        }
        eprintln!(
            "xtask: ({:.0}s) {} namespace(s) {}{} with {}",
            started.elapsed().as_secs_f64(),
            names.len(),
            names.first().map_or("", String::as_str),
            if names.len() > 1 { "..." } else { "" },
            sysctls.join(" ")
        );
        Ok(made)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        }
        // As for `Netns`: the kernel tears them down in a work queue; a thousand take longer.
        std::thread::sleep(Duration::from_secs(3) + Duration::from_millis(5) * self.names.len() as u32);
    }
}
