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
        self.fetch_chunks(holders, std::slice::from_ref(id))
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
                Err(format!("its restart policy was refused: {why}"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("its restart policy could not be recorded: {e}")),
        }
    }
}
