//! twtrace kernel programs. One module per probe family; this file holds what they share:
//! the configuration global, the ring buffer, the loss counters and the record header.
#![no_std]
#![no_main]

mod drops;
mod portsearch;
mod state;
mod timewait;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id},
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use twtrace_common::{
    AF_INET, AF_INET6, COUNTER_SLOTS, Config, Counter, EventHeader, EventKind, Flow, SCHEMA_VERSION, roles,
};

/// Written by userspace before load; never written here. Read it only through [`config`].
#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

/// Default size; userspace resizes it before load (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// The families each shared tracepoint hook serves (`roles`), written by userspace after
/// attaching. 0 until then: the programs report nothing.
#[map]
static ROLES: Array<u32> = Array::with_max_entries(roles::SHARED_HOOKS, 0);

/// The roles of shared hook `hook` (a `roles::*_HOOK` index). An array lookup the verifier
/// inlines: a few instructions, no helper call.
#[inline(always)]
fn roles_of(hook: u32) -> u32 {
    ROLES.get(hook).copied().unwrap_or(0)
}

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The 4-tuple of the last TIME_WAIT birth reported on this CPU. `tcp_time_wait()` arms the
/// TIME_WAIT timer and then moves the full socket to CLOSE (`tcp_done()`), back to back on the
/// same CPU (5.10 to 6.18), so the state family finds the birth here and leaves that → CLOSE
/// out: the birth record stands for it, one ring-buffer record fewer per connection. A birth
/// that migrated in between (process context, preemptible kernel) only costs a redundant
/// record.
#[map]
static LAST_BIRTH: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

/// Remembers a reported TIME_WAIT birth for [`take_birth_of`].
#[inline(always)]
fn note_birth(flow: &Flow) {
    if let Some(last) = LAST_BIRTH.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; programs do not nest on a CPU for these hooks' contexts.
        unsafe { *last = *flow };
    }
}

/// Whether `flow` is the last TIME_WAIT birth reported on this CPU (then forgotten).
#[inline(always)]
fn take_birth_of(flow: &Flow) -> bool {
    let Some(last) = LAST_BIRTH.get_ptr_mut(0) else { return false };
    // Compared as words: a derived `==` on byte arrays may become a memcmp call, which BPF
    // does not have.
    const WORDS: usize = core::mem::size_of::<Flow>() / 8;
    // SAFETY: both are 8-byte aligned `Flow`s (40 bytes: 5 words).
    let (a, b) = unsafe { (&*last.cast::<[u64; WORDS]>(), &*(flow as *const Flow).cast::<[u64; WORDS]>()) };
    let mut same = true;
    for i in 0..WORDS {
        same &= a[i] == b[i];
    }
    if same {
        // SAFETY: as above; family 0 matches no real flow.
        unsafe { (*last).family = 0 };
    }
    same
}

/// GPL-compatible, as the GPL-only helpers (probe_read_kernel, ringbuf) require.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The configuration as userspace set it. The volatile read keeps the compiler from folding in
/// the compile-time default.
#[inline(always)]
fn config() -> &'static Config {
    // SAFETY: CONFIG is a plain static; the volatile read of its address only defeats constant
    // propagation, the data itself is never written after load.
    unsafe { &*core::ptr::read_volatile(&&raw const CONFIG) }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

/// Reserves a record of type `T` or counts it as lost. Loss is never silent.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(Counter::Lost);
    }
    entry
}

/// Submits without a wake-up unless the buffer is filling up; userspace also drains on a timer.
#[inline(always)]
fn submit<T>(entry: RingBufEntry<T>) {
    let wake = EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= u64::from(config().wakeup_bytes);
    entry.submit(if wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP } as u64);
}

/// The header with the running task (pid, cgroup, command): for records made in the context
/// of the process that acted (connect(), close()).
#[inline(always)]
fn header(kind: EventKind) -> EventHeader {
    EventHeader {
        pid_tgid: bpf_get_current_pid_tgid(),
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        ..light_header(kind)
    }
}

/// The header without the running task, for records made in softirq or timer context
/// (TIME_WAIT timers, packet drops, most state changes), where the task is unrelated: it saves
/// three helper calls on paths that run for every connection.
#[inline(always)]
fn light_header(kind: EventKind) -> EventHeader {
    EventHeader {
        kind: kind as u16,
        version: SCHEMA_VERSION,
        _pad0: 0,
        // SAFETY: helpers without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: 0,
        cgroup_id: 0,
        comm: [0; 16],
    }
}

/// Reads a `T` at `base + offset`, or `T::default()` when the offset is unknown on this kernel
/// or the read faults.
#[inline(always)]
fn read_at<T: Copy + Default>(base: *const u8, offset: u32) -> T {
    if offset == twtrace_common::config::OFFSET_UNKNOWN {
        return T::default();
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address; a fault returns an error.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .unwrap_or_default()
}

/// How a program reads kernel memory: [`Probed`] or [`Direct`]. Handlers shared by several
/// program types take it as a type parameter, so each program gets the cheapest reads its
/// type allows.
pub(crate) trait KernelRead {
    /// A `T` at `base + offset`, or `T::default()` when the offset is unknown on this kernel
    /// or the read faults.
    fn at<T: Copy + Default>(base: *const u8, offset: u32) -> T;

    /// Whether plain loads work (the pointer is BTF-typed); otherwise each read is a helper
    /// call, and copying a socket's first bytes at once is cheaper ([`Snapshot`]).
    const PLAIN_LOADS: bool;
}

/// `bpf_probe_read_kernel`, a helper call per read: for raw tracepoints and kprobes, whose
/// arguments are plain numbers to the verifier, and for pointers computed from others.
pub(crate) struct Probed;

impl KernelRead for Probed {
    const PLAIN_LOADS: bool = false;

    #[inline(always)]
    fn at<T: Copy + Default>(base: *const u8, offset: u32) -> T {
        read_at(base, offset)
    }
}

/// Plain loads through a pointer whose BTF type the verifier knows: `tp_btf` arguments and
/// pointer members loaded through them. No helper call (measured on 6.18: a probe read costs
/// about as much as running a trivial program). The verifier checks every load against the
/// type at load time, which it can because the offsets come from CONFIG, a frozen read-only
/// map whose values it treats as constants; the JIT turns a faulting load into 0. A load the
/// type does not allow (a field beyond the pointed-to struct, part of a bitfield) fails the
/// program's load, and the loader falls back to the raw tracepoint variant.
pub(crate) struct Direct;

impl KernelRead for Direct {
    const PLAIN_LOADS: bool = true;

    #[inline(always)]
    fn at<T: Copy + Default>(base: *const u8, offset: u32) -> T {
        if offset == twtrace_common::config::OFFSET_UNKNOWN {
            return T::default();
        }
        // SAFETY: checked by the verifier as described above; faults read as 0.
        unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
    }
}

/// Where a handler reads a socket's fields from: the socket itself ([`Typed`]) or a copy of
/// its first bytes ([`Snapshot`]).
pub(crate) trait Fields {
    /// How pointers found in the socket (`skc_net`) are followed.
    type Deref: KernelRead;
    fn field<T: Copy + Default>(&self, offset: u32) -> T;
}

/// The socket's fields read in place with `R`.
pub(crate) struct Typed<R> {
    sk: *const u8,
    reader: core::marker::PhantomData<R>,
}

impl<R> Typed<R> {
    #[inline(always)]
    pub(crate) fn new(sk: *const u8) -> Self {
        Self { sk, reader: core::marker::PhantomData }
    }
}

impl<R: KernelRead> Fields for Typed<R> {
    type Deref = R;

    #[inline(always)]
    fn field<T: Copy + Default>(&self, offset: u32) -> T {
        R::at(self.sk, offset)
    }
}

/// Bytes copied by [`Snapshot`]: `sock_common` up to the end of `skc_v6_rcv_saddr` (88 on
/// 5.10 to 6.18); `tw_substate` (140) is read on its own. Going to 160 bytes to cover it too
/// pushed the programs past the verifier's 512-byte combined stack on 5.10 and 6.1 (544).
/// 8-byte words: the verifier wants stack loads aligned.
const SNAPSHOT_WORDS: usize = 11;
const SNAPSHOT_BYTES: usize = SNAPSHOT_WORDS * 8;

/// One `bpf_probe_read_kernel` of a socket's first bytes instead of one per field, for a
/// socket the verifier cannot type (a TIME_WAIT socket found from its timer): a TIME_WAIT
/// birth reads seven fields from it. A field beyond the copy is probe-read on its own.
pub(crate) struct Snapshot {
    sk: *const u8,
    words: [u64; SNAPSHOT_WORDS],
}

impl Snapshot {
    #[inline(always)]
    pub(crate) fn take(sk: *const u8) -> Self {
        let mut snapshot = Self { sk, words: [0; SNAPSHOT_WORDS] };
        // SAFETY: the helper writes at most SNAPSHOT_BYTES into the array (and zeroes it if
        // the read faults).
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                snapshot.words.as_mut_ptr().cast(),
                SNAPSHOT_BYTES as u32,
                sk.cast(),
            );
        }
        snapshot
    }
}

impl Fields for Snapshot {
    type Deref = Probed;

    #[inline(always)]
    fn field<T: Copy + Default>(&self, offset: u32) -> T {
        // An unknown offset (u32::MAX) lies beyond the copy too: read_at answers the default.
        if offset as usize + core::mem::size_of::<T>() > SNAPSHOT_BYTES {
            return read_at(self.sk, offset);
        }
        // SAFETY: inside the array (checked above); unaligned reads are lowered to loads the
        // verifier accepts on the stack.
        unsafe { core::ptr::read_unaligned(self.words.as_ptr().cast::<u8>().add(offset as usize).cast::<T>()) }
    }
}

/// Whether the user's `--port` filter lets this flow through.
#[inline(always)]
fn port_wanted(flow: &Flow) -> bool {
    let port = config().port_filter;
    port == 0 || flow.sport == port || flow.dport == port
}

/// Whether the user's `--netns` filter lets this namespace through.
#[inline(always)]
fn netns_wanted(netns: u32) -> bool {
    let wanted = config().netns_filter;
    wanted == 0 || wanted == netns
}

/// Network namespace inode of a `struct net *`, 0 if unknown.
#[inline(always)]
fn net_inum<R: KernelRead>(net: u64) -> u32 {
    if net == 0 {
        return 0;
    }
    R::at(net as *const u8, config().offsets.net_ns_inum)
}

/// Network namespace inode of a socket (`sock_common.skc_net->ns.inum`), 0 if unknown.
#[inline(always)]
fn netns_of<R: KernelRead>(sk: *const u8) -> u32 {
    netns_in(&Typed::<R>::new(sk))
}

#[inline(always)]
fn netns_in<F: Fields>(sk: &F) -> u32 {
    net_inum::<F::Deref>(sk.field::<u64>(config().offsets.skc_net))
}

/// Writes the 4-tuple of a socket from its `sock_common` (full and TIME_WAIT sockets alike)
/// into `flow`, in place: records are filled directly in ring-buffer memory because the BPF
/// stack (512 bytes) cannot hold them and their parts at once.
#[inline(always)]
fn fill_flow<R: KernelRead>(flow: &mut Flow, sk: *const u8) {
    fill_flow_from(flow, &Typed::<R>::new(sk));
}

#[inline(always)]
fn fill_flow_from<F: Fields>(flow: &mut Flow, sk: &F) {
    let o = &config().offsets;
    let family: u16 = sk.field(o.skc_family);
    flow.family = family;
    flow.sport = sk.field(o.skc_num);
    flow.dport = u16::from_be(sk.field(o.skc_dport));
    flow._pad = 0;
    if family == AF_INET6 {
        flow.saddr = sk.field(o.skc_v6_rcv_saddr);
        flow.daddr = sk.field(o.skc_v6_daddr);
    } else {
        flow.saddr = [0; 16];
        flow.daddr = [0; 16];
        if family == AF_INET {
            let saddr: [u8; 4] = sk.field(o.skc_rcv_saddr);
            let daddr: [u8; 4] = sk.field(o.skc_daddr);
            flow.saddr[..4].copy_from_slice(&saddr);
            flow.daddr[..4].copy_from_slice(&daddr);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
