//! How the process asks the allocator for memory: set once, at start, by `main` (and by the
//! memory bench, which measures what twtrace does).

/// Large allocations (1 MiB and up: the model's and the decoder's hash tables once they hold
/// thousands of sockets) are mapped on their own and unmapped when freed.
///
/// glibc's default threshold is dynamic: each freed mapped block raises it (up to 32 MiB), so
/// after the first table doubling the next tables come from the heap, where a freed table
/// leaves a hole the heap cannot give back while anything above it lives. Each doubling of a
/// table then left its old copy resident: at a million live TIME_WAIT sockets the memory
/// bench measured 193 B per socket with the dynamic threshold, 166 B with this one. Setting
/// the threshold turns the adjustment off (mallopt(3)). musl's allocator (the static
/// release build) maps large blocks itself and has no such knob.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
