//! What a process is to the outside world: how it ended and which of its
//! output streams a write came from. Plain data, shared by the runtime, the
//! control API and the CLI.

use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// WASI fd 1.
    Stdout,
    /// WASI fd 2.
    Stderr,
    /// The ABI's `log` call, with its level (0 = error .. 4 = trace).
    Log(u8),
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
    /// It was captured by a snapshot and stopped (`shoal snapshot --stop`).
    Snapshotted,
    /// It was captured to move to another node (`shoal migrate`); it goes
    /// on there under the same pid.
    Moved,
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
            ExitReason::Snapshotted => write!(f, "stopped after a snapshot"),
            ExitReason::Moved => write!(f, "moved to another node"),
            ExitReason::StartFailed { message } => write!(f, "failed to start: {message}"),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} {}", self.pid, self.reason)
    }
}

/// Which effect of which run of a process a write is, so that a copy
/// resumed inside the same call makes it once (output commit: the
/// runtime's `abi::effect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectKey {
    /// The process's life (kept across moves and resumes).
    pub life: u64,
    /// The effect's number among the process's output.
    pub seq: u64,
}
