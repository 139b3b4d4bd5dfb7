//! Starting new processes: from a [`SpawnSpec`], from a module reference
//! (the ABI's `spawn`), or placed by the cluster (`spawn_on`).

use super::{Node, NodeError, Shared, SpawnSpec, PID_BLOCK_WAIT};
use crate::abi;
use crate::cluster_link::{EffectKey, SpawnRecord};
use crate::low_priority::Priority;
use crate::modules::LoadedModule;
use crate::pid::Pid;
use shoal_registry::{RegistryError, Sha256};
use std::sync::Arc;

impl Node {
    /// Start a process. The module is loaded first (on a blocking thread if
    /// it has to be prepared). Must be called inside a tokio runtime.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Pid, NodeError> {
        Shared::spawn(&self.shared, spec).await
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
        self.shared
            .spawn_by_reference(reference, args, Child::default())
            .await
    }

    /// Start a process with pid `pid`, which the caller allocated from
    /// [`Node::pids`] (so it could note what belongs to the pid, e.g. its
    /// owner, before the process runs).
    pub async fn spawn_as(&self, spec: SpawnSpec, pid: Pid) -> Result<Pid, NodeError> {
        let module = self.shared.load(spec.module, spec.preemptible).await?;
        self.shared
            .start_as(spec, module, None, Some(pid), None, None)
    }
}

/// Who asks for a process started by module reference, and how.
#[derive(Debug, Clone, Copy, Default)]
pub struct Child {
    /// The process whose `spawn` asked (its owner is the child's), `None`
    /// for host code.
    pub parent: Option<Pid>,
    /// The spawn is an effect of a parent under output commit
    /// ([`crate::abi::effect`]): recorded before the child starts, made
    /// once per key.
    pub effect: Option<EffectKey>,
    /// Copy the child's output to the host's stdio.
    pub forward_output: bool,
}

/// The ABI error code a failed local start returns.
fn start_errno(e: &NodeError) -> i32 {
    match e {
        NodeError::ProcessLimit(_) | NodeError::MemoryBudget { .. } => abi::errno::LIMIT,
        NodeError::Registry(RegistryError::NotFound(_)) => abi::errno::NO_MODULE,
        _ => abi::errno::SPAWN_FAILED,
    }
}

impl Shared {
    /// Spawn with a placement target (the ABI's `spawn_on`): `""` lets the
    /// cluster's scheduler choose; a node name or `k=v` labels constrain it.
    pub async fn spawn_placed(
        self: &Arc<Self>,
        parent: Pid,
        target: &str,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
        effect: Option<EffectKey>,
    ) -> Result<Pid, i32> {
        match self.router.cluster() {
            Some(link) => {
                link.spawn_placed(parent, target, reference, args, effect)
                    .await
            }
            None if target.is_empty() => {
                let child = Child {
                    parent: Some(parent),
                    effect,
                    forward_output,
                };
                self.spawn_by_reference(reference, args, child).await
            }
            None => Err(abi::errno::NO_NODE),
        }
    }

    pub(super) async fn fetch_through_cluster(&self, reference: &str) -> Result<Sha256, i32> {
        match self.router.cluster() {
            Some(link) => link.fetch_module(reference).await,
            None => Err(abi::errno::NO_MODULE),
        }
    }

    /// Resolve a module reference and start it here (the ABI's `spawn`),
    /// as `child` says.
    pub async fn spawn_by_reference(
        self: &Arc<Self>,
        reference: &str,
        args: Vec<String>,
        child: Child,
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
        spec.forward_output = child.forward_output;
        spec.parent = child.parent;
        let (module, pid) = self
            .load_and_allocate(&spec)
            .await
            .map_err(|e| start_errno(&e))?;
        let recorded = match (child.effect, child.parent, pid, self.router.cluster()) {
            (Some(key), Some(parent), Some(pid), Some(link)) => Some((key, parent, pid, link)),
            _ => None,
        };
        let Some((key, parent, pid, link)) = recorded else {
            return self
                .start_as(spec, module, None, pid, None, None)
                .map_err(|e| start_errno(&e));
        };
        // Under output commit: the child is on record (and in the
        // directory) before it runs, so a resumed parent's repeat finds it.
        match link.record_spawn(parent, key, pid, None).await? {
            SpawnRecord::Start => {}
            SpawnRecord::Spawned(first) => return Ok(first),
            SpawnRecord::Failed(code) => return Err(code),
        }
        match self.start_as(spec, module, None, Some(pid), None, None) {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let code = start_errno(&e);
                link.spawn_failed(parent, key, pid, code).await;
                // Its record registered it here: it never ran.
                link.process_exited(pid, None);
                Err(code)
            }
        }
    }

    pub(super) async fn spawn(self: &Arc<Self>, spec: SpawnSpec) -> Result<Pid, NodeError> {
        let (module, pid) = self.load_and_allocate(&spec).await?;
        self.start_as(spec, module, None, pid, None, None)
    }

    /// Load `spec`'s module and, on a cluster node, draw a pid for it.
    async fn load_and_allocate(
        self: &Arc<Self>,
        spec: &SpawnSpec,
    ) -> Result<(Arc<LoadedModule>, Option<Pid>), NodeError> {
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
        Ok((module, pid))
    }

    pub(super) async fn load(
        self: &Arc<Self>,
        hash: Sha256,
        preempt: bool,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        self.load_with(hash, preempt, Priority::Waited).await
    }

    /// [`Shared::load`] at `priority` (ahead of need: lowered).
    pub(super) async fn load_with(
        self: &Arc<Self>,
        hash: Sha256,
        preempt: bool,
        priority: Priority,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        if self.modules.is_loaded(&hash, preempt) {
            return Ok(self.modules.load(&hash, preempt, &self.linker, priority)?);
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            shared
                .modules
                .load(&hash, preempt, &shared.linker, priority)
        })
        .await
        .map_err(|e| NodeError::Runtime(format!("module loader panicked: {e}")))?
        .map_err(NodeError::from)
    }
}
