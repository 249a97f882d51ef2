//! The bpftrace scripts the bench compares twtrace with: the same tracepoints twtrace's
//! tracepoint backend uses, one printing every event, one aggregating in kernel maps.

/// The same tracepoints twtrace's tracepoint backend uses, printing every event. connect()'s
/// port search is timed the way that backend does: from SYN_SENT (state 2) to the first arm of
/// the socket's retransmit timer on the same thread, or to CLOSE (7).
pub const BPFTRACE_PRINT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("state %d %d %d %d\n", args->oldstate, args->newstate, args->sport, args->dport);
  if (args->newstate == 2) { @start[tid] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 7 && @start[tid]) { printf("connect failed %d %s\n", nsecs - @start[tid], comm); delete(@start[tid]); }
}
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { printf("tw_start %lx %d\n", args->timer, args->expires - args->now); }
tracepoint:timer:timer_start /args->function == kaddr("tcp_write_timer") && @start[tid]/ { printf("connect %d %s\n", nsecs - @start[tid], comm); delete(@start[tid]); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { printf("tw_expire %lx\n", args->timer); }
tracepoint:skb:kfree_skb /args->reason > 2/ { printf("drop %d\n", args->reason); }
"#;

/// The same tracepoints, aggregating in kernel maps (nothing crosses to userspace per event).
pub const BPFTRACE_AGGREGATE: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  @states[args->oldstate, args->newstate] = count();
  if (args->newstate == 2) { @start[tid] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 7 && @start[tid]) { @connect_failed_ns = hist(nsecs - @start[tid]); delete(@start[tid]); }
}
tracepoint:timer:timer_start /args->function == kaddr("tw_timer_handler")/ { @tw_start = count(); }
tracepoint:timer:timer_start /args->function == kaddr("tcp_write_timer") && @start[tid]/ { @connect_ns = hist(nsecs - @start[tid]); delete(@start[tid]); }
tracepoint:timer:timer_expire_entry /args->function == kaddr("tw_timer_handler")/ { @tw_expire = count(); }
tracepoint:skb:kfree_skb /args->reason > 2/ { @drops[args->reason] = count(); }
"#;
