//! One Shoal node: its engine, module cache, registry and process table.
//!
//! [`Node`] is the embedding API: `shoal run` builds a node with no peers,
//! pushes a module into its registry and spawns it; tests and benchmarks do
//! the same. Processes reach their node through [`Shared`] to spawn and send.
//!
//! The node is split by job: [`config`] (what it is set up with), [`error`],
//! `table` (live and ended processes), `spawn` (starting new ones),
//! `lifecycle` (a process's store, task and end), `moves` (capture,
//! restore, freeze, arrival), `snapshots` (stored snapshots and their
//! files) and `host` (what processes and host code call). What it is asked
//! to start is [`crate::spec`]; its way to the cluster is
//! [`crate::cluster_link`]. Nothing below the node names it.

mod config;
mod error;
mod host;
mod lifecycle;
mod moves;
mod parking;
mod prepared;
mod snapshots;
mod spawn;
mod table;
#[cfg(test)]
mod tests;

pub use crate::cluster_link::ClusterLink;
pub use crate::spec::{DirGrant, SpawnSpec};
pub use config::{NodeConfig, BASELINE_TIER_BYTES_MIN};
pub use error::{ExitedHow, NodeError};
pub use host::HostMailbox;
pub use parking::ParkedStore;
pub use prepared::PreparedInstance;
pub use table::ProcessInfo;

use crate::abi;
use crate::engine::{self, EpochTicker};
use crate::mailbox::PushError;
use crate::modules::{LoadedModule, ModuleCache};
use crate::pid::{Pid, PidAllocator};
use crate::process::ProcessCtx;
use crate::router::Router;
use shoal_registry::{Registry, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use table::{Exited, ProcessEntry};
use wasmtime::Linker;

/// The sender of a node-to-node control message kept in a held mailbox
/// (a migration fence, see [`crate::handoff`]); no process ever has
/// this pid.
pub const CONTROL_SENDER: Pid = Pid(u64::MAX);

/// Longest a spawn waits for the cluster to grant a pid block.
const PID_BLOCK_WAIT: Duration = Duration::from_secs(10);

/// The node state processes share.
pub struct Shared {
    config: NodeConfig,
    /// The node's imports on the optimizing engine (the baseline tier's are
    /// in the module cache).
    linker: Linker<ProcessCtx>,
    registry: Registry,
    modules: ModuleCache,
    processes: RwLock<HashMap<Pid, Arc<ProcessEntry>>>,
    last_snapshots: Mutex<HashMap<Pid, crate::snapshot::Parent>>,
    /// Volumes of arriving processes, rebuilt during the pre-copy
    /// ([`Node::stage_volumes`]); taken by their start.
    staged_volumes: Mutex<HashMap<Pid, crate::volume::Volumes>>,
    exited: Mutex<VecDeque<(Pid, Exited)>>,
    /// Where messages go (local, held, arriving, remote).
    router: Router,
    pids: PidAllocator,
    /// The data dir, canonical: never granted to a process.
    data_dir_canonical: PathBuf,
    /// `config.grantable_dirs`, canonical.
    grantable_canonical: Vec<PathBuf>,
    /// What all processes' linear memories together may use.
    memory_budget: Arc<crate::limits::MemoryBudget>,
    /// Bumped whenever a process enters or leaves the table (see
    /// [`Node::table_changes`]).
    table_version: tokio::sync::watch::Sender<u64>,
    /// Closed while the node is suspended ([`crate::gate`]).
    gate: crate::gate::GateKeeper,
    /// Stores of processes moving away, kept until their move is over.
    parking: parking::Parking,
    _ticker: EpochTicker,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}
impl Node {
    /// Start a node: open its registry, build its engine, start preemption.
    pub fn new(config: NodeConfig) -> Result<Node, NodeError> {
        let mut config = config;
        if config.process_fuel.is_some() {
            config.engine.fuel = true;
        }
        config.process_memory_bytes_max = config
            .process_memory_bytes_max
            .min(config.engine.memory_bytes_max);
        let registry = Registry::open(config.data_dir.join("registry"))?;
        let data_dir_canonical = crate::grants::canonical(&config.data_dir)?;
        let mut grantable_canonical = Vec::with_capacity(config.grantable_dirs.len());
        for dir in &config.grantable_dirs {
            grantable_canonical.push(crate::grants::refuse_data_dir(dir, &data_dir_canonical)?);
        }
        let engine = engine::build_engine(&config.engine)
            .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        abi::register_all(&mut linker).map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
        // A change to preparation (PREPARE_VERSION, or which imports block:
        // Asyncify instruments what reaches them) must miss the artifact
        // cache.
        let blocking: Vec<String> = shoal_abi::table::blocking_imports()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        let prepare_tag = format!(
            "{} asserts={} instrument={} blocking={}",
            shoal_prepare::PREPARE_VERSION,
            config.asyncify_asserts,
            config.instrument,
            blocking.join(",")
        );
        let fingerprint = engine::fingerprint(&engine, &config.engine, &prepare_tag);
        let mut modules = ModuleCache::new(
            engine.clone(),
            registry.clone(),
            fingerprint,
            config.asyncify_asserts,
            config.instrument,
        );
        if let Some(worker) = &config.prepare_worker {
            modules = modules.with_worker(worker.clone());
        }
        let mut engines = vec![engine.clone()];
        if let Some(bytes_min) = config.baseline_tier_bytes_min {
            let baseline = engine::build_baseline_engine(&config.engine)
                .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
            let mut baseline_linker = Linker::new(&baseline);
            abi::register_all(&mut baseline_linker)
                .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
            let baseline_fingerprint = engine::fingerprint(&baseline, &config.engine, &prepare_tag);
            modules = modules.with_baseline(
                baseline.clone(),
                baseline_fingerprint,
                baseline_linker,
                bytes_min,
            );
            engines.push(baseline);
        }
        let ticker = EpochTicker::start(engines, config.epoch_tick)
            .map_err(|e| NodeError::Runtime(format!("cannot start the epoch thread: {e}")))?;
        let memory_budget = Arc::new(crate::limits::MemoryBudget::new(config.memory_budget_bytes));
        Ok(Node {
            shared: Arc::new(Shared {
                config,
                linker,
                registry,
                modules,
                processes: RwLock::new(HashMap::new()),
                last_snapshots: Mutex::new(HashMap::new()),
                staged_volumes: Mutex::new(HashMap::new()),
                parking: Default::default(),
                exited: Mutex::new(VecDeque::new()),
                router: Router::default(),
                pids: PidAllocator::starting_at(1),
                data_dir_canonical,
                grantable_canonical,
                memory_budget,
                table_version: tokio::sync::watch::Sender::new(0),
                gate: Default::default(),
                _ticker: ticker,
            }),
        })
    }

    /// A handle that does not keep the node alive (for the cluster layer,
    /// which the node itself holds: a strong handle would be a cycle).
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.shared))
    }

    /// Suspend (`true`) or resume this node's processes: while suspended
    /// every Shoal import and every stdout/stderr write of every process
    /// waits ([`crate::gate`]). `true` if that changed anything.
    pub fn set_suspended(&self, suspended: bool) -> bool {
        self.shared.gate.set_open(!suspended)
    }

    /// Whether this node's processes are suspended.
    pub fn is_suspended(&self) -> bool {
        !self.shared.gate.is_open()
    }

    /// The node's registry.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// Check what someone with `authority` asks to grant a process here
    /// (see [`crate::grants::admit`]): host paths come back canonical.
    pub fn admit_grants(
        &self,
        grants: &crate::grants::Grants,
        authority: crate::grants::DirAuthority,
    ) -> Result<crate::grants::Grants, NodeError> {
        Ok(crate::grants::admit(
            grants,
            authority,
            &self.shared.grantable_canonical,
            &self.shared.data_dir_canonical,
        )?)
    }

    /// Store a module in the registry and return its hash (does not compile).
    pub fn add_module(&self, wasm: &[u8]) -> Result<Sha256, NodeError> {
        Ok(self.shared.registry.put(wasm)?)
    }

    /// Prepare and compile a module now (blocking), returning it.
    pub fn load_module(&self, hash: &Sha256) -> Result<Arc<LoadedModule>, NodeError> {
        self.load_module_variant(hash, false)
    }

    /// [`Node::load_module`] for a variant: `preemptible` as in [`SpawnSpec`].
    pub fn load_module_variant(
        &self,
        hash: &Sha256,
        preemptible: bool,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        Ok(self.shared.modules.load(
            hash,
            preemptible,
            &self.shared.linker,
            crate::low_priority::Priority::Waited,
        )?)
    }

    /// True when a compiled artifact of `hash` is cached on disk.
    pub fn is_compiled(&self, hash: &Sha256) -> bool {
        self.shared.modules.is_compiled(hash)
    }

    /// True when a baseline-tier artifact of `hash` is cached on disk
    /// (see [`crate::modules::ModuleCache::with_baseline`]).
    pub fn is_compiled_baseline(&self, hash: &Sha256) -> bool {
        self.shared.modules.is_compiled_baseline(hash)
    }

    /// Send a message from the host (sender pid 0 is never a process).
    pub fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError> {
        self.shared.router.send(from, to, data)
    }

    /// Where this node's messages go: its routing tables (held mailboxes,
    /// arrival handoffs) and its way to the cluster (see
    /// [`crate::router`]).
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Make this node part of a cluster: from now on pids come from blocks
    /// the cluster grants ([`Node::pids`]), and sends, spawns and module
    /// lookups this node cannot serve alone go through `link`. Once only.
    pub fn attach_cluster(&self, link: Arc<dyn ClusterLink>) -> Result<(), NodeError> {
        if self.shared.router.attach_cluster(link) {
            Ok(())
        } else {
            Err(NodeError::Runtime(
                "the node is already part of a cluster".into(),
            ))
        }
    }

    /// The node's pid allocator (the cluster layer grants it blocks).
    pub fn pids(&self) -> &PidAllocator {
        &self.shared.pids
    }

    /// Resolve a module reference (`sha256:…`, bare hex, or a name).
    pub fn resolve(&self, reference: &str) -> Result<Sha256, NodeError> {
        Ok(self.shared.registry.resolve(reference)?)
    }
}

/// A [`Node`] handle that does not keep it alive.
#[derive(Clone)]
pub struct WeakNode(std::sync::Weak<Shared>);

impl WeakNode {
    /// The node, if it still exists.
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|shared| Node { shared })
    }
}

impl Shared {
    /// The node's per-message size limit.
    pub fn message_bytes_max(&self) -> usize {
        self.config.message_bytes_max
    }
}
