//! Writing a chunk: each event as a record, each repeated value defined once and referred to
//! after.

use foldhash::{HashMap, HashMapExt};
use std::{
    hash::Hash,
    net::{IpAddr, SocketAddr},
};

use super::wire::{
    COUNTERS, DEF_IPV4, DEF_IPV6, DEF_NAME, DEF_NETNS, DEF_PROCESS, DEF_SK, DROP, DROP_SENT, LOST, MARK, MAX_NAME,
    NAMESPACE, NAMESPACE_LIVE, NAMESPACE_SETTINGS, SEARCH, SEARCH_APPROXIMATE, SEARCH_BIND, SEARCH_CANDIDATES,
    SEARCH_LOCAL, SEARCH_REMOTE, SKIPPED_RUNS_COUNTER, SOCKET_NS, STATE, TW_BIRTH, TW_DEATH, TW_REARM, put_varint,
    substate_byte, timestamps_bits, zigzag,
};
use crate::{
    event::ExistingSocket,
    event::{DeathReason, Event, MarkEvent, Process, SearchOp, SocketFlow, TimeWaitChange},
};

/// A table of values defined in this chunk, by reference number.
struct Interner<T> {
    ids: HashMap<T, u32>,
}

impl<T: Eq + Hash + Clone> Interner<T> {
    fn new() -> Self {
        Self { ids: HashMap::new() }
    }

    /// The reference of `value`, and whether it is new (and must be defined first).
    fn id(&mut self, value: &T) -> (u32, bool) {
        if let Some(&id) = self.ids.get(value) {
            return (id, false);
        }
        let id = self.ids.len() as u32 + 1;
        self.ids.insert(value.clone(), id);
        (id, true)
    }
}

/// Builds one chunk's bytes.
pub struct ChunkEncoder {
    buf: Vec<u8>,
    records: u32,
    base_ts: Option<u64>,
    prev_ts: u64,
    prev_tw: u64,
    ips: Interner<IpAddr>,
    processes: Interner<Process>,
    names: Interner<String>,
    netns: Interner<u32>,
    sks: Interner<u64>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(64 << 10),
            records: 0,
            base_ts: None,
            prev_ts: 0,
            prev_tw: 0,
            ips: Interner::new(),
            processes: Interner::new(),
            names: Interner::new(),
            netns: Interner::new(),
            sks: Interner::new(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    /// The first record's timestamp: what the chunk header carries.
    pub fn base_ts(&self) -> u64 {
        self.base_ts.unwrap_or(0)
    }

    /// The chunk's bytes, record count and base timestamp.
    pub fn into_parts(self) -> (Vec<u8>, u32, u64) {
        let base = self.base_ts();
        (self.buf, self.records, base)
    }

    pub fn socket(&mut self, socket: &ExistingSocket) {
        self.records += 1;
        let netns = self.netns_ref(socket.netns);
        self.define_flow_ips(Some(socket.flow));
        self.buf.push(SOCKET_NS);
        put_varint(&mut self.buf, netns.into());
        self.flow(Some(socket.flow));
        self.buf.push(socket.state);
        put_varint(&mut self.buf, socket.expires_ms);
    }

    pub fn event(&mut self, event: &Event) {
        self.records += 1;
        let ts = event.ts_ns();
        if self.base_ts.is_none() {
            self.base_ts = Some(ts);
            self.prev_ts = ts;
        }
        // Definitions come before the tag: a reader resolves references as it meets them.
        match event {
            Event::TimeWait(e) => {
                let netns = self.netns_ref(e.netns);
                let owner = self.process_ref(e.owner.as_ref());
                self.define_flow_ips(e.flow);
                let tag = match e.change {
                    TimeWaitChange::Birth { .. } => TW_BIRTH,
                    TimeWaitChange::Rearm { .. } => TW_REARM,
                    TimeWaitChange::Death { .. } => TW_DEATH,
                };
                self.tag_and_ts(tag, ts);
                put_varint(&mut self.buf, zigzag(e.tw_id.wrapping_sub(self.prev_tw) as i64));
                self.prev_tw = e.tw_id;
                put_varint(&mut self.buf, netns.into());
                self.flow(e.flow);
                put_varint(&mut self.buf, owner.into());
                match e.change {
                    TimeWaitChange::Birth { substate, timeout_ms, timestamps } => {
                        self.buf.push(substate_byte(substate) | timestamps_bits(timestamps));
                        put_varint(&mut self.buf, timeout_ms);
                    }
                    TimeWaitChange::Rearm { substate, timeout_ms } => {
                        self.buf.push(substate_byte(substate));
                        put_varint(&mut self.buf, timeout_ms);
                    }
                    TimeWaitChange::Death { reason, lifetime_ns } => {
                        self.buf.push(match reason {
                            DeathReason::Expired => 0,
                            DeathReason::Killed => 1,
                            DeathReason::Reused => 2,
                            DeathReason::Reset => 3,
                            DeathReason::Incoming => 4,
                            DeathReason::NamespaceExit => 5,
                            DeathReason::Aborted => 6,
                        });
                        put_varint(&mut self.buf, lifetime_ns);
                    }
                }
            }
            Event::State(e) => {
                let sk = self.sk_ref(e.sk_addr);
                let netns = self.netns_ref(e.netns);
                let task = self.process_ref(e.task.as_ref());
                self.define_flow_ips(e.flow);
                self.tag_and_ts(STATE, ts);
                put_varint(&mut self.buf, sk.into());
                put_varint(&mut self.buf, netns.into());
                self.buf.extend_from_slice(&[e.old_state, e.new_state]);
                self.flow(e.flow);
                put_varint(&mut self.buf, task.into());
            }
            Event::Drop(e) => {
                let reason = self.name_ref(&e.reason);
                let netns = self.netns_ref(e.netns);
                self.define_flow_ips(e.flow);
                self.tag_and_ts(if e.outgoing { DROP_SENT } else { DROP }, ts);
                put_varint(&mut self.buf, reason.into());
                put_varint(&mut self.buf, e.reason_code.into());
                put_varint(&mut self.buf, netns.into());
                self.flow(e.flow);
                self.buf.push(e.tcp_flags);
                self.buf.extend_from_slice(&e.seq.to_le_bytes());
                self.buf.extend_from_slice(&e.ack_seq.to_le_bytes());
            }
            Event::PortSearch(e) => {
                let netns = self.netns_ref(e.netns);
                let process = self.process_ref(e.process.as_ref());
                for addr in [e.remote, e.local].into_iter().flatten() {
                    self.define_ip(addr.ip());
                }
                self.tag_and_ts(SEARCH, ts);
                let mut bits = 0;
                if e.op == SearchOp::Bind {
                    bits |= SEARCH_BIND;
                }
                if e.approximate {
                    bits |= SEARCH_APPROXIMATE;
                }
                if e.candidates.is_some() {
                    bits |= SEARCH_CANDIDATES;
                }
                if e.remote.is_some() {
                    bits |= SEARCH_REMOTE;
                }
                if e.local.is_some() {
                    bits |= SEARCH_LOCAL;
                }
                self.buf.push(bits);
                put_varint(&mut self.buf, e.duration_ns);
                put_varint(&mut self.buf, e.errno.into());
                if let Some(c) = e.candidates {
                    put_varint(&mut self.buf, c.into());
                }
                put_varint(&mut self.buf, netns.into());
                for addr in [e.remote, e.local].into_iter().flatten() {
                    self.socket_addr(addr);
                }
                put_varint(&mut self.buf, process.into());
            }
            Event::Netstat(e) => {
                let netns = self.netns_ref(e.netns);
                let names: Vec<u32> = e.deltas.iter().map(|(name, _)| self.name_ref(name)).collect();
                self.counters(ts, netns, names.into_iter().zip(e.deltas.iter().map(|(_, d)| *d)));
            }
            Event::Skipped(e) => {
                let netns = self.netns_ref(0);
                let name = self.name_ref(SKIPPED_RUNS_COUNTER);
                self.counters(ts, netns, [(name, e.new as i64)].into_iter());
            }
            Event::Namespace(e) => {
                let ns = &e.namespace;
                let netns = self.netns_ref(ns.netns);
                let name = self.name_ref(&ns.name);
                self.tag_and_ts(NAMESPACE, ts);
                put_varint(&mut self.buf, netns.into());
                put_varint(&mut self.buf, name.into());
                let bits = if ns.live { NAMESPACE_LIVE } else { 0 }
                    | if ns.sysctls.is_some() { NAMESPACE_SETTINGS } else { 0 };
                self.buf.push(bits);
                if let Some(s) = &ns.sysctls {
                    put_varint(&mut self.buf, s.ip_local_port_range.0.into());
                    put_varint(&mut self.buf, s.ip_local_port_range.1.into());
                    for v in [s.tcp_max_tw_buckets, s.tcp_tw_reuse, s.tcp_timestamps, s.tcp_fin_timeout] {
                        put_varint(&mut self.buf, v.map_or(0, |v| v.saturating_add(1)));
                    }
                }
            }
            Event::Mark(e) => {
                self.tag_and_ts(MARK, ts);
                put_varint(&mut self.buf, e.unix_ns);
                put_varint(&mut self.buf, e.uid.map_or(0, |v| u64::from(v) + 1));
                put_varint(&mut self.buf, e.pid.map_or(0, |v| u64::from(v) + 1));
                // Bounded and whole characters whatever the caller built (marks are rare).
                let text = MarkEvent::sanitize(&e.text).unwrap_or_default();
                put_varint(&mut self.buf, text.len() as u64);
                self.buf.extend_from_slice(text.as_bytes());
            }
            Event::Lost(e) => {
                self.tag_and_ts(LOST, ts);
                put_varint(&mut self.buf, e.new);
                put_varint(&mut self.buf, e.total);
            }
        }
    }

    fn counters(&mut self, ts: u64, netns: u32, deltas: impl ExactSizeIterator<Item = (u32, i64)>) {
        self.tag_and_ts(COUNTERS, ts);
        put_varint(&mut self.buf, netns.into());
        put_varint(&mut self.buf, deltas.len() as u64);
        for (name, delta) in deltas {
            put_varint(&mut self.buf, name.into());
            put_varint(&mut self.buf, zigzag(delta));
        }
    }

    fn tag_and_ts(&mut self, tag: u8, ts: u64) {
        self.buf.push(tag);
        // Records from different CPUs arrive slightly out of order: the difference is signed.
        put_varint(&mut self.buf, zigzag(ts.wrapping_sub(self.prev_ts) as i64));
        self.prev_ts = ts;
    }

    fn define_ip(&mut self, ip: IpAddr) -> u32 {
        let (id, new) = self.ips.id(&ip);
        if new {
            match ip {
                IpAddr::V4(v4) => {
                    self.buf.push(DEF_IPV4);
                    self.buf.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    self.buf.push(DEF_IPV6);
                    self.buf.extend_from_slice(&v6.octets());
                }
            }
        }
        id
    }

    fn define_flow_ips(&mut self, flow: Option<SocketFlow>) {
        if let Some(f) = flow {
            self.define_ip(f.local.ip());
            self.define_ip(f.remote.ip());
        }
    }

    /// Writes a flow whose addresses are already defined.
    fn flow(&mut self, flow: Option<SocketFlow>) {
        match flow {
            None => self.buf.push(0),
            Some(f) => {
                self.socket_addr(f.local);
                self.socket_addr(f.remote);
            }
        }
    }

    fn socket_addr(&mut self, addr: SocketAddr) {
        let id = self.define_ip(addr.ip());
        put_varint(&mut self.buf, id.into());
        self.buf.extend_from_slice(&addr.port().to_be_bytes());
    }

    fn process_ref(&mut self, process: Option<&Process>) -> u32 {
        let Some(p) = process else { return 0 };
        let (id, new) = self.processes.id(p);
        if new {
            self.buf.push(DEF_PROCESS);
            put_varint(&mut self.buf, p.pid.into());
            put_varint(&mut self.buf, p.tid.into());
            put_varint(&mut self.buf, p.cgroup_id);
            let comm = &p.comm.as_bytes()[..p.comm.len().min(MAX_NAME)];
            put_varint(&mut self.buf, comm.len() as u64);
            self.buf.extend_from_slice(comm);
        }
        id
    }

    fn name_ref(&mut self, name: &str) -> u32 {
        let (id, new) = self.names.id(&name.to_owned());
        if new {
            self.buf.push(DEF_NAME);
            let bytes = &name.as_bytes()[..name.len().min(MAX_NAME)];
            put_varint(&mut self.buf, bytes.len() as u64);
            self.buf.extend_from_slice(bytes);
        }
        id
    }

    fn netns_ref(&mut self, netns: u32) -> u32 {
        let (id, new) = self.netns.id(&netns);
        if new {
            self.buf.push(DEF_NETNS);
            put_varint(&mut self.buf, netns.into());
        }
        id
    }

    fn sk_ref(&mut self, sk: u64) -> u32 {
        let (id, new) = self.sks.id(&sk);
        if new {
            self.buf.push(DEF_SK);
            self.buf.extend_from_slice(&sk.to_le_bytes());
        }
        id
    }
}
