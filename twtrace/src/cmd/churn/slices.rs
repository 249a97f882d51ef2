//! Blocking in slices: every wait of churn's threads returns after [`SLICE`] at most, so that
//! they look at the clock and the stop request again.

use std::{
    io::Read as _,
    net::TcpStream,
    time::{Duration, Instant},
};

/// How long any blocking call may run before its thread checks the clock and the stop request
/// again: the bound on how late churn ends.
pub const SLICE: Duration = Duration::from_millis(100);

/// Sleeps until `at` in slices; false when `give_up()` said to stop first.
pub(super) fn sleep_until(at: Instant, give_up: &dyn Fn() -> bool) -> bool {
    loop {
        if give_up() {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(SLICE));
    }
}

/// Reads until EOF, an error, or `give_up()` (checked after each receive timeout).
pub(super) fn read_until_eof(stream: &mut TcpStream, give_up: &dyn Fn() -> bool) {
    let mut buf = [0u8; 1];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_slice_end(&e) => {
                if give_up() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// A socket call that returned because its timeout slice passed (EAGAIN) or a signal came.
pub(super) fn is_slice_end(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
}
