//! Records as the kernel programs write them, for the unit tests of more than one family's
//! decoder. Apart from the families so that a family's tests need no other family.

use twtrace_common::state::StateEvent as RawState;

/// A state record as the programs write it, for the decoder's tests. `task` (`pid_tgid`,
/// command) is what the full header names at → SYN_SENT and → FIN_WAIT1; `None` gives the
/// light header of the softirq transitions.
pub(crate) fn raw_record(
    ts_ns: u64,
    sk_addr: u64,
    netns: u32,
    flow: twtrace_common::Flow,
    (old_state, new_state): (u8, u8),
    task: Option<(u64, &[u8])>,
) -> RawState {
    let mut header = twtrace_common::EventHeader {
        kind: twtrace_common::EventKind::State as u16,
        version: twtrace_common::SCHEMA_VERSION,
        ts_ns,
        ..Default::default()
    };
    if let Some((pid_tgid, comm)) = task {
        header.pid_tgid = pid_tgid;
        header.cgroup_id = 9;
        header.comm[..comm.len()].copy_from_slice(comm);
    }
    RawState { header, sk_addr, netns, old_state, new_state, _pad: [0; 2], flow }
}
