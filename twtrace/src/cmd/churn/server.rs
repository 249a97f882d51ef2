//! The server side of churn: acceptors that close each connection, first or after the
//! client's FIN.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
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
