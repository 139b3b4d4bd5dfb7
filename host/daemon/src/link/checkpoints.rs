//! Checkpoint copies (issue #16): a checkpoint is a stored snapshot (its
//! manifest, pages and volume chunks, all content-addressed) that must be
//! complete on R other nodes before the cluster may resume from it.
//!
//! Copies are pulled: the node that took the checkpoint asks each replica
//! to fetch it ([`PATH_PEER_CHECKPOINT_PULL`]); the replica fetches the
//! manifest (checked against the snapshot id, bounded, canonical), then
//! only the pages and chunks it lacks (each checked against its hash), and
//! the module, and answers once all of it is kept. A node resuming a
//! process it holds no copy of fetches it the same way from the holders.

use super::paths::PATH_PEER_CHECKPOINT_PULL;
use super::volumes::replica_candidates;
use super::Link;
use serde::{Deserialize, Serialize};
use shoal_cluster::NodeId;
use shoal_registry::Sha256;

/// A peer's request to keep a complete copy of snapshot `snapshot`,
/// fetched from `from` ([`PATH_PEER_CHECKPOINT_PULL`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointPull {
    /// The node that holds it.
    pub from: NodeId,
    /// The snapshot id, sha256 hex.
    pub snapshot: String,
}

/// Why a checkpoint copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The snapshot id is not sha256 hex.
    #[error("a snapshot id is not sha256 hex")]
    BadHash,
    /// The source is not a live member.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// This node is shutting down.
    #[error("this node is stopping")]
    Stopping,
    /// A blob could not be fetched or kept.
    #[error("a page or chunk of the checkpoint could not be fetched or kept")]
    Unavailable,
    /// The manifest fetched is not a valid one.
    #[error("the checkpoint's manifest is not valid: {0}")]
    BadManifest(String),
    /// The module could not be fetched.
    #[error("the checkpoint's module {0} could not be fetched")]
    Module(String),
}

impl Link {
    /// Make snapshot `id` complete in this node's registry, fetching what
    /// it lacks from `holders`: manifest, pages, volume chunks, module.
    pub async fn fetch_snapshot(&self, holders: &[NodeId], id: &Sha256) -> Result<(), CopyError> {
        let node = self.node.upgrade().ok_or(CopyError::Stopping)?;
        let registry = node.registry().clone();
        // A manifest lists every page: larger than a chunk for a memory
        // past about 12 MiB (bounded by the snapshot format's header).
        self.fetch_blobs(
            holders,
            std::slice::from_ref(id),
            shoal_runtime::snapshot::format::MAX_HEADER_BYTES,
        )
        .await
        .map_err(|_| CopyError::Unavailable)?;
        let (r, i) = (registry.clone(), *id);
        let manifest = tokio::task::spawn_blocking(move || {
            shoal_runtime::snapshot::format::load_manifest(&r, &i)
        })
        .await
        .map_err(|e| CopyError::BadManifest(e.to_string()))?
        .map_err(|e| CopyError::BadManifest(e.to_string()))?;
        let mut wanted: Vec<Sha256> = manifest.pages.iter().map(|p| p.hash).collect();
        wanted.extend(manifest.blobs.iter().map(|b| b.hash));
        wanted.sort();
        wanted.dedup();
        let missing: Vec<Sha256> = wanted
            .into_iter()
            .filter(|h| !registry.contains(h))
            .collect();
        self.fetch_chunks(holders, &missing)
            .await
            .map_err(|_| CopyError::Unavailable)?;
        if !registry.contains(&manifest.module) {
            node.fetch_module(&manifest.module.to_hex())
                .await
                .map_err(|_| CopyError::Module(manifest.module.to_hex()))?;
        }
        // Prepared and compiled ahead of a failover (once per module and
        // variant: later checkpoints find it loaded), off this request's
        // path.
        let preemptible = manifest.state["spec"]["preemptible"]
            .as_bool()
            .unwrap_or(false);
        let module = manifest.module;
        tokio::spawn(async move {
            if let Err(e) = node.warm_module(module, preemptible).await {
                tracing::warn!("could not prepare module {module} of a checkpoint: {e}");
            }
        });
        Ok(())
    }

    /// A peer asks this node to keep a copy of a checkpoint.
    pub async fn pull_checkpoint(&self, req: &CheckpointPull) -> Result<(), CopyError> {
        let id: Sha256 = req.snapshot.parse().map_err(|_| CopyError::BadHash)?;
        let state = self.raft.state();
        if state.member(req.from).is_none() || state.node_dead(req.from).is_some() {
            return Err(CopyError::NotAMember(req.from));
        }
        self.fetch_snapshot(&[req.from], &id).await
    }

    /// Is there any other live member that could keep a checkpoint (the
    /// members [`Link::replicate_checkpoint`] asks)?
    pub fn has_replica_candidates(&self) -> bool {
        !replica_candidates(&self.raft.state(), self.me).is_empty()
    }

    /// Have `replicas` other live members keep snapshot `id` (already
    /// complete here), those in `prefer` first (they hold most of its
    /// pages already). Returns the holders, this node first: fewer than
    /// `replicas + 1` if not enough members could.
    pub async fn replicate_checkpoint(
        &self,
        id: &Sha256,
        replicas: usize,
        prefer: &[NodeId],
    ) -> Vec<NodeId> {
        let state = self.raft.state();
        let mut candidates = replica_candidates(&state, self.me);
        candidates.sort_by_key(|(id, _)| !prefer.contains(id));
        let body = match serde_json::to_vec(&CheckpointPull {
            from: self.me,
            snapshot: id.to_hex(),
        }) {
            Ok(b) => bytes::Bytes::from(b),
            Err(_) => return vec![self.me],
        };
        let mut holders = vec![self.me];
        for (peer, addr) in candidates {
            if holders.len() > replicas {
                break;
            }
            match self
                .peers
                .call(&addr, PATH_PEER_CHECKPOINT_PULL, body.clone())
                .await
            {
                Ok(_) => holders.push(peer),
                Err(e) => tracing::warn!("node {peer} could not keep checkpoint {id}: {e}"),
            }
        }
        holders
    }
}

impl Link {
    /// Record the restart policy of `pid`, which runs here
    /// ([`shoal_cluster::Command::SetRestart`]), with what a fresh start
    /// needs. The error says why it could not be.
    pub async fn record_restart(
        &self,
        pid: shoal_runtime::pid::Pid,
        policy: &shoal_cluster::state::failover::RestartPolicy,
        module: Sha256,
        args: &[String],
        memory_bytes_max: u64,
        preemptible: bool,
    ) -> Result<(), String> {
        let cmd = shoal_cluster::Command::SetRestart {
            node: self.me,
            pid: pid.0,
            spec: shoal_cluster::state::failover::RestartSpec {
                policy: policy.clone(),
                module: module.to_hex(),
                args: args.to_vec(),
                memory_bytes_max,
                preemptible,
            },
        };
        match self.raft.write(cmd).await {
            Ok(shoal_cluster::CommandResult::Refused(why)) => {
                return Err(format!("its restart policy was refused: {why}"))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("its restart policy could not be recorded: {e}")),
        }
        // The leader applied it; this node must too before the process
        // runs, or an end right after the start would find no policy here.
        let recorded = policy.mode != shoal_cluster::state::failover::RestartMode::Never;
        let mut applied = self.raft.subscribe();
        let deadline = tokio::time::Instant::now() + RESTART_RECORD_WAIT;
        while self.raft.state().failover.recoverable.contains_key(&pid.0) != recorded {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err("its restart policy was not applied on this node in time".into()),
            }
        }
        Ok(())
    }
}

/// Longest a spawn waits for this node to apply its restart policy.
const RESTART_RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most restarts waiting at once on one node; past it, an ending process
/// is treated as gone.
pub const RESTARTS_PENDING_MAX: usize = 100_000;

/// A restart runs this long before a later end counts as a fresh
/// failure (the backoff starts over).
pub const RESTART_RESET: std::time::Duration = std::time::Duration::from_secs(60);
/// The first restart waits this long; each failure soon after doubles it.
pub const RESTART_BACKOFF_INITIAL: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest wait before a restart.
pub const RESTART_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// One process waiting to be restarted.
struct Waiting {
    why: String,
    not_before: std::time::Instant,
}

#[derive(Default)]
struct RestartBook {
    waiting: std::collections::BTreeMap<u64, Waiting>,
    /// pid → (restarts in a row, when the last one started).
    history: std::collections::BTreeMap<u64, (u32, std::time::Instant)>,
}

/// Processes that ended here and that their restart policy starts again,
/// each after its backoff (doubling from [`RESTART_BACKOFF_INITIAL`] to
/// [`RESTART_BACKOFF_MAX`] while it keeps failing within
/// [`RESTART_RESET`] of its start). Filled by the link when a process ends,
/// drained by `crate::failover`.
#[derive(Default)]
pub struct Restarts {
    book: std::sync::Mutex<RestartBook>,
    changed: tokio::sync::Notify,
}

impl Restarts {
    /// Queue `pid`; `false` if the queue is full (it is not restarted).
    pub fn push(&self, pid: u64, why: String) -> bool {
        let now = std::time::Instant::now();
        let mut b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if b.waiting.len() >= RESTARTS_PENDING_MAX && !b.waiting.contains_key(&pid) {
            return false;
        }
        let in_a_row = match b.history.get(&pid) {
            Some((n, at)) if now.duration_since(*at) < RESTART_RESET => n.saturating_add(1),
            _ => 0,
        };
        let wait = RESTART_BACKOFF_INITIAL
            .saturating_mul(1u32 << in_a_row.min(16))
            .min(RESTART_BACKOFF_MAX);
        b.waiting.insert(
            pid,
            Waiting {
                why,
                not_before: now + wait,
            },
        );
        b.history.insert(pid, (in_a_row, now));
        if b.history.len() > RESTARTS_PENDING_MAX {
            // Forget the oldest entries (their backoff would have reset).
            let cut = now.checked_sub(RESTART_RESET);
            b.history.retain(|_, (_, at)| cut.is_none_or(|c| *at >= c));
        }
        drop(b);
        self.changed.notify_one();
        true
    }

    /// Take the restarts whose backoff has passed; also when the next one
    /// is due.
    pub fn take_due(&self) -> (Vec<(u64, String)>, Option<std::time::Instant>) {
        let now = std::time::Instant::now();
        let mut b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let due: Vec<u64> = b
            .waiting
            .iter()
            .filter(|(_, w)| w.not_before <= now)
            .map(|(pid, _)| *pid)
            .collect();
        let taken: Vec<(u64, String)> = due
            .into_iter()
            .filter_map(|pid| b.waiting.remove(&pid).map(|w| (pid, w.why)))
            .collect();
        for (pid, _) in &taken {
            if let Some(h) = b.history.get_mut(pid) {
                h.1 = now;
            }
        }
        let next = b.waiting.values().map(|w| w.not_before).min();
        (taken, next)
    }

    /// Wait until something is queued.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Drop `pid`'s pending restart; `true` if it had one.
    fn cancel(&self, pid: u64) -> bool {
        let mut b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        b.waiting.remove(&pid).is_some()
    }
}

impl Link {
    /// Whether `pid`, which ended here for `reason`, is to be started
    /// again by its restart policy; if so, how it ended (for the event).
    /// `on-failure`: a trap, a non-zero exit, running out of memory or
    /// fuel, or failing to start; `always`: any end but a kill, a snapshot
    /// `--stop` or a move (what a user or the cluster asked for).
    pub(super) fn restart_after(
        &self,
        pid: shoal_runtime::pid::Pid,
        reason: &shoal_abi::process::ExitReason,
    ) -> Option<String> {
        use shoal_abi::process::ExitReason as R;
        use shoal_cluster::state::failover::RestartMode;
        let state = self.raft.state();
        let record = state.failover.recoverable.get(&pid.0)?;
        // Here (or started here and not registered yet).
        if state.started_on(self.me, pid.0) != Ok(true) {
            return None;
        }
        let failed = match reason {
            R::Exited { code } => *code != 0,
            R::Trapped { .. }
            | R::MemoryLimit { .. }
            | R::FuelExhausted { .. }
            | R::StartFailed { .. } => true,
            R::Killed | R::Snapshotted | R::Moved => return None,
        };
        let restart = match record.policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => failed,
            RestartMode::Always => true,
        };
        restart.then(|| {
            let text = reason.to_string();
            text.chars()
                .take(shoal_cluster::state::failover::WHY_CHARS_MAX)
                .collect()
        })
    }

    /// A kill of `pid` while it waits to be restarted: it is not restarted,
    /// and its end is written as for any process. `true` if it was waiting.
    pub fn cancel_restart(&self, pid: shoal_runtime::pid::Pid) -> bool {
        let waiting = self.restarts.cancel(pid.0);
        if waiting {
            use shoal_runtime::node::ClusterLink;
            self.process_exited(pid, None);
        }
        waiting
    }
}
