//! Executing processes on one node: the engine, limits, mailboxes, logs, the
//! process task, the host functions, snapshots and the local process table.
//!
//! This crate knows nothing of the network, the cluster or the daemon: a
//! node reaches the rest of the cluster only through the [`node::ClusterLink`]
//! trait that the daemon implements.
//!
//! - [`engine`] — wasmtime configuration (pooling allocator, epochs, fuel).
//! - [`modules`] — prepared and compiled modules, cached by hash.
//! - [`limits`] — per-process memory cap.
//! - [`mailbox`] — bounded per-process message queues.
//! - [`log`] — bounded per-process stdout/stderr/log capture.
//! - [`capture`] — suspending a process inside a blocking call.
//! - [`dirty`] — which pages of a linear memory were written since the last
//!   look (asynchronous userfaultfd write protection).
//! - [`image_memory`] — a captured memory: its bytes, or a stored
//!   snapshot's pages.
//! - [`memory_copy`] — a process's memory as of its last capture, updated
//!   by copying only the written pages.
//! - [`clock`] — a process's monotonic clock, carried across captures.
//! - [`handoff`] — per-sender order for a process arriving from another node.
//! - [`process`] — the store data of a process and the task that runs it.
//! - [`grants`] — what a restored or arriving process may touch, and the
//!   checks every captured image passes.
//! - [`stdio`] — a process's stdin, stdout and stderr.
//! - [`volume`] — private volumes: directories that move with a process.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod abi;
pub mod calls;
pub mod capture;
pub mod clock;
pub mod cluster_link;
pub mod dirty;
pub mod engine;
pub mod gate;
pub mod grants;
pub mod handoff;
pub mod host;
pub mod image_memory;
pub mod limits;
pub mod log;
pub mod low_priority;
pub mod mailbox;
pub mod memory_copy;
pub mod modules;
pub mod node;
pub mod open_files;
pub mod outbox;
pub mod pid;
pub mod process;
pub mod router;
pub mod snapshot;
pub mod spec;
pub mod stdio;
pub mod volume;

pub use host::ProcessHost;
pub use node::{HostMailbox, Node, NodeConfig, NodeError, SpawnSpec};
pub use pid::Pid;
pub use process::{ExitReason, ExitStatus};
