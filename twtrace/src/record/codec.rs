//! The bytes of one chunk: events as compact records, before compression.
//!
//! Every chunk decodes on its own, so a damaged chunk costs only itself. Repeated values
//! (addresses, processes, namespaces, socket addresses, names) are defined once per chunk,
//! inline before their first use, and referred to by a small number afterwards. Timestamps and
//! TIME_WAIT ids are stored as differences from the previous record. Integers are LEB128
//! varints; signed differences are zigzag-encoded.
//!
//! A record is a tag byte and its fields:
//!
//! | tag | record     | fields |
//! |-----|------------|--------|
//! | 1/2 | TW birth / re-arm | ts, tw_id, netns, flow, owner, substate u8, timeout_ms |
//! | 3   | TW death   | ts, tw_id, netns, flow, owner, reason u8, lifetime_ns |
//! | 4   | state      | ts, sk, netns, old u8, new u8, flow, task |
//! | 5   | drop       | ts, reason name, reason code, netns, flow, flags u8, seq u32, ack u32 |
//! | 6   | port search| ts, bits u8, duration_ns, errno, [candidates], netns, [remote], [local], process |
//! | 7   | counters   | ts, netns, n, n × (name, zigzag delta); skipped runs are a counter named `SkippedRuns` |
//! | 8   | lost       | ts, new, total |
//! | 9   | socket     | (initial picture only, format 1) flow, state u8, expires_ms |
//! | 10  | namespace  | ts, netns, name, bits u8 (1 live, 2 settings), [lo, hi, 4 × optional number] |
//! | 11  | socket     | (initial picture only, format 2) netns, flow, state u8, expires_ms |
//! | 12  | mark       | (format 3) ts, unix_ns, optional uid, optional pid, text (length, UTF-8) |
//! | 13  | drop, sent | (format 5) as 5, of a packet this host sent (a drop record is one received) |
//! | 0x80.. | definitions | IPv4 (4 bytes), IPv6 (16), process (pid, tid, cgroup, comm), name, netns, sk (u64) |
//!
//! A flow is (local address ref, local port u16, remote address ref, remote port u16), with
//! address ref 0 meaning "no flow". References count from 1; 0 is "none". An optional number
//! is a varint of the value plus one, 0 for "none".

use foldhash::{HashMap, HashMapExt};
use std::{
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::{
    event::ExistingSocket,
    event::{
        DeathReason, DropEvent, Event, LostEvent, MarkEvent, NamespaceDescription, NamespaceEvent, NetstatEvent,
        PortSearchEvent, Process, SearchOp, SkippedEvent, SocketFlow, StateEvent, Sysctls, TimeWaitChange,
        TimeWaitEvent, TimeWaitSubstate,
    },
};

const TW_BIRTH: u8 = 1;
const TW_REARM: u8 = 2;
const TW_DEATH: u8 = 3;
const STATE: u8 = 4;
const DROP: u8 = 5;
const SEARCH: u8 = 6;
const COUNTERS: u8 = 7;
const LOST: u8 = 8;
const SOCKET: u8 = 9;
const NAMESPACE: u8 = 10;
const SOCKET_NS: u8 = 11;
const MARK: u8 = 12;
const DROP_SENT: u8 = 13;
const DEF_IPV4: u8 = 0x80;
const DEF_IPV6: u8 = 0x81;
const DEF_PROCESS: u8 = 0x82;
const DEF_NAME: u8 = 0x83;
const DEF_NETNS: u8 = 0x84;
const DEF_SK: u8 = 0x85;

const SEARCH_BIND: u8 = 1;
const SEARCH_APPROXIMATE: u8 = 2;
const SEARCH_CANDIDATES: u8 = 4;
const SEARCH_REMOTE: u8 = 8;
const SEARCH_LOCAL: u8 = 16;

const NAMESPACE_LIVE: u8 = 1;
const NAMESPACE_SETTINGS: u8 = 2;

/// Skipped runs ([`Event::Skipped`]) are stored as a counter record of this name in namespace
/// 0, as the stream carried them before they had an event of their own: recordings of either
/// form read the same, and older readers still read new recordings.
const SKIPPED_RUNS_COUNTER: &str = "SkippedRuns";

/// Longest name (drop reason, counter) and command a reader accepts.
const MAX_NAME: usize = 256;

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

/// Why a chunk's records could not be read (its checksum matched: a bug or a format mismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record} at byte {offset} of the chunk: {what}")]
pub struct CodecError {
    pub record: u32,
    pub offset: usize,
    pub what: String,
}

/// What one chunk held.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub sockets: Vec<ExistingSocket>,
}

/// Reads one chunk's records. On an error, `out` keeps what came before it.
pub fn decode_chunk(bytes: &[u8], base_ts: u64, out: &mut Decoded) -> Result<(), CodecError> {
    let mut d = ChunkDecoder {
        input: bytes,
        pos: 0,
        record: 0,
        prev_ts: base_ts,
        prev_tw: 0,
        ips: Vec::new(),
        processes: Vec::new(),
        names: Vec::new(),
        netns: Vec::new(),
        sks: Vec::new(),
    };
    while d.pos < bytes.len() {
        d.record(out).map_err(|what| CodecError { record: d.record, offset: d.pos, what })?;
    }
    Ok(())
}

struct ChunkDecoder<'a> {
    input: &'a [u8],
    pos: usize,
    record: u32,
    prev_ts: u64,
    prev_tw: u64,
    ips: Vec<IpAddr>,
    processes: Vec<Process>,
    names: Vec<String>,
    netns: Vec<u32>,
    sks: Vec<u64>,
}

type Res<T> = Result<T, String>;

impl ChunkDecoder<'_> {
    // `byte` and `take` run for nearly every field: inlined, as the compiler did on its own
    // until the namespace record made `decode_chunk` larger. Without the hints, writing and
    // replaying the recording bench's 2.2M events took 8.98G instructions (callgrind) against
    // 8.76G before namespaces; with them 8.79G.
    #[inline]
    fn byte(&mut self) -> Res<u8> {
        let b = *self.input.get(self.pos).ok_or("cut short")?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Res<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len()).ok_or("cut short")?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Res<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err("varint overflows 64 bits".into());
                }
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn varint32(&mut self) -> Res<u32> {
        u32::try_from(self.varint()?).map_err(|_| "value does not fit 32 bits".into())
    }

    fn reference<'t, T>(table: &'t [T], id: u64, what: &str) -> Res<Option<&'t T>> {
        if id == 0 {
            return Ok(None);
        }
        usize::try_from(id - 1)
            .ok()
            .and_then(|i| table.get(i))
            .map(Some)
            .ok_or_else(|| format!("{what} reference {id} was never defined"))
    }

    fn ts(&mut self) -> Res<u64> {
        let ts = self.prev_ts.wrapping_add(unzigzag(self.varint()?) as u64);
        self.prev_ts = ts;
        Ok(ts)
    }

    fn netns(&mut self) -> Res<u32> {
        let id = self.varint()?;
        Ok(Self::reference(&self.netns, id, "namespace")?.copied().ok_or("namespace missing")?)
    }

    fn process(&mut self) -> Res<Option<Process>> {
        let id = self.varint()?;
        Ok(Self::reference(&self.processes, id, "process")?.cloned())
    }

    fn name(&mut self) -> Res<String> {
        let id = self.varint()?;
        Ok(Self::reference(&self.names, id, "name")?.cloned().ok_or("name missing")?)
    }

    fn socket_addr(&mut self) -> Res<Option<SocketAddr>> {
        let id = self.varint()?;
        let Some(&ip) = Self::reference(&self.ips, id, "address")? else { return Ok(None) };
        let port = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        Ok(Some(SocketAddr::new(ip, port)))
    }

    fn flow(&mut self) -> Res<Option<SocketFlow>> {
        let Some(local) = self.socket_addr()? else { return Ok(None) };
        let remote = self.socket_addr()?.ok_or("flow without a remote address")?;
        if local.is_ipv4() != remote.is_ipv4() {
            return Err("flow mixes IPv4 and IPv6".into());
        }
        Ok(Some(SocketFlow { local, remote }))
    }

    fn short_string(&mut self) -> Res<String> {
        let len = self.varint()? as usize;
        if len > MAX_NAME {
            return Err(format!("name of {len} bytes (at most {MAX_NAME})"));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "name is not UTF-8".into())
    }

    fn record(&mut self, out: &mut Decoded) -> Res<()> {
        let tag = self.byte()?;
        if tag >= 0x80 {
            return self.definition(tag);
        }
        self.record += 1;
        let event = match tag {
            TW_BIRTH | TW_REARM | TW_DEATH => {
                let ts_ns = self.ts()?;
                let tw_id = self.prev_tw.wrapping_add(unzigzag(self.varint()?) as u64);
                self.prev_tw = tw_id;
                let netns = self.netns()?;
                let flow = self.flow()?;
                let owner = self.process()?;
                let change = match tag {
                    TW_DEATH => {
                        let reason = match self.byte()? {
                            0 => DeathReason::Expired,
                            1 => DeathReason::Killed,
                            2 => DeathReason::Reused,
                            3 => DeathReason::Reset,
                            4 => DeathReason::Incoming,
                            5 => DeathReason::NamespaceExit,
                            other => return Err(format!("unknown death reason {other}")),
                        };
                        TimeWaitChange::Death { reason, lifetime_ns: self.varint()? }
                    }
                    _ => {
                        let byte = self.byte()?;
                        let substate = TimeWaitSubstate::from_kernel(byte & SUBSTATE_MASK);
                        let timeout_ms = self.varint()?;
                        if tag == TW_BIRTH {
                            TimeWaitChange::Birth { substate, timeout_ms, timestamps: timestamps_of(byte) }
                        } else {
                            TimeWaitChange::Rearm { substate, timeout_ms }
                        }
                    }
                };
                Event::TimeWait(TimeWaitEvent { ts_ns, tw_id, flow, netns, owner, change })
            }
            STATE => {
                let ts_ns = self.ts()?;
                let sk = self.varint()?;
                let sk_addr = *Self::reference(&self.sks, sk, "socket")?.ok_or("socket missing")?;
                let netns = self.netns()?;
                let [old_state, new_state] = self.take(2)?.try_into().expect("2 bytes");
                let flow = self.flow()?;
                let task = self.process()?;
                Event::State(StateEvent { ts_ns, sk_addr, netns, old_state, new_state, flow, task })
            }
            DROP | DROP_SENT => {
                let ts_ns = self.ts()?;
                let reason = self.name()?;
                let reason_code = self.varint32()?;
                let netns = self.netns()?;
                let flow = self.flow()?;
                let tcp_flags = self.byte()?;
                let seq = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                let ack_seq = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                let outgoing = tag == DROP_SENT;
                Event::Drop(DropEvent { ts_ns, reason, reason_code, netns, flow, tcp_flags, seq, ack_seq, outgoing })
            }
            SEARCH => {
                let ts_ns = self.ts()?;
                let bits = self.byte()?;
                let duration_ns = self.varint()?;
                let errno = self.varint32()?;
                let candidates = if bits & SEARCH_CANDIDATES != 0 { Some(self.varint32()?) } else { None };
                let netns = self.netns()?;
                let mut addr = |present: bool| -> Res<Option<SocketAddr>> {
                    if !present {
                        return Ok(None);
                    }
                    self.socket_addr()?.map(Some).ok_or_else(|| "port search address missing".into())
                };
                let remote = addr(bits & SEARCH_REMOTE != 0)?;
                let local = addr(bits & SEARCH_LOCAL != 0)?;
                let process = self.process()?;
                Event::PortSearch(PortSearchEvent {
                    ts_ns,
                    op: if bits & SEARCH_BIND != 0 { SearchOp::Bind } else { SearchOp::Connect },
                    duration_ns,
                    errno,
                    candidates,
                    approximate: bits & SEARCH_APPROXIMATE != 0,
                    netns,
                    remote,
                    local,
                    process,
                })
            }
            COUNTERS => {
                let ts_ns = self.ts()?;
                let netns = self.netns()?;
                let n = self.varint()?;
                // Each pair takes at least two bytes: a count beyond that is damage.
                if n > (self.input.len() - self.pos) as u64 / 2 {
                    return Err(format!("{n} counters cannot fit in the chunk"));
                }
                let mut deltas = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let name = self.name()?;
                    deltas.push((name, unzigzag(self.varint()?)));
                }
                match deltas.as_slice() {
                    [(name, new)] if name == SKIPPED_RUNS_COUNTER => {
                        Event::Skipped(SkippedEvent { ts_ns, new: (*new).max(0) as u64 })
                    }
                    _ => Event::Netstat(NetstatEvent { ts_ns, netns, deltas }),
                }
            }
            LOST => {
                let ts_ns = self.ts()?;
                Event::Lost(LostEvent { ts_ns, new: self.varint()?, total: self.varint()? })
            }
            SOCKET | SOCKET_NS => {
                // Format 1 did not say which namespace a socket was in.
                let netns = if tag == SOCKET_NS { self.netns()? } else { 0 };
                let flow = self.flow()?.ok_or("socket without a flow")?;
                let state = self.byte()?;
                out.sockets.push(ExistingSocket { netns, flow, state, expires_ms: self.varint()? });
                return Ok(());
            }
            NAMESPACE => {
                let ts_ns = self.ts()?;
                let netns = self.netns()?;
                let name = self.name()?;
                let bits = self.byte()?;
                let sysctls = if bits & NAMESPACE_SETTINGS != 0 {
                    let lo = u16::try_from(self.varint()?).map_err(|_| "port out of range")?;
                    let hi = u16::try_from(self.varint()?).map_err(|_| "port out of range")?;
                    let mut optional = || self.varint().map(|v| v.checked_sub(1));
                    Some(Sysctls {
                        ip_local_port_range: (lo, hi),
                        tcp_max_tw_buckets: optional()?,
                        tcp_tw_reuse: optional()?,
                        tcp_timestamps: optional()?,
                        tcp_fin_timeout: optional()?,
                    })
                } else {
                    None
                };
                let live = bits & NAMESPACE_LIVE != 0;
                Event::Namespace(NamespaceEvent {
                    ts_ns,
                    namespace: NamespaceDescription { netns, name, sysctls, live },
                })
            }
            MARK => {
                let ts_ns = self.ts()?;
                let unix_ns = self.varint()?;
                let mut optional = || -> Res<Option<u32>> {
                    let v = self.varint()?.checked_sub(1);
                    v.map(|v| u32::try_from(v).map_err(|_| "id out of range".into())).transpose()
                };
                let (uid, pid) = (optional()?, optional()?);
                // Sanitised again: a file may come from anywhere, and reports print the text.
                let text = MarkEvent::sanitize(&self.short_string()?).unwrap_or_else(|| "?".into());
                Event::Mark(MarkEvent { ts_ns, unix_ns, uid, pid, text })
            }
            other => return Err(format!("unknown record tag {other:#04x}")),
        };
        out.events.push(event);
        Ok(())
    }

    fn definition(&mut self, tag: u8) -> Res<()> {
        match tag {
            DEF_IPV4 => {
                let o: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                self.ips.push(Ipv4Addr::from(o).into());
            }
            DEF_IPV6 => {
                let o: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                self.ips.push(Ipv6Addr::from(o).into());
            }
            DEF_PROCESS => {
                let pid = self.varint32()?;
                let tid = self.varint32()?;
                let cgroup_id = self.varint()?;
                let comm = self.short_string()?;
                self.processes.push(Process { pid, tid, comm: comm.as_str().into(), cgroup_id });
            }
            DEF_NAME => {
                let name = self.short_string()?;
                self.names.push(name);
            }
            DEF_NETNS => {
                let netns = self.varint32()?;
                self.netns.push(netns);
            }
            DEF_SK => {
                let sk = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
                self.sks.push(sk);
            }
            other => return Err(format!("unknown definition tag {other:#04x}")),
        }
        Ok(())
    }
}

fn substate_byte(s: TimeWaitSubstate) -> u8 {
    match s {
        TimeWaitSubstate::FinWait2 => 5,
        TimeWaitSubstate::TimeWait => 6,
        TimeWaitSubstate::Other(v) => v & SUBSTATE_MASK,
    }
}

/// A birth's substate byte (format 4+): the kernel's TCP state in the low six bits (states end
/// at 12), whether the peer's timestamps were read in bit 7 and what they said in bit 6.
/// Format 3 wrote the state alone, so its births read as "not known".
const SUBSTATE_MASK: u8 = 0x3f;
const TS_KNOWN_BIT: u8 = 0x80;
const TS_SEEN_BIT: u8 = 0x40;

fn timestamps_bits(timestamps: Option<bool>) -> u8 {
    match timestamps {
        None => 0,
        Some(false) => TS_KNOWN_BIT,
        Some(true) => TS_KNOWN_BIT | TS_SEEN_BIT,
    }
}

fn timestamps_of(byte: u8) -> Option<bool> {
    (byte & TS_KNOWN_BIT != 0).then_some(byte & TS_SEEN_BIT != 0)
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}
