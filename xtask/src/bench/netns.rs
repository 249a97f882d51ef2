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
