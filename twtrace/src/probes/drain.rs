//! The drain: a thread of its own that empties the ring buffer and decodes its records, so
//! that nothing a view does (a snapshot, a frame, a scrape, a disk write) can keep the kernel's
//! records waiting. The kernel drops a record when the ring buffer is full; before this thread
//! existed, one slow snapshot on the loop that also drained the buffer cost `serve` 40-74 % of
//! its records with 100,000 destinations.
//!
//! Invariants:
//! - The thread owns the ring buffer and the decoder: records are decoded in the order the
//!   kernel wrote them, and the decoder's tables never see a record twice.
//! - The thread only ever waits in `poll(2)` on the ring buffer (bounded by
//!   [`DRAIN_INTERVAL`]); it never waits for the consumer. Decoded batches go into an
//!   unbounded channel whose length is bounded by admission instead: past
//!   [`MAX_QUEUED_EVENTS`] a batch is dropped and counted ([`DrainCounters::dropped`]), and
//!   the loss reaches the stream like the kernel's (`Event::Lost`). Memory stays bounded
//!   whatever the consumer does; loss stays visible.

use std::{
    os::fd::{AsRawFd as _, RawFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;

use super::decode::{DecodeStats, Decoder};
use crate::event::Event;

/// How long the thread waits for a wake-up before it drains anyway: records are submitted
/// without wake-ups until the buffer is a quarter full (`Config::wakeup_bytes`), so this is
/// the latency of a quiet stream.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Decoded events waiting for the consumer, at most: about 60 MiB of events, five seconds of a
/// host making 20,000 connections a second. A consumer that far behind loses the excess,
/// counted, rather than the process growing without bound.
pub const MAX_QUEUED_EVENTS: u64 = 1 << 19;

/// What the drain thread counts, shared with the consumer.
#[derive(Default)]
pub struct DrainCounters {
    /// Events in the channel now.
    queued: AtomicU64,
    /// The most ever in the channel at once.
    queued_peak: AtomicU64,
    /// Events decoded but dropped because the channel was full (the consumer fell behind).
    dropped: AtomicU64,
    /// The longest time between the starts of two drains, in ns (the poll interval when the
    /// stream is quiet; longer when the thread was starved of CPU).
    longest_gap_ns: AtomicU64,
    stop: AtomicBool,
    /// The decoder's counts as of the last drain.
    stats: Mutex<DecodeStats>,
}

/// The consumer's end of the drain.
pub struct Drain {
    batches: mpsc::UnboundedReceiver<Vec<Event>>,
    counters: Arc<DrainCounters>,
    thread: Option<JoinHandle<()>>,
}

/// The drain's figures for health lines and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainFigures {
    pub queued_peak: u64,
    pub dropped: u64,
    pub longest_gap_ns: u64,
}

impl Drain {
    /// Starts the thread. It runs until [`Drain::finish`] (or the `Drain` is dropped).
    pub fn start(ring: RingBuf<MapData>, decoder: Decoder) -> std::io::Result<Self> {
        let counters = Arc::new(DrainCounters::default());
        let (send, batches) = mpsc::unbounded_channel();
        let shared = counters.clone();
        let thread = std::thread::Builder::new()
            .name("twtrace-drain".into())
            .spawn(move || run(ring, decoder, &shared, &send))?;
        Ok(Self { batches, counters, thread: Some(thread) })
    }

    /// Waits for the next batch, or `timeout`, whichever comes first, and appends every batch
    /// waiting to `out`. Cancel-safe: a batch is either appended or still in the channel.
    pub async fn next(&mut self, out: &mut Vec<Event>, timeout: Duration) {
        if let Ok(Some(batch)) = tokio::time::timeout(timeout, self.batches.recv()).await {
            self.take(batch, out);
        }
        while let Ok(batch) = self.batches.try_recv() {
            self.take(batch, out);
        }
    }

    fn take(&self, mut batch: Vec<Event>, out: &mut Vec<Event>) {
        self.counters.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        if out.is_empty() {
            *out = std::mem::take(&mut batch);
        } else {
            out.append(&mut batch);
        }
    }

    /// Stops the thread after one last drain that resolves every pending decision, and appends
    /// everything still queued to `out`.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.counters.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread polls with a timeout: it sees the flag within one interval.
            let _ = thread.join();
        }
        while let Ok(batch) = self.batches.try_recv() {
            self.take(batch, out);
        }
    }

    /// Events the drain dropped because the consumer was too far behind.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    pub fn figures(&self) -> DrainFigures {
        DrainFigures {
            queued_peak: self.counters.queued_peak.load(Ordering::Relaxed),
            dropped: self.dropped(),
            longest_gap_ns: self.counters.longest_gap_ns.load(Ordering::Relaxed),
        }
    }

    /// The decoder's counts as of the last drain.
    pub fn stats(&self) -> DecodeStats {
        *self.counters.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: poll, drain, decode, hand over; until asked to stop.
fn run(
    mut ring: RingBuf<MapData>,
    mut decoder: Decoder,
    counters: &DrainCounters,
    send: &mpsc::UnboundedSender<Vec<Event>>,
) {
    let fd = ring.as_raw_fd();
    // From the thread's start: a stall before the first drain counts too.
    let mut last_start = crate::time::monotonic_ns();
    // Each batch starts with room for as many events as the last: no copy on the way up.
    let mut room = 1024;
    loop {
        let stopping = counters.stop.load(Ordering::Relaxed);
        if !stopping {
            wait_readable(fd, DRAIN_INTERVAL);
        }
        let start = crate::time::monotonic_ns();
        counters.longest_gap_ns.fetch_max(start.saturating_sub(last_start), Ordering::Relaxed);
        last_start = start;
        let mut batch = Vec::with_capacity(room);
        while let Some(item) = ring.next() {
            decoder.decode(&item, &mut batch);
        }
        // At the stop, every decision that waits on what follows is made now. Otherwise
        // decisions are made as of the pass's start, not its end: a record stamped before
        // `start` was in the buffer when this pass read it, so a cancel older than the grace
        // period is judged with its re-arm's start already read. Judged as of the end, a
        // thread descheduled after its reads (an emulated guest, a loaded host) took a re-arm
        // written meanwhile for a kill and a birth (6.1 guest, 2026-12-07: two 4-tuples born
        // twice).
        decoder.flush(if stopping { u64::MAX } else { start }, &mut batch);
        *counters.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = decoder.stats();
        room = batch.len().clamp(1024, 1 << 16);
        hand_over(batch, counters, send);
        if stopping {
            return;
        }
    }
}

/// Puts a batch into the channel, or counts it dropped when the consumer is too far behind.
fn hand_over(batch: Vec<Event>, counters: &DrainCounters, send: &mpsc::UnboundedSender<Vec<Event>>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let queued = counters.queued.load(Ordering::Relaxed);
    if queued + n > MAX_QUEUED_EVENTS {
        counters.dropped.fetch_add(n, Ordering::Relaxed);
        return;
    }
    counters.queued.fetch_add(n, Ordering::Relaxed);
    counters.queued_peak.fetch_max(queued + n, Ordering::Relaxed);
    if send.send(batch).is_err() {
        // The consumer is gone: nothing left to count for.
        counters.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Waits until the ring buffer has a wake-up for us, or `timeout`.
fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; the fd stays open (the thread
    // owns the ring buffer). EINTR or an error only ends this wait early.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
}
