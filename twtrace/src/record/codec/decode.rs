//! Reading a chunk back into events; a record that does not parse ends the chunk with an error
//! that says where.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::wire::{
    COUNTERS, DEF_IPV4, DEF_IPV6, DEF_NAME, DEF_NETNS, DEF_PROCESS, DEF_SK, DROP, DROP_SENT, LOST, MARK, MAX_NAME,
    NAMESPACE, NAMESPACE_LIVE, NAMESPACE_SETTINGS, SEARCH, SEARCH_APPROXIMATE, SEARCH_BIND, SEARCH_CANDIDATES,
    SEARCH_LOCAL, SEARCH_REMOTE, SKIPPED_RUNS_COUNTER, SOCKET, SOCKET_NS, STATE, SUBSTATE_MASK, TW_BIRTH, TW_DEATH,
    TW_REARM, timestamps_of, unzigzag,
};
use crate::{
    event::ExistingSocket,
    event::{
        DeathReason, DropEvent, Event, LostEvent, MarkEvent, NamespaceDescription, NamespaceEvent, NetstatEvent,
        PortSearchEvent, Process, SearchOp, SkippedEvent, SocketFlow, StateEvent, Sysctls, TimeWaitChange,
        TimeWaitEvent, TimeWaitSubstate,
    },
};

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
                            6 => DeathReason::Aborted,
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
