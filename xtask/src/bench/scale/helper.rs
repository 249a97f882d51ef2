//! `xtask bench-helper`: load the scale ladder needs and no twtrace command makes, run inside
//! a namespace by the bench (`ip netns exec NS xtask bench-helper ...`). Hidden from `--help`.
//!
//! `fail`: many distinct short-lived processes whose connect() fails with EADDRNOTAVAIL. The
//! helper holds every port of the namespace's (tiny) `ip_local_port_range` with a listener,
//! then forks one child per attempt: the child makes one socket, one connect() and exits. A
//! fork of this small process costs about a tenth of a millisecond, where a Python process
//! would cost tens. Bounded by `--count` and `--seconds`, whichever comes first.

use std::{
    net::{SocketAddrV4, TcpListener},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

#[derive(clap::Args)]
pub struct HelperArgs {
    #[command(subcommand)]
    what: Helper,
}

#[derive(clap::Subcommand)]
enum Helper {
    /// Hold every port of this namespace's ip_local_port_range, then run COUNT short-lived
    /// processes, each one connect() toward TARGET; print a JSON summary of how they ended.
    Fail {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddrV4,
        /// Stop starting processes after this long, whatever the count.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Threads forking at once.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// Ranges larger than this are not held: the helper is for a namespace the bench shrank.
const MAX_HELD_PORTS: u32 = 1024;

/// How a child's connect() ended, as its exit status.
const FAILED_EADDRNOTAVAIL: i32 = 0;
const FAILED_OTHER: i32 = 1;
const CONNECTED: i32 = 2;
const NO_SOCKET: i32 = 3;

pub fn run(args: &HelperArgs) -> anyhow::Result<()> {
    match &args.what {
        Helper::Fail { count, target, seconds, workers } => {
            fail(*count, *target, Duration::from_secs(*seconds), *workers)
        }
    }
}

/// `net.ipv4.ip_local_port_range` of the namespace this process runs in.
fn port_range() -> anyhow::Result<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => bail!("unreadable ip_local_port_range: {text:?}"),
    }
}

fn fail(count: u64, target: SocketAddrV4, limit: Duration, workers: usize) -> anyhow::Result<()> {
    let (lo, hi) = port_range()?;
    if u32::from(hi - lo) + 1 > MAX_HELD_PORTS {
        bail!("ip_local_port_range {lo}-{hi} is too wide to hold: shrink it first (the bench does)");
    }
    // A port bound by bind() (a listener here) is skipped by connect()'s search whatever the
    // destination, so with every port of the range held, each connect() fails at once.
    let held: Vec<TcpListener> = (lo..=hi)
        .map(|p| TcpListener::bind(("127.0.0.1", p)).with_context(|| format!("holding port {p}")))
        .collect::<anyhow::Result<_>>()?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: target.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*target.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    let deadline = started + limit;
    let next = AtomicU64::new(0);
    let outcomes: [AtomicU64; 5] = Default::default();
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, 8) {
            s.spawn(|| {
                while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < count {
                    let code = one_process(&addr);
                    outcomes[code.clamp(0, 4) as usize].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    drop(held);
    let n = |code: i32| outcomes[code as usize].load(Ordering::Relaxed);
    let processes: u64 = outcomes.iter().map(|o| o.load(Ordering::Relaxed)).sum();
    println!(
        "{}",
        serde_json::json!({
            "processes": processes,
            "eaddrnotavail": n(FAILED_EADDRNOTAVAIL),
            "other_errors": n(FAILED_OTHER),
            "connected": n(CONNECTED),
            "no_socket": n(NO_SOCKET),
            "unknown": n(4),
            "seconds": seconds,
            "per_second": processes as f64 / seconds.max(1e-9),
        })
    );
    Ok(())
}

/// Forks one process that makes one connect() and exits; its exit status (one of the codes
/// above, 4 when it died otherwise).
fn one_process(addr: &libc::sockaddr_in) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (socket, connect, _exit) on
    // memory prepared before the fork, as a child of a multi-threaded process must.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child, as said above: plain syscalls on a valid address, and the
        // thread's errno read through libc's own accessor.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(NO_SOCKET);
            }
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::connect(fd, (addr as *const libc::sockaddr_in).cast(), len) == 0 {
                libc::_exit(CONNECTED);
            }
            let errno = *libc::__errno_location();
            libc::_exit(if errno == libc::EADDRNOTAVAIL { FAILED_EADDRNOTAVAIL } else { FAILED_OTHER });
        }
    }
    if pid < 0 {
        // Out of processes for a moment: counted as a death, and the loop goes on.
        std::thread::sleep(Duration::from_millis(10));
        return 4;
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited == pid && libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 4 }
}
