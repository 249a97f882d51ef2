//! The server side of churn: acceptors that close each connection, first or after the
//! client's FIN.

use std::{
    net::TcpListener,
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    Closer,
    slices::{is_slice_end, read_until_eof},
};

/// One acceptor: accept and close (after the client's FIN when the client closes first)
/// until `done`.
pub(super) fn serve(listener: &TcpListener, done: &AtomicBool, closer: Closer) {
    while !done.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                if closer == Closer::Client {
                    // Bounded: the accepted socket inherits the listener's receive timeout.
                    read_until_eof(&mut conn, &|| done.load(Ordering::Relaxed));
                }
                drop(conn);
            }
            // A SLICE without a connection, or a signal.
            Err(e) if is_slice_end(&e) => {}
            // EMFILE and the like: keep serving, without spinning; EINVAL after shutdown().
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Waits until the acceptors have taken every connection from the accept queue, for at most
/// `limit`. Shutting down (or closing) a listener resets the connections still queued: a
/// client that closed first would lose its TIME_WAIT socket to the RST, and churn's count of
/// connections and the kernel's of TIME_WAIT sockets would part. The window is narrow (the
/// last connections of the run, before an acceptor wakes) and was not seen in a dozen unpaced
/// runs here, but an exact count must not depend on scheduling. The queue must look empty
/// twice, a little apart: the ACK that completes a handshake can still be in a softirq backlog.
pub(super) fn wait_until_accepted(listener: &TcpListener, limit: Duration) {
    let until = Instant::now() + limit;
    let mut empty_once = false;
    while Instant::now() < until {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; no wait.
        let queued = unsafe { libc::poll(&mut pfd, 1, 0) } != 0;
        if !queued && empty_once {
            return;
        }
        empty_once = !queued;
        std::thread::sleep(Duration::from_millis(if queued { 1 } else { 5 }));
    }
}
