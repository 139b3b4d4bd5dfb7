//! A process's stdio descriptors, as wasi-common sees them.
//!
//! wasi-common's in-memory pipes do not say when they are ready, so
//! `poll_oneoff` on fd 0, 1 or 2 failed with `BADF`. wasmtime's own WASI
//! answers at once: its stdin (empty unless inherited) is readable (at end
//! of file, 0 bytes ready), stdout and stderr are always writable. These
//! types behave the same way.

use std::any::Any;
use std::io::{IoSlice, IoSliceMut, Write};
use std::sync::Mutex;
use wasi_common::file::{FdFlags, FileType};
use wasi_common::{Error, WasiFile};

/// An empty stdin: reads return end of file, and it is always readable.
pub struct EmptyStdin;

#[async_trait::async_trait]
impl WasiFile for EmptyStdin {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::Pipe)
    }

    async fn read_vectored<'a>(&self, _bufs: &mut [IoSliceMut<'a>]) -> Result<u64, Error> {
        Ok(0)
    }

    fn num_ready_bytes(&self) -> Result<u64, Error> {
        Ok(0)
    }

    async fn readable(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// stdout or stderr: written to `W` (the process log), always writable.
pub struct Output<W: Write + Send + 'static> {
    writer: Mutex<W>,
    gate: crate::gate::Gate,
}

impl<W: Write + Send + 'static> Output<W> {
    /// Output written to `writer`.
    pub fn new(writer: W) -> Output<W> {
        Output::gated(writer, crate::gate::Gate::always_open())
    }

    /// Output written to `writer` once `gate` is open (a suspended node's
    /// processes write nothing anyone sees: [`crate::gate`]).
    pub fn gated(writer: W, gate: crate::gate::Gate) -> Output<W> {
        Output {
            writer: Mutex::new(writer),
            gate,
        }
    }
}

#[async_trait::async_trait]
impl<W: Write + Send + 'static> WasiFile for Output<W> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::Pipe)
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        Ok(FdFlags::APPEND)
    }

    async fn write_vectored<'a>(&self, bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        self.gate.pass().await;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let n = w.write_vectored(bufs)?;
        Ok(u64::try_from(n)?)
    }

    async fn writable(&self) -> Result<(), Error> {
        Ok(())
    }
}
