//! Suspending a process inside a blocking host call, and resuming it there.
//!
//! Modules are prepared with Asyncify (see `shoal_prepare`), so a guest can
//! save its own call stack into a buffer in its linear memory. A blocking
//! host call that sees a capture request:
//! 1. records which call it is and how much of its wait is left
//!    ([`PendingCall`]),
//! 2. starts an unwind (`asyncify_start_unwind`) and returns a dummy value;
//!    the guest then unwinds frame by frame and `_start` returns,
//! 3. the process runner ([`super::process`]) stops the unwind and copies
//!    memory and globals — the process is now plain data.
//!
//! To resume (in place, or in a fresh engine after writing memory and
//! globals back), the runner sets [`ProcessCtx::resume`], starts a rewind
//! and calls `_start` again; the guest re-enters the same host call, which
//! sees the pending call ([`enter`]), stops the rewind and goes on waiting
//! for the time that was left.

use super::process::ProcessCtx;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;
use wasmtime::{AsContextMut, Caller, Extern, Memory};

/// Bytes of guest memory reserved for Asyncify's saved stack. One Wasm page:
/// the notes measured 120–188 bytes used by a Rust guest blocked in `recv`.
pub const ASYNCIFY_BUFFER_BYTES: u32 = 64 * 1024;

/// A request to capture a process at its next blocking call.
#[derive(Debug, Default)]
pub struct CaptureSignal {
    requested: AtomicBool,
    notify: Notify,
    reply: std::sync::Mutex<Option<(CaptureMode, ReplyTo)>>,
}

/// What happens to a process once it has been captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// It goes on (a live snapshot). Its mailbox is copied into the image.
    Resume,
    /// It ends ([`super::process::ExitReason::Snapshotted`]).
    Stop,
    /// It ends to move to another node ([`super::process::ExitReason::Moved`]):
    /// its queued messages are *taken* into the image, and its mailbox stays
    /// open so that later messages are kept for forwarding.
    Move,
}

/// Where a captured image goes.
pub type ReplyTo = tokio::sync::oneshot::Sender<super::process::CapturedProcess>;

impl CaptureSignal {
    /// Ask for a capture delivered to `reply`; `mode` says what the process
    /// does after it. Fails if a capture is already pending.
    pub fn request_capture(&self, mode: CaptureMode, reply: ReplyTo) -> Result<(), ReplyTo> {
        {
            let mut slot = self.reply.lock().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|(_, r)| !r.is_closed()) {
                return Err(reply);
            }
            *slot = Some((mode, reply));
        }
        self.request();
        Ok(())
    }

    /// Take the pending reply (the runner does, after unwinding).
    pub fn take_reply(&self) -> Option<(CaptureMode, ReplyTo)> {
        self.reply.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Ask the process to stop at (or in) its next blocking call.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// True while a capture is requested and not yet taken.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Mark the request as taken.
    pub fn clear(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    /// Resolves when a capture is requested.
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// The blocking call a captured process was in, and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCall {
    /// `module.name` of the import, e.g. `shoal_v1.recv`.
    pub import: String,
    /// Milliseconds left of its timeout or sleep (`None`: waits forever, or
    /// the call had not started waiting).
    pub remaining_ms: Option<u64>,
    /// An effect waiting for a recorded checkpoint before it is made: its
    /// number among the process's output ([`crate::abi::effect`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<u64>,
}

/// How a blocking call was entered.
#[derive(Debug)]
pub enum Entry {
    /// A normal call.
    Fresh,
    /// The process is being resumed inside this call.
    Resumed(PendingCall),
}

fn func(caller: &mut Caller<'_, ProcessCtx>, name: &str) -> wasmtime::Result<wasmtime::Func> {
    match caller.get_export(name) {
        Some(Extern::Func(f)) => Ok(f),
        _ => Err(wasmtime::Error::msg(format!(
            "the module has no `{name}` export: it was not prepared for capture"
        ))),
    }
}

/// True when this process's module can be captured (it was instrumented).
pub fn capturable(caller: &mut Caller<'_, ProcessCtx>) -> bool {
    matches!(
        caller.get_export("asyncify_start_unwind"),
        Some(Extern::Func(_))
    )
}

/// Call at the start of every blocking import: finishes a rewind if the
/// process is being resumed here.
pub async fn enter(caller: &mut Caller<'_, ProcessCtx>, import: &str) -> wasmtime::Result<Entry> {
    let Some(pending) = caller.data_mut().resume.take() else {
        return Ok(Entry::Fresh);
    };
    if pending.import != import {
        return Err(wasmtime::Error::msg(format!(
            "snapshot resumed in `{import}` but was captured in `{}`",
            pending.import
        )));
    }
    let stop = func(caller, "asyncify_stop_rewind")?.typed::<(), ()>(&*caller)?;
    stop.call_async(&mut *caller, ()).await?;
    Ok(Entry::Resumed(pending))
}

/// Reserve (once) the Asyncify buffer: one page grown at the top of memory,
/// owned by the host. Returns its address.
fn ensure_buffer(caller: &mut Caller<'_, ProcessCtx>, memory: Memory) -> wasmtime::Result<u32> {
    if let Some(base) = caller.data().asyncify_buffer {
        return Ok(base);
    }
    let pages_before = memory.grow(caller.as_context_mut(), 1).map_err(|e| {
        wasmtime::Error::msg(format!(
            "cannot reserve the capture buffer (memory cap reached?): {e}"
        ))
    })?;
    let base = u32::try_from(pages_before * 65536)
        .map_err(|_| wasmtime::Error::msg("capture buffer beyond 4 GiB"))?;
    caller.data_mut().asyncify_buffer = Some(base);
    Ok(base)
}

/// Write the Asyncify buffer header `{current = base + 8, end = base + len}`.
pub fn write_header(data: &mut [u8], base: u32) -> wasmtime::Result<()> {
    let b = base as usize;
    let header = data
        .get_mut(b..b + 8)
        .ok_or_else(|| wasmtime::Error::msg("capture buffer outside memory"))?;
    header[..4].copy_from_slice(&(base + 8).to_le_bytes());
    header[4..].copy_from_slice(&(base + ASYNCIFY_BUFFER_BYTES).to_le_bytes());
    Ok(())
}

/// Begin unwinding from inside a blocking import. The import must then
/// return (any value); the runner completes the capture.
pub async fn unwind(
    caller: &mut Caller<'_, ProcessCtx>,
    pending: PendingCall,
) -> wasmtime::Result<()> {
    let memory = match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => return Err(wasmtime::Error::msg("the module exports no memory")),
    };
    let base = ensure_buffer(caller, memory)?;
    write_header(memory.data_mut(&mut *caller), base)?;
    caller.data().capture.clear();
    caller.data_mut().pending = Some(pending);
    let start = func(caller, "asyncify_start_unwind")?.typed::<i32, ()>(&*caller)?;
    start.call_async(&mut *caller, base as i32).await?;
    Ok(())
}

/// The outcome of waiting in a capturable call.
pub enum Waited<T> {
    /// The wait finished.
    Done(T),
    /// A capture was requested first.
    Capture,
}

/// Await `fut`, unless a capture is requested first (only for capturable
/// processes; others just wait).
pub async fn wait_or_capture<F: std::future::Future>(
    signal: &CaptureSignal,
    capturable: bool,
    fut: F,
) -> Waited<F::Output> {
    if !capturable {
        return Waited::Done(fut.await);
    }
    tokio::select! {
        biased;
        v = fut => Waited::Done(v),
        _ = signal.requested() => Waited::Capture,
    }
}
