//! Kretprobes made through tracefs (`kprobe_events`), with room for as many concurrent calls
//! as the kernel allows and a miss count.
//!
//! Why not aya's kretprobe: aya creates it with `perf_event_open` on the kprobe PMU, which
//! takes no `maxactive`, so the kernel picks its default number of return instances: on
//! kernels built without CONFIG_PREEMPTION (Debian's 5.10, for one), one per possible CPU;
//! with it, max(10, 2 x CPUs) (kernel/kprobes.c `register_kretprobe`, 5.10 to 6.x). A call
//! that enters while every instance is taken is never seen returning. `__inet_hash_connect`
//! and `inet_csk_get_port` call `cond_resched()` once per candidate port, so on a host whose
//! ranges are nearly full (the case twtrace is for) more searches are under way at once than
//! there are CPUs: measured in a 2-CPU 5.10 guest, 13 of 20 connect() searches were reported.
//! `r<MAXACTIVE>:` in `kprobe_events` (4.12+) sets the number, up to the kernel's
//! `KRETPROBE_MAXACTIVE_MAX`. And `kprobe_profile` counts what the probe still misses, on
//! every kernel, where a perf-made probe's count is readable only from 6.7.
//!
//! Entry kprobes stay aya's: they have no instances to run out of, and each tracefs event
//! costs a registration (under emulation, most of a second).
//!
//! The event is attached the way perf attaches a BPF program to any trace event: a
//! `PERF_TYPE_TRACEPOINT` perf event on its id, then `PERF_EVENT_IOC_SET_BPF`.

use std::{
    fs::OpenOptions,
    io::Write as _,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// trace_kprobe.c `KRETPROBE_MAXACTIVE_MAX` (4.12 to 6.18): the most `r<N>:` accepts. Each
/// instance is a few dozen bytes, allocated when the probe is registered.
pub const MAXACTIVE: u32 = 4096;

/// The tracefs event group twtrace's probes live in; names carry the creating process's id.
const GROUP: &str = "twtrace";

#[derive(Debug, thiserror::Error)]
pub enum KprobeError {
    #[error("{0}")]
    NoTracefs(String),
    /// tracefs is there but has no `kprobe_events`: the kernel has no kprobes at all
    /// (CONFIG_KPROBES off, as on the development host).
    #[error("tracefs has no kprobe_events: this kernel has no kprobe events")]
    NoKprobeEvents,
    #[error("writing `{line}` to {path}: {source}")]
    Define { line: String, path: PathBuf, source: std::io::Error },
    #[error("reading the id of {0}: {1}")]
    Id(String, std::io::Error),
    #[error("{0} on the kprobe event: {1}")]
    Syscall(&'static str, std::io::Error),
}

/// A return probe on a kernel function that runs one BPF program. Dropping it detaches the
/// program and removes the event.
pub struct ReturnProbe {
    /// Closed before the event is removed: the kernel refuses to remove an event in use.
    perf: Option<OwnedFd>,
    tracefs: PathBuf,
    /// The event's name within [`GROUP`].
    name: String,
}

/// A distinct name for each probe this process makes.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// perf_event.h.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// The first published size of `perf_event_attr`: enough for a trace event.
const PERF_ATTR_SIZE_VER0: u32 = 64;
/// `_IO('$', 0)`, `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0); the bit fields are one u64.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

impl ReturnProbe {
    /// Defines `r<MAXACTIVE>:twtrace/<name> <function>` and runs `program`, a loaded
    /// kretprobe program, on every return.
    pub fn attach(program: BorrowedFd<'_>, function: &str) -> Result<Self, KprobeError> {
        let tracefs = tracefs()?;
        static STALE_REMOVED: std::sync::Once = std::sync::Once::new();
        STALE_REMOVED.call_once(|| remove_stale(&tracefs));
        let name =
            format!("twt_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), event_safe(function));
        write_events(&tracefs, &format!("r{MAXACTIVE}:{GROUP}/{name} {function}"))?;
        // From here on, dropping `probe` removes the event whatever fails next.
        let mut probe = Self { perf: None, tracefs, name };
        let id_path = probe.tracefs.join("events").join(GROUP).join(&probe.name).join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .and_then(|s| s.trim().parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
            .map_err(|e| KprobeError::Id(probe.name.clone(), e))?;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: PERF_ATTR_SIZE_VER0,
            config: id,
            sample_period: 1,
            wakeup_events: 1,
            ..Default::default()
        };
        // SAFETY: a valid attr of the size it states; pid -1 and cpu 0 as for any trace event
        // with a BPF program (the program runs on every CPU).
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, &attr as *const PerfEventAttr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
        };
        if fd < 0 {
            return Err(KprobeError::Syscall("perf_event_open", std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        let perf = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: ioctls on our own perf descriptor; SET_BPF takes the program's descriptor.
        if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_SET_BPF as _, program.as_raw_fd()) } != 0 {
            return Err(KprobeError::Syscall("PERF_EVENT_IOC_SET_BPF", std::io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0 {
            return Err(KprobeError::Syscall("PERF_EVENT_IOC_ENABLE", std::io::Error::last_os_error()));
        }
        probe.perf = Some(perf);
        Ok(probe)
    }

    /// Returns the kernel did not run the program for: `kprobe_profile`'s nmissed, with the
    /// calls that found no free instance since the 2021 fix (Debian's 5.10.262 has it: 328
    /// of 5,790 counted there). `None` if the profile cannot be read.
    pub fn missed(&self) -> Option<u64> {
        let profile = std::fs::read_to_string(self.tracefs.join("kprobe_profile")).ok()?;
        profile_missed(&profile, &self.name)
    }
}

impl Drop for ReturnProbe {
    fn drop(&mut self) {
        drop(self.perf.take());
        if let Err(e) = write_events(&self.tracefs, &format!("-:{GROUP}/{}", self.name)) {
            log::warn!("removing the kprobe event {GROUP}/{}: {e}", self.name);
        }
    }
}

/// Event names take letters, digits and `_` only (`foo.isra.0` is a valid symbol).
fn event_safe(function: &str) -> String {
    function.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn tracefs() -> Result<PathBuf, KprobeError> {
    super::ensure_tracefs().map_err(KprobeError::NoTracefs)?;
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("kprobe_events").exists())
        .ok_or(KprobeError::NoKprobeEvents)
}

fn write_events(tracefs: &Path, line: &str) -> Result<(), KprobeError> {
    let path = tracefs.join("kprobe_events");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|source| KprobeError::Define { line: line.to_owned(), path, source })
}

/// Removes the events of twtrace processes that are gone (killed before they could). One
/// still in use elsewhere (another twtrace, in another PID namespace) is refused by the
/// kernel (EBUSY) and stays.
fn remove_stale(tracefs: &Path) {
    let Ok(events) = std::fs::read_to_string(tracefs.join("kprobe_events")) else { return };
    for name in stale_names(&events, |pid| Path::new(&format!("/proc/{pid}")).exists()) {
        match write_events(tracefs, &format!("-:{GROUP}/{name}")) {
            Ok(()) => log::info!("removed the kprobe event {GROUP}/{name} of a twtrace that is gone"),
            Err(e) => log::debug!("{e}"),
        }
    }
}

/// The names in `kprobe_events` (lines like `r4096:twtrace/twt_812_0_f f`) of processes
/// `alive` says are gone.
fn stale_names(events: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    events
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let name = rest.split_whitespace().next()?.strip_prefix(GROUP)?.strip_prefix('/')?;
            let pid: u32 = name.strip_prefix("twt_")?.split('_').next()?.parse().ok()?;
            (!alive(pid)).then(|| name.to_owned())
        })
        .collect()
}

/// The nmissed column of `name`'s line in `kprobe_profile` (`  name  hits  nmissed`).
fn profile_missed(profile: &str, name: &str) -> Option<u64> {
    profile.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_processes_events_are_stale() {
        // As 5.10 and 6.18 list them; another tool's and a live twtrace's stay.
        let events = "r4096:twtrace/twt_812_0___inet_hash_connect __inet_hash_connect\n\
                      r4096:twtrace/twt_900_1_inet_csk_get_port inet_csk_get_port\n\
                      r:kprobes/aya_5_r_tcp_connect_0x0_0 tcp_connect\n\
                      p:twtrace/other do_sys_open\n";
        assert_eq!(stale_names(events, |pid| pid == 900), vec!["twt_812_0___inet_hash_connect".to_owned()]);
        assert!(stale_names("", |_| false).is_empty());
    }

    #[test]
    fn misses_are_read_from_the_profile_line_of_the_event() {
        let profile = "  twt_812_0___inet_hash_connect                        120               3\n\
                       \x20 twt_812_1_inet_csk_get_port                            4               0\n";
        assert_eq!(profile_missed(profile, "twt_812_0___inet_hash_connect"), Some(3));
        assert_eq!(profile_missed(profile, "twt_812_1_inet_csk_get_port"), Some(0));
        assert_eq!(profile_missed(profile, "twt_812_1"), None, "a prefix is not the event");
    }

    #[test]
    fn event_names_take_only_word_characters() {
        assert_eq!(event_safe("tcp_connect.isra.0"), "tcp_connect_isra_0");
    }

    /// The layout the kernel reads for PERF_ATTR_SIZE_VER0.
    #[test]
    fn the_attr_is_the_first_published_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), PERF_ATTR_SIZE_VER0 as usize);
    }
}
