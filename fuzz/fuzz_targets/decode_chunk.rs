//! Chunk contents past the checksum: random mutations of whole files rarely survive the
//! CRC, so the record decoder gets a target of its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twtrace::record::codec::{Decoded, decode_chunk};

fuzz_target!(|data: &[u8]| {
    let Some((base, bytes)) = data.split_first_chunk::<8>() else { return };
    let mut out = Decoded::default();
    let result = decode_chunk(bytes, u64::from_le_bytes(*base), &mut out);
    assert!(out.events.len() + out.sockets.len() <= bytes.len());
    if let Err(e) = result {
        let _ = e.to_string();
    }
});
