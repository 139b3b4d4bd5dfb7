//! A process: the data its store carries and the task that runs it.
//!
//! Everything host-side a process owns is reachable from [`ProcessCtx`] —
//! its WASI context, limits, mailbox and log — so a snapshot can find it all
//! in one place.

use super::limits::ProcessLimiter;
use super::log::ProcessLog;
use super::mailbox::Mailbox;
use crate::node::Shared;
use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use wasi_common::{I32Exit, WasiCtx};
use wasmtime::{InstancePre, Store, Trap};

/// The data of a process's wasmtime store.
pub struct ProcessCtx {
    /// This process's pid.
    pub pid: Pid,
    /// Its WASI context (args, env, preopened dirs, stdio).
    pub wasi: WasiCtx,
    /// Its memory cap.
    pub limiter: ProcessLimiter,
    /// Its mailbox.
    pub mailbox: Arc<Mailbox>,
    /// Its captured output.
    pub log: Arc<ProcessLog>,
    /// The node it runs on (to spawn and to send).
    pub node: Arc<Shared>,
}

/// Why a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitReason {
    /// It returned from `_start` (code 0) or called `exit`/`proc_exit`.
    Exited {
        /// The exit code it chose.
        code: i32,
    },
    /// It trapped (unreachable, out-of-bounds access, stack overflow, ...).
    Trapped {
        /// The trap and its wasm backtrace.
        message: String,
    },
    /// It asked for more memory than its cap allows and then failed.
    MemoryLimit {
        /// The cap, in bytes.
        limit_bytes: u64,
        /// The memory size it asked for, in bytes.
        requested_bytes: u64,
    },
    /// It ran out of fuel.
    FuelExhausted {
        /// The fuel it was given.
        fuel: u64,
    },
    /// It was killed by a user or by its node.
    Killed,
    /// It never started (instantiation failed, no `_start`).
    StartFailed {
        /// What went wrong.
        message: String,
    },
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The process.
    pub pid: Pid,
    /// Why it ended.
    pub reason: ExitReason,
}

impl ExitStatus {
    /// The exit code a shell should see, matching `wasmtime run`: the code
    /// the guest chose, 134 (SIGABRT) for a trap or a failed start, 137
    /// (SIGKILL) for a kill.
    pub fn code(&self) -> i32 {
        match &self.reason {
            ExitReason::Exited { code } => *code,
            ExitReason::Killed => 137,
            _ => 134,
        }
    }

    /// True when the process exited by its own choice with code 0.
    pub fn success(&self) -> bool {
        self.reason == ExitReason::Exited { code: 0 }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exited with code {code}"),
            ExitReason::Trapped { message } => write!(f, "trapped: {message}"),
            ExitReason::MemoryLimit {
                limit_bytes,
                requested_bytes,
            } => write!(
                f,
                "killed: memory limit exceeded (limit {}, asked for {})",
                mib(*limit_bytes),
                mib(*requested_bytes)
            ),
            ExitReason::FuelExhausted { fuel } => {
                write!(f, "killed: fuel exhausted after {fuel} units")
            }
            ExitReason::Killed => write!(f, "killed"),
            ExitReason::StartFailed { message } => write!(f, "failed to start: {message}"),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} {}", self.pid, self.reason)
    }
}

/// Turn the error a guest call ended with into an exit reason.
pub fn classify(error: &wasmtime::Error, ctx: &ProcessCtx, fuel: Option<u64>) -> ExitReason {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return ExitReason::Exited { code: exit.0 };
    }
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return ExitReason::FuelExhausted {
            fuel: fuel.unwrap_or(0),
        };
    }
    if let Some(requested) = ctx.limiter.memory_refused_bytes {
        return ExitReason::MemoryLimit {
            limit_bytes: ctx.limiter.memory_bytes_max as u64,
            requested_bytes: requested as u64,
        };
    }
    ExitReason::Trapped {
        message: format!("{error:?}"),
    }
}

/// Instantiate and run a process to its end.
pub async fn run(
    mut store: Store<ProcessCtx>,
    pre: InstancePre<ProcessCtx>,
    fuel: Option<u64>,
) -> ExitReason {
    let instance = match pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        Err(e) => {
            return ExitReason::StartFailed {
                message: format!("{e:#}"),
            }
        }
    };
    let start =
        match instance.get_typed_func::<(), ()>(&mut store, "_start") {
            Ok(f) => f,
            Err(_) => return ExitReason::StartFailed {
                message:
                    "the module exports no `_start() -> ()` function, so it is not a WASI command"
                        .into(),
            },
        };
    match start.call_async(&mut store, ()).await {
        Ok(()) => ExitReason::Exited { code: 0 },
        Err(e) => classify(&e, store.data(), fuel),
    }
}
