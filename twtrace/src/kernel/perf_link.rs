//! The miss counts of this process's kprobes attached through BPF perf links: aya's entry
//! kprobes (5.15+ attach through `BPF_LINK_CREATE`), and kretprobes where tracefs refused
//! (`kernel::kprobe` attaches with an ioctl and reads its misses from `kprobe_profile`
//! instead: no link, so never counted twice).
//!
//! Kernel facts: since 6.7 `BPF_OBJ_GET_INFO_BY_FD` on a kprobe perf link reports the
//! kprobe's `nmissed` (3acf8ace68230e9558cf916847f1cc9f208abdf1 "bpf: Add missed value to
//! kprobe perf link info", also in some stable series): hits its handler did not run for, a kprobe hit inside another
//! kprobe's handler or a kretprobe without a free instance. That is the one loss a kprobe
//! program's own `recursion_misses` (also 6.7) does not count. Before 6.7 the field is not
//! written and reads 0, and before 6.6 a perf link reports no kind at all: those misses stay
//! unseen there (docs/kernels.md, known issues).

use std::os::fd::RawFd;

/// `BPF_OBJ_GET_INFO_BY_FD` (enum bpf_cmd, since 4.13).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_PERF_EVENT` (enum bpf_link_type, 5.15).
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
/// `BPF_PERF_EVENT_KPROBE` and `BPF_PERF_EVENT_KRETPROBE` (enum bpf_perf_event_type, 6.6).
const BPF_PERF_EVENT_KPROBE: u32 = 3;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;

/// `struct bpf_link_info` as far as its `perf_event.kprobe` member (uapi/linux/bpf.h, 6.7;
/// `cookie` added later: "bpf: Add cookie to perf_event bpf_link_info records"). The union
/// starts at 16 (its members are 8-byte aligned).
#[repr(C)]
#[derive(Default)]
struct KprobeLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _union_align: u32,
    perf_event_type: u32,
    _pad: u32,
    func_name: u64,
    name_len: u32,
    offset: u32,
    addr: u64,
    missed: u64,
    cookie: u64,
}
const _: () = assert!(std::mem::size_of::<KprobeLinkInfo>() == 64);
const _: () = assert!(std::mem::offset_of!(KprobeLinkInfo, missed) == 48);

/// `bpf_attr.info` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The link's kprobe info, if `fd` is a kprobe perf link the kernel describes (6.6+).
fn kprobe_info(fd: RawFd) -> Option<KprobeLinkInfo> {
    let mut info = KprobeLinkInfo::default();
    let attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<KprobeLinkInfo>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which lives across the
    // call; a buffer longer than the kernel's struct is accepted when its tail is zero (it is).
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw const attr, std::mem::size_of::<InfoAttr>())
    };
    let kprobe = matches!(info.perf_event_type, BPF_PERF_EVENT_KPROBE | BPF_PERF_EVENT_KRETPROBE);
    (rc == 0 && info.link_type == BPF_LINK_TYPE_PERF_EVENT && kprobe).then_some(info)
}

/// This process's descriptors that are kprobe perf links: taken once every probe is
/// attached (the links live as long as the programs, so the numbers stay theirs).
pub fn kprobe_links() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf_link"))
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|fd| kprobe_info(*fd).is_some())
        .collect()
}

/// The kprobes' misses over `links` (0 before 6.7, which does not report them).
pub fn missed(links: &[RawFd]) -> u64 {
    links.iter().filter_map(|fd| kprobe_info(*fd)).map(|i| i.missed).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_that_is_no_link_is_not_taken_for_one() {
        // stdin/out/err, or a file: the kernel refuses (EINVAL/EBADF) or it is no kprobe link.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        use std::os::fd::AsRawFd as _;
        assert!(kprobe_info(file.as_raw_fd()).is_none());
        assert!(kprobe_links().iter().all(|fd| *fd != file.as_raw_fd()));
        assert_eq!(missed(&[file.as_raw_fd(), -1]), 0);
    }
}
