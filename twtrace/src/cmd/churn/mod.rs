//! `twtrace churn`: a connection-churn load generator on loopback, to reproduce TIME_WAIT and
//! port-space pressure on purpose (a client doing 710 non-keep-alive requests/s to one server)
//! and to measure what tracing costs (`cargo xtask bench`). It needs no privilege.
//!
//! Each connection is connect(), accept(), then a close by the side that closes first (which
//! gets the TIME_WAIT socket) after the other saw nothing but its FIN, then the other close.
//!
//! Churn ends at its duration whatever connect() returns, and at the first SIGINT or SIGTERM
//! (a second one kills it). Every blocking call is bounded by a short slice (socket timeouts
//! of [`SLICE`]) after which the thread looks at the clock and the stop request again: a
//! connect() whose SYN is dropped (full accept queue, a firewall) retransmits for minutes, an
//! acceptor waits in accept() for ever, and once the client's port range is exhausted nothing
//! can be connected to wake it. Each attempt is counted exactly once: a connection, or one
//! failure by errno (`EADDRNOTAVAIL` when the range is exhausted), or `unfinished` when churn
//! ended while the handshake was still under way; the summary says so in text and `--json`.
//!
//!
//! By default every connection goes from the kernel's choice of source to one listener on
//! 127.0.0.1. `--destinations N` spreads them round-robin over N loopback destinations (a
//! host that runs out of ports because it talks to many), `--sources N` over N loopback
//! source addresses (a server holding TIME_WAIT sockets toward many peers): see `addresses`.
//!
//! Measured 2026-12-07 on the 2-core machine, release build, in a namespace with the range
//! 1024-65000 and `tcp_max_tw_buckets` 2,000,000: `--destinations 100000 --closer client
//! --threads 2`, unpaced for 10 s, made 50,200, 57,000 and 55,000 connections/s with no BPF
//! program attached (another process busy on one core), 33,000 to 55,000/s while others' builds
//! and a tracer ran; never a failure, all 100,000 destinations used. Toward one destination,
//! same conditions, 29,000 to 31,000/s: with the range full of TIME_WAIT sockets each
//! connect() searches further. Unpaced, about 1 to 2.5 % of client TIME_WAIT sockets then die
//! early by an RST (see the churn tests: loopback reorders the server's last segments).
//!
//! The parts: `addresses` (where each attempt goes), `client` (connect on schedule), `server`
//! (the acceptors), `slices` (bounded waits), `signals` (SIGINT/SIGTERM), `summary` (counts
//! and their text). Socket plumbing shared with the scenarios is in [`crate::net`].

mod addresses;
mod client;
mod server;
mod signals;
mod slices;
mod summary;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use self::{
    addresses::{Addresses, Targets},
    signals::StopOnSignals,
    summary::{Spread, Tally},
};
pub use self::{
    slices::SLICE,
    summary::{ChurnResult, UNFINISHED, summary_text},
};

/// Which side closes first, and so keeps the TIME_WAIT socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Closer {
    /// Server-side TIME_WAIT (a web server closing after each response).
    Server,
    /// Client-side TIME_WAIT: holds the client's ephemeral ports toward the server.
    Client,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ChurnArgs {
    /// Client threads (and as many accepting server threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Connections per second over all threads (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long (seconds, or with s, m, h). SIGINT or SIGTERM ends it earlier, with its summary.
    #[arg(long, default_value = "10s", value_parser = crate::cmd::parse_duration)]
    pub duration: Duration,
    /// Which side closes first.
    #[arg(long, value_enum, default_value_t = Closer::Server)]
    pub closer: Closer,
    /// Server address to listen on (port 0: any free port). With --destinations above 1 only
    /// its port counts: the address must stay 127.0.0.1.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Connect round-robin to N loopback addresses on the server's port: 127.0.0.1,
    /// 127.0.0.2, ... (skipping addresses that end in .0 or .255; at most 8,323,072, up to
    /// 127.127.255.254), as a host that talks to many destinations. Above 1 the server listens
    /// on 0.0.0.0:PORT confined to the loopback device (SO_BINDTODEVICE "lo", no privilege
    /// needed since Linux 5.7): it answers 127.0.0.0/8 and nothing from the network; where the
    /// kernel refuses the confinement churn fails rather than listen unconfined.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub destinations: u32,
    /// Bind each connect first to one of N loopback source addresses, round-robin: 127.128.0.1,
    /// 127.128.0.2, ... (disjoint from the destinations; same skipping and limit, up to
    /// 127.255.255.254), the port left to connect() (IP_BIND_ADDRESS_NO_PORT). With --closer
    /// server the server's TIME_WAIT sockets then have N distinct peers. 1: no bind, the
    /// kernel picks the source (127.0.0.1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub sources: u32,
    /// The summary as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How long churn waits at its end for the acceptors to take the connections still queued.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// `twtrace churn`: runs until the duration or SIGINT/SIGTERM, then prints the summary.
pub fn run(args: &ChurnArgs) -> anyhow::Result<()> {
    let signals = StopOnSignals::install()?;
    let mut result = churn_until(args, Arc::new(signals::stop_requested))?;
    result.stopped_by = signals.received();
    // Keep the handlers until the summary is out: a SIGTERM now must not lose it.
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", summary_text(&result));
    }
    drop(signals);
    Ok(())
}

/// Churn for the whole duration (no signal handling: for callers that own the process).
pub fn churn(args: &ChurnArgs) -> anyhow::Result<ChurnResult> {
    churn_until(args, Arc::new(|| false))
}

/// Churn until the duration passes or `stop()` returns true (checked at least every
/// [`SLICE`] by every thread).
pub fn churn_until(args: &ChurnArgs, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> anyhow::Result<ChurnResult> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a number of connections per second");
    let (listener, targets, spread) = listen(args)?;
    let targets = Arc::new(targets);
    let listener = Arc::new(listener);
    // The acceptors' own stop: set once every client has finished and the queue is empty.
    let clients_done = Arc::new(AtomicBool::new(false));

    let mut servers = Vec::new();
    for _ in 0..args.threads {
        let (listener, done, closer) = (listener.clone(), clients_done.clone(), args.closer);
        servers.push(std::thread::spawn(move || server::serve(&listener, &done, closer)));
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let per_thread_interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.threads as f64 / args.rate));
    let mut clients = Vec::new();
    for i in 0..args.threads {
        let (stop, closer, targets) = (stop.clone(), args.closer, targets.clone());
        // Spread the threads' schedules over one interval.
        let first = started + per_thread_interval.map_or(Duration::ZERO, |d| d * i as u32 / args.threads as u32);
        let give_up = move || Instant::now() >= deadline || stop();
        let client = move || client::client(&targets, closer, first, per_thread_interval, &give_up);
        clients.push(std::thread::spawn(client));
    }
    let mut tally = Tally::default();
    for c in clients {
        // A panicking client thread is a bug: say so rather than report partial counts.
        tally.merge(c.join().map_err(|_| anyhow::anyhow!("a churn client thread panicked"))?);
    }
    let seconds = started.elapsed().as_secs_f64();
    // Every connection made is accepted and closed before the listener goes (bounded, so a
    // stuck acceptor cannot hold churn: EMFILE would).
    server::wait_until_accepted(&listener, DRAIN_LIMIT);
    clients_done.store(true, Ordering::Relaxed);
    // Wakes the acceptors at once: shutdown() of a listening socket stops it and makes
    // blocked accept() calls return EINVAL (Linux). Without it they would still see the
    // flag within a SLICE (the listener's receive timeout bounds accept()). Connecting to
    // the listener to wake them, as churn once did, needs a free port: an exhausted range
    // has none, and churn never ended.
    // SAFETY: plain syscall on the listener's descriptor, still open.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    for s in servers {
        let _ = s.join();
    }
    Ok(tally.result(seconds, args.closer, args.threads, spread))
}

/// The listener, where the clients connect to and from, and how many addresses that is.
fn listen(args: &ChurnArgs) -> anyhow::Result<(TcpListener, Targets, Spread)> {
    let destinations = Addresses::destinations(args.destinations, "--destinations")?;
    let sources = Addresses::sources(args.sources, "--sources")?;
    if sources.count() > 1 {
        anyhow::ensure!(
            args.listen.is_ipv4() && args.listen.ip().is_loopback(),
            "--sources {} binds to IPv4 loopback addresses from 127.128.0.1: --listen must be in 127.0.0.0/8, not {}",
            sources.count(),
            args.listen
        );
    }
    let spread = Spread { destinations: destinations.count(), sources: sources.count() };
    if destinations.count() == 1 {
        let listener = crate::net::deep_backlog_listener(args.listen, SLICE)?;
        let server = listener.local_addr()?;
        return Ok((listener, Targets::new(server, destinations, sources), spread));
    }
    // Security rule: listeners bind to localhost unless told otherwise. The wildcard address
    // here is confined to lo, so it answers no more than 127.0.0.0/8.
    anyhow::ensure!(
        args.listen.ip() == Ipv4Addr::LOCALHOST,
        "--destinations {} listens on all of 127.0.0.0/8 (0.0.0.0 confined to lo): --listen may set only the port, \
         as 127.0.0.1:PORT, not {}",
        destinations.count(),
        args.listen
    );
    let listener = crate::net::loopback_wildcard_listener(args.listen.port(), SLICE)?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, listener.local_addr()?.port()));
    Ok((listener, Targets::new(server, destinations, sources), spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rate: f64, duration: Duration, closer: Closer) -> ChurnArgs {
        ChurnArgs {
            threads: 2,
            rate,
            duration,
            closer,
            listen: "127.0.0.1:0".parse().unwrap(),
            destinations: 1,
            sources: 1,
            json: true,
        }
    }

    #[test]
    fn ends_at_its_duration_with_every_attempt_counted() {
        for closer in [Closer::Server, Closer::Client] {
            let started = Instant::now();
            let r = churn(&args(200.0, Duration::from_millis(300), closer)).unwrap();
            let took = started.elapsed();
            assert!(r.connections > 0, "{r:?}");
            assert_eq!(r.attempts, r.connections + r.errors, "{r:?}");
            assert_eq!(r.errors, r.failures.values().sum::<u64>(), "{r:?}");
            // 200/s for 0.3 s: 60 on schedule, at most one more per thread.
            assert!(r.attempts <= 62, "paced by --rate: {r:?}");
            // Bounded by the duration and a few slices (the acceptors' last slice included).
            assert!(took < Duration::from_millis(300) + SLICE * 10, "{took:?}");
        }
    }

    #[test]
    fn a_stop_request_ends_it_early() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let r = churn_until(
            &args(100.0, Duration::from_secs(60), Closer::Client),
            Arc::new(move || stop.load(Ordering::Relaxed)),
        )
        .unwrap();
        stopper.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stopped within slices, not at 60 s: {:?}",
            started.elapsed()
        );
        assert_eq!(r.attempts, r.connections + r.errors);
        assert!(r.seconds < 3.0);
    }

    #[test]
    fn spreads_over_destinations_and_sources_and_reports_them() {
        for closer in [Closer::Server, Closer::Client] {
            let r =
                churn(&ChurnArgs { destinations: 7, sources: 3, ..args(300.0, Duration::from_millis(300), closer) })
                    .unwrap();
            assert!(r.connections > 7, "{r:?}");
            assert_eq!(r.errors, 0, "every loopback address answers: {r:?}");
            assert_eq!((r.destinations, r.destinations_used, r.sources, r.sources_used), (7, 7, 3, 3), "{r:?}");
            assert!(summary_text(&r).contains("threads, 7 destinations, 3 sources)"), "{}", summary_text(&r));
        }
    }

    #[test]
    fn many_destinations_keep_the_listener_on_localhost() {
        let wide = ChurnArgs {
            destinations: 2,
            listen: "0.0.0.0:0".parse().unwrap(),
            ..args(0.0, Duration::ZERO, Closer::Client)
        };
        let refused = churn(&wide).unwrap_err().to_string();
        assert!(refused.contains("--listen may set only the port, as 127.0.0.1:PORT, not 0.0.0.0:0"), "{refused}");
        let v6 =
            ChurnArgs { sources: 2, listen: "[::1]:0".parse().unwrap(), ..args(0.0, Duration::ZERO, Closer::Client) };
        assert!(churn(&v6).unwrap_err().to_string().contains("--listen must be in 127.0.0.0/8"));
        let too_many =
            ChurnArgs { destinations: addresses::MAX_ADDRESSES + 1, ..args(0.0, Duration::ZERO, Closer::Client) };
        assert!(churn(&too_many).unwrap_err().to_string().contains("at most 8323072"));
    }
}
