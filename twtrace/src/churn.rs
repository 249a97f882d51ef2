//! `twtrace churn`: a connection-churn load generator on loopback, to reproduce TIME_WAIT and
//! port-space pressure on purpose (a client doing 710 non-keep-alive requests/s to one server)
//! and to measure what tracing costs (`cargo xtask bench`).
//!
//! Each connection is connect(), accept(), then a close by the side that closes first (which
//! gets the TIME_WAIT socket) after the other saw nothing but its FIN, then the other close.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

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
    /// How long (seconds, or with s, m, h).
    #[arg(long, default_value = "10s", value_parser = crate::cmd::parse_duration)]
    pub duration: Duration,
    /// Which side closes first.
    #[arg(long, value_enum, default_value_t = Closer::Server)]
    pub closer: Closer,
    /// Server address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnResult {
    pub connections: u64,
    /// connect() failures (EADDRNOTAVAIL when the port space is exhausted, ...).
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub per_second: f64,
    pub closer: Closer,
    pub threads: usize,
}

pub fn run(args: &ChurnArgs) -> anyhow::Result<()> {
    let result = churn(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "churn: {} connections in {:.1} s = {:.0}/s ({} closes first, {} threads), {} connect errors{}",
            result.connections,
            result.seconds,
            result.per_second,
            if result.closer == Closer::Server { "server" } else { "client" },
            result.threads,
            result.errors,
            result.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
    }
    Ok(())
}

pub fn churn(args: &ChurnArgs) -> anyhow::Result<ChurnResult> {
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be a number of connections per second");
    let listener = deep_backlog_listener(args.listen)?;
    let server = listener.local_addr()?;
    let listener = Arc::new(listener);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));

    let mut servers = Vec::new();
    for _ in 0..args.threads {
        let (listener, stop, closer) = (listener.clone(), stop.clone(), args.closer);
        servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else { continue };
                if closer == Closer::Client {
                    let mut buf = [0u8; 1];
                    let _ = conn.read(&mut buf);
                }
                drop(conn);
            }
        }));
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let per_thread_interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.threads as f64 / args.rate));
    let mut clients = Vec::new();
    for i in 0..args.threads {
        let (done, errors, first_error, closer) = (done.clone(), errors.clone(), first_error.clone(), args.closer);
        clients.push(std::thread::spawn(move || {
            // Spread the threads' schedules over one interval.
            let mut next = started + per_thread_interval.map_or(Duration::ZERO, |d| d * i as u32 / 4);
            while Instant::now() < deadline {
                if let Some(interval) = per_thread_interval {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += interval;
                }
                match TcpStream::connect(server) {
                    Ok(mut client) => {
                        if closer == Closer::Server {
                            let mut buf = [0u8; 1];
                            let _ = client.read(&mut buf);
                        }
                        drop(client);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("not poisoned").get_or_insert_with(|| e.to_string());
                        // Do not spin on an exhausted port range.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }));
    }
    for c in clients {
        let _ = c.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // Wake the acceptors blocked in accept().
    for _ in 0..args.threads {
        let _ = TcpStream::connect(server);
    }
    for s in servers {
        let _ = s.join();
    }
    let connections = done.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("not poisoned").clone();
    Ok(ChurnResult {
        connections,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        seconds,
        per_second: connections as f64 / seconds,
        closer: args.closer,
        threads: args.threads,
    })
}

/// A listener with a deep backlog: the default of std's (128) drops SYNs under churn.
fn deep_backlog_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd as _;
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let (storage, len) = sockaddr(addr);
        anyhow::ensure!(
            libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) == 0,
            "bind {addr}: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(libc::listen(fd, 4096) == 0, "listen: {}", std::io::Error::last_os_error());
        Ok(listener)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the variants below fit inside it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
