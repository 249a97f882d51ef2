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

/// Tables smaller than this keep their room: shrinking them saves little.
const SHRINK_FLOOR: usize = 4096;

/// Gives back most of a hash table's room once it holds under a quarter of it.
///
/// A table never shrinks by itself: after a spike of a million TIME_WAIT sockets a `serve`
/// running for days would keep the spike's tables (about 150 MiB) after the sockets are gone.
/// Shrinking to twice the entries leaves room to grow again without a rehash at once, and
/// the next shrink waits until the entries fall to a quarter again: each entry is moved a
/// bounded number of times however the count falls (amortised O(1) per removal; a table of
/// n entries is rehashed in one O(n) pass when it shrinks).
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > SHRINK_FLOOR && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (`capacity()` is what the table can take before it grows: removals that leave
    /// tombstones lower it too, so only the shrink is asserted, not its exact moment.)
    #[test]
    fn a_sparse_table_gives_back_its_room_and_keeps_some_to_grow() {
        let mut map: std::collections::HashMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        let full = map.capacity();
        for i in 0..99_000 {
            map.remove(&i);
            shrink_if_sparse(&mut map);
        }
        assert!(map.capacity() < full / 8, "1,000 left in room for {} (was {full})", map.capacity());
        assert!(map.capacity() >= 2_000, "room to grow again: {}", map.capacity());
        assert_eq!(map.len(), 1_000);
        assert!((99_000..100_000).all(|i| map[&i] == i));
        // Under the floor (3,000 entries: room for 3,584): left alone. Shrunk, 10 entries would
        // have room for about 28; unshrunk, the room never falls below the entries plus the
        // 584 free slots it started with.
        let mut small: std::collections::HashMap<u64, u64> = (0..3_000).map(|i| (i, i)).collect();
        let room = small.capacity();
        assert!(room <= SHRINK_FLOOR, "the case is under the floor: {room}");
        for i in 0..2_990 {
            small.remove(&i);
            shrink_if_sparse(&mut small);
        }
        assert!(small.capacity() >= 10 + (room - 3_000), "{} of {room}: shrunk", small.capacity());
    }
}
