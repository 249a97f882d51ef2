//! SIGINT and SIGTERM during churn: the first one requests a stop (churn then prints its
//! summary), a second one kills it.

use std::sync::atomic::{AtomicI32, Ordering};

/// Set by the SIGINT/SIGTERM handler to the signal's number.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: an atomic swap, signal(2), raise(3).
    if SIGNALLED.swap(signal, Ordering::SeqCst) != 0 {
        // A second signal: the user insists. Die by it as if churn had not caught it.
        // SAFETY: both are async-signal-safe.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Whether a stop was requested (cheap: read by every thread at every slice).
pub(super) fn stop_requested() -> bool {
    SIGNALLED.load(Ordering::Relaxed) != 0
}

/// SIGINT and SIGTERM handlers that request a stop, restored to what they were on drop.
pub(super) struct StopOnSignals {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl StopOnSignals {
    pub(super) fn install() -> std::io::Result<Self> {
        SIGNALLED.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: an all-zero sigaction is valid; the handler only touches an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                // SA_RESTART: calls without a timeout resume; socket calls with one (all of
                // churn's blocking calls) return EINTR instead, handled as a slice's end.
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                previous.push((signal, old));
            }
        }
        Ok(Self { previous })
    }

    /// The name of the signal that requested the stop, if one did.
    pub(super) fn received(&self) -> Option<String> {
        Some(SIGNALLED.load(Ordering::SeqCst)).filter(|&s| s != 0).map(signal_name)
    }
}

impl Drop for StopOnSignals {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the action saved by `install`.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}

fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}
