//! Filters on attribution and addresses, applied to the event stream in userspace. (`--netns`
//! and `--port` are applied in the kernel; these need fields the kernel only knows later, such
//! as the owner carried over to a TIME_WAIT socket.)

use std::net::IpAddr;

use crate::event::{Event, NamespaceDescription, Process, SocketFlow};

/// An address prefix, `10.0.0.0/8` or `2001:db8::/32` (a bare address means /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{s}`: not an IP address or CIDR prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?
            }
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen by an IPv6 socket is a v4-mapped address: match it as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    a[..full] == b[..full] && (rest == 0 || (a[full] ^ b[full]) & (0xff << (8 - rest)) == 0)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<u64>,
    pub addrs: Vec<Cidr>,
    /// Local or remote port (the TUI's filter; the command line's `--port` is in the kernel).
    pub ports: Vec<u16>,
    /// Namespace inodes (the TUI's filter; `--netns` is in the kernel).
    pub netns: Vec<u32>,
    /// Namespace names (`ip netns` name, container, pod): matched as namespaces are described,
    /// each adding its inode to `netns`.
    pub netns_names: Vec<String>,
}

impl Filter {
    /// The filter in command-line terms, e.g. `--pid 42 --addr 10.0.0.0/8` (empty: none).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.extend(self.comms.iter().map(|c| format!("--comm {c}")));
        parts.extend(self.cgroups.iter().map(|c| format!("--cgroup {c}")));
        parts.extend(self.addrs.iter().map(|a| format!("--addr {a}")));
        parts.extend(self.ports.iter().map(|p| format!("--port {p}")));
        parts.extend(self.netns.iter().map(|n| format!("--netns {n}")));
        parts.extend(self.netns_names.iter().map(|n| format!("--netns {n}")));
        parts.join(" ")
    }

    /// Takes note of a namespace's description: if its name is asked for, its inode is.
    pub fn learn(&mut self, namespace: &NamespaceDescription) {
        if self.netns_names.contains(&namespace.name) && !self.netns.contains(&namespace.netns) {
            self.netns.push(namespace.netns);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.addrs.is_empty()
            && self.ports.is_empty()
            && self.netns.is_empty()
            && self.netns_names.is_empty()
    }

    /// No namespace criterion, or `netns` is one asked for (by inode, or by a name learnt).
    fn wants_netns(&self, netns: u32) -> bool {
        (self.netns.is_empty() && self.netns_names.is_empty()) || self.netns.contains(&netns)
    }

    /// Every given criterion must hold (each may list alternatives). An event that lacks the
    /// field a criterion needs (a drop has no process) does not match it. Counter samples are
    /// namespace-wide, and loss and skipped runs twtrace's own: they always pass.
    pub fn matches(&self, event: &Event) -> bool {
        if self.is_empty() {
            return true;
        }
        let (process, flow, netns): (Option<&Process>, Option<SocketFlow>, u32) = match event {
            Event::TimeWait(e) => (e.owner.as_ref(), e.flow, e.netns),
            Event::State(e) => (e.task.as_ref(), e.flow, e.netns),
            Event::Drop(e) => (None, e.flow, e.netns),
            Event::PortSearch(e) => {
                let flow = e.remote.or(e.local).map(|a| SocketFlow { local: e.local.unwrap_or(a), remote: a });
                (e.process.as_ref(), flow, e.netns)
            }
            // A mark annotates the whole stream, whoever the filter is about.
            Event::Netstat(_) | Event::Lost(_) | Event::Skipped(_) | Event::Mark(_) => return true,
            Event::Namespace(e) => return self.wants_netns(e.namespace.netns),
        };
        if !self.wants_netns(netns) {
            return false;
        }
        if !self.ports.is_empty()
            && !flow.is_some_and(|f| self.ports.contains(&f.local.port()) || self.ports.contains(&f.remote.port()))
        {
            return false;
        }
        let process_ok = |pred: &dyn Fn(&Process) -> bool| process.is_some_and(pred);
        (self.pids.is_empty() || process_ok(&|p| self.pids.contains(&p.pid)))
            && (self.comms.is_empty() || process_ok(&|p| self.comms.iter().any(|c| c == p.comm.as_str())))
            && (self.cgroups.is_empty() || process_ok(&|p| self.cgroups.contains(&p.cgroup_id)))
            && (self.addrs.is_empty()
                || flow
                    .is_some_and(|f| self.addrs.iter().any(|c| c.contains(f.local.ip()) || c.contains(f.remote.ip()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DropEvent, TimeWaitChange, TimeWaitEvent, TimeWaitSubstate};

    fn tw(owner: Option<(u32, &str)>, remote: &str) -> Event {
        Event::TimeWait(TimeWaitEvent {
            ts_ns: 0,
            tw_id: 1,
            flow: Some(SocketFlow { local: "10.0.0.1:80".parse().unwrap(), remote: remote.parse().unwrap() }),
            netns: 1,
            owner: owner.map(|(pid, comm)| Process { pid, tid: pid, comm: comm.into(), cgroup_id: 7 }),
            change: TimeWaitChange::Birth {
                substate: TimeWaitSubstate::TimeWait,
                timeout_ms: 60_000,
                timestamps: None,
            },
        })
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let net: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains("192.168.7.9".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.168.1.1".parse().unwrap()), "v4-mapped");
        let odd: Cidr = "10.0.0.0/9".parse().unwrap();
        assert!(odd.contains("10.127.255.255".parse().unwrap()));
        assert!(!odd.contains("10.128.0.0".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix, 32);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn criteria_combine_and_need_their_field() {
        let f = Filter { pids: vec![42], addrs: vec!["203.0.113.0/24".parse().unwrap()], ..Filter::default() };
        assert!(f.matches(&tw(Some((42, "nginx")), "203.0.113.5:5000")));
        assert!(!f.matches(&tw(Some((43, "nginx")), "203.0.113.5:5000")), "wrong pid");
        assert!(!f.matches(&tw(Some((42, "nginx")), "198.51.100.1:5000")), "wrong address");
        assert!(!f.matches(&tw(None, "203.0.113.5:5000")), "owner unknown: a pid filter cannot hold");
        let comm = Filter { comms: vec!["curl".into(), "nginx".into()], ..Filter::default() };
        assert!(comm.matches(&tw(Some((1, "nginx")), "1.2.3.4:5")));
        let drop = Event::Drop(DropEvent {
            ts_ns: 0,
            reason: "TCP_RFC7323_PAWS".into(),
            reason_code: 36,
            netns: 1,
            flow: None,
            tcp_flags: 0,
            seq: 0,
            ack_seq: 0,
            outgoing: false,
        });
        assert!(!comm.matches(&drop), "drops have no process");
        assert!(Filter::default().matches(&drop));
    }
}
