//! Executing processes: the engine, limits, mailboxes, logs and the process
//! task.
//!
//! - [`engine`] — wasmtime configuration (pooling allocator, epochs, fuel).
//! - [`modules`] — prepared and compiled modules, cached by hash.
//! - [`limits`] — per-process memory cap.
//! - [`mailbox`] — bounded per-process message queues.
//! - [`log`] — bounded per-process stdout/stderr/log capture.
//! - [`capture`] — suspending a process inside a blocking call.
//! - [`handoff`] — per-sender order for a process arriving from another node.
//! - [`process`] — the store data of a process and the task that runs it.

pub mod capture;
pub mod engine;
pub mod handoff;
pub mod limits;
pub mod log;
pub mod mailbox;
pub mod modules;
pub mod process;
