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

pub use shoal_abi::process::Stream;

/// One captured write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Source stream.
    pub stream: Stream,
    /// The bytes written.
    pub data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Buffer {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    dropped_bytes: u64,
}

/// A bounded, shareable capture of one process's output.
#[derive(Debug)]
pub struct ProcessLog {
    buffer: Mutex<Buffer>,
    bytes_max: usize,
    forward: bool,
}

impl ProcessLog {
    /// A log keeping at most `bytes_max` bytes; with `forward`, stdout and
    /// stderr are also written to the host's stdout and stderr as they come.
    pub fn new(bytes_max: usize, forward: bool) -> Arc<Self> {
        Arc::new(ProcessLog {
            buffer: Mutex::new(Buffer::default()),
            bytes_max,
            forward,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut b = self.lock();
        let mut data = data;
        if data.len() > self.bytes_max {
            let cut = data.len() - self.bytes_max;
            b.dropped_bytes += cut as u64;
            data = &data[cut..];
        }
        while b.bytes + data.len() > self.bytes_max {
            match b.chunks.pop_front() {
                Some(old) => {
                    b.bytes -= old.data.len();
                    b.dropped_bytes += old.data.len() as u64;
                }
                None => break,
            }
        }
        b.bytes += data.len();
        b.chunks.push_back(Chunk {
            stream,
            data: data.to_vec(),
        });
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

    #[test]
    fn bounded_keeps_newest() {
        let log = ProcessLog::new(10, false);
        log.append(Stream::Stdout, b"hello ");
        log.append(Stream::Stdout, b"world");
        assert_eq!(log.stream_bytes(Stream::Stdout), b"world");
        assert_eq!(log.dropped_bytes(), 6);
        log.append(Stream::Stderr, b"0123456789abc");
        assert_eq!(log.stream_bytes(Stream::Stderr), b"3456789abc");
    }
}
