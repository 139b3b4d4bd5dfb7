//! # shoal — the guest SDK for Shoal
//!
//! Shoal runs WebAssembly modules as lightweight **processes** spread over a
//! cluster of nodes. This crate is what a Rust process (built for
//! `wasm32-wasip1`) uses to talk to its node, through the Shoal ABI v1 (the
//! import module `shoal_v1`, specified in `sdk/ABI.md`).
//!
//! ## The model
//!
//! - **Processes.** Every running module instance is a process with its own
//!   linear memory, identified by a [`Pid`]: opaque, non-zero, unique in the
//!   cluster. A process learns its own pid with [`self_pid`] and starts others
//!   with [`spawn`], naming a module by hash (`"sha256:…"`) or by registered
//!   name. Processes share nothing; a child gets no environment and no
//!   directories from its parent. Everything else is plain WASI: `println!`,
//!   `std::env::args`, `std::fs` on directories the operator granted,
//!   `std::time`, randomness.
//! - **Mailboxes.** Processes talk only by messages. [`send`] copies bytes into
//!   the receiver's bounded mailbox and returns at once; [`recv`] takes the
//!   oldest message, waiting if needed. Messages from one sender to one
//!   receiver arrive in order; one message is at most [`MAX_MESSAGE_SIZE`]
//!   (1 MiB). A full mailbox answers [`Error::MailboxFull`]; [`send_blocking`]
//!   retries for you. [`send_msg`] / [`recv_msg`] carry any serde type
//!   (encoded with postcard).
//! - **Capture points.** A node can snapshot a process and restore it later,
//!   possibly on another node, but only while the process is inside a
//!   *blocking* call: [`recv`] (and [`recv_into`], [`recv_msg`]), [`sleep`],
//!   [`yield_now`], [`send_blocking`] while it waits, and the WASI calls behind
//!   `std::thread::sleep`, stdin reads and `std::thread::yield_now`. After a
//!   restore the call simply returns as if it took longer. A long computation
//!   should call [`yield_now`] now and then so it can be captured and others
//!   can run.
//!
//! ## Example: an echo server
//!
//! ```no_run
//! fn main() -> shoal::Result<()> {
//!     println!("echo ready pid={}", shoal::self_pid());
//!     loop {
//!         let msg = shoal::recv(None)?;
//!         if msg.data == b"stop" {
//!             return Ok(());
//!         }
//!         shoal::send_blocking(msg.sender, &msg.data)?;
//!     }
//! }
//! ```
//!
//! And its client, which starts the server from a registered module name:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! fn main() -> shoal::Result<()> {
//!     let echo = shoal::spawn("echo", &[])?;
//!     shoal::send(echo, b"hello")?;
//!     let reply = shoal::recv(Some(Duration::from_secs(5)))?;
//!     assert_eq!(reply.sender, echo);
//!     assert_eq!(reply.data, b"hello");
//!     shoal::send(echo, b"stop")
//! }
//! ```
//!
//! ## Errors
//!
//! Every fallible call returns [`Result`]; [`Error`] has one variant per ABI
//! error code plus the SDK's own ([`Error::Encode`], [`Error::Decode`],
//! [`Error::Unsupported`]).
//!
//! ## Targets
//!
//! The real imports exist on `wasm32` only. On other targets the crate still
//! compiles (so `cargo check`, `cargo doc` and doctests work on a development
//! machine), but every call fails with [`Error::Unsupported`], while
//! [`self_pid`] and [`exit`] panic. See [`sys`] for the raw imports.

#![warn(missing_docs)]

mod call;
mod error;
mod kv;
mod message;
mod pid;
mod process;
pub mod sys;

pub use call::{
    call, call_group, call_name, call_raw, cancel_request, demonitor, group_pick, join_group,
    leave_group, monitor, receive_response, receive_response_raw, recv_any, recv_from, register,
    reply, reply_raw, send_request, send_request_raw, serve, unregister, whereis, CallHandle, Down,
    DownReason, Incoming, MonitorRef, RequestRef, CALL_GROUP_ATTEMPTS, CALL_REPLY_BUFFER_SIZE,
    DEFAULT_CALL_TIMEOUT,
};
pub use error::{Error, Result};
pub use kv::{Bucket, Entry, Lock};
pub use message::{
    recv, recv_into, recv_msg, send, send_blocking, send_msg, Message, MAX_MESSAGE_SIZE,
    RECV_BUFFER_SIZE, SEND_BLOCKING_MAX_BACKOFF, SEND_BLOCKING_MAX_RETRIES, SEND_BLOCKING_YIELDS,
};
pub use pid::Pid;
pub use process::{exit, log, self_pid, sleep, spawn, spawn_on, yield_now, Level};
