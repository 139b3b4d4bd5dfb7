//! Per-process output capture: stdout, stderr and `log` lines.
//!
//! Output is kept in memory up to `bytes_max` (oldest chunks are dropped
//! first, and the number of dropped bytes is counted so a reader knows), stays
//! readable after the process exits, and can be forwarded live to the host's
//! own stdout/stderr (what `shoal run` does).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

pub use shoal_abi::process::Stream;

/// One captured write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Source stream.
    pub stream: Stream,
    /// The bytes written.
    pub data: Vec<u8>,
}

/// What one held chunk costs beyond its bytes (its slot in the queue, its
/// vector header and the allocator's rounding), counted against the cap so
/// that a million empty writes cost what they weigh.
pub const CHUNK_OVERHEAD_BYTES: usize = 64;
/// Consecutive stdout or stderr writes are merged into one chunk up to
/// this size (log lines stay one chunk each).
pub const CHUNK_MERGE_BYTES: usize = 4096;

#[derive(Debug, Default)]
struct Buffer {
    chunks: VecDeque<Chunk>,
    /// Memory held, counted as data plus [`CHUNK_OVERHEAD_BYTES`] per chunk.
    bytes: usize,
    dropped_bytes: u64,
    /// Every byte ever written, held or dropped (also before a move).
    written_bytes: u64,
    /// Output commit (issue #16): readers see up to here only; a recorded
    /// checkpoint moves it on ([`ProcessLog::release_to`]). `None`:
    /// everything is visible as written.
    visible_end: Option<u64>,
}

/// What a log holds, read at one instant: its chunks, oldest first, and
/// the position of the first one.
///
/// A **position** counts every byte the process ever wrote to any of its
/// streams, in order, including bytes written on other nodes before it
/// moved here and bytes the cap dropped: the log keeps the newest bytes, so
/// what it holds starts at `start` (the bytes dropped so far) and ends at
/// [`LogView::end`] (all bytes written). Positions are the same on every
/// node the process ran on, so a reader can go on from where it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    /// Position of the first held byte (= bytes dropped so far).
    pub start: u64,
    /// The chunks held.
    pub chunks: Vec<Chunk>,
}

impl LogView {
    /// Position after the last held byte (= bytes written so far).
    pub fn end(&self) -> u64 {
        self.chunks
            .iter()
            .fold(self.start, |p, c| p.saturating_add(c.data.len() as u64))
    }

    /// Keep only what lies before position `end`.
    pub fn truncate(&mut self, end: u64) {
        let mut at = self.start;
        let mut keep = 0;
        for c in self.chunks.iter_mut() {
            if at >= end {
                break;
            }
            let len = c.data.len() as u64;
            if at + len > end {
                c.data.truncate((end - at) as usize);
            }
            at += len;
            keep += 1;
        }
        self.chunks.truncate(keep);
        if self.start > end {
            self.start = end;
        }
    }
}

/// A bounded, shareable capture of one process's output.
#[derive(Debug)]
pub struct ProcessLog {
    buffer: Mutex<Buffer>,
    bytes_max: usize,
    forward: bool,
    /// Woken after every kept write, so followers wait for output instead
    /// of polling for it.
    written: Notify,
}

impl ProcessLog {
    /// A log keeping at most `bytes_max` bytes; with `forward`, stdout and
    /// stderr are also written to the host's stdout and stderr as they come.
    pub fn new(bytes_max: usize, forward: bool) -> Arc<Self> {
        Arc::new(ProcessLog {
            buffer: Mutex::new(Buffer::default()),
            bytes_max,
            forward,
            written: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take over the output a process wrote before it came here (a move,
    /// or a move called off): the `chunks` its old log held, the first at
    /// position `start` (see [`LogView`]). The bytes dropped there count as
    /// dropped here, so positions go on unchanged; what does not fit this
    /// log's cap is dropped (and counted) as usual. Nothing is forwarded:
    /// it was written before. Meant for a fresh log.
    pub fn carry(&self, start: u64, chunks: &[Chunk]) {
        {
            let mut b = self.lock();
            b.dropped_bytes = b.dropped_bytes.saturating_add(start);
            b.written_bytes = b.written_bytes.saturating_add(start);
        }
        for chunk in chunks {
            self.record(chunk.stream, &chunk.data);
        }
    }

    /// Record (and maybe forward) one write.
    pub fn append(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.forward {
            // Forwarding failures (a closed terminal) must not kill the guest.
            let _ = match stream {
                Stream::Stdout => std::io::stdout()
                    .lock()
                    .write_all(data)
                    .and_then(|_| std::io::stdout().flush()),
                Stream::Stderr => std::io::stderr().lock().write_all(data),
                Stream::Log(_) => Ok(()),
            };
        }
        self.record(stream, data);
    }

    /// Keep one write, dropping the oldest bytes past the cap, and wake
    /// the followers.
    fn record(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.keep(stream, data);
        self.written.notify_waiters();
    }

    /// A future that completes at the next write kept after it is enabled
    /// (`Notified::enable`) or first polled. To miss nothing, enable it
    /// before reading what the log holds, then wait on it.
    pub fn written(&self) -> Notified<'_> {
        self.written.notified()
    }

    fn keep(&self, stream: Stream, data: &[u8]) {
        let mut b = self.lock();
        b.written_bytes = b.written_bytes.saturating_add(data.len() as u64);
        let mut data = data;
        let room = self.bytes_max.saturating_sub(CHUNK_OVERHEAD_BYTES);
        if data.len() > room {
            let cut = data.len() - room;
            b.dropped_bytes += cut as u64;
            data = &data[cut..];
        }
        // A small write to the stream the last chunk holds joins it.
        let merge = !matches!(stream, Stream::Log(_))
            && b.chunks.back().is_some_and(|last| {
                last.stream == stream && last.data.len() + data.len() <= CHUNK_MERGE_BYTES
            });
        let cost = data.len() + if merge { 0 } else { CHUNK_OVERHEAD_BYTES };
        if merge && b.bytes + cost > self.bytes_max {
            // No room without dropping: start a chunk of its own (the
            // oldest go first, possibly the one it would have joined).
            return self.push_new(&mut b, stream, data);
        }
        if merge {
            b.bytes += cost;
            if let Some(last) = b.chunks.back_mut() {
                last.data.extend_from_slice(data);
            }
            return;
        }
        self.push_new(&mut b, stream, data);
    }

    fn push_new(&self, b: &mut Buffer, stream: Stream, data: &[u8]) {
        let cost = data.len() + CHUNK_OVERHEAD_BYTES;
        while b.bytes + cost > self.bytes_max {
            match b.chunks.pop_front() {
                Some(old) => {
                    b.bytes -= old.data.len() + CHUNK_OVERHEAD_BYTES;
                    b.dropped_bytes += old.data.len() as u64;
                }
                None => break,
            }
        }
        b.bytes += cost;
        b.chunks.push_back(Chunk {
            stream,
            data: data.to_vec(),
        });
    }

    /// Memory this log holds, bytes: data plus a per-chunk overhead; never
    /// more than its cap.
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Give back spare capacity (the process ended: nothing more is
    /// written, only read).
    pub fn shrink(&self) {
        let mut b = self.lock();
        b.chunks.shrink_to_fit();
        for c in b.chunks.iter_mut() {
            c.data.shrink_to_fit();
        }
    }

    /// True when this log echoes to the host's stdout/stderr.
    pub fn forwards(&self) -> bool {
        self.forward
    }

    /// Everything still held, oldest first.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.lock().chunks.iter().cloned().collect()
    }

    /// The concatenated bytes of one stream still held.
    pub fn stream_bytes(&self, stream: Stream) -> Vec<u8> {
        let b = self.lock();
        b.chunks
            .iter()
            .filter(|c| c.stream == stream)
            .flat_map(|c| c.data.iter().copied())
            .collect()
    }

    /// Bytes dropped because the log was full.
    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped_bytes
    }

    /// Every byte readers may see so far, held or dropped: the position a
    /// reader that has read everything is at (see [`LogView`]). Under
    /// output commit, what no recorded checkpoint covers is not counted.
    pub fn written_bytes(&self) -> u64 {
        let b = self.lock();
        b.visible_end
            .map_or(b.written_bytes, |v| v.min(b.written_bytes))
    }

    /// What readers may see now, with its position (one consistent read):
    /// under output commit, only what a recorded checkpoint covers.
    pub fn view(&self) -> LogView {
        let b = self.lock();
        let mut view = LogView {
            start: b.dropped_bytes,
            chunks: b.chunks.iter().cloned().collect(),
        };
        if let Some(end) = b.visible_end {
            view.truncate(end);
        }
        view
    }

    /// Everything the log holds, visible or not (a capture, a move).
    pub fn view_all(&self) -> LogView {
        let b = self.lock();
        LogView {
            start: b.dropped_bytes,
            chunks: b.chunks.iter().cloned().collect(),
        }
    }

    /// Turn output commit on: from now on readers see only what
    /// [`ProcessLog::release_to`] releases; `visible` (`None`: everything
    /// written so far) is visible now.
    pub fn hold_output(&self, visible: Option<u64>) {
        let mut b = self.lock();
        let written = b.written_bytes;
        b.visible_end = Some(visible.map_or(written, |v| v.min(written)));
    }

    /// How far readers may see (`None`: output commit is off).
    pub fn visible_end(&self) -> Option<u64> {
        self.lock().visible_end
    }

    /// A recorded checkpoint covers the output up to position `end`: let
    /// readers see it.
    pub fn release_to(&self, end: u64) {
        {
            let mut b = self.lock();
            let written = b.written_bytes;
            if let Some(v) = b.visible_end.as_mut() {
                *v = (*v).max(end.min(written));
            }
        }
        self.written.notify_waiters();
    }

    /// Is there output readers cannot see yet?
    pub fn held_back(&self) -> bool {
        let b = self.lock();
        b.visible_end.is_some_and(|v| v < b.written_bytes)
    }

    /// A `std::io::Write` that appends to `stream` of this log (for WASI).
    pub fn writer(self: &Arc<Self>, stream: Stream) -> LogWriter {
        LogWriter {
            log: self.clone(),
            stream,
        }
    }
}

/// Writes into a [`ProcessLog`]; handed to WASI as stdout or stderr.
#[derive(Debug, Clone)]
pub struct LogWriter {
    log: Arc<ProcessLog>,
    stream: Stream,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.append(self.stream, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx)
    }

    /// A follower armed before reading is woken by the next write, even one
    /// made before it starts waiting (no lost wake-up), and not before.
    #[test]
    fn an_armed_follower_is_woken_by_the_next_write() {
        let log = ProcessLog::new(1 << 16, false);
        let written = log.written();
        tokio::pin!(written);
        written.as_mut().enable();
        assert!(
            poll_once(written.as_mut()).is_pending(),
            "woken with nothing written"
        );
        log.append(Stream::Stdout, b"hi");
        assert!(
            poll_once(written.as_mut()).is_ready(),
            "a write after arming did not wake the follower"
        );
        // An empty write is not output: it wakes nobody.
        let again = log.written();
        tokio::pin!(again);
        again.as_mut().enable();
        log.append(Stream::Stdout, b"");
        assert!(poll_once(again.as_mut()).is_pending());
    }

    #[test]
    fn bounded_keeps_newest() {
        let log = ProcessLog::new(CHUNK_OVERHEAD_BYTES + 10, false);
        log.append(Stream::Stdout, b"hello ");
        log.append(Stream::Stderr, b"world");
        assert_eq!(log.stream_bytes(Stream::Stderr), b"world");
        assert_eq!(log.dropped_bytes(), 6);
        log.append(Stream::Stderr, b"0123456789abc");
        assert_eq!(log.stream_bytes(Stream::Stderr), b"3456789abc");
        assert!(log.held_bytes() <= CHUNK_OVERHEAD_BYTES + 10);
    }

    /// A log carried to another node (a move) keeps every position: the
    /// bytes dropped before count as dropped, a smaller cap drops (and
    /// counts) more, and the bytes after any position are the same.
    #[test]
    fn a_carried_log_keeps_its_positions() {
        let old = ProcessLog::new(CHUNK_OVERHEAD_BYTES * 4 + 40, false);
        let mut all = Vec::new();
        for i in 0..50u32 {
            let text = format!("line {i}\n");
            let stream = if i % 7 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            old.append(stream, text.as_bytes());
            all.extend_from_slice(text.as_bytes());
        }
        let view = old.view();
        assert!(view.start > 0, "the cap dropped something");
        assert_eq!(view.end(), all.len() as u64);
        assert_eq!(old.written_bytes(), all.len() as u64);
        let flat = |v: &LogView| -> Vec<u8> {
            v.chunks
                .iter()
                .flat_map(|c| c.data.iter().copied())
                .collect()
        };
        assert_eq!(flat(&view), all[view.start as usize..]);
        for cap in [1 << 20, CHUNK_OVERHEAD_BYTES + 12] {
            let new = ProcessLog::new(cap, false);
            new.carry(view.start, &view.chunks);
            new.append(Stream::Stdout, b"after\n");
            let v = new.view();
            let mut want = all.clone();
            want.extend_from_slice(b"after\n");
            assert_eq!(v.end(), want.len() as u64, "cap {cap}");
            assert_eq!(new.written_bytes(), want.len() as u64, "cap {cap}");
            assert_eq!(flat(&v), want[v.start as usize..], "cap {cap}");
            assert!(v.start >= view.start, "cap {cap}");
        }
    }

    #[test]
    fn output_commit_shows_readers_only_what_a_checkpoint_released() {
        let log = ProcessLog::new(1 << 20, false);
        log.append(Stream::Stdout, b"before ");
        log.hold_output(None);
        log.append(Stream::Stdout, b"held");
        assert!(log.held_back());
        assert_eq!(log.written_bytes(), 7);
        assert_eq!(log.view().end(), 7);
        assert_eq!(log.view().chunks[0].data, b"before ");
        // Everything, for a capture.
        assert_eq!(log.view_all().end(), 11);
        log.release_to(9);
        assert_eq!(log.view().chunks[0].data, b"before he");
        log.release_to(u64::MAX);
        assert!(!log.held_back());
        assert_eq!(log.view().chunks[0].data, b"before held");
        // Never backwards.
        log.release_to(3);
        assert_eq!(log.written_bytes(), 11);
    }

    #[test]
    fn small_writes_to_one_stream_merge() {
        let log = ProcessLog::new(1 << 20, false);
        for _ in 0..1000 {
            log.append(Stream::Stdout, b"x");
        }
        assert_eq!(log.stream_bytes(Stream::Stdout).len(), 1000);
        assert_eq!(log.chunks().len(), 1);
        assert_eq!(log.held_bytes(), 1000 + CHUNK_OVERHEAD_BYTES);
    }

    #[test]
    fn a_million_empty_log_lines_cost_what_they_weigh() {
        let cap = 1 << 20;
        let log = ProcessLog::new(cap, false);
        for _ in 0..1_000_000 {
            log.append(Stream::Log(2), b"\n");
        }
        // Each held line costs its byte plus the overhead of a chunk: the
        // cap bounds the real memory, not just the bytes written.
        assert!(log.held_bytes() <= cap);
        assert!(
            log.chunks().len() <= cap / CHUNK_OVERHEAD_BYTES,
            "{} chunks held",
            log.chunks().len()
        );
        assert_eq!(
            log.dropped_bytes() + log.chunks().len() as u64,
            1_000_000,
            "every line is either held or counted as dropped"
        );
    }
}
