//! Why a node operation failed ([`NodeError`]).

use crate::modules::ModuleError;
use crate::pid::Pid;
use shoal_registry::RegistryError;
use std::path::PathBuf;
use std::time::Duration;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A module could not be loaded.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// wasmtime could not be set up.
    #[error("runtime setup failed: {0}")]
    Runtime(String),
    /// A spawn argument is not acceptable.
    #[error("invalid spawn request: {0}")]
    InvalidSpawn(String),
    /// A directory may not be granted (the data dir, or not grantable by
    /// whoever asked).
    #[error(transparent)]
    Grant(#[from] crate::grants::GrantError),
    /// A granted directory could not be opened.
    #[error("cannot grant directory {path}: {source}")]
    Dir {
        /// The host path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Too many processes.
    #[error("process limit reached ({0} processes)")]
    ProcessLimit(u32),
    /// The node's memory budget cannot hold the process's memory.
    #[error(
        "this node's memory budget is full: the process needs {needed_bytes} bytes, {used_bytes} of {budget_bytes} are in use"
    )]
    MemoryBudget {
        /// Its memory.
        needed_bytes: u64,
        /// In use by the node's processes.
        used_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// No such process.
    #[error("no process with pid {0}")]
    NoProcess(Pid),
    /// The process's module has no capture points (no blocking imports).
    #[error(
        "process {0} cannot be captured: its module never blocks, so it has no capture points"
    )]
    NotCapturable(Pid),
    /// A snapshot is malformed, corrupt, or does not fit.
    #[error("snapshot refused: {0}")]
    Snapshot(#[from] crate::snapshot::format::SnapshotFormatError),
    /// A captured image (a snapshot, an arrival) does not fit this node,
    /// or asks for capabilities that were not granted.
    #[error("cannot start the captured process: {0}")]
    Image(#[from] crate::grants::ImageError),
    /// Another capture of the process is in progress.
    #[error("a capture of process {0} is already in progress")]
    CaptureBusy(Pid),
    /// The process ended before reaching a capture point.
    #[error("process {0} exited before reaching a capture point{1}")]
    ExitedBeforeCapture(Pid, ExitedHow),
    /// The process went on without being captured (a written file of a
    /// shared volume could not be published: see the node's log).
    #[error(
        "process {0} called its capture off (a written shared-volume file could not be published)"
    )]
    CaptureCalledOff(Pid),
    /// The process stayed in guest code for too long.
    #[error("process {pid} did not reach a blocking call within {waited:?}")]
    CaptureTimeout {
        /// The process.
        pid: Pid,
        /// How long we waited.
        waited: Duration,
    },
}

/// How a process that could not be captured ended, for the error message
/// (empty when it is not known).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExitedHow(pub Option<String>);

impl std::fmt::Display for ExitedHow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(how) => write!(f, " ({how})"),
            None => Ok(()),
        }
    }
}
