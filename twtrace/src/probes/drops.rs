//! Drops family: which `skb_drop_reason`s to watch (by name, from BTF), and decoding.

use std::collections::HashMap;

use twtrace_common::{
    Config,
    drops::{DropEvent as RawDrop, MAX_REASONS},
};

use super::{Backend, BackendPlan, Hook};
use crate::{
    event::{DropClass, DropEvent, Event, SocketFlow},
    kernel::btf::Btf,
};

/// 6.11+: `kfree_skb(skb, location, reason, rx_sk)`; reading `rx_sk` fails the attach before.
const TRACEPOINT_RX_SK_HOOKS: &[Hook] =
    &[Hook::RawTracepoint { program: "skb_drop_rx_sk", tracepoint: "kfree_skb", shared: None }];
/// 5.17+: `kfree_skb(skb, location, reason)`; before 5.17 there is no reason and this fails too.
const TRACEPOINT_HOOKS: &[Hook] = &[Hook::RawTracepoint { program: "skb_drop", tracepoint: "kfree_skb", shared: None }];

/// The function that fires `kfree_skb`: `sk_skb_reason_drop(sk, skb, reason)` from 6.11,
/// `kfree_skb_reason(skb, reason)` from 5.17 to 6.10 (an inline wrapper afterwards).
pub fn backends() -> Vec<BackendPlan> {
    vec![
        BackendPlan::new(
            Backend::Fentry,
            &[Hook::Fentry { program: "sk_skb_reason_drop_fentry", function: "sk_skb_reason_drop" }],
        ),
        BackendPlan::new(
            Backend::Fentry,
            &[Hook::Fentry { program: "kfree_skb_reason_fentry", function: "kfree_skb_reason" }],
        ),
        BackendPlan::new(
            Backend::Kprobe,
            &[Hook::Kprobe { program: "sk_skb_reason_drop_kprobe", function: "sk_skb_reason_drop" }],
        ),
        BackendPlan::new(
            Backend::Kprobe,
            &[Hook::Kprobe { program: "kfree_skb_reason_kprobe", function: "kfree_skb_reason" }],
        ),
        BackendPlan::new(Backend::Tracepoint, TRACEPOINT_RX_SK_HOOKS),
        BackendPlan::new(Backend::Tracepoint, TRACEPOINT_HOOKS),
    ]
}

const PREFIX: &str = "SKB_DROP_REASON_";

/// The reasons reported: every timestamp (RFC 7323) check, netfilter's drops and the accept
/// queue's overflow ([`DropClass`]). Names, not numbers: the numbers differ between kernels
/// (the PAWS ones are 36-39 on 6.18).
pub fn is_watched(name: &str) -> bool {
    DropClass::of_reason(name).is_some()
}

/// Reason names by value on the running kernel (`enum skb_drop_reason`, 5.17+), without the
/// `SKB_DROP_REASON_` prefix. Empty if the kernel has no drop reasons.
pub fn reason_names(btf: &Btf) -> HashMap<u32, String> {
    btf.enum_values("skb_drop_reason")
        .unwrap_or_default()
        .iter()
        .filter_map(|(name, value)| Some((u32::try_from(*value).ok()?, name.strip_prefix(PREFIX)?.to_owned())))
        .collect()
}

/// Sets the bitmap of watched reasons; returns how many were found.
pub fn configure(names: &HashMap<u32, String>, config: &mut Config) -> usize {
    let mut count = 0;
    for (&value, name) in names {
        if value < MAX_REASONS && is_watched(name) {
            config.drop_reasons[(value / 64) as usize] |= 1 << (value % 64);
            count += 1;
        }
    }
    count
}

pub fn decode(raw: &RawDrop, names: &HashMap<u32, String>) -> Event {
    Event::Drop(DropEvent {
        ts_ns: raw.header.ts_ns,
        reason: names.get(&raw.reason).cloned().unwrap_or_else(|| format!("reason{}", raw.reason)),
        reason_code: raw.reason,
        netns: raw.netns,
        flow: SocketFlow::from_kernel(&raw.flow),
        tcp_flags: raw.tcp_flags,
        seq: raw.seq,
        ack_seq: raw.ack_seq,
        outgoing: raw.outgoing != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_reasons_become_bits_by_name() {
        let names: HashMap<u32, String> =
            [(36, "TCP_RFC7323_PAWS"), (38, "TCP_RFC7323_TW_PAWS"), (45, "TCP_RESET"), (300, "TCP_RFC7323_X")]
                .into_iter()
                .chain([(14, "NETFILTER_DROP"), (70, "TCP_LISTEN_OVERFLOW"), (2, "NO_SOCKET")])
                .map(|(v, n)| (v, n.to_owned()))
                .collect();
        let mut config = Config::DEFAULT;
        assert_eq!(configure(&names, &mut config), 4, "300 is beyond the bitmap; NO_SOCKET, TCP_RESET not watched");
        assert_eq!(config.drop_reasons, [(1u64 << 36) | (1 << 38) | (1 << 14), 1 << (70 - 64), 0, 0]);
    }

    #[test]
    fn this_kernels_paws_reasons_resolve_by_name() {
        let Ok(btf) = Btf::from_file(Btf::VMLINUX) else {
            eprintln!("skipped: no kernel BTF");
            return;
        };
        let names = reason_names(&btf);
        if names.is_empty() {
            eprintln!("skipped: this kernel has no skb_drop_reason (before 5.17)");
            return;
        }
        let watched: Vec<&String> = names.values().filter(|n| is_watched(n)).collect();
        assert!(watched.iter().any(|n| *n == "TCP_RFC7323_PAWS"), "{watched:?}");
        // 5.18+, and every kernel of the matrix with drop reasons is newer.
        assert!(watched.iter().any(|n| *n == "NETFILTER_DROP"), "{watched:?}");
    }
}
