//! What a node is set up with ([`NodeConfig`]): plain data, no behaviour
//! beyond defaults. What it is asked to start is [`crate::spec`].

use crate::engine::EngineSettings;
use crate::mailbox::MailboxLimits;
use std::path::PathBuf;
use std::time::Duration;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the node keeps its registry and state.
    pub data_dir: PathBuf,
    /// Engine and instance-pool settings.
    pub engine: EngineSettings,
    /// Default memory cap of a process, in bytes (at most `engine.memory_bytes_max`).
    pub process_memory_bytes_max: u64,
    /// Fuel given to each process, if fuel metering is on (`engine.fuel`).
    pub process_fuel: Option<u64>,
    /// Bounds of each mailbox.
    pub mailbox: MailboxLimits,
    /// Largest message a process may send, in bytes.
    pub message_bytes_max: usize,
    /// Output bytes kept per process.
    pub log_bytes_max: usize,
    /// How often running guests are interrupted to let others run.
    pub epoch_tick: Duration,
    /// Insert Asyncify's runtime asserts (tests).
    pub asyncify_asserts: bool,
    /// Prepare modules for capture (Asyncify). Off only to measure what
    /// preparation costs: processes of an uninstrumented module cannot be
    /// snapshotted.
    pub instrument: bool,
    /// How many exited processes' statuses and logs are remembered.
    pub exited_history_max: usize,
    /// Host directories a client may grant a process (the operator's
    /// `--grantable-dir`); none may hold the data dir.
    pub grantable_dirs: Vec<PathBuf>,
    /// The most linear memory all processes together may have (see
    /// [`crate::limits::MemoryBudget`]); 80% of the machine's by default.
    pub memory_budget_bytes: u64,
    /// Prepare modules in worker processes, each bounded in time (a node
    /// daemon sets it); `None`: in this process, one at a time (tests,
    /// `shoal run`).
    pub prepare_worker: Option<shoal_prepare::worker::WorkerConfig>,
    /// Tiered compilation: a module someone waits for whose prepared bytes
    /// are at least this many starts in the baseline tier (Winch) while
    /// Cranelift compiles it in the background (see
    /// [`crate::modules::ModuleCache::with_baseline`]). `None`: always
    /// Cranelift.
    pub baseline_tier_bytes_min: Option<usize>,
}

/// Default of [`NodeConfig::baseline_tier_bytes_min`]: below 1 MiB of
/// prepared code Cranelift takes well under half a second, and a module
/// that small gains little from the baseline tier.
pub const BASELINE_TIER_BYTES_MIN: usize = 1 << 20;

impl NodeConfig {
    /// Defaults for a node keeping its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let engine = EngineSettings::default();
        NodeConfig {
            data_dir: data_dir.into(),
            process_memory_bytes_max: engine.memory_bytes_max,
            engine,
            process_fuel: None,
            mailbox: MailboxLimits::default(),
            message_bytes_max: 1 << 20,
            log_bytes_max: 1 << 20,
            epoch_tick: Duration::from_millis(10),
            asyncify_asserts: false,
            instrument: true,
            exited_history_max: 4096,
            grantable_dirs: Vec::new(),
            memory_budget_bytes: crate::limits::default_memory_budget_bytes(),
            prepare_worker: None,
            baseline_tier_bytes_min: Some(BASELINE_TIER_BYTES_MIN),
        }
    }
}
