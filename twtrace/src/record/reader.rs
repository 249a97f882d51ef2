//! Reading recordings, damaged ones included: every problem becomes a [`Damage`] entry and
//! the reader carries on with what is intact. Only a missing or unreadable file header stops
//! it, because then nothing in the file can be interpreted.

use std::{fmt, io::Read};

use super::{
    CHUNK_HEADER_LEN, CHUNK_MAGIC, FILE_HEADER_LEN, FILE_MAGIC, FORMAT_VERSION, KIND_END, KIND_EVENTS, KIND_SOCKETS,
    MAX_HEADER_JSON, MAX_RAW, MAX_STORED, RecordError, Trailer,
    codec::{self, Decoded},
};
use crate::source_info::SourceInfo;

/// Something wrong with a recording, and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside a chunk: the usual result of `kill -9` or a power loss.
    Truncated { offset: u64, present: u64, declared: u64 },
    /// Bytes that are not an intact chunk (checksum mismatch, no chunk marker), skipped.
    Corrupt { offset: u64, skipped: u64, why: String },
    /// Chunk numbers jump: the chunks between were lost.
    MissingChunks { after: Option<u32>, next: u32 },
    /// A chunk whose checksum matched but whose contents could not be read entirely.
    Undecodable { offset: u64, seq: u32, why: String, kept: usize },
    /// No end chunk: `twtrace record` did not finish (killed, crashed or power lost).
    Unfinished,
    /// Bytes after the end chunk.
    TrailingBytes { offset: u64, bytes: u64 },
    /// Reading a directory of segments: damage found in one of them.
    InSegment { segment: String, damage: Box<Damage> },
    /// Reading a directory: a segment that could not be read at all (empty, header damaged).
    SegmentUnreadable { segment: String, why: String },
    /// Reading a directory: a stretch of time without a recording (Unix ns).
    Gap { from_unix_ns: u64, to_unix_ns: u64, cause: GapCause },
}

/// Why a directory of segments has nothing for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GapCause {
    /// Segments with these numbers are missing: deleted (retention, by hand) or lost.
    Missing { first: u64, last: u64 },
    /// twtrace stopped and another run began.
    Restarted,
    /// The same run recorded nothing meanwhile: it was stopped by a write error (a full disk)
    /// or killed before the segment was finished. `not_recorded`: the events it received and
    /// could not write, as the next segment declares them (0 if unknown).
    Stopped { not_recorded: u64 },
    /// The window asked for starts before the first segment kept.
    BeforeFirst,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { offset, present, declared } => write!(
                f,
                "the file ends inside the chunk at byte {offset} ({present} of its {declared} bytes present): \
                 that chunk is lost"
            ),
            Self::Corrupt { offset, skipped, why } => {
                write!(f, "{skipped} damaged bytes at byte {offset} skipped ({why})")
            }
            Self::MissingChunks { after: Some(a), next } => {
                write!(f, "chunks {}..{} are missing (lost with the damaged bytes)", a + 1, next.saturating_sub(1))
            }
            Self::MissingChunks { after: None, next } => write!(f, "chunks 0..{} are missing", next.saturating_sub(1)),
            Self::Undecodable { offset, seq, why, kept } => {
                write!(f, "chunk {seq} at byte {offset} is unreadable after {kept} records: {why}")
            }
            Self::Unfinished => f.write_str(
                "no end marker: `twtrace record` did not finish (killed, crashed or power lost); \
                 the recording is kept up to its last complete chunk",
            ),
            Self::TrailingBytes { offset, bytes } => {
                write!(f, "{bytes} unexpected bytes after the end, at byte {offset}")
            }
            Self::InSegment { segment, damage } => write!(f, "{segment}: {damage}"),
            Self::SegmentUnreadable { segment, why } => write!(f, "{segment}: unreadable, skipped ({why})"),
            Self::Gap { from_unix_ns, to_unix_ns, cause } => {
                let at = |ns: u64| crate::time::WallTime::from_unix_ns(ns).rfc3339();
                let seconds = to_unix_ns.saturating_sub(*from_unix_ns) as f64 / 1e9;
                write!(f, "nothing recorded from {} to {} ({seconds:.1} s): ", at(*from_unix_ns), at(*to_unix_ns))?;
                match cause {
                    GapCause::Missing { first, last } if first == last => {
                        write!(f, "segment {first} is missing (deleted by retention or by hand, or lost)")
                    }
                    GapCause::Missing { first, last } => {
                        write!(f, "segments {first}..{last} are missing (deleted by retention or by hand, or lost)")
                    }
                    GapCause::Restarted => f.write_str("twtrace was not running (a new run begins after)"),
                    GapCause::Stopped { not_recorded: 0 } => {
                        f.write_str("twtrace stopped writing (a full disk or a write error), or was killed")
                    }
                    GapCause::Stopped { not_recorded } => write!(
                        f,
                        "twtrace stopped writing (a full disk or a write error): {not_recorded} events not recorded"
                    ),
                    GapCause::BeforeFirst => f.write_str("the directory's oldest segment begins later"),
                }
            }
        }
    }
}

/// A byte window over the input, for reading chunks and for searching the next chunk marker
/// after damage.
struct Window<R> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    /// File offset of `buf[pos]`.
    offset: u64,
    eof: bool,
}

impl<R: Read> Window<R> {
    /// Up to `n` bytes from the current position: fewer only at the end of the input.
    fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.buf.len() - self.pos < n && !self.eof {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let have = self.buf.len();
            let want = (n - have).max(64 << 10);
            self.buf.resize(have + want, 0);
            match self.input.read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    self.eof = true;
                }
                Ok(got) => self.buf.truncate(have + got),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.buf.truncate(have),
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            }
        }
        let end = (self.pos + n).min(self.buf.len());
        Ok(&self.buf[self.pos..end])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        self.offset += n as u64;
    }

    /// Skips to the next chunk marker after the current position (or to the end). Returns the
    /// number of bytes skipped.
    fn skip_to_next_marker(&mut self) -> std::io::Result<u64> {
        let start = self.offset;
        self.consume(1);
        loop {
            let window = self.peek(64 << 10)?;
            if window.len() < CHUNK_MAGIC.len() {
                let rest = window.len();
                self.consume(rest);
                return Ok(self.offset - start);
            }
            match window.windows(CHUNK_MAGIC.len()).position(|w| w == CHUNK_MAGIC) {
                Some(at) => {
                    self.consume(at);
                    return Ok(self.offset - start);
                }
                // Keep the last bytes: a marker may straddle the window's end.
                None => {
                    let skip = window.len() - (CHUNK_MAGIC.len() - 1);
                    self.consume(skip);
                }
            }
        }
    }
}

/// What a reader hands out: one chunk's contents.
pub struct Chunk {
    pub seq: u32,
    pub decoded: Decoded,
}

pub struct Reader<R> {
    window: Window<R>,
    pub info: SourceInfo,
    pub version: u16,
    damage: Vec<Damage>,
    trailer: Option<Trailer>,
    last_seq: Option<u32>,
    chunks: u64,
    done: bool,
    /// The first chunk after the socket picture, read ahead by `new`.
    pending: Option<Chunk>,
    /// Decompression buffer, kept between chunks: a fresh multi-megabyte buffer per chunk cost
    /// replay a sixth of its time in page faults.
    inflated: Vec<u8>,
}

impl Reader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &std::path::Path) -> Result<Self, RecordError> {
        Self::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?))
    }
}

impl<R: Read> Reader<R> {
    /// Reads the file header and the initial socket picture (into `info.sockets`).
    pub fn new(input: R) -> Result<Self, RecordError> {
        let mut window = Window { input, buf: Vec::new(), pos: 0, offset: 0, eof: false };
        let head = window.peek(FILE_HEADER_LEN)?;
        if head.is_empty() {
            return Err(RecordError::Empty);
        }
        if !head.starts_with(&FILE_MAGIC[..head.len().min(FILE_MAGIC.len())]) || head.len() < FILE_MAGIC.len() {
            if head.starts_with(&FILE_MAGIC[..head.len().min(FILE_MAGIC.len())]) {
                return Err(RecordError::BadHeader(format!("the file is only {} bytes long", head.len())));
            }
            let shown: String =
                head.iter().take(8).map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
            return Err(RecordError::WrongMagic(shown));
        }
        if head.len() < FILE_HEADER_LEN {
            return Err(RecordError::BadHeader(format!("the file is only {} bytes long", head.len())));
        }
        let version = u16::from_le_bytes([head[8], head[9]]);
        if version > FORMAT_VERSION {
            return Err(RecordError::FutureVersion { found: version });
        }
        if version == 0 {
            return Err(RecordError::BadHeader("format version 0".into()));
        }
        let json_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[16..20].try_into().expect("4 bytes"));
        if json_len > MAX_HEADER_JSON {
            return Err(RecordError::BadHeader(format!("header length {json_len} is implausible")));
        }
        let whole = window.peek(FILE_HEADER_LEN + json_len)?;
        if whole.len() < FILE_HEADER_LEN + json_len {
            return Err(RecordError::BadHeader(format!(
                "the file ends inside the header ({} of {} bytes)",
                whole.len(),
                FILE_HEADER_LEN + json_len
            )));
        }
        let json = &whole[FILE_HEADER_LEN..];
        if crc32fast::hash(json) != crc {
            return Err(RecordError::BadHeader("checksum mismatch".into()));
        }
        let info: SourceInfo =
            serde_json::from_slice(json).map_err(|e| RecordError::BadHeader(format!("unreadable JSON: {e}")))?;
        window.consume(FILE_HEADER_LEN + json_len);
        let mut reader = Self {
            window,
            info,
            version,
            damage: Vec::new(),
            trailer: None,
            last_seq: None,
            chunks: 0,
            done: false,
            pending: None,
            inflated: Vec::new(),
        };
        // The socket picture at start comes before any event: gather it into `info`.
        while let Some(chunk) = reader.next_chunk() {
            reader.info.sockets.extend(chunk.decoded.sockets.iter().cloned());
            if !chunk.decoded.events.is_empty() {
                reader.pending = Some(Chunk {
                    seq: chunk.seq,
                    decoded: Decoded { events: chunk.decoded.events, sockets: Vec::new() },
                });
                break;
            }
        }
        Ok(reader)
    }

    /// Everything found wrong so far (complete once [`Self::next_chunk`] returned `None`).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The end chunk, if the recording was finished.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// Intact chunks read so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The file offset reached.
    pub fn offset(&self) -> u64 {
        self.window.offset
    }

    /// The next intact chunk with events or sockets; `None` at the end of the recording.
    /// I/O errors end the reading and are reported as damage.
    pub fn next_chunk(&mut self) -> Option<Chunk> {
        if let Some(chunk) = self.pending.take() {
            return Some(chunk);
        }
        while !self.done {
            match self.step() {
                Ok(Some(chunk)) => return Some(chunk),
                Ok(None) => {}
                Err(e) => {
                    self.damage.push(Damage::Corrupt {
                        offset: self.window.offset,
                        skipped: 0,
                        why: format!("read error, reading stopped: {e}"),
                    });
                    self.finish_reading();
                }
            }
        }
        None
    }

    fn finish_reading(&mut self) {
        if !self.done {
            self.done = true;
            if self.trailer.is_none() {
                self.damage.push(Damage::Unfinished);
            }
        }
    }

    fn corrupt(&mut self, why: &str) -> std::io::Result<()> {
        let offset = self.window.offset;
        let skipped = self.window.skip_to_next_marker()?;
        // Consecutive damaged spans merge into one entry.
        if let Some(Damage::Corrupt { offset: o, skipped: s, why: w }) = self.damage.last_mut() {
            if *o + *s == offset && w == why {
                *s += skipped;
                return Ok(());
            }
        }
        self.damage.push(Damage::Corrupt { offset, skipped, why: why.into() });
        Ok(())
    }

    /// One chunk, or one damaged span skipped (`None`).
    fn step(&mut self) -> std::io::Result<Option<Chunk>> {
        let offset = self.window.offset;
        let head = self.window.peek(CHUNK_HEADER_LEN)?;
        if head.is_empty() {
            self.finish_reading();
            return Ok(None);
        }
        if self.trailer.is_some() {
            let bytes = self.window.skip_to_end()?;
            self.damage.push(Damage::TrailingBytes { offset, bytes });
            self.finish_reading();
            return Ok(None);
        }
        if !head.starts_with(&CHUNK_MAGIC[..head.len().min(4)]) {
            self.corrupt("no chunk marker")?;
            return Ok(None);
        }
        if head.len() < CHUNK_HEADER_LEN {
            let present = head.len() as u64;
            self.window.consume(present as usize);
            self.damage.push(Damage::Truncated { offset, present, declared: CHUNK_HEADER_LEN as u64 });
            self.finish_reading();
            return Ok(None);
        }
        let field = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        let kind = head[4];
        let seq = field(8);
        let records = field(12);
        let base_ts = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
        let raw_len = field(24) as usize;
        let stored_len = field(28) as usize;
        let crc = field(32);
        if stored_len > MAX_STORED || raw_len > MAX_RAW || head[5..8] != [0, 0, 0] {
            self.corrupt("implausible chunk header")?;
            return Ok(None);
        }
        let total = CHUNK_HEADER_LEN + stored_len;
        let whole = self.window.peek(total)?;
        if whole.len() < total {
            // Either the file was cut here, or the length is damaged and later chunks follow.
            let present = whole.len() as u64;
            let after_marker = whole[CHUNK_MAGIC.len()..].windows(4).any(|w| w == CHUNK_MAGIC);
            if after_marker {
                self.corrupt("chunk length runs past the end of the file")?;
            } else {
                self.window.consume(present as usize);
                self.damage.push(Damage::Truncated { offset, present, declared: total as u64 });
                self.finish_reading();
            }
            return Ok(None);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&whole[..32]);
        hasher.update(&whole[CHUNK_HEADER_LEN..]);
        if hasher.finalize() != crc {
            self.corrupt("checksum mismatch")?;
            return Ok(None);
        }
        let mut raw = std::mem::take(&mut self.inflated);
        match inflate(&whole[CHUNK_HEADER_LEN..], raw_len, &mut raw) {
            Ok(()) => {}
            Err(why) => {
                self.window.consume(total);
                self.damage.push(Damage::Undecodable { offset, seq, why, kept: 0 });
                return Ok(None);
            }
        };
        self.window.consume(total);
        self.note_sequence(seq);
        self.chunks += 1;
        let chunk = self.decode(kind, seq, records, base_ts, offset, &raw);
        self.inflated = raw;
        Ok(chunk)
    }

    /// The events or sockets of an inflated chunk (`None` for the end chunk and unknown kinds).
    fn decode(&mut self, kind: u8, seq: u32, records: u32, base_ts: u64, offset: u64, raw: &[u8]) -> Option<Chunk> {
        match kind {
            KIND_END => {
                match serde_json::from_slice::<Trailer>(raw) {
                    Ok(t) => self.trailer = Some(t),
                    Err(e) => {
                        self.damage.push(Damage::Undecodable { offset, seq, why: format!("end chunk: {e}"), kept: 0 })
                    }
                }
                if self.trailer.is_none() {
                    self.trailer = Some(Trailer::default());
                }
                None
            }
            KIND_EVENTS | KIND_SOCKETS => {
                // Sized from the header, so the events are not moved while the vector grows;
                // bounded by the raw size (a record takes at least 4 bytes) against a forged
                // count.
                let mut decoded = Decoded::default();
                if kind == KIND_EVENTS {
                    decoded.events.reserve((records as usize).min(raw.len() / 4).min(1 << 20));
                }
                if let Err(e) = codec::decode_chunk(raw, base_ts, &mut decoded) {
                    let kept = decoded.events.len() + decoded.sockets.len();
                    self.damage.push(Damage::Undecodable { offset, seq, why: e.to_string(), kept });
                } else if decoded.events.len() + decoded.sockets.len() != records as usize {
                    self.damage.push(Damage::Undecodable {
                        offset,
                        seq,
                        why: format!("{records} records declared"),
                        kept: decoded.events.len() + decoded.sockets.len(),
                    });
                }
                Some(Chunk { seq, decoded })
            }
            other => {
                self.damage.push(Damage::Undecodable {
                    offset,
                    seq,
                    why: format!("unknown chunk kind {other} (written by a newer twtrace?)"),
                    kept: 0,
                });
                None
            }
        }
    }

    fn note_sequence(&mut self, seq: u32) {
        let expected = self.last_seq.map_or(0, |s| s.wrapping_add(1));
        if seq != expected {
            self.damage.push(Damage::MissingChunks { after: self.last_seq, next: seq });
        }
        self.last_seq = Some(seq);
    }
}

impl<R: Read> Window<R> {
    fn skip_to_end(&mut self) -> std::io::Result<u64> {
        let start = self.offset;
        loop {
            let n = self.peek(64 << 10)?.len();
            if n == 0 {
                return Ok(self.offset - start);
            }
            self.consume(n);
        }
    }
}

/// Decompresses exactly `raw_len` bytes into `raw` (emptied first), refusing more (a damaged
/// stream must not balloon).
fn inflate(stored: &[u8], raw_len: usize, raw: &mut Vec<u8>) -> Result<(), String> {
    raw.clear();
    raw.reserve(raw_len.min(16 << 20));
    flate2::read::DeflateDecoder::new(stored)
        .take(raw_len as u64 + 1)
        .read_to_end(raw)
        .map_err(|e| format!("decompression failed: {e}"))?;
    if raw.len() != raw_len {
        return Err(format!("decompressed to {} bytes, {raw_len} declared", raw.len()));
    }
    Ok(())
}
