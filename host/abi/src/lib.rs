//! Shoal's ABI, the contract between guests and hosts: the one import table,
//! the error codes, and (with the default `host` feature) the plain data a
//! host shares about processes — pids, exit reasons, output streams.
//!
//! The guest SDK depends on this crate without default features, so the
//! error-code table exists once, here.
#![cfg_attr(not(feature = "host"), no_std)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

extern crate alloc;

pub mod calls;
pub mod errno;
pub mod kv;
#[cfg(feature = "host")]
pub mod pid;
#[cfg(feature = "host")]
pub mod process;
pub mod table;

#[cfg(feature = "host")]
pub use pid::Pid;
#[cfg(feature = "host")]
pub use process::{ExitReason, ExitStatus, Stream};
