//! A spawn asked of this node by another (`POST /v1/peer/spawn`, served by
//! `crate::peer_api`) or by its own link when placement picks this node:
//! the wire types, the typed refusal, and [`spawn_here`], which resolves
//! the module (fetching it from a peer if needed) and starts the process
//! with its owner noted first.

use super::Link;
use serde::{Deserialize, Serialize};
use shoal_registry::Sha256;
use shoal_runtime::node::{Node, NodeError, SpawnSpec};
use shoal_runtime::pid::Pid;

/// Most processes one remote spawn may start.
pub const PEER_SPAWN_COUNT_MAX: u32 = 10_000;

/// Start processes on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpawnRequest {
    /// Module reference: `sha256:…` or a cluster-wide name.
    pub module: String,
    /// Full argv (argv[0] included).
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Memory cap per process, bytes.
    #[serde(default)]
    pub memory_bytes_max: Option<u64>,
    /// Run the preemptible variant of the module (see `SpawnSpec::preemptible`).
    #[serde(default)]
    pub preemptible: bool,
    /// Whose the processes are: the identity that deployed them, or the
    /// spawning guest's owner (the asking node vouches for it). `None`:
    /// the cluster's.
    #[serde(default)]
    pub owner: Option<shoal_pki::Owner>,
    /// Private volumes, with their quotas (checked again here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<shoal_runtime::volume::VolumeMount>,
    /// Its restart policy (`shoal deploy --restart`): recorded by this
    /// node, which runs it, before the spawn is answered. `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<shoal_cluster::state::failover::RestartPolicy>,
    /// A child of a parent under output commit: the asking node drew its
    /// pid and recorded it as the parent's effect, which registered it on
    /// this node (`crate::records::spawns`). Started under that pid only
    /// if this node's applied state shows exactly that record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<RecordedChild>,
}

/// The record behind a child whose pid its parent's node drew.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecordedChild {
    /// The child's pid.
    pub pid: u64,
    /// The spawning process.
    pub parent: u64,
    /// The parent's life.
    pub life: u64,
    /// The effect's number in the parent's output.
    pub seq: u64,
}

/// A started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSpawned {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
}

/// Why a node refused a spawn: sent typed on the wire (the `detail` of the
/// 409 answer) so the asking node maps it to the guest's errno without
/// reading any text (a module's name could otherwise change the errno).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum SpawnRefusal {
    /// The module could not be had: `errno` is the ABI code the fetch
    /// failed with (`NO_MODULE`, `NO_NODE`, …).
    #[error("module {module}: {}", shoal_runtime::abi::errno::name(*errno))]
    Module {
        /// The reference asked for.
        module: String,
        /// The ABI error code of the fetch.
        errno: i32,
    },
    /// The node runs as many processes as it may.
    #[error("this node runs at most {processes_max} processes")]
    Limit {
        /// Its process limit.
        processes_max: u32,
    },
    /// The node's memory budget cannot hold the process.
    #[error("this node's memory budget is full ({used_bytes} of {budget_bytes} bytes in use, {needed_bytes} needed)")]
    MemoryBudget {
        /// The process's memory.
        needed_bytes: u64,
        /// In use.
        used_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// The process could not be started (the module does not instantiate,
    /// a spec was refused, …).
    #[error("the process could not start: {why}")]
    Failed {
        /// What the node said.
        why: String,
    },
}

impl SpawnRefusal {
    /// The ABI error code a guest's `spawn_on` returns for this refusal.
    pub fn errno(&self) -> i32 {
        use shoal_runtime::abi::errno;
        match self {
            SpawnRefusal::Module { errno, .. } => *errno,
            SpawnRefusal::Limit { .. } | SpawnRefusal::MemoryBudget { .. } => errno::LIMIT,
            SpawnRefusal::Failed { .. } => errno::SPAWN_FAILED,
        }
    }
}

/// How long a spawn waits for a pid block (granted ahead of need).
pub(super) const PID_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolve the module (fetching it from a peer if needed) and start one
/// process here, its owner noted (in `link`) before it runs.
pub async fn spawn_here(
    node: &Node,
    link: &Link,
    req: &PeerSpawnRequest,
) -> Result<PeerSpawned, SpawnRefusal> {
    let hash = match node.resolve(&req.module) {
        // A hash resolves even when the blob is elsewhere: fetch it then.
        Ok(h) if node.registry().contains(&h) => h,
        _ => node
            .fetch_module(&req.module)
            .await
            .map_err(|errno| SpawnRefusal::Module {
                module: req.module.clone(),
                errno,
            })?,
    };
    let mut spec = SpawnSpec::new(hash, req.args.clone());
    spec.env = req.env.clone();
    spec.memory_bytes_max = req.memory_bytes_max;
    spec.preemptible = req.preemptible;
    spec.volumes = req.volumes.clone();
    // A process that may resume from a checkpoint releases what it sends
    // only once a recorded checkpoint covers it (issue #16).
    spec.output_commit = req
        .restart
        .as_ref()
        .is_some_and(|p| p.mode != shoal_cluster::state::failover::RestartMode::Never);
    let pid = match &req.recorded {
        None => node
            .pids()
            .allocate_wait(PID_WAIT)
            .await
            .ok_or_else(|| SpawnRefusal::Failed {
                why: "no pids left and the cluster granted no new block (is there a quorum?)"
                    .into(),
            })?,
        Some(r) => recorded_pid(node, link, r).await?,
    };
    if let Some(owner) = &req.owner {
        link.owners.claim(pid, owner.clone());
    }
    let memory_bytes_max = spec
        .memory_bytes_max
        .unwrap_or(node.config().process_memory_bytes_max);
    // Its restart policy is on record before it runs: a process that ends
    // at once is restarted as asked (and one whose policy cannot be
    // recorded does not run).
    if let Some(policy) = &req.restart {
        if let Err(why) = link
            .record_restart(
                pid,
                policy,
                hash,
                &req.args,
                memory_bytes_max,
                req.preemptible,
            )
            .await
        {
            link.owners.unclaim(pid);
            return Err(SpawnRefusal::Failed { why });
        }
    }
    match node.spawn_as(spec, pid).await {
        Ok(pid) if req.recorded.is_some() && !link.raft.state().directory.contains_key(&pid.0) => {
            // Its parent's node recorded the start as failed while it was
            // starting (the drop's kill found nothing to kill yet).
            crate::records::spawns::kill_if_running(node, pid);
            Err(SpawnRefusal::Failed {
                why: format!("child {pid} was recorded as failed while it started"),
            })
        }
        Ok(pid) => Ok(PeerSpawned { pid, module: hash }),
        Err(e) => {
            link.owners.unclaim(pid);
            if req.recorded.is_some() {
                // Its record registered it here: it never ran.
                shoal_runtime::node::ClusterLink::process_exited(link, pid, None);
            }
            if let Some(policy) = &req.restart {
                // It never ran: its policy goes with it.
                let never = shoal_cluster::state::failover::RestartPolicy {
                    mode: shoal_cluster::state::failover::RestartMode::Never,
                    ..policy.clone()
                };
                let _ = link
                    .record_restart(pid, &never, hash, &[], memory_bytes_max, false)
                    .await;
            }
            match e {
                NodeError::ProcessLimit(n) => Err(SpawnRefusal::Limit { processes_max: n }),
                NodeError::MemoryBudget {
                    needed_bytes,
                    used_bytes,
                    budget_bytes,
                } => Err(SpawnRefusal::MemoryBudget {
                    needed_bytes,
                    used_bytes,
                    budget_bytes,
                }),
                e => Err(SpawnRefusal::Failed { why: e.to_string() }),
            }
        }
    }
}

/// The pid of a recorded child (see [`PeerSpawnRequest::recorded`]), if
/// this node's applied state shows the record and nothing runs under it
/// here yet.
async fn recorded_pid(node: &Node, link: &Link, r: &RecordedChild) -> Result<Pid, SpawnRefusal> {
    let key = shoal_runtime::cluster_link::EffectKey {
        life: r.life,
        seq: r.seq,
    };
    let (pid, parent) = (Pid(r.pid), Pid(r.parent));
    if node.router().is_local(pid)
        || !crate::records::spawns::recorded_here(&link.raft, link.me, parent, key, pid).await
    {
        return Err(SpawnRefusal::Failed {
            why: format!("pid {pid} is not on record as a child of pid {parent} to start here"),
        });
    }
    // A resumed parent asks again for a child whose first request may
    // have arrived: it runs once.
    if !link.started.claim(&link.raft.state(), link.me, pid) {
        return Err(SpawnRefusal::Failed {
            why: format!("child {pid} of pid {parent} was already started here"),
        });
    }
    Ok(pid)
}
