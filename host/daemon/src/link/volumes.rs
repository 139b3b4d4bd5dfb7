//! Shared volumes on this node's side (issue #15): what the runtime's
//! [`SharedFiles`] asks, done through Raft (the tree, in
//! `shoal_cluster::state::volumes`) and the peers (the chunks).
//!
//! - Reads of the tree are linearizable (ReadIndex), so a file opened
//!   after another node's close returned sees that close's version.
//! - A file version is published in two steps: its chunks are stored on
//!   the volume's replicas first (this node, then other live members asked
//!   to pull them from here), then one Raft write names them and their
//!   holders. A crash between the two leaves unreferenced chunks, never a
//!   version whose chunks are missing.
//! - Chunks a node lacks are fetched from the holders the version names,
//!   8 at a time, each checked against its hash before it is kept.
//!
//! Every write names the process and its owner; the state machine checks
//! both again (a node cannot reach another owner's volume through a guest).

use super::paths::{PATH_PEER_BLOB, PATH_PEER_VOLUME_PULL};
use super::Link;
use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_cluster::state::volumes::{VolEntry, VolKind, VolumeOp, VolumeRefusal, FILE_CHUNKS_MAX};
use shoal_cluster::state::{Command, CommandResult, Refusal, VolumeActor};
use shoal_cluster::{ClusterState, NodeId, NodeStatus, Owner};
use shoal_net::{NetError, Peers};
use shoal_registry::{Registry, Sha256};
use shoal_runtime::cluster_link::{
    EffectKey, SharedError, SharedFiles, SharedInfo, SharedOp, SharedStat,
};
use shoal_runtime::pid::Pid;
use shoal_runtime::volume::CHUNK_BYTES;
use std::sync::Arc;

/// Chunk fetches in flight at once, per request.
const FETCHES_IN_FLIGHT: usize = 8;

/// A peer's request to store chunks it will fetch from `from`
/// ([`PATH_PEER_VOLUME_PULL`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// The node that holds them.
    pub from: NodeId,
    /// The chunks, sha256 hex (at most [`FILE_CHUNKS_MAX`]).
    pub chunks: Vec<String>,
}

/// Ask the node at `addr` for the blob `hash` from its registry (not yet
/// checked: the caller keeps it only if it hashes right).
pub async fn peer_blob(peers: &Peers, addr: &str, hash: &Sha256) -> Result<bytes::Bytes, NetError> {
    peers
        .call(
            addr,
            PATH_PEER_BLOB,
            bytes::Bytes::from(hash.to_hex().into_bytes()),
        )
        .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The errno a refused volume command gives the guest.
pub fn refusal_error(r: &Refusal) -> SharedError {
    use VolumeRefusal as V;
    match r {
        Refusal::Volume(v) => match v {
            V::NoVolume { .. } | V::NotFound { .. } => SharedError::NotFound,
            V::Exists { .. } | V::VolumeExists { .. } => SharedError::Exists,
            V::NotADirectory { .. } => SharedError::NotDir,
            V::IsADirectory { .. } => SharedError::IsDir,
            V::NotEmpty { .. } => SharedError::NotEmpty,
            V::Quota { .. } | V::TooManyVolumes { .. } => SharedError::Quota,
            V::RenameTooLarge { .. } => SharedError::Busy,
            V::NotForProcesses => SharedError::Forbidden,
            V::ReservedName => SharedError::Invalid,
            V::BadName { .. }
            | V::BadPath { .. }
            | V::BadSettings { .. }
            | V::IntoItself { .. }
            | V::BadContent { .. } => SharedError::Invalid,
        },
        Refusal::Kv(shoal_cluster::state::kv::KvRefusal::NotTheOwner { .. }) => {
            SharedError::Forbidden
        }
        _ => SharedError::Invalid,
    }
}

/// A version as the runtime sees it.
pub fn stat_of(e: &VolEntry) -> SharedStat {
    let (size, chunks, holders) = match &e.kind {
        VolKind::Dir => (0, Vec::new(), Vec::new()),
        VolKind::File {
            size,
            chunks,
            holders,
        } => (
            *size,
            // Checked hex at apply.
            chunks.iter().filter_map(|h| h.parse().ok()).collect(),
            holders.clone(),
        ),
    };
    SharedStat {
        is_dir: e.is_dir(),
        size,
        version: e.version,
        mtime_ms: e.mtime_ms,
        chunks,
        holders,
    }
}

/// The members a volume's chunks may be replicated to, beside `me`: live
/// (not declared dead), not removed, in id order starting after `me` (so
/// writers on different nodes spread their copies).
pub(super) fn replica_candidates(state: &ClusterState, me: NodeId) -> Vec<(NodeId, String)> {
    let mut nodes: Vec<(NodeId, String)> = state
        .nodes
        .values()
        .filter(|n| n.id != me && n.status != NodeStatus::Removed)
        .filter(|n| state.node_dead(n.id).is_none())
        .map(|n| (n.id, n.addr.clone()))
        .collect();
    nodes.sort_by_key(|(id, _)| (*id < me, *id));
    nodes
}

impl Link {
    fn registry(&self) -> Result<Registry, SharedError> {
        self.node
            .upgrade()
            .map(|n| n.registry().clone())
            .ok_or(SharedError::Unavailable)
    }

    async fn volume_state(&self) -> Result<Arc<ClusterState>, SharedError> {
        self.raft.linearizable_state().await.map_err(|e| {
            tracing::warn!("shared volume read: {e}");
            SharedError::Unavailable
        })
    }

    /// Fetch the `chunks` this node lacks from `holders` (each checked
    /// against its hash, kept synced).
    pub async fn fetch_chunks(
        &self,
        holders: &[NodeId],
        chunks: &[Sha256],
    ) -> Result<(), SharedError> {
        self.fetch_blobs(holders, chunks, CHUNK_BYTES).await
    }

    /// [`Link::fetch_chunks`] for blobs of at most `bytes_max` bytes each
    /// (a larger answer is refused unkept).
    pub async fn fetch_blobs(
        &self,
        holders: &[NodeId],
        chunks: &[Sha256],
        bytes_max: u64,
    ) -> Result<(), SharedError> {
        let registry = self.registry()?;
        let state = self.raft.state();
        let addrs: Vec<String> = holders
            .iter()
            .filter(|h| **h != self.me)
            .filter_map(|h| state.member(*h).map(|n| n.addr.clone()))
            .collect();
        let results: Vec<Result<(), SharedError>> = stream::iter(chunks.iter().copied())
            .map(|hash| {
                let addrs = &addrs;
                let registry = registry.clone();
                async move {
                    if registry.contains(&hash) {
                        return Ok(());
                    }
                    for addr in addrs {
                        let bytes = match peer_blob(&self.peers, addr, &hash).await {
                            Ok(b) if b.len() as u64 <= bytes_max => b,
                            Ok(b) => {
                                tracing::warn!("{addr} sent {} bytes for chunk {hash}", b.len());
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!("chunk {hash} from {addr}: {e}");
                                continue;
                            }
                        };
                        let r = registry.clone();
                        let kept =
                            tokio::task::spawn_blocking(move || r.put_expecting(&hash, &bytes))
                                .await;
                        match kept {
                            Ok(Ok(())) => return Ok(()),
                            Ok(Err(e)) => tracing::warn!("chunk {hash} from {addr} refused: {e}"),
                            Err(e) => tracing::warn!("chunk writer failed: {e}"),
                        }
                    }
                    Err(SharedError::Unavailable)
                }
            })
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// A peer asks this node to keep `req.chunks`, fetched from `req.from`.
    pub async fn pull_chunks(&self, req: &PullRequest) -> Result<(), PullError> {
        if req.chunks.len() > FILE_CHUNKS_MAX {
            return Err(PullError::TooMany(req.chunks.len()));
        }
        let chunks: Vec<Sha256> = req
            .chunks
            .iter()
            .map(|h| h.parse().map_err(|_| PullError::BadHash))
            .collect::<Result<_, _>>()?;
        if self.raft.state().member(req.from).is_none() {
            return Err(PullError::NotAMember(req.from));
        }
        self.fetch_chunks(&[req.from], &chunks)
            .await
            .map_err(|_| PullError::Unavailable)
    }

    /// Store `chunks` (already in this node's registry) on `owner`'s volume
    /// `name`'s replicas. Returns the holders: this node first.
    pub async fn replicate(
        &self,
        owner: &Owner,
        name: &str,
        chunks: &[Sha256],
    ) -> Result<Vec<NodeId>, SharedError> {
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.raft.state();
        let replicas = state
            .volumes
            .get(owner, name)
            .ok_or(SharedError::NotFound)?
            .replicas as usize;
        let mut holders = vec![self.me];
        let body = serde_json::to_vec(&PullRequest {
            from: self.me,
            chunks: chunks.iter().map(Sha256::to_hex).collect(),
        })
        .map_err(|_| SharedError::Invalid)?;
        for (id, addr) in replica_candidates(&state, self.me) {
            if holders.len() >= replicas {
                break;
            }
            match self
                .peers
                .call(
                    &addr,
                    PATH_PEER_VOLUME_PULL,
                    bytes::Bytes::from(body.clone()),
                )
                .await
            {
                Ok(_) => holders.push(id),
                Err(e) => tracing::warn!("node {id} could not keep a replica of {name}: {e}"),
            }
        }
        if holders.len() < replicas {
            tracing::warn!(
                "volume {name}: {} of {replicas} copies (not enough live members)",
                holders.len()
            );
        }
        Ok(holders)
    }

    /// Write `op` to `owner`'s volume `name` for `actor`.
    pub async fn volume_write(
        &self,
        actor: VolumeActor,
        owner: Owner,
        name: &str,
        op: VolumeOp,
    ) -> Result<u64, Refused> {
        let by = match &actor {
            VolumeActor::Caller { by } => Some(by.clone()),
            VolumeActor::Process { .. } => None,
        };
        let cmd = Command::Volume {
            actor,
            owner,
            name: name.to_string(),
            op,
        };
        let written = match &by {
            Some(by) => self.raft.write_as(cmd, by).await,
            None => self.raft.write(cmd).await,
        };
        match written {
            Ok(CommandResult::VolumeVersion(v)) => Ok(v),
            Ok(CommandResult::Refused(r)) => Err(Refused::Refusal(r)),
            Ok(CommandResult::Forbidden(f)) => Err(Refused::Forbidden(f)),
            Ok(other) => Err(Refused::Unavailable(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Refused::Unavailable(e.to_string())),
        }
    }

    /// A runtime op as the Raft command's op: a put's chunks replicated
    /// first.
    pub async fn volume_op(
        &self,
        owner: &Owner,
        name: &str,
        op: SharedOp,
    ) -> Result<VolumeOp, SharedError> {
        let mtime_ms = now_ms();
        Ok(match op {
            SharedOp::Put {
                path,
                size,
                chunks,
                exclusive,
            } => {
                let holders = self.replicate(owner, name, &chunks).await?;
                VolumeOp::Put {
                    path,
                    size,
                    chunks: chunks.iter().map(Sha256::to_hex).collect(),
                    holders,
                    mtime_ms,
                    exclusive,
                }
            }
            SharedOp::Mkdir(path) => VolumeOp::Mkdir { path, mtime_ms },
            SharedOp::Unlink(path) => VolumeOp::Unlink { path },
            SharedOp::Rmdir(path) => VolumeOp::Rmdir { path },
            SharedOp::Rename { from, to } => VolumeOp::Rename { from, to },
        })
    }
}

/// Why a volume write changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The state machine refused it.
    #[error(transparent)]
    Refusal(Refusal),
    /// The ownership rule refused it.
    #[error(transparent)]
    Forbidden(shoal_pki::Forbidden),
    /// Raft could not confirm it.
    #[error("the cluster could not confirm the write: {0}")]
    Unavailable(String),
}

/// Why a peer's pull request failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Too many chunks in one request.
    #[error("{0} chunks in one pull (at most {FILE_CHUNKS_MAX})")]
    TooMany(usize),
    /// A chunk hash that is not one.
    #[error("a chunk hash is not sha256 hex")]
    BadHash,
    /// The source is not a member.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// A chunk could not be fetched or kept.
    #[error("a chunk could not be fetched or kept")]
    Unavailable,
}

#[async_trait::async_trait]
impl SharedFiles for Link {
    async fn vol_info(&self, pid: Pid, volume: &str) -> Result<SharedInfo, SharedError> {
        let state = self.volume_state().await?;
        let v = state
            .volumes
            .get(&self.owner_of(pid), volume)
            .ok_or(SharedError::NotFound)?;
        Ok(SharedInfo {
            bytes_max: v.bytes_max,
            files_max: v.files_max,
        })
    }

    async fn vol_stat(
        &self,
        pid: Pid,
        volume: &str,
        path: &str,
    ) -> Result<Option<SharedStat>, SharedError> {
        let state = self.volume_state().await?;
        let v = state
            .volumes
            .get(&self.owner_of(pid), volume)
            .ok_or(SharedError::NotFound)?;
        if path.is_empty() {
            return Ok(Some(SharedStat {
                is_dir: true,
                size: 0,
                version: 0,
                mtime_ms: v.created_ms,
                chunks: Vec::new(),
                holders: Vec::new(),
            }));
        }
        Ok(v.entry(path).map(stat_of))
    }

    async fn vol_list(
        &self,
        pid: Pid,
        volume: &str,
        dir: &str,
    ) -> Result<Vec<(String, SharedStat)>, SharedError> {
        let state = self.volume_state().await?;
        let v = state
            .volumes
            .get(&self.owner_of(pid), volume)
            .ok_or(SharedError::NotFound)?;
        if !v.is_dir(dir) {
            return Err(match v.entry(dir) {
                Some(_) => SharedError::NotDir,
                None => SharedError::NotFound,
            });
        }
        Ok(v.list(dir)
            .into_iter()
            .map(|(name, e)| (name, stat_of(&e)))
            .collect())
    }

    async fn vol_write(
        &self,
        pid: Pid,
        volume: &str,
        op: SharedOp,
        effect: Option<EffectKey>,
    ) -> Result<u64, SharedError> {
        let effect = effect.map(crate::records::kv::raft_effect);
        // A process that writes at once may not be in the directory yet
        // (registration is batched): the state machine would refuse it as
        // not live. Waited for, boundedly, as a key-value write does.
        if self.asker(pid).live().await.is_err() {
            tracing::warn!("shared volume write for {pid}: the process is not in the directory");
            return Err(SharedError::Unavailable);
        }
        let owner = self.owner_of(pid);
        let share = || crate::records::kv::share_of(&self.raft.state(), self.me, &owner);
        self.rates
            .take_n(&owner, 1, share)
            .map_err(|_| SharedError::Busy)?;
        let op = self.volume_op(&owner, volume, op).await?;
        self.volume_write(
            VolumeActor::Process { pid: pid.0, effect },
            owner,
            volume,
            op,
        )
        .await
        .map_err(|e| match e {
            Refused::Refusal(r) => refusal_error(&r),
            Refused::Forbidden(_) => SharedError::Forbidden,
            Refused::Unavailable(why) => {
                tracing::warn!("shared volume write for {pid}: {why}");
                SharedError::Unavailable
            }
        })
    }

    async fn vol_fetch(&self, holders: &[u64], chunks: &[Sha256]) -> Result<(), SharedError> {
        self.fetch_chunks(holders, chunks).await
    }

    async fn cluster_view(&self, pid: Pid) -> Result<Vec<(String, Vec<u8>)>, SharedError> {
        Ok(cluster_view(
            &self.raft.state(),
            self.me,
            self.raft.leader(),
            pid,
            &self.owner_of(pid),
        ))
    }
}

/// The `/cluster` namespace as `pid` (on node `me`, owned by `owner`) sees
/// it in `state` (see `shoal_runtime::volume::cluster_dir`), bounded by
/// [`VIEW_BYTES_MAX`](shoal_runtime::volume::cluster_dir::VIEW_BYTES_MAX):
/// processes past it are left out.
pub fn cluster_view(
    state: &ClusterState,
    me: NodeId,
    leader: Option<NodeId>,
    pid: Pid,
    owner: &Owner,
) -> Vec<(String, Vec<u8>)> {
    use shoal_runtime::volume::cluster_dir::VIEW_BYTES_MAX;
    let name_of = |id: NodeId| state.nodes.get(&id).map(|n| n.name.clone());
    let line = |s: String| format!("{s}\n").into_bytes();
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("self/pid".into(), line(pid.0.to_string())),
        ("self/node".into(), line(name_of(me).unwrap_or_default())),
        ("self/owner".into(), line(owner.to_string())),
    ];
    if let Some(l) = leader.and_then(name_of) {
        out.push(("leader".into(), line(l)));
    }
    for n in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Removed)
    {
        let dir = format!("nodes/{}", n.name);
        let status = match n.status {
            NodeStatus::Active => "active",
            NodeStatus::Cordoned => "cordoned",
            NodeStatus::Removed => "removed",
        };
        let health = if state.node_dead(n.id).is_some() {
            "dead"
        } else {
            "alive"
        };
        let load = format!(
            "processes {}\ncpu_load_milli {}\nmemory_bytes_free {}\nmemory_bytes_total {}\n",
            n.load.process_count,
            n.load.cpu_load_milli,
            n.load.memory_bytes_free,
            n.load.memory_bytes_total
        );
        let labels: String = n.labels.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        out.push((format!("{dir}/id"), line(n.id.to_string())));
        out.push((format!("{dir}/addr"), line(n.addr.clone())));
        out.push((format!("{dir}/status"), line(status.into())));
        out.push((format!("{dir}/health"), line(health.into())));
        out.push((format!("{dir}/load"), load.into_bytes()));
        out.push((format!("{dir}/labels"), labels.into_bytes()));
    }
    for (name, p) in state.names.names(owner) {
        out.push((format!("names/{name}"), line(p.to_string())));
    }
    let mut bytes: usize = out.iter().map(|(p, c)| p.len() + c.len()).sum();
    for (p, e) in state.directory.iter() {
        let node = name_of(e.node).unwrap_or_default();
        let files = [
            (format!("procs/{p}/node"), line(node)),
            (
                format!("procs/{p}/owner"),
                line(state.owner_of(*p).to_string()),
            ),
        ];
        let more: usize = files.iter().map(|(p, c)| p.len() + c.len()).sum();
        if bytes + more > VIEW_BYTES_MAX {
            break;
        }
        bytes += more;
        out.extend(files);
    }
    out
}
