//! Whole files, as found on disk: the reader must describe any damage, never panic, and never
//! hand out more than the file could hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twtrace::record::Reader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else { return };
    let mut events = 0usize;
    while let Some(chunk) = reader.next_chunk() {
        events += chunk.decoded.events.len() + chunk.decoded.sockets.len();
    }
    // Every record takes at least two bytes.
    assert!(events <= data.len() / 2 * 64, "{events} records from {} bytes", data.len());
    for damage in reader.damage() {
        let _ = damage.to_string();
    }
});
