//! One Shoal node: its engine, module cache, registry and process table.
//!
//! [`Node`] is the embedding API: `shoal run` builds a node with no peers,
//! pushes a module into its registry and spawns it; tests and benchmarks do
//! the same. Processes reach their node through [`Shared`] to spawn and send.

use crate::abi;
use crate::capture::{CaptureMode, CaptureSignal};
use crate::engine::{self, EngineSettings, EpochTicker};
use crate::host::ProcessHost;
use crate::limits::ProcessLimiter;
use crate::log::{ProcessLog, Stream};
use crate::mailbox::{Mailbox, MailboxLimits, Message, PushError};
use crate::modules::{LoadedModule, ModuleCache, ModuleError};
use crate::pid::{Pid, PidAllocator};
use crate::process::{self, CapturedProcess, ExitReason, ExitStatus, ProcessCtx, RestoreImage};
use crate::router::Router;
use shoal_registry::{Registry, RegistryError, Sha256};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};
use wasmtime::{Linker, Store};

/// The sender of a node-to-node control message kept in a held mailbox
/// (a migration fence, see [`crate::handoff`]); no process ever has
/// this pid.
pub const CONTROL_SENDER: Pid = Pid(u64::MAX);

/// Longest a spawn waits for the cluster to grant a pid block.
const PID_BLOCK_WAIT: Duration = Duration::from_secs(10);

/// How a node reaches the rest of its cluster.
///
/// A node on its own (`shoal run`, tests) has none. The cluster layer
/// (`shoal_cluster`) attaches one with [`Node::attach_cluster`]; from then
/// on a send to a pid that is not on this node, a spawn with a placement
/// target, and a module reference this node cannot resolve go through it,
/// and the node reports its processes' starts and exits so the replicated
/// process directory stays current.
#[async_trait::async_trait]
pub trait ClusterLink: Send + Sync + 'static {
    /// Send to a pid that is not on this node. `Closed` means no such
    /// process anywhere (the ABI's `NO_PROCESS`); `Full` means the way
    /// there is at its bound (the ABI's `MAILBOX_FULL`: retry).
    /// `message` may be plain or tagged ([`crate::mailbox::Tag`]); its
    /// sender is `message.sender`.
    fn send_remote(&self, to: Pid, message: Message) -> Result<(), PushError>;
    /// Start a process somewhere in the cluster. `target` is `""` (let the
    /// scheduler choose), a node name, or label constraints `k=v[,k=v]`.
    /// Errors are ABI codes.
    async fn spawn_placed(
        &self,
        target: &str,
        module_ref: &str,
        args: Vec<String>,
    ) -> Result<Pid, i32>;
    /// Find a module this node's registry does not resolve: a name from the
    /// replicated name registry, its blob fetched from a node that holds it
    /// (and checked against its sha256). Errors are ABI codes.
    async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32>;
    /// A process started on this node.
    fn process_started(&self, pid: Pid);
    /// A process on this node ended.
    fn process_exited(&self, pid: Pid);
    /// This node's id in the cluster (the origin of messages it sends).
    fn node_id(&self) -> u64;
    /// Give process `pid` the name `name` in its owner's namespace (held in
    /// Raft). Errors are ABI codes (`NAME_TAKEN`, `LIMIT`, `INVALID`, ...).
    async fn register_name(&self, pid: Pid, name: &str) -> Result<(), i32>;
    /// Take `name` away from `pid`. Errors are ABI codes.
    async fn unregister_name(&self, pid: Pid, name: &str) -> Result<(), i32>;
    /// The pid `name` names in `asker`'s owner's namespace
    /// (`NO_PROCESS` if none).
    fn whereis(&self, asker: Pid, name: &str) -> Result<Pid, i32>;
    /// Add `pid` to group `name` of its owner. Errors are ABI codes.
    async fn join_group(&self, pid: Pid, name: &str) -> Result<(), i32>;
    /// Take `pid` out of group `name`. Errors are ABI codes.
    async fn leave_group(&self, pid: Pid, name: &str) -> Result<(), i32>;
    /// One live member of group `name` in `asker`'s owner's namespace,
    /// preferring members on this node (`NO_PROCESS` if none).
    fn group_pick(&self, asker: Pid, name: &str) -> Result<Pid, i32>;
}

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
}

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
        }
    }
}

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
    #[error("process {0} exited before reaching a capture point")]
    ExitedBeforeCapture(Pid),
    /// The process stayed in guest code for too long.
    #[error("process {pid} did not reach a blocking call within {waited:?}")]
    CaptureTimeout {
        /// The process.
        pid: Pid,
        /// How long we waited.
        waited: Duration,
    },
}

/// A host directory granted to a process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirGrant {
    /// Path on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
}

impl DirGrant {
    /// Parse the wasmtime CLI spelling `HOST[::GUEST]`.
    pub fn parse(spec: &str) -> DirGrant {
        match spec.split_once("::") {
            Some((host, guest)) => DirGrant {
                host: host.into(),
                guest: guest.to_string(),
            },
            None => DirGrant {
                host: spec.into(),
                guest: spec.to_string(),
            },
        }
    }
}

/// What to start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpawnSpec {
    /// The module, by hash (it must be in the node's registry).
    pub module: Sha256,
    /// Full argv, including argv[0].
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Directories granted.
    pub dirs: Vec<DirGrant>,
    /// Give the process the host's stdin (only `shoal run` does).
    pub inherit_stdin: bool,
    /// Echo stdout/stderr to the host's as well as capturing them.
    pub forward_output: bool,
    /// Memory cap, bytes (None = node default).
    pub memory_bytes_max: Option<u64>,
    /// Run the preemptible variant of the module: every loop is a capture
    /// point, so the process can be captured even while it computes (costs
    /// CPU in loops; see `shoal_prepare::PrepareOptions::preempt`).
    #[serde(default)]
    pub preemptible: bool,
}

impl SpawnSpec {
    /// A spawn of `module` with argv `args` and nothing granted.
    pub fn new(module: Sha256, args: Vec<String>) -> Self {
        SpawnSpec {
            module,
            args,
            env: Vec::new(),
            dirs: Vec::new(),
            inherit_stdin: false,
            forward_output: false,
            memory_bytes_max: None,
            preemptible: false,
        }
    }
}

/// What the node knows about a live process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
    /// When it started.
    pub started_at: SystemTime,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
}

struct ProcessEntry {
    module: Sha256,
    mailbox: Arc<Mailbox>,
    log: Arc<ProcessLog>,
    started_at: SystemTime,
    status: watch::Receiver<Option<ExitStatus>>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    capture: Arc<CaptureSignal>,
    capturable: bool,
}

struct Exited {
    status: ExitStatus,
    log: Arc<ProcessLog>,
    /// When it ended here.
    at: SystemTime,
}

/// The node state processes share.
pub struct Shared {
    config: NodeConfig,
    engine: wasmtime::Engine,
    linker: Linker<ProcessCtx>,
    registry: Registry,
    modules: ModuleCache,
    processes: RwLock<HashMap<Pid, Arc<ProcessEntry>>>,
    last_snapshots: Mutex<HashMap<Pid, Sha256>>,
    exited: Mutex<VecDeque<(Pid, Exited)>>,
    /// Where messages go (local, held, arriving, remote).
    router: Router,
    pids: PidAllocator,
    /// The data dir, canonical: never granted to a process.
    data_dir_canonical: PathBuf,
    /// `config.grantable_dirs`, canonical.
    grantable_canonical: Vec<PathBuf>,
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
        // A change to preparation (PREPARE_VERSION) must miss the artifact cache.
        let prepare_tag = format!(
            "{} asserts={} instrument={}",
            shoal_prepare::PREPARE_VERSION,
            config.asyncify_asserts,
            config.instrument
        );
        let fingerprint = engine::fingerprint(&engine, &config.engine, &prepare_tag);
        let modules = ModuleCache::new(
            engine.clone(),
            registry.clone(),
            fingerprint,
            config.asyncify_asserts,
            config.instrument,
        );
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)
            .map_err(|e| NodeError::Runtime(format!("cannot start the epoch thread: {e}")))?;
        Ok(Node {
            shared: Arc::new(Shared {
                config,
                engine,
                linker,
                registry,
                modules,
                processes: RwLock::new(HashMap::new()),
                last_snapshots: Mutex::new(HashMap::new()),
                exited: Mutex::new(VecDeque::new()),
                router: Router::default(),
                pids: PidAllocator::starting_at(1),
                data_dir_canonical,
                grantable_canonical,
                _ticker: ticker,
            }),
        })
    }

    /// A handle that does not keep the node alive (for the cluster layer,
    /// which the node itself holds: a strong handle would be a cycle).
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.shared))
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
        Ok(self
            .shared
            .modules
            .load(hash, preemptible, &self.shared.linker)?)
    }

    /// True when a compiled artifact of `hash` is cached on disk.
    pub fn is_compiled(&self, hash: &Sha256) -> bool {
        self.shared.modules.is_compiled(hash)
    }

    /// Start a process. The module is loaded first (on a blocking thread if
    /// it has to be prepared). Must be called inside a tokio runtime.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Pid, NodeError> {
        Shared::spawn(&self.shared, spec).await
    }

    /// Wait for a process to end. Returns `None` if the pid was never seen
    /// (or has been forgotten).
    pub async fn wait(&self, pid: Pid) -> Option<ExitStatus> {
        self.shared.wait(pid).await
    }

    /// Send a message from the host (sender pid 0 is never a process).
    pub fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError> {
        self.shared.router.send(from, to, data)
    }

    /// Kill a process. It ends with [`ExitReason::Killed`].
    pub fn kill(&self, pid: Pid) -> Result<(), NodeError> {
        let entry = self.shared.entry(pid).ok_or(NodeError::NoProcess(pid))?;
        let sender = entry.kill.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = sender {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// Capture a live process at its next blocking call. With `stop` it
    /// then ends ([`ExitReason::Snapshotted`]); otherwise it goes on.
    /// `wait_max` bounds how long to wait for a process busy in guest code.
    pub async fn capture(
        &self,
        pid: Pid,
        stop: bool,
        wait_max: Duration,
    ) -> Result<CapturedProcess, NodeError> {
        let mode = if stop {
            CaptureMode::Stop
        } else {
            CaptureMode::Resume
        };
        self.capture_with(pid, mode, wait_max).await
    }

    /// [`Node::capture`] with any [`CaptureMode`].
    pub async fn capture_with(
        &self,
        pid: Pid,
        mode: CaptureMode,
        wait_max: Duration,
    ) -> Result<CapturedProcess, NodeError> {
        let entry = self.shared.entry(pid).ok_or(NodeError::NoProcess(pid))?;
        if !entry.capturable {
            return Err(NodeError::NotCapturable(pid));
        }
        let (tx, rx) = oneshot::channel();
        entry
            .capture
            .request_capture(mode, tx)
            .map_err(|_| NodeError::CaptureBusy(pid))?;
        let mut status = entry.status.clone();
        drop(entry);
        tokio::select! {
            // The image is sent before the process ends: check it first.
            biased;
            image = rx => image.map_err(|_| NodeError::ExitedBeforeCapture(pid)),
            _ = status.wait_for(|s| s.is_some()) => Err(NodeError::ExitedBeforeCapture(pid)),
            _ = tokio::time::sleep(wait_max) => Err(NodeError::CaptureTimeout { pid, waited: wait_max }),
        }
    }

    /// Start a process from a captured image (in this node's engine, which
    /// may be a fresh one). It gets a new pid and continues inside the call
    /// it was captured in.
    ///
    /// The image's spec (directories, environment, limits) is used as it
    /// is: only for an image this program captured itself. A snapshot file
    /// or a peer's image goes through [`Node::restore_snapshot`] or
    /// [`Node::start_arrived`], which take the capabilities from grants.
    pub async fn restore(&self, module: Sha256, image: RestoreImage) -> Result<Pid, NodeError> {
        self.restore_as(module, image, None).await
    }

    /// [`Node::restore`], optionally under a given pid (which must not be live).
    pub async fn restore_as(
        &self,
        module: Sha256,
        image: RestoreImage,
        pid: Option<Pid>,
    ) -> Result<Pid, NodeError> {
        let loaded = self.load_capturable(module, &image).await?;
        let spec = image.spec.clone();
        self.shared.start_as(spec, loaded, Some(image), pid, None)
    }

    /// Start `image` as `spec` (already checked against the grants),
    /// optionally under a given pid.
    pub(crate) async fn restore_with_spec(
        &self,
        module: Sha256,
        image: RestoreImage,
        spec: SpawnSpec,
        pid: Option<Pid>,
    ) -> Result<Pid, NodeError> {
        let loaded = self.load_capturable(module, &image).await?;
        self.shared.start_as(spec, loaded, Some(image), pid, None)
    }

    /// Load the module variant `image` runs, refusing one that was not
    /// prepared for capture (it cannot be rewound).
    async fn load_capturable(
        &self,
        module: Sha256,
        image: &RestoreImage,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        let loaded = self.shared.load(module, image.spec.preemptible).await?;
        if loaded.module.get_export("asyncify_start_rewind").is_none() {
            return Err(NodeError::InvalidSpawn(format!(
                "module {module} was not prepared for capture"
            )));
        }
        Ok(loaded)
    }

    /// Freeze a process to move it: capture it at its next blocking call
    /// and end it ([`ExitReason::Moved`]), taking its queued messages into
    /// the image. Its mailbox stays open, held for the move
    /// ([`Node::held_mailbox`]): what arrives meanwhile is kept, to be
    /// forwarded once the move is decided or handed back by
    /// [`Node::unfreeze`]. Returns once the process has stopped.
    pub async fn freeze(&self, pid: Pid, wait_max: Duration) -> Result<CapturedProcess, NodeError> {
        let status = self
            .shared
            .entry(pid)
            .ok_or(NodeError::NoProcess(pid))?
            .status
            .clone();
        let image = self.capture_with(pid, CaptureMode::Move, wait_max).await?;
        let mut status = status;
        let _ = status.wait_for(|s| s.is_some()).await;
        Ok(image)
    }

    /// Call a move off: start the frozen process again here, under its pid,
    /// with the messages taken at the freeze first and those held since
    /// after them, in the same mailbox (so none is lost in the switch).
    pub async fn unfreeze(
        &self,
        pid: Pid,
        module: Sha256,
        image: RestoreImage,
    ) -> Result<Pid, NodeError> {
        let mut image = image;
        // Its output so far goes on in the resumed process's log.
        if image.log.is_empty() {
            if let Some(log) = self.log(pid) {
                image.log = log.chunks();
            }
        }
        let loaded = self.shared.load(module, image.spec.preemptible).await?;
        let held = self.shared.router.held(pid);
        if let Some(mb) = &held {
            mb.retain(|m| m.sender != CONTROL_SENDER);
            let _ = mb.push_front_all(std::mem::take(&mut image.mailbox));
        }
        let spec = image.spec.clone();
        let started = self
            .shared
            .start_as(spec, loaded, Some(image), Some(pid), held)?;
        self.shared.router.release_held(pid);
        Ok(started)
    }

    /// Where this node's messages go: its routing tables (held mailboxes,
    /// arrival handoffs) and its way to the cluster (see
    /// [`crate::router`]).
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Start a process that arrived from another node, under its pid, its
    /// messages routed through its handoff (installed before). Its
    /// capabilities are `grants` (what the cluster recorded for it), never
    /// what the image carries (see [`crate::grants`]).
    pub async fn start_arrived(
        &self,
        pid: Pid,
        module: Sha256,
        image: RestoreImage,
        grants: &crate::grants::Grants,
    ) -> Result<Pid, NodeError> {
        let spec = crate::grants::spec_for(module, &image, grants)?;
        let loaded = self.load_capturable(module, &image).await?;
        let mailbox = Arc::new(Mailbox::new(self.shared.config.mailbox));
        let started =
            self.shared
                .start_as(spec, loaded, Some(image), Some(pid), Some(mailbox.clone()))?;
        if let Some(h) = self.shared.router.handoff(pid) {
            h.start(mailbox);
        }
        Ok(started)
    }

    /// The module a live process runs.
    pub fn module_of(&self, pid: Pid) -> Option<Sha256> {
        self.shared.entry(pid).map(|e| e.module)
    }

    /// The id of the last snapshot taken of `pid` on this node.
    pub fn last_snapshot(&self, pid: Pid) -> Option<Sha256> {
        self.shared
            .last_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .copied()
    }

    /// Remember `id` as the latest snapshot of `pid` (bounded map).
    pub fn set_last_snapshot(&self, pid: Pid, id: Sha256) {
        let mut map = self
            .shared
            .last_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= 4096 && !map.contains_key(&pid) {
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(pid, id);
    }

    /// Live processes.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let procs = self
            .shared
            .processes
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<ProcessInfo> = procs
            .iter()
            .map(|(pid, e)| ProcessInfo {
                pid: *pid,
                module: e.module,
                started_at: e.started_at,
                mailbox_len: e.mailbox.len(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// The captured output of a live or recently exited process (of its
    /// latest stay here, for one that moved away and back).
    pub fn log(&self, pid: Pid) -> Option<Arc<ProcessLog>> {
        if let Some(e) = self.shared.entry(pid) {
            return Some(e.log.clone());
        }
        let exited = self.shared.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .map(|(_, e)| e.log.clone())
    }

    /// How and when process `pid` ended on this node, if it ended here
    /// (not by moving away) and is still in the exit history. `None` while
    /// it runs here.
    pub fn exit_record(&self, pid: Pid) -> Option<(ExitStatus, SystemTime)> {
        if self.shared.entry(pid).is_some() {
            return None;
        }
        let exited = self.shared.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .filter(|(_, e)| e.status.reason != ExitReason::Moved)
            .map(|(_, e)| (e.status.clone(), e.at))
    }

    /// The captured stdout of a process, as text (lossy UTF-8).
    pub fn stdout_text(&self, pid: Pid) -> String {
        self.log(pid)
            .map(|l| String::from_utf8_lossy(&l.stream_bytes(Stream::Stdout)).into_owned())
            .unwrap_or_default()
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

    /// Find a module this node's registry lacks through the cluster (see
    /// [`ClusterLink::fetch_module`]); `NO_MODULE` on a node without one.
    pub async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32> {
        self.shared.fetch_through_cluster(reference).await
    }

    /// Start a process somewhere in the cluster (`target` as in
    /// [`ClusterLink::spawn_placed`]); on a node without a cluster, only
    /// `""` or this node are possible and it starts here.
    pub async fn spawn_by_reference(&self, reference: &str, args: Vec<String>) -> Result<Pid, i32> {
        self.shared.spawn_by_reference(reference, args, false).await
    }

    /// Open a mailbox for host code (tests, tools): it gets its own pid, so
    /// processes can reply to it; it closes when dropped.
    ///
    /// # Panics
    /// On a cluster node whose pid blocks are used up and not yet refilled
    /// (65,536 pids per block, refilled ahead of need).
    pub fn open_mailbox(&self) -> HostMailbox {
        let pid = self
            .shared
            .pids
            .try_allocate()
            .expect("no pid block granted to this node yet");
        let mailbox = Arc::new(Mailbox::new(self.shared.config.mailbox));
        self.shared.router.attach(pid, mailbox.clone());
        if let Some(link) = self.shared.router.cluster() {
            link.process_started(pid);
        }
        HostMailbox {
            pid,
            mailbox,
            shared: self.shared.clone(),
        }
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

/// A mailbox owned by host code rather than a process.
pub struct HostMailbox {
    pid: Pid,
    mailbox: Arc<Mailbox>,
    shared: Arc<Shared>,
}

impl HostMailbox {
    /// The pid processes send to.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Send from this mailbox's pid.
    pub fn send(&self, to: Pid, data: impl Into<Vec<u8>>) -> Result<(), PushError> {
        self.shared.router.send(self.pid, to, data.into())
    }

    /// Wait up to `timeout` for the next message.
    pub async fn recv(&self, timeout: Duration) -> Option<Message> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let crate::mailbox::Head::Taken(m) = self.mailbox.take_if_fits(usize::MAX) {
                return Some(m);
            }
            if !self.mailbox.wait_nonempty(Some(deadline)).await {
                return None;
            }
        }
    }
}

impl Drop for HostMailbox {
    fn drop(&mut self) {
        self.mailbox.close();
        self.shared.router.detach(self.pid);
        if let Some(link) = self.shared.router.cluster() {
            link.process_exited(self.pid);
        }
    }
}

impl Shared {
    fn entry(&self, pid: Pid) -> Option<Arc<ProcessEntry>> {
        self.processes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()
    }

    /// The node's per-message size limit.
    pub fn message_bytes_max(&self) -> usize {
        self.config.message_bytes_max
    }

    /// Spawn with a placement target (the ABI's `spawn_on`): `""` lets the
    /// cluster's scheduler choose; a node name or `k=v` labels constrain it.
    pub async fn spawn_placed(
        self: &Arc<Self>,
        target: &str,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
    ) -> Result<Pid, i32> {
        match self.router.cluster() {
            Some(link) => link.spawn_placed(target, reference, args).await,
            None if target.is_empty() => {
                self.spawn_by_reference(reference, args, forward_output)
                    .await
            }
            None => Err(abi::errno::NO_NODE),
        }
    }

    async fn fetch_through_cluster(&self, reference: &str) -> Result<Sha256, i32> {
        match self.router.cluster() {
            Some(link) => link.fetch_module(reference).await,
            None => Err(abi::errno::NO_MODULE),
        }
    }

    /// Resolve a module reference and start it (the ABI's `spawn`).
    pub async fn spawn_by_reference(
        self: &Arc<Self>,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
    ) -> Result<Pid, i32> {
        let hash = match self.registry.resolve(reference) {
            // A hash reference resolves without the blob being here: in a
            // cluster, fetch it from a node that has it.
            Ok(h) if !self.registry.contains(&h) && self.router.cluster().is_some() => {
                self.fetch_through_cluster(reference).await?
            }
            Ok(h) => h,
            Err(RegistryError::Io { .. }) => return Err(abi::errno::SPAWN_FAILED),
            Err(_) => self.fetch_through_cluster(reference).await?,
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(reference.to_string());
        argv.extend(args);
        let mut spec = SpawnSpec::new(hash, argv);
        spec.forward_output = forward_output;
        match Shared::spawn(self, spec).await {
            Ok(pid) => Ok(pid),
            Err(NodeError::ProcessLimit(_)) => Err(abi::errno::LIMIT),
            Err(NodeError::Registry(RegistryError::NotFound(_))) => Err(abi::errno::NO_MODULE),
            Err(_) => Err(abi::errno::SPAWN_FAILED),
        }
    }

    async fn spawn(self: &Arc<Self>, spec: SpawnSpec) -> Result<Pid, NodeError> {
        let module = self.load(spec.module, spec.preemptible).await?;
        // A cluster node may briefly wait for a pid block (granted ahead of
        // need, so this is rare).
        let pid =
            match self.router.cluster() {
                Some(_) => Some(self.pids.allocate_wait(PID_BLOCK_WAIT).await.ok_or_else(
                    || {
                        NodeError::Runtime(
                    "no pids left and the cluster granted no new block (is there a quorum?)"
                        .into(),
                )
                    },
                )?),
                None => None,
            };
        self.start_as(spec, module, None, pid, None)
    }

    async fn load(
        self: &Arc<Self>,
        hash: Sha256,
        preempt: bool,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        if self.modules.is_loaded(&hash, preempt) {
            return Ok(self.modules.load(&hash, preempt, &self.linker)?);
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.modules.load(&hash, preempt, &shared.linker))
            .await
            .map_err(|e| NodeError::Runtime(format!("module loader panicked: {e}")))?
            .map_err(NodeError::from)
    }

    /// The WASI context of a process started with `spec`, writing to
    /// `log`, whose monotonic clock starts at `monotonic_start` (zero for a
    /// new process, the captured reading for a restored or arrived one).
    fn build_wasi(
        &self,
        spec: &SpawnSpec,
        log: &Arc<ProcessLog>,
        monotonic_start: Duration,
    ) -> Result<wasi_common::WasiCtx, NodeError> {
        let mut ctx = wasi_common::WasiCtx::new(
            wasi_common::tokio::random_ctx(),
            crate::clock::clocks_from(monotonic_start),
            wasi_common::tokio::sched::sched_ctx(),
            wasi_common::Table::new(),
        );
        for arg in &spec.args {
            ctx.push_arg(arg)
                .map_err(|e| NodeError::InvalidSpawn(format!("bad argument: {e}")))?;
        }
        for (name, value) in &spec.env {
            ctx.push_env(name, value)
                .map_err(|e| NodeError::InvalidSpawn(format!("bad environment variable: {e}")))?;
        }
        if spec.inherit_stdin {
            ctx.set_stdin(Box::new(wasi_common::tokio::stdio::stdin()));
        } else {
            ctx.set_stdin(Box::new(crate::stdio::EmptyStdin));
        }
        ctx.set_stdout(Box::new(crate::stdio::Output::new(
            log.writer(Stream::Stdout),
        )));
        ctx.set_stderr(Box::new(crate::stdio::Output::new(
            log.writer(Stream::Stderr),
        )));
        for grant in &spec.dirs {
            // Nobody, whatever the path to this point, is given the data
            // dir (it holds the CA key and the compiled-code cache).
            let host = crate::grants::refuse_data_dir(&grant.host, &self.data_dir_canonical)?;
            let dir = cap_std::fs::Dir::open_ambient_dir(&host, cap_std::ambient_authority())
                .map_err(|source| NodeError::Dir {
                    path: grant.host.clone(),
                    source,
                })?;
            let dir = Box::new(wasi_common::tokio::Dir::from_cap_std(dir));
            ctx.push_preopened_dir(dir, &grant.guest)
                .map_err(|e| NodeError::Dir {
                    path: grant.host.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        Ok(ctx)
    }

    fn start_as(
        self: &Arc<Self>,
        spec: SpawnSpec,
        module: Arc<LoadedModule>,
        restore: Option<RestoreImage>,
        pid: Option<Pid>,
        mailbox: Option<Arc<Mailbox>>,
    ) -> Result<Pid, NodeError> {
        // A process given its mailbox is one that moved (arrived here, or
        // stayed after a called-off move): the directory already has it.
        let announce = mailbox.is_none();
        if let Some(p) = pid {
            if self.entry(p).is_some() {
                return Err(NodeError::InvalidSpawn(format!("pid {p} is still live")));
            }
        }
        let pid = match pid {
            Some(p) => p,
            None => self.pids.try_allocate().ok_or_else(|| {
                NodeError::Runtime("no pids left: waiting for the cluster to grant a block".into())
            })?,
        };
        let memory_max = spec
            .memory_bytes_max
            .unwrap_or(self.config.process_memory_bytes_max)
            .min(self.config.engine.memory_bytes_max);
        if let Some(image) = &restore {
            // Every field a snapshot writer or a peer controls is bounded
            // before anything uses it.
            crate::grants::check_image(image, memory_max, spec.dirs.len())?;
        }
        let capture = Arc::new(CaptureSignal::default());
        let capturable = module.module.get_export("asyncify_start_unwind").is_some();
        let log = ProcessLog::new(self.config.log_bytes_max, spec.forward_output);
        if let Some(image) = &restore {
            for chunk in &image.log {
                log.append(chunk.stream, &chunk.data);
            }
        }
        let monotonic_start = restore
            .as_ref()
            .map(|r| Duration::from_nanos(r.monotonic_ns))
            .unwrap_or_default();
        let wasi = self.build_wasi(&spec, &log, monotonic_start)?;
        let mailbox = mailbox.unwrap_or_else(|| Arc::new(Mailbox::new(self.config.mailbox)));
        if let Some(image) = &restore {
            // Calls and monitors first: they decide which answers queue.
            mailbox.restore_calls(image.calls.clone());
            for m in &image.mailbox {
                mailbox.push(m.clone()).map_err(|e| {
                    NodeError::InvalidSpawn(format!(
                        "snapshot mailbox does not fit this node's bounds: {e}"
                    ))
                })?;
            }
        }
        let memory_max = usize::try_from(memory_max).unwrap_or(usize::MAX);
        let ctx = ProcessCtx {
            pid,
            wasi,
            limiter: ProcessLimiter::new(memory_max),
            mailbox: mailbox.clone(),
            log: log.clone(),
            host: Arc::new(NodeHost(self.clone())),
            capture: capture.clone(),
            capturable,
            resume: None,
            pending: None,
            asyncify_buffer: None,
            spec: spec.clone(),
            open_files: Default::default(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let fuel = restore
            .as_ref()
            .and_then(|r| r.fuel_remaining)
            .or(self.config.process_fuel);
        if let Some(f) = fuel {
            store
                .set_fuel(f)
                .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
        }
        let (status_tx, status_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        {
            let mut procs = self.processes.write().unwrap_or_else(|p| p.into_inner());
            if procs.len() >= self.config.engine.processes_max as usize {
                return Err(NodeError::ProcessLimit(self.config.engine.processes_max));
            }
            self.router.attach(pid, mailbox.clone());
            procs.insert(
                pid,
                Arc::new(ProcessEntry {
                    module: module.hash,
                    mailbox,
                    log,
                    started_at: SystemTime::now(),
                    status: status_rx,
                    kill: Mutex::new(Some(kill_tx)),
                    capture,
                    capturable,
                }),
            );
        }
        if let Some(link) = self.router.cluster().filter(|_| announce) {
            link.process_started(pid);
        }
        let shared = self.clone();
        let pre = module.pre.clone();
        tokio::spawn(async move {
            // Whatever happens to this task — even a panic in a host
            // function — the process leaves the table.
            let mut guard = FinishGuard {
                shared,
                pid,
                status_tx: Some(status_tx),
            };
            let reason = tokio::select! {
                reason = process::run(store, pre, fuel, restore) => reason,
                Ok(()) = kill_rx => ExitReason::Killed,
            };
            guard.finish(reason);
        });
        Ok(pid)
    }

    fn finish(&self, status: ExitStatus, status_tx: watch::Sender<Option<ExitStatus>>) {
        let pid = status.pid;
        let moved = status.reason == ExitReason::Moved;
        // Record the exit before removing the live entry, so a concurrent
        // `wait` or `log` always finds the process in one of the two.
        let entry = self.entry(pid);
        if let Some(entry) = &entry {
            if moved {
                // Keep its mailbox open and reachable: what arrives now is
                // held for the move (`Node::freeze`).
                self.router.hold(pid, entry.mailbox.clone());
            } else {
                // Closes the mailbox; its watchers and callers are told.
                crate::calls::on_exit(&self.router, pid, &status.reason, &entry.mailbox);
            }
            // Nothing more is written: give back what the log does not hold.
            entry.log.shrink();
            let mut exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
            if exited.len() >= self.config.exited_history_max {
                exited.pop_front();
            }
            exited.push_back((
                pid,
                Exited {
                    status: status.clone(),
                    log: entry.log.clone(),
                    at: SystemTime::now(),
                },
            ));
        }
        self.router.detach(pid);
        self.processes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        // A moved process is not gone: its directory entry is switched by
        // the move, not removed.
        if !moved {
            if let Some(link) = self.router.cluster() {
                link.process_exited(pid);
            }
        }
        let _ = status_tx.send(Some(status));
    }

    async fn wait(&self, pid: Pid) -> Option<ExitStatus> {
        if let Some(entry) = self.entry(pid) {
            let mut rx = entry.status.clone();
            drop(entry);
            loop {
                if let Some(s) = rx.borrow().clone() {
                    return Some(s);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        let exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .map(|(_, e)| e.status.clone())
    }
}

/// Ends a process's table entry exactly once: with the reason its task
/// returned, or, if the task unwinds (a panic), as trapped.
struct FinishGuard {
    shared: Arc<Shared>,
    pid: Pid,
    status_tx: Option<watch::Sender<Option<ExitStatus>>>,
}

impl FinishGuard {
    fn finish(&mut self, reason: ExitReason) {
        if let Some(tx) = self.status_tx.take() {
            self.shared.finish(
                ExitStatus {
                    pid: self.pid,
                    reason,
                },
                tx,
            );
        }
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if self.status_tx.is_some() {
            tracing::error!(pid = %self.pid, "a process task failed; the process is removed");
            self.finish(ExitReason::Trapped {
                message: "the process's host task failed".into(),
            });
        }
    }
}

/// The node as its processes see it: the [`ProcessHost`] calls, and nothing
/// else of [`Shared`].
struct NodeHost(Arc<Shared>);

#[async_trait::async_trait]
impl ProcessHost for NodeHost {
    fn message_bytes_max(&self) -> usize {
        self.0.message_bytes_max()
    }

    fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError> {
        self.0.router.send(from, to, data)
    }

    fn send_message(&self, to: Pid, message: Message) -> Result<(), PushError> {
        self.0.router.send_message(to, message)
    }

    async fn register_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.register_name(pid, name).await
    }

    async fn unregister_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.unregister_name(pid, name).await
    }

    fn whereis(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.whereis(asker, name)
    }

    async fn join_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.join_group(pid, name).await
    }

    async fn leave_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.leave_group(pid, name).await
    }

    fn group_pick(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.group_pick(asker, name)
    }

    async fn spawn(
        &self,
        target: Option<&str>,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
    ) -> Result<Pid, i32> {
        match target {
            None => {
                self.0
                    .spawn_by_reference(reference, args, forward_output)
                    .await
            }
            Some(t) => {
                self.0
                    .spawn_placed(t, reference, args, forward_output)
                    .await
            }
        }
    }
}
