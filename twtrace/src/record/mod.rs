//! Recordings: the event stream on disk, for postmortems on another machine.
//!
//! ```text
//! file    = header chunk* end-chunk
//! header  = "TWTRACE\0" | version u16 | 0u16 | json_len u32 | crc32(json) u32 | json
//! chunk   = "TWCK" | kind u8 | 0 0 0 | seq u32 | records u32 | base_ts u64 | raw_len u32
//!           | stored_len u32 | crc32(chunk header before this field + stored) u32 | stored
//! ```
//!
//! All integers little-endian. The JSON header is a [`SourceInfo`] (host, kernel, clock
//! mapping, sysctls, backends, filters). Chunks are numbered from 0; `stored` is the raw-deflate
//! compressed output of [`codec`]. Kinds: sockets (the picture at start, before any events),
//! events, and end (a JSON [`Trailer`]; its presence means the recording was finished).
//!
//! Crash safety: chunks are sealed every second (or every few MiB) and synced to disk by a
//! writer thread, so a `kill -9` or a power loss costs at most about the last second, and the
//! reader tells what was cut. A damaged chunk costs only itself: the reader finds the next
//! chunk marker and carries on.

pub mod codec;
pub mod control;
pub mod directory;
pub mod kept;
mod reader;
pub mod segment_files;
pub mod segments;
#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

pub use reader::{Damage, GapCause, Reader};
use serde::{Deserialize, Serialize};

use crate::{event::Event, probes::DecodeStats, source_info::SourceInfo};

pub const FILE_MAGIC: &[u8; 8] = b"TWTRACE\0";
pub const CHUNK_MAGIC: &[u8; 4] = b"TWCK";
/// Version 2: namespace records, and sockets with their namespace (2026-11-27). Version 3:
/// mark records (`twtrace mark`). Versions 1 and 2 read as before (version 1: sockets in
/// namespace 0, its one namespace described by the header). A reader refuses newer versions
/// rather than misreading them: a version-2 reader meeting a mark record would call its chunk
/// damaged and drop the chunk's events, so every file is written as the newest version,
/// marks or not, and an older twtrace says "upgrade twtrace" instead. Version 4: a TIME_WAIT
/// birth's substate byte also says whether the peer's timestamps were seen (version 3's
/// births read as "not known"). Version 5: drops of packets this host sent have a record tag of
/// their own (earlier files have only received ones). Version 6: a TIME_WAIT death's reason
/// byte names the path that killed it early (2-5; earlier files have only 0, expired, and 1,
/// killed by a path not known). Version 7: reason 6, `aborted` (`tcp_abort()`), which a
/// version-6 reader would call a damaged chunk.
pub const FORMAT_VERSION: u16 = 7;
pub const FILE_HEADER_LEN: usize = 20;
pub const CHUNK_HEADER_LEN: usize = 36;
/// Limits a reader enforces, so damaged lengths cannot make it allocate without bound. The
/// writer seals chunks well below them.
pub const MAX_HEADER_JSON: usize = 1 << 20;
pub const MAX_STORED: usize = 64 << 20;
pub const MAX_RAW: usize = 64 << 20;

const KIND_SOCKETS: u8 = 1;
const KIND_EVENTS: u8 = 2;
const KIND_END: u8 = 3;

/// A chunk is sealed after this long ...
pub const SEAL_INTERVAL: Duration = Duration::from_secs(1);
/// ... or once its records take this many bytes.
const SEAL_BYTES: usize = 4 << 20;
/// Sockets per chunk of the initial picture.
const SOCKETS_PER_CHUNK: usize = 50_000;
/// Deflate level 1: a recording runs during an incident, on a host short of CPU. Level 6
/// made files about 15 % smaller but cost about twice the CPU (at 25k connections/s that was
/// most of twtrace's own CPU), far below the 16 bytes/event budget either way.
const DEFLATE_LEVEL: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty file (0 bytes): nothing was recorded")]
    Empty,
    #[error("not a twtrace recording: it starts with {0:?}, not \"TWTRACE\\0\"")]
    WrongMagic(String),
    #[error(
        "recording format version {found} is newer than this twtrace reads (up to {FORMAT_VERSION}): upgrade twtrace"
    )]
    FutureVersion { found: u16 },
    #[error("the recording's header is damaged ({0}): nothing in the file can be trusted")]
    BadHeader(String),
    #[error("{0}: no segments (twtrace-<time>-<number>.twr) in this directory")]
    NoSegments(PathBuf),
    #[error("{0} exists: pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("the recording's writer stopped: {0}")]
    WriterGone(String),
    /// The writer thread's write or sync failed (the file was cut back to its last whole
    /// chunk, so it reads as unfinished, not damaged).
    #[error("the recording's writer stopped: {0}")]
    WriteFailed(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl RecordError {
    /// The file system is full or the user's quota spent: worth retrying once space returns,
    /// unlike a damaged disk.
    pub fn is_out_of_space(&self) -> bool {
        let code = match self {
            Self::WriteFailed(e) | Self::Io(e) => e.raw_os_error(),
            _ => None,
        };
        matches!(code, Some(libc::ENOSPC | libc::EDQUOT))
    }
}

/// The end chunk: written when recording stops normally.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trailer {
    pub events: u64,
    /// Records the kernel dropped (ring buffer full) during the recording.
    pub lost: u64,
    /// When recording stopped (monotonic ns).
    pub ended_ns: u64,
    pub decoder: DecodeStats,
}

/// One chunk on its way to the writer thread.
struct Sealed {
    kind: u8,
    seq: u32,
    records: u32,
    base_ts: u64,
    raw: Vec<u8>,
}

/// Writes a recording. Encoding happens on the caller's thread (it is cheap); compression,
/// checksums, writes and syncs on a writer thread.
pub struct Recorder {
    encoder: codec::ChunkEncoder,
    seq: u32,
    sealed_at: Instant,
    events: u64,
    tx: Option<mpsc::SyncSender<Sealed>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<u64>>>,
    /// Bytes on disk so far (header and synced chunks), kept by the writer thread: what
    /// rotation by size reads without waiting for the disk.
    written: Arc<AtomicU64>,
}

impl Recorder {
    /// Creates `path` (mode 0600: recordings name hosts, processes and peers) and writes the
    /// header and the initial socket picture. Refuses to overwrite unless `force`.
    pub fn create(path: &Path, info: &SourceInfo, force: bool) -> Result<Self, RecordError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(0o600);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RecordError::Exists(path.to_owned()),
            _ => RecordError::Io(e),
        })?;
        // An existing file keeps its mode through truncation.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let header = file_header(info);
        file.write_all(&header)?;
        file.sync_data()?;
        let written = Arc::new(AtomicU64::new(header.len() as u64));

        // A small queue: if the disk cannot keep up, recording slows down rather than growing
        // without bound (the kernel then counts lost records, which the recording shows).
        let (tx, rx) = mpsc::sync_channel::<Sealed>(8);
        let shared = Arc::clone(&written);
        let writer =
            std::thread::Builder::new().name("twtrace-writer".into()).spawn(move || write_chunks(file, rx, &shared))?;
        let mut recorder = Self {
            encoder: codec::ChunkEncoder::new(),
            seq: 0,
            sealed_at: Instant::now(),
            events: 0,
            tx: Some(tx),
            writer: Some(writer),
            written,
        };
        for sockets in info.sockets.chunks(SOCKETS_PER_CHUNK) {
            for socket in sockets {
                recorder.encoder.socket(socket);
            }
            recorder.seal(KIND_SOCKETS)?;
        }
        Ok(recorder)
    }

    pub fn write(&mut self, event: &Event) -> Result<(), RecordError> {
        self.encoder.event(event);
        self.events += 1;
        if self.encoder.bytes().len() >= SEAL_BYTES {
            self.seal(KIND_EVENTS)?;
        }
        Ok(())
    }

    /// Seals the current chunk if it is a second old: call after every batch.
    pub fn tick(&mut self) -> Result<(), RecordError> {
        if self.sealed_at.elapsed() >= SEAL_INTERVAL && self.encoder.records() > 0 {
            self.seal(KIND_EVENTS)?;
        }
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes on disk so far: the header and every chunk synced (chunks still queued are not
    /// counted yet).
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Ends the current chunk now (tests use it to place chunk boundaries).
    pub fn seal_now(&mut self) -> Result<(), RecordError> {
        if self.encoder.records() > 0 { self.seal(KIND_EVENTS) } else { Ok(()) }
    }

    /// Seals what is left, writes the end chunk and waits for the disk. Returns the file size.
    pub fn finish(mut self, trailer: &Trailer) -> Result<u64, RecordError> {
        if self.encoder.records() > 0 {
            self.seal(KIND_EVENTS)?;
        }
        let json = serde_json::to_vec(trailer).expect("trailer serialises");
        self.send(Sealed { kind: KIND_END, seq: self.seq, records: 0, base_ts: trailer.ended_ns, raw: json })?;
        drop(self.tx.take());
        let writer = self.writer.take().expect("finish runs once");
        match writer.join() {
            Ok(result) => result.map_err(RecordError::WriteFailed),
            Err(_) => Err(RecordError::WriterGone("the writer thread panicked".into())),
        }
    }

    fn seal(&mut self, kind: u8) -> Result<(), RecordError> {
        let (raw, records, base_ts) = std::mem::take(&mut self.encoder).into_parts();
        let sealed = Sealed { kind, seq: self.seq, records, base_ts, raw };
        self.seq += 1;
        self.sealed_at = Instant::now();
        self.send(sealed)
    }

    fn send(&mut self, sealed: Sealed) -> Result<(), RecordError> {
        let tx = self.tx.as_ref().expect("sender lives until finish");
        if tx.send(sealed).is_err() {
            // The writer ended early: its error says why (disk full, I/O error).
            return Err(match self.writer.take().map(|w| w.join()) {
                Some(Ok(Err(e))) => RecordError::WriteFailed(e),
                _ => RecordError::WriterGone("unknown".into()),
            });
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Without finish (an error elsewhere): the sealed chunks still reach the disk.
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn file_header(info: &SourceInfo) -> Vec<u8> {
    let json = serde_json::to_vec(info).expect("header serialises");
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + json.len());
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// A chunk as it lies in the file.
fn chunk_bytes(sealed: &Sealed) -> std::io::Result<Vec<u8>> {
    let stored = if sealed.raw.is_empty() {
        Vec::new()
    } else {
        let mut z = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(sealed.raw.len() / 3),
            flate2::Compression::new(DEFLATE_LEVEL),
        );
        z.write_all(&sealed.raw)?;
        z.finish()?
    };
    let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + stored.len());
    out.extend_from_slice(CHUNK_MAGIC);
    out.extend_from_slice(&[sealed.kind, 0, 0, 0]);
    out.extend_from_slice(&sealed.seq.to_le_bytes());
    out.extend_from_slice(&sealed.records.to_le_bytes());
    out.extend_from_slice(&sealed.base_ts.to_le_bytes());
    out.extend_from_slice(&(sealed.raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(&stored);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&stored);
    Ok(out)
}

fn write_chunks(mut file: File, rx: mpsc::Receiver<Sealed>, written: &AtomicU64) -> std::io::Result<u64> {
    let mut size = file.metadata()?.len();
    for sealed in rx {
        let bytes = chunk_bytes(&sealed)?;
        // Each chunk is on disk before the next is written: a power loss costs at most the
        // chunks in flight, and never leaves a hole before a complete chunk.
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            // A full disk leaves part of a chunk: cut it off (shrinking needs no space), so
            // the file ends at its last whole chunk and reads as unfinished, not damaged.
            let _ = file.set_len(size).and_then(|()| file.sync_data());
            return Err(e);
        }
        size += bytes.len() as u64;
        written.store(size, Ordering::Relaxed);
    }
    Ok(size)
}
