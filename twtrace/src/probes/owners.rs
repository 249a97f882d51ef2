//! Carries each connection's owner to the records the kernel makes without one.
//!
//! The kernel programs name the running task only where a process acts on the socket:
//! connect() (→ SYN_SENT) and close()/shutdown() (→ FIN_WAIT1). Later changes of the same socket
//! run in softirq or timers (→ ESTABLISHED on the SYN-ACK, → CLOSE on the last ACK), where the
//! running task is whoever was interrupted, and the TIME_WAIT socket that replaces a closed one
//! is a different kernel object, born in softirq. So the owner is carried over here: by socket
//! address to its own later records, by namespace and 4-tuple to its TIME_WAIT birth.
//!
//! Doing this join in the kernel (an LRU map written at → FIN_WAIT1, read and emptied at the
//! birth) cost about 0.4 µs per connection on 6.18; here it is two hash-map operations.
//!
//! Invariant: the one ring buffer delivers records in the order they were reserved, and on
//! every kernel the acting record is reserved first: connect() and close() come before the
//! packets they cause, and `tcp_time_wait()` arms the TIME_WAIT timer before `tcp_done()` moves
//! the full socket to CLOSE.

use foldhash::{HashMap, HashMapExt};
use twtrace_common::{EventHeader, Flow, state::StateEvent as RawState, state::tcp_state};

use crate::event::Process;

/// A task as the kernel reported it (32 bytes, no allocation: one per live client socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pid_tgid: u64,
    cgroup_id: u64,
    comm: [u8; 16],
}

impl Task {
    fn of(header: &EventHeader) -> Option<Self> {
        (header.pid_tgid != 0).then_some(Self {
            pid_tgid: header.pid_tgid,
            cgroup_id: header.cgroup_id,
            comm: header.comm,
        })
    }

    pub fn process(&self) -> Option<Process> {
        Process::from_kernel(self.pid_tgid, self.cgroup_id, &self.comm)
    }
}

/// Upper bound on either table. Entries leave at → CLOSE, so only lost records (counted and
/// shown) leave any behind; past the bound the table starts over rather than grow without end.
const MAX_ENTRIES: usize = 1 << 21;

#[derive(Default)]
pub struct Owners {
    /// Sockets a process acted on, by kernel address, until their → CLOSE.
    by_socket: HashMap<u64, Task>,
    /// Connections closed first by a process (→ FIN_WAIT1), with their socket's address, until
    /// their TIME_WAIT birth or their → CLOSE without one.
    closing: HashMap<(u32, Flow), (Task, u64)>,
    /// Times a table hit `MAX_ENTRIES` and started over.
    pub resets: u64,
}

impl Owners {
    pub fn new() -> Self {
        Self { by_socket: HashMap::new(), closing: HashMap::new(), resets: 0 }
    }

    /// The owner of a state record's socket: the task the record names, or the one carried
    /// over from the socket's earlier records. Call for every state record, in order.
    pub fn on_state(&mut self, raw: &RawState) -> Option<Task> {
        let task = match Task::of(&raw.header) {
            Some(task) => {
                if self.by_socket.len() >= MAX_ENTRIES {
                    self.by_socket.clear();
                    self.resets += 1;
                }
                self.by_socket.insert(raw.sk_addr, task);
                Some(task)
            }
            None => self.by_socket.get(&raw.sk_addr).copied(),
        };
        match raw.new_state {
            tcp_state::FIN_WAIT1 => {
                if let Some(task) = task {
                    if self.closing.len() >= MAX_ENTRIES {
                        self.closing.clear();
                        self.resets += 1;
                    }
                    self.closing.insert((raw.netns, raw.flow), (task, raw.sk_addr));
                }
            }
            tcp_state::CLOSE => {
                self.by_socket.remove(&raw.sk_addr);
                self.closing.remove(&(raw.netns, raw.flow));
            }
            _ => {}
        }
        task
    }

    /// Who closed the connection whose TIME_WAIT socket is born now (taken: one birth per
    /// close). The full socket ends with the birth: its → CLOSE is left out by the kernel when
    /// the birth stands for it.
    pub fn take_closer(&mut self, netns: u32, flow: &Flow) -> Option<Task> {
        let (task, sk_addr) = self.closing.remove(&(netns, *flow))?;
        self.by_socket.remove(&sk_addr);
        Some(task)
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.by_socket.len(), self.closing.len())
    }
}

#[cfg(test)]
mod tests {
    use twtrace_common::AF_INET;

    use super::*;

    const SK: u64 = 0xffff_8880_1234_5678;

    fn flow(sport: u16) -> Flow {
        let mut f = Flow { family: AF_INET, sport, dport: 8080, ..Flow::default() };
        f.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        f.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        f
    }

    fn state(sk: u64, old: u8, new: u8, pid: u32, sport: u16) -> RawState {
        let task = (pid != 0).then(|| (u64::from(pid) << 32 | u64::from(pid), &b"curl"[..]));
        super::super::fixtures::raw_record(0, sk, 4026531840, flow(sport), (old, new), task)
    }

    fn pid(task: Option<Task>) -> Option<u32> {
        task.and_then(|t| t.process()).map(|p| p.pid)
    }

    use tcp_state::{CLOSE, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, SYN_SENT};

    #[test]
    fn softirq_transitions_get_the_task_that_connected_and_closed() {
        let mut owners = Owners::new();
        assert_eq!(pid(owners.on_state(&state(SK, CLOSE, SYN_SENT, 42, 0))), Some(42));
        assert_eq!(pid(owners.on_state(&state(SK, SYN_SENT, ESTABLISHED, 0, 40000))), Some(42));
        // close() from another process that inherited the socket: it becomes the owner.
        assert_eq!(pid(owners.on_state(&state(SK, ESTABLISHED, FIN_WAIT1, 43, 40000))), Some(43));
        let closer = owners.take_closer(4026531840, &flow(40000));
        assert_eq!(pid(closer), Some(43));
        assert_eq!(owners.take_closer(4026531840, &flow(40000)), None, "one birth per close");
        assert_eq!(owners.len(), (0, 0), "the birth ends the full socket");
        // Its → CLOSE, if the kernel reports it, names no one: the socket was ended above.
        assert_eq!(owners.on_state(&state(SK, FIN_WAIT2, CLOSE, 0, 40000)), None);
        // The address is reused by a socket accepted in softirq: nothing is carried.
        assert_eq!(owners.on_state(&state(SK, CLOSE, ESTABLISHED, 0, 8080)), None);
    }

    #[test]
    fn a_close_without_time_wait_leaves_nothing_behind() {
        let mut owners = Owners::new();
        owners.on_state(&state(SK, ESTABLISHED, FIN_WAIT1, 7, 8080));
        assert_eq!(owners.len(), (1, 1));
        // Reset by the peer: no TIME_WAIT, straight to CLOSE.
        owners.on_state(&state(SK, FIN_WAIT1, CLOSE, 0, 8080));
        assert_eq!(owners.len(), (0, 0));
    }

    #[test]
    fn the_birth_key_includes_the_namespace() {
        let mut owners = Owners::new();
        owners.on_state(&state(SK, ESTABLISHED, FIN_WAIT1, 7, 40000));
        assert_eq!(owners.take_closer(1, &flow(40000)), None);
        assert_eq!(pid(owners.take_closer(4026531840, &flow(40000))), Some(7));
    }
}
