//! The flight recorder's control socket: how `twtrace mark TEXT` reaches the running recorder.
//!
//! ```text
//! DIR/twtrace.sock     unix stream socket, mode 0600, in DIR (0700 when twtrace made it)
//! client → recorder    "MARK <text>\n"            (at most MAX_REQUEST bytes)
//! recorder → client    "OK <RFC 3339 time>\n"     the mark is in the stream, its chunk sealed
//!                      "ERR <why>\n"              it is not (recording stopped, bad text)
//! ```
//!
//! Why a socket rather than a file the recorder polls or a signal: the client learns whether
//! the mark was recorded (and exits non-zero if not, or if no recorder runs), and the author
//! comes from the kernel (`SO_PEERCRED`), not from what the client claims. Only the
//! recorder's user (or root) can connect: the socket is 0600.
//!
//! Invariants: the recorder never blocks on a client. Connections are non-blocking, read a
//! little at each batch, and dropped after [`CLIENT_DEADLINE`] or beyond [`MAX_PENDING`]; a
//! client that sends nothing costs nothing but a file descriptor for that long.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::{
            fs::{FileTypeExt as _, PermissionsExt as _},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The socket's name inside the recording directory.
pub const SOCKET_NAME: &str = "twtrace.sock";
/// Longest request a recorder reads (the text is cut to `MarkEvent::MAX_TEXT` anyway).
const MAX_REQUEST: usize = 4096;
/// Clients connected at once; more are told to retry.
const MAX_PENDING: usize = 16;
/// A client has this long to send its request.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long `twtrace mark` waits for the answer (the recorder reads requests at every batch,
/// at least every 50 ms, unless the disk holds it up).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(
        "no flight recorder runs on {0} (no control socket there): start `twtrace record --record-dir DIR` or `twtrace serve --record-dir DIR`"
    )]
    NoRecorder(PathBuf),
    #[error("the flight recorder of {0} is not running (its control socket is left from an earlier run)")]
    Stale(PathBuf),
    #[error("{0}: permission denied (marks are made by the recorder's user, or root)")]
    Denied(PathBuf),
    #[error("the recorder did not answer within {}s: the mark may not have been recorded", ANSWER_TIMEOUT.as_secs())]
    NoAnswer,
    #[error("the recorder refused the mark: {0}")]
    Refused(String),
    #[error("the mark's text is empty (after removing control characters)")]
    EmptyText,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Sends a mark to the recorder writing `dir`; returns the time it was recorded at (RFC 3339).
pub fn send_mark(dir: &Path, text: &str) -> Result<String, MarkError> {
    let text = crate::event::MarkEvent::sanitize(text).ok_or(MarkError::EmptyText)?;
    let path = dir.join(SOCKET_NAME);
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => MarkError::NoRecorder(dir.to_owned()),
        ErrorKind::ConnectionRefused => MarkError::Stale(dir.to_owned()),
        ErrorKind::PermissionDenied => MarkError::Denied(path.clone()),
        _ => MarkError::Io(e),
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(format!("MARK {text}\n").as_bytes())?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(MarkError::NoAnswer),
        Err(e) => return Err(e.into()),
    }
    let answer = String::from_utf8_lossy(&answer);
    let answer = answer.trim_end();
    match answer.split_once(' ') {
        Some(("OK", at)) => Ok(at.to_owned()),
        Some(("ERR", why)) => Err(MarkError::Refused(why.to_owned())),
        _ if answer.is_empty() => Err(MarkError::NoAnswer),
        _ => Err(MarkError::Refused(format!("unexpected answer {answer:?}"))),
    }
}

/// A request read from a client, waiting for its answer.
pub struct Request {
    pub text: String,
    /// The client's credentials, from the kernel.
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    stream: UnixStream,
}

impl Request {
    /// Tells the client how it went (`Ok(time)` or `Err(why)`); a client gone meanwhile is
    /// no error.
    pub fn answer(mut self, outcome: Result<String, String>) {
        let line = match outcome {
            Ok(at) => format!("OK {at}\n"),
            Err(why) => format!("ERR {}\n", why.replace('\n', " ")),
        };
        let _ = self.stream.write_all(line.as_bytes());
    }
}

struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

/// The listening side, owned by the flight recorder and polled at every batch.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    pending: Vec<Pending>,
}

impl Control {
    /// Listens on `dir/twtrace.sock`, replacing a socket left by a recorder that is gone.
    /// `Ok(None)`: another recorder listens there (it gets the marks; this one records without).
    pub fn bind(dir: &Path) -> std::io::Result<Option<Self>> {
        let path = dir.join(SOCKET_NAME);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                if UnixStream::connect(&path).is_ok() {
                    return Ok(None);
                }
                // Only ever replace a socket: a file of that name is someone else's.
                if !std::fs::symlink_metadata(&path)?.file_type().is_socket() {
                    return Err(std::io::Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{} is not a socket", path.display()),
                    ));
                }
                std::fs::remove_file(&path)?;
                UnixListener::bind(&path)?
            }
            Err(e) => return Err(e),
        };
        // bind() honours the umask; the directory (0700) already keeps others out, this
        // keeps them out of a directory someone made wider.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Some(Self { listener, path, pending: Vec::new() }))
    }

    /// The requests complete so far; never blocks. Malformed ones are answered here.
    pub fn poll(&mut self) -> Vec<Request> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() >= MAX_PENDING || stream.set_nonblocking(true).is_err() {
                        let _ = (&stream).write_all(b"ERR busy: try again\n");
                        continue;
                    }
                    self.pending.push(Pending { stream, buf: Vec::new(), since: Instant::now() });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("control socket: {e}");
                    break;
                }
            }
        }
        let mut ready = Vec::new();
        let mut still = Vec::new();
        for mut p in self.pending.drain(..) {
            let mut chunk = [0u8; 1024];
            let closed = loop {
                match p.stream.read(&mut chunk) {
                    Ok(0) => break true,
                    Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
                if p.buf.len() > MAX_REQUEST || p.buf.contains(&b'\n') {
                    break false;
                }
            };
            match parse_request(&p.buf) {
                Parsed::Mark(text) => {
                    let (uid, pid) = peer_credentials(&p.stream);
                    ready.push(Request { text, uid, pid, stream: p.stream });
                }
                Parsed::Bad(why) => {
                    let _ = p.stream.write_all(format!("ERR {why}\n").as_bytes());
                }
                Parsed::Incomplete if closed || p.since.elapsed() > CLIENT_DEADLINE => {}
                Parsed::Incomplete => still.push(p),
            }
        }
        self.pending = still;
        ready
    }
}

impl Drop for Control {
    /// The socket goes with its recorder, so `twtrace mark` says at once that none runs.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Incomplete,
    Mark(String),
    Bad(String),
}

/// One request line: `MARK <text>`.
fn parse_request(buf: &[u8]) -> Parsed {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_REQUEST {
            Parsed::Bad(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else { return Parsed::Bad("request is not UTF-8".into()) };
    match line.strip_prefix("MARK ") {
        Some(text) => match crate::event::MarkEvent::sanitize(text) {
            Some(text) => Parsed::Mark(text),
            None => Parsed::Bad("empty mark".into()),
        },
        None => Parsed::Bad("unknown request (expected `MARK <text>`)".into()),
    }
}

/// The connecting process's uid and pid, as the kernel recorded them at connect().
fn peer_credentials(stream: &UnixStream) -> (Option<u32>, Option<u32>) {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket, and a buffer of the size given.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    if rc != 0 {
        return (None, None);
    }
    (Some(cred.uid), u32::try_from(cred.pid).ok().filter(|&p| p != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_sanitised_line() {
        assert_eq!(parse_request(b"MARK deploy"), Parsed::Incomplete);
        assert_eq!(parse_request(b"MARK deploy v2\n"), Parsed::Mark("deploy v2".into()));
        assert_eq!(parse_request(b"MARK a\x1b[2Jb\n"), Parsed::Mark("a [2Jb".into()));
        assert!(matches!(parse_request(b"MARK  \t\n"), Parsed::Bad(_)));
        assert!(matches!(parse_request(b"DELETE everything\n"), Parsed::Bad(_)));
        assert!(matches!(parse_request(b"MARK \xff\n"), Parsed::Bad(_)));
        assert!(matches!(parse_request(&[b'x'; MAX_REQUEST + 1]), Parsed::Bad(_)));
    }

    #[test]
    fn a_mark_reaches_the_listener_with_the_kernels_credentials_and_gets_its_answer() {
        let dir = std::env::temp_dir().join(format!("twtrace-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(send_mark(&dir, "x"), Err(MarkError::NoRecorder(_))));
        let mut control = Control::bind(&dir).unwrap().expect("nobody else listens");
        let mode = std::fs::metadata(dir.join(SOCKET_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second recorder on the same directory leaves the socket to the first.
        assert!(Control::bind(&dir).unwrap().is_none());
        let client = {
            let dir = dir.clone();
            std::thread::spawn(move || send_mark(&dir, "deploy\nv2"))
        };
        let request = loop {
            if let Some(r) = control.poll().pop() {
                break r;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(request.text, "deploy v2");
        // SAFETY: plain getters.
        assert_eq!(request.uid, Some(unsafe { libc::getuid() }));
        assert_eq!(request.pid, Some(std::process::id()));
        request.answer(Ok("2026-11-27T02:50:00Z".into()));
        assert_eq!(client.join().unwrap().unwrap(), "2026-11-27T02:50:00Z");
        drop(control);
        assert!(!dir.join(SOCKET_NAME).exists(), "the socket goes with its recorder");
        // A socket left by a recorder killed with -9 is replaced, and named stale meanwhile.
        let stale = UnixListener::bind(dir.join(SOCKET_NAME)).unwrap();
        drop(stale);
        assert!(matches!(send_mark(&dir, "x"), Err(MarkError::Stale(_))));
        assert!(Control::bind(&dir).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
