//! A flight-recorder directory, as segments packed into one input (see
//! `twtrace::record::directory::fuzz_input`): the stitching must describe any damage, gap or
//! disorder between segments, never panic, and never hand out more than the segments hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twtrace::record::directory::{DirectoryReader, fuzz_input};

fuzz_target!(|data: &[u8]| {
    let (window, segments) = fuzz_input::unpack(data);
    let bytes: usize = segments.iter().map(|(_, b)| b.len()).sum();
    let count = segments.len();
    let Ok(mut reader) = DirectoryReader::from_bytes(segments, window) else { return };
    let mut events = 0usize;
    while let Some(batch) = reader.next_events() {
        events += batch.len();
    }
    // As for one file, plus the namespace records stitching adds at each segment's start
    // (a header describes at most what its bytes hold).
    assert!(events <= bytes / 2 * 64 + bytes, "{events} records from {bytes} bytes");
    assert!(reader.segments_read() as usize <= count);
    for damage in reader.damage() {
        let _ = damage.to_string();
    }
});
