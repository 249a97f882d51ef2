//! Struct offsets the programs need, from the running kernel's BTF: Rust eBPF programs get no
//! CO-RE relocations, so userspace computes them and passes them in `Config` before load.

use twtrace_common::{Config, config::OFFSET_UNKNOWN};

use crate::kernel;

/// Socket and packet offsets shared by several families. A member this kernel lacks is left
/// unknown: the programs then read 0 for that field, and the user is told.
pub fn configure_sockets(btf: &kernel::btf::Btf, config: &mut Config) {
    let o = &mut config.offsets;
    o.skc_daddr = optional_offset(btf, "sock_common", "skc_daddr");
    o.skc_rcv_saddr = optional_offset(btf, "sock_common", "skc_rcv_saddr");
    o.skc_dport = optional_offset(btf, "sock_common", "skc_dport");
    o.skc_num = optional_offset(btf, "sock_common", "skc_num");
    o.skc_family = optional_offset(btf, "sock_common", "skc_family");
    o.skc_v6_daddr = optional_offset(btf, "sock_common", "skc_v6_daddr");
    o.skc_v6_rcv_saddr = optional_offset(btf, "sock_common", "skc_v6_rcv_saddr");
    o.skc_net = optional_offset(btf, "sock_common", "skc_net");
    o.net_ns_inum = btf.path_offset("net", "ns.inum").unwrap_or_else(|e| {
        log::warn!("{e}; network namespace ids will read as 0");
        OFFSET_UNKNOWN
    });
    o.inet_sport = optional_offset(btf, "inet_sock", "inet_sport");
    o.sk_protocol = optional_offset(btf, "sock", "sk_protocol");
    o.skb_head = optional_offset(btf, "sk_buff", "head");
    o.skb_network_header = optional_offset(btf, "sk_buff", "network_header");
    o.skb_transport_header = optional_offset(btf, "sk_buff", "transport_header");
    o.skb_dev = optional_offset(btf, "sk_buff", "dev");
    o.skb_sk = optional_offset(btf, "sk_buff", "sk");
    o.dev_nd_net = optional_offset(btf, "net_device", "nd_net");
    o.skc_state = optional_offset(btf, "sock_common", "skc_state");
}

pub(super) fn optional_offset(btf: &kernel::btf::Btf, ty: &str, member: &str) -> u32 {
    btf.member_offset(ty, member).unwrap_or_else(|e| {
        log::warn!("{e}; that field will read as 0");
        OFFSET_UNKNOWN
    })
}
