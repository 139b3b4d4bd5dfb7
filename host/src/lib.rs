//! The Shoal node: runs sandboxed WebAssembly processes.
//!
//! A newcomer's map of this crate:
//! - [`abi`] — the host ABI: the one import table and one file per namespace.
//! - [`prepare`] — module preparation (validate, Asyncify, export globals).
//! - [`runtime`] — the wasmtime engine, limits, mailboxes, process logs and the
//!   process task itself.
//! - [`snapshot`] — snapshots: format, storage, export/import, restore.
//! - [`node`] — one node: its process table, module cache and registry.
//! - [`pid`] — process identifiers.
//! - [`pki`] — cluster identity: CA, certificates with roles, join tokens,
//!   revocation, mTLS configs.
//! - [`net`] — node-to-node transport: HTTP/2 over mutual TLS, message lanes.
//! - [`cluster`] — Raft-replicated cluster metadata (membership, directory,
//!   names, modules, tokens, revocations).
//! - [`sched`] — placement of new processes.
//! - [`daemon`] — one node of a cluster: join, request dispatch, the
//!   cluster-wide control API, background tasks.
//! - [`demo`] — `shoal demo`: live migration on a local 3-node cluster.
//! - `cli` (binary only) — the `shoal` command line.

pub mod abi;
pub mod api;
pub mod cluster;
pub mod daemon;
pub mod demo;
pub mod migrate;
pub mod net;
pub mod node;
pub mod pid;
pub mod pki;
pub mod prepare;
pub mod runtime;
pub mod sched;
pub mod snapshot;

pub use node::{HostMailbox, Node, NodeConfig, NodeError, SpawnSpec};
pub use pid::Pid;
pub use runtime::process::{ExitReason, ExitStatus};
