//! The node's [`ClusterLink`]: how a process reaches pids, nodes and modules
//! beyond its own node.
//!
//! - **send**: the replicated process directory says where a pid runs; a pid
//!   not (yet) in it is looked for at the node whose pid block issued it
//!   (registration is batched, so a fresh pid can be ahead of its entry).
//!   The message goes on that node's lane ([`shoal_net`]), which keeps
//!   per-(sender node → receiver node) order and so per-pair order.
//! - **dead pids**: a node that finds no such process answers on the lane;
//!   the pid goes into a bounded cache here so the next send fails at once
//!   with `NO_PROCESS`.
//! - **directory upkeep**: starts and exits are batched into `Register` /
//!   `Unregister` commands by [`Link::flush_directory`].
//! - **spawn_on** and **module fetch**: [`shoal_cluster::sched::placement`] picks the
//!   node; a remote spawn is one `POST /v1/peer/spawn`; a missing module blob
//!   is fetched from a node the module index says holds it and checked
//!   against its sha256 before use.

pub mod checkpoints;
pub mod paths;
pub mod placed;
pub mod spawn;
pub mod volumes;

use bytes::Bytes;
use paths::{PATH_PEER_BLOB, PATH_PEER_SPAWN};
use shoal_cluster::sched::{self, Candidate, Target};
use shoal_cluster::{ClusterState, Command, NodeId, NodeStatus, Owner, Raft};
use shoal_net::{LaneMessage, LaneTag, NetError, Peers};
use shoal_registry::Sha256;
use shoal_runtime::abi::errno;
use shoal_runtime::cluster_link::{
    EffectKey, KvBatchWrite, KvFence, KvLocks, KvWrite, KvWritten, LockAnswer, ReadMode,
    SpawnRecord,
};
use shoal_runtime::mailbox::{Message, PushError};
use shoal_runtime::node::{ClusterLink, WeakNode};
use shoal_runtime::pid::Pid;
use spawn::{PeerSpawnRequest, PeerSpawned, SpawnRefusal};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node asked for a module by hash waits for its state to show
/// a node holding it (its index may lag the write that recorded it).
const MODULE_INDEX_WAIT: Duration = Duration::from_secs(3);

/// Most pids remembered as dead (oldest forgotten first).
pub const DEAD_PIDS_MAX: usize = 16_384;
/// Most starts/exits waiting to be written to the directory; beyond it the
/// oldest are dropped from the batch (the directory then lags until the
/// next heartbeat's reconciliation) rather than growing memory.
pub const DIRECTORY_PENDING_MAX: usize = 1 << 20;
/// Is node `id` up: a member that the Raft leader's failure detector has
/// not declared dead ([`ClusterState::node_dead`], rule in
/// [`shoal_cluster::detector`])? What placement, rebalancing, `shoal ps`
/// and `shoal nodes` all go by; no node judges another by its own clock.
pub fn is_up(state: &ClusterState, id: NodeId) -> bool {
    state.member(id).is_some() && state.node_dead(id).is_none()
}

/// Longest a remote spawn may take (a node that goes silent is given up on
/// sooner: when the failure detector declares it dead, see
/// [`Link::call_unless_dead`]). Longer than the node may spend preparing
/// the module first (its `--prepare-timeout`, 60 s by default, plus
/// compilation): a live node that is still preparing a 7 MB interpreter,
/// ahead or on demand, is waited for, not mistaken for an unreachable one.
pub const REMOTE_SPAWN_TIMEOUT: Duration = Duration::from_secs(300);

/// A request to a node given up because the cluster's failure detector
/// declared that node dead (before or while it was in flight).
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {name} is down: the cluster's leader declared it dead after {silent_ms} ms without contact (failure detector window {window_ms} ms); gave up on it after {waited_ms} ms")]
pub struct NodeDeclaredDead {
    /// The node.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// How long the leader had heard nothing from it, ms.
    pub silent_ms: u64,
    /// The detector's window, ms.
    pub window_ms: u64,
    /// How long this request waited before giving up, ms.
    pub waited_ms: u64,
}

/// Why a request to a peer node failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The transport failed or the peer refused.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The node was declared dead.
    #[error(transparent)]
    Dead(#[from] NodeDeclaredDead),
}

/// Bounded set of pids known dead, forgetting the oldest.
#[derive(Default)]
struct DeadPids {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl DeadPids {
    fn insert(&mut self, pid: u64) {
        if self.set.insert(pid) {
            self.order.push_back(pid);
            while self.order.len() > DEAD_PIDS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[derive(Default)]
struct PendingDirectory {
    started: Vec<u64>,
    exited: Vec<u64>,
    /// Pids that started again before their exit was written (a restore
    /// that replaced them): new incarnations, whose predecessors' locks
    /// must be released ([`Command::Reincarnated`]) before they ask for
    /// any. Kept until written.
    reincarnated: Vec<u64>,
}

/// The cluster side of one node.
pub struct Link {
    me: NodeId,
    raft: Raft,
    peers: Peers,
    node: WeakNode,
    processes_max: u32,
    dead: Mutex<DeadPids>,
    pending: Mutex<PendingDirectory>,
    pending_changed: tokio::sync::Notify,
    /// Notified when new incarnations are written to Raft.
    reincarnated_written: tokio::sync::Notify,
    /// Held shared from a send's directory lookup to its lane push, and
    /// exclusively while a migration fence is pushed (see
    /// [`crate::migrate::fence`]).
    routes: std::sync::RwLock<()>,
    /// Owners of processes started here, until Raft shows them, and of
    /// snapshots stored here ([`crate::records::owners`]).
    pub owners: crate::records::owners::OwnerBook,
    /// Processes that ended here and that their restart policy starts
    /// again (carried out by `crate::failover`).
    pub restarts: checkpoints::Restarts,
    /// The per-owner key-value and lock write rates on this node.
    rates: Arc<crate::records::kv::WriteRates>,
    /// Placements made here that the chosen nodes' heartbeats do not
    /// show yet.
    placed: placed::PlacedBook,
    /// The recorded children started here (each once).
    pub(crate) started: Arc<crate::records::spawns::StartedChildren>,
}

impl Link {
    /// The link of node `me`.
    pub fn new(
        me: NodeId,
        raft: Raft,
        peers: Peers,
        node: WeakNode,
        processes_max: u32,
        kv_writes_per_s_max: u32,
    ) -> Arc<Link> {
        Arc::new(Link {
            me,
            raft,
            peers,
            node,
            processes_max,
            dead: Mutex::new(DeadPids::default()),
            pending: Mutex::new(PendingDirectory::default()),
            pending_changed: tokio::sync::Notify::new(),
            reincarnated_written: tokio::sync::Notify::new(),
            routes: std::sync::RwLock::new(()),
            owners: Default::default(),
            restarts: Default::default(),
            rates: Arc::new(crate::records::kv::WriteRates::new(kv_writes_per_s_max)),
            placed: Default::default(),
            started: Default::default(),
        })
    }

    /// The node's key-value and lock write rates (shared with the
    /// operator API).
    pub fn kv_rates(&self) -> &crate::records::kv::WriteRates {
        &self.rates
    }

    /// Wait (boundedly) until a new incarnation of `pid`, if one is
    /// pending, is written: its locks must not be granted under the old
    /// one's and then released by it.
    async fn reincarnation_flushed(&self, pid: Pid) {
        let pending = || {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reincarnated
                .contains(&pid.0)
        };
        let wait = async {
            loop {
                let written = self.reincarnated_written.notified();
                if !pending() {
                    return;
                }
                written.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }

    /// What a key-value or lock command of `pid` (running here) needs.
    fn asker(&self, pid: Pid) -> crate::records::kv::Asker<'_> {
        crate::records::kv::Asker {
            raft: &self.raft,
            pid,
            owner: self.owner_of(pid),
            rates: &self.rates,
            me: self.me,
        }
    }

    /// The owner of process `pid`: this node's claim for one that just
    /// started here, else the record in Raft, else [`Owner::cluster`].
    pub fn owner_of(&self, pid: Pid) -> Owner {
        self.owners
            .claimed(pid)
            .unwrap_or_else(|| self.raft.state().owner_of(pid.0))
    }

    /// Remember that `pid` does not exist (a peer said so on a lane).
    pub fn mark_dead(&self, pid: u64) {
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
    }

    fn is_known_dead(&self, pid: u64) -> bool {
        self.dead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&pid)
    }

    /// Where `pid` lives according to the replicated state: its directory
    /// entry, else the node whose block issued it.
    pub fn locate(state: &ClusterState, pid: u64) -> Option<NodeId> {
        state
            .directory
            .get(&pid)
            .map(|e| e.node)
            .or_else(|| state.block_owner(pid))
    }

    /// The scheduler's view of the cluster's nodes.
    pub fn candidates(state: &ClusterState, processes_max: u32) -> Vec<Candidate> {
        state
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Removed)
            .map(|n| Candidate {
                id: n.id,
                name: n.name.clone(),
                labels: n.labels.clone(),
                schedulable: n.status == NodeStatus::Active,
                healthy: is_up(state, n.id),
                memory_bytes_free: n.load.memory_bytes_free,
                memory_bytes_total: n.load.memory_bytes_total,
                cpu_load_milli: n.load.cpu_load_milli,
                process_count: n.load.process_count,
                processes_max,
            })
            .collect()
    }

    /// The death verdict on `node`, if the failure detector declared it
    /// dead (as applied here), for a request that started at `started`.
    pub fn declared_dead(&self, node: NodeId, started: Instant) -> Option<NodeDeclaredDead> {
        let state = self.raft.state();
        let l = state.liveness.get(&node).filter(|l| l.dead)?;
        Some(NodeDeclaredDead {
            node,
            name: state
                .nodes
                .get(&node)
                .map_or_else(|| node.to_string(), |n| n.name.clone()),
            silent_ms: l.silent_ms,
            window_ms: self.raft.dead_after_ms(),
            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Resolves once `node` is declared dead (at once if it already is).
    async fn until_dead(&self, node: NodeId, started: Instant) -> NodeDeclaredDead {
        let mut applied = self.raft.subscribe();
        loop {
            if let Some(dead) = self.declared_dead(node, started) {
                return dead;
            }
            if applied.changed().await.is_err() {
                // Raft stopped: no verdict will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Call `path` on node `node` at `addr`, bounded by `timeout` and by the
    /// failure detector: refused at once if the node is declared dead, and
    /// given up as soon as it is declared dead while the call waits (so a
    /// node that just became unreachable costs about the detector's window,
    /// not the full timeout). The error says how long it waited.
    pub async fn call_unless_dead(
        &self,
        node: NodeId,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerCallError> {
        let started = Instant::now();
        if let Some(dead) = self.declared_dead(node, started) {
            return Err(dead.into());
        }
        tokio::select! {
            r = self.peers.call_with_timeout(addr, path, body, timeout) => Ok(r?),
            dead = self.until_dead(node, started) => Err(dead.into()),
        }
    }

    /// [`Link::call_unless_dead`] for a member known by its address (a
    /// plain bounded call if no member has that address).
    pub async fn call_addr_unless_dead(
        &self,
        addr: &str,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerCallError> {
        let node = self
            .raft
            .state()
            .nodes
            .values()
            .find(|n| n.addr == addr && n.status != NodeStatus::Removed)
            .map(|n| n.id);
        match node {
            Some(id) => self.call_unless_dead(id, addr, path, body, timeout).await,
            None => Ok(self
                .peers
                .call_with_timeout(addr, path, body, timeout)
                .await?),
        }
    }

    /// Run `f` while no send is between its directory lookup and its lane
    /// push: every send that saw the old directory is on its lane before
    /// whatever `f` pushes.
    pub fn with_routes_fenced<R>(&self, f: impl FnOnce() -> R) -> R {
        let _exclusive = self.routes.write().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Choose a node for a process leaving node `away_from` (never that
    /// node itself).
    pub fn place_away(
        &self,
        target: &Target,
        away_from: NodeId,
    ) -> Result<NodeId, sched::PlacementError> {
        let state = self.raft.state();
        let mut candidates: Vec<Candidate> = Self::candidates(&state, self.processes_max)
            .into_iter()
            .filter(|c| c.id != away_from)
            .collect();
        self.placed.adjust(&state, &mut candidates);
        let id = sched::place(&candidates, target)?;
        self.placed.record(&state, &[id]);
        Ok(id)
    }

    /// Choose nodes for `count` processes.
    pub fn place(
        &self,
        target: &Target,
        count: usize,
    ) -> Result<Vec<NodeId>, sched::PlacementError> {
        let state = self.raft.state();
        let mut candidates = Self::candidates(&state, self.processes_max);
        self.placed.adjust(&state, &mut candidates);
        let ids = sched::place_many(&candidates, target, count)?;
        self.placed.record(&state, &ids);
        Ok(ids)
    }

    /// The address of a live member.
    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        self.raft.state().member(id).map(|n| n.addr.clone())
    }

    /// Ask node `target` to start a process (this node included).
    pub async fn spawn_at(
        &self,
        target: NodeId,
        request: &PeerSpawnRequest,
    ) -> Result<PeerSpawned, SpawnAtError> {
        if target == self.me {
            let node = self.node.upgrade().ok_or(SpawnAtError::ShuttingDown)?;
            return spawn::spawn_here(&node, self, request)
                .await
                .map_err(|refusal| SpawnAtError::Refused {
                    node: target,
                    refusal,
                });
        }
        let addr = self
            .addr_of(target)
            .ok_or(SpawnAtError::NotMember(target))?;
        let body = serde_json::to_vec(request).map_err(SpawnAtError::Encode)?;
        let answer = self
            .call_unless_dead(
                target,
                &addr,
                PATH_PEER_SPAWN,
                Bytes::from(body),
                REMOTE_SPAWN_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                PeerCallError::Dead(dead) => SpawnAtError::Dead(dead),
                PeerCallError::Net(NetError::Remote {
                    status: 409,
                    detail: Some(detail),
                    ..
                }) => match serde_json::from_value::<SpawnRefusal>(detail) {
                    Ok(refusal) => SpawnAtError::Refused {
                        node: target,
                        refusal,
                    },
                    Err(source) => SpawnAtError::UnknownRefusal {
                        node: target,
                        source,
                    },
                },
                PeerCallError::Net(other) => SpawnAtError::Unreachable {
                    node: target,
                    addr: addr.clone(),
                    source: other,
                },
            })?;
        serde_json::from_slice(&answer).map_err(|source| SpawnAtError::BadAnswer {
            node: target,
            source,
        })
    }

    /// Write the batched starts and exits to the directory. Called in a
    /// loop by the daemon; returns after one flush (or when idle).
    pub async fn flush_directory(&self) {
        let (started, exited, reincarnated) = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut p.started),
                std::mem::take(&mut p.exited),
                p.reincarnated.clone(),
            )
        };
        for chunk in reincarnated.chunks(shoal_cluster::PIDS_PER_COMMAND_MAX) {
            let cmd = Command::Reincarnated {
                node: self.me,
                pids: chunk.to_vec(),
            };
            match self.raft.write(cmd).await {
                Ok(_) => {
                    let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.reincarnated.retain(|pid| !chunk.contains(pid));
                    drop(p);
                    self.reincarnated_written.notify_waiters();
                }
                Err(e) => tracing::warn!("cannot write {} new incarnation(s): {e}", chunk.len()),
            }
        }
        // A process that started and exited in the same batch is still
        // registered (then unregistered): that moves its node's registered
        // mark past it, which is how senders learn it is gone. But a pid of
        // another node's block (a child its parent's node recorded, which
        // registered it: `crate::records::spawns`) that already left the
        // directory ended; registering it again would be refused, and with
        // it the whole chunk.
        let started: Vec<u64> = {
            let state = self.raft.state();
            started
                .into_iter()
                .filter(|p| {
                    state.directory.contains_key(p) || state.block_owner(*p) == Some(self.me)
                })
                .collect()
        };
        for chunk in started.chunks(shoal_cluster::PIDS_PER_COMMAND_MAX) {
            let cmd = Command::Register {
                node: self.me,
                pids: chunk.to_vec(),
            };
            if let Err(e) = self.raft.write(cmd).await {
                tracing::warn!(
                    "cannot register {} pid(s) in the directory: {e}",
                    chunk.len()
                );
                self.requeue(chunk, true);
            }
        }
        // Owners after their processes' registration, before any exit.
        let owned = self.owners.take_pending();
        for chunk in owned.chunks(shoal_cluster::PIDS_PER_COMMAND_MAX) {
            match crate::records::owners::record(&self.raft, self.me, chunk.to_vec()).await {
                Ok(()) => self.owners.settle(&self.raft.state(), chunk),
                Err(e) => {
                    tracing::warn!("cannot record the owners of {} pid(s): {e}", chunk.len());
                    self.owners.requeue(chunk);
                }
            }
        }
        for chunk in exited.chunks(shoal_cluster::PIDS_PER_COMMAND_MAX) {
            let cmd = Command::Unregister {
                node: self.me,
                pids: chunk.to_vec(),
            };
            if let Err(e) = self.raft.write(cmd).await {
                tracing::warn!("cannot unregister {} pid(s): {e}", chunk.len());
                self.requeue(chunk, false);
            }
        }
    }

    fn requeue(&self, pids: &[u64], started: bool) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let list = if started {
            &mut p.started
        } else {
            &mut p.exited
        };
        if list.len() + pids.len() <= DIRECTORY_PENDING_MAX {
            list.extend_from_slice(pids);
        }
    }

    /// Wait until there is something to flush.
    pub async fn directory_changed(&self) {
        loop {
            let n = self.pending_changed.notified();
            {
                let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if !p.started.is_empty()
                    || !p.exited.is_empty()
                    || !p.reincarnated.is_empty()
                    || self.owners.has_pending()
                {
                    return;
                }
            }
            n.await;
        }
    }

    fn fetch_error(reference: &str, why: impl std::fmt::Display) -> i32 {
        tracing::warn!("cannot get module {reference}: {why}");
        errno::NO_MODULE
    }
}

/// Why [`Link::spawn_at`] started nothing.
#[derive(Debug, thiserror::Error)]
pub enum SpawnAtError {
    /// This node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The chosen node is not (or no longer) a member.
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// The chosen node was declared dead before or while it was asked.
    #[error(transparent)]
    Dead(NodeDeclaredDead),
    /// The request could not be encoded.
    #[error("cannot encode the spawn request")]
    Encode(#[source] serde_json::Error),
    /// The node could not be reached or did not answer in time.
    #[error("node {node} ({addr}): {source}")]
    Unreachable {
        /// The node asked.
        node: NodeId,
        /// Its address.
        addr: String,
        /// What failed.
        source: NetError,
    },
    /// The node refused, saying why.
    #[error("node {node} refused: {refusal}")]
    Refused {
        /// The node asked.
        node: NodeId,
        /// Its typed refusal.
        refusal: SpawnRefusal,
    },
    /// The node's answer did not decode.
    #[error("node {node} answered badly")]
    BadAnswer {
        /// The node asked.
        node: NodeId,
        /// Why its answer did not decode.
        source: serde_json::Error,
    },
    /// The node refused with a refusal this node does not know.
    #[error("node {node} refused, for a reason this node does not know")]
    UnknownRefusal {
        /// The node asked.
        node: NodeId,
        /// Why its refusal did not decode.
        source: serde_json::Error,
    },
}

impl SpawnAtError {
    /// The ABI error code a guest's `spawn_on` returns: the refusal's own
    /// code, `NO_NODE` when the node could not be asked, `SPAWN_FAILED`
    /// otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            SpawnAtError::Refused { refusal, .. } => refusal.errno(),
            SpawnAtError::NotMember(_)
            | SpawnAtError::Dead(_)
            | SpawnAtError::Unreachable { .. } => errno::NO_NODE,
            SpawnAtError::ShuttingDown
            | SpawnAtError::Encode(_)
            | SpawnAtError::BadAnswer { .. }
            | SpawnAtError::UnknownRefusal { .. } => errno::SPAWN_FAILED,
        }
    }
}

#[async_trait::async_trait]
impl KvLocks for Link {
    async fn kv_read(
        &self,
        pid: Pid,
        bucket: &str,
        key: &[u8],
        mode: ReadMode,
    ) -> Result<Option<(Vec<u8>, u64)>, i32> {
        self.asker(pid).read(bucket, key, mode).await
    }

    async fn kv_list(
        &self,
        pid: Pid,
        bucket: &str,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        mode: ReadMode,
    ) -> Result<Vec<Vec<u8>>, i32> {
        self.asker(pid).list(bucket, prefix, cursor, mode).await
    }

    async fn kv_write(
        &self,
        pid: Pid,
        bucket: &str,
        key: &[u8],
        op: KvWrite,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<KvWritten, i32> {
        self.asker(pid)
            .write_kv(bucket, key, op, fence, effect)
            .await
    }

    async fn kv_read_many(
        &self,
        pid: Pid,
        bucket: &str,
        keys: &[Vec<u8>],
        mode: ReadMode,
    ) -> Result<Vec<Option<(Vec<u8>, u64)>>, i32> {
        self.asker(pid).read_many(bucket, keys, mode).await
    }

    async fn kv_write_many(
        &self,
        pid: Pid,
        bucket: &str,
        batch: KvBatchWrite,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<u64, i32> {
        use shoal_cluster::state::kv::{KvBatchOp, KvPair};
        let op = match batch {
            KvBatchWrite::Set(entries) => KvBatchOp::Set {
                entries: entries
                    .into_iter()
                    .map(|(key, value)| KvPair { key, value })
                    .collect(),
            },
            KvBatchWrite::Delete(keys) => KvBatchOp::Delete {
                keys: keys
                    .into_iter()
                    .map(|key| KvPair {
                        key,
                        value: Vec::new(),
                    })
                    .collect(),
            },
        };
        self.asker(pid).write_batch(bucket, op, fence, effect).await
    }

    async fn lock(&self, pid: Pid, name: &str, wait: bool) -> Result<LockAnswer, i32> {
        self.reincarnation_flushed(pid).await;
        self.asker(pid).lock(name, wait).await
    }

    async fn lock_wait(
        &self,
        pid: Pid,
        name: &str,
        wait_max: Option<std::time::Duration>,
    ) -> Result<u64, i32> {
        self.asker(pid).lock_wait(name, wait_max).await
    }

    async fn unlock(&self, pid: Pid, name: &str, token: u64) -> Result<(), i32> {
        self.asker(pid).unlock(name, token).await
    }

    async fn lock_check(&self, asker: Pid, name: &str, token: u64) -> Result<(), i32> {
        self.asker(asker).lock_check(name, token).await
    }
}

#[async_trait::async_trait]
impl ClusterLink for Link {
    fn room(&self) -> Arc<tokio::sync::Notify> {
        self.peers.room()
    }

    fn send_remote(&self, to: Pid, message: Message) -> Result<(), PushError> {
        let _shared = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let state = self.raft.state();
        let in_directory = state.directory.get(&to.0).map(|e| e.node);
        let target = match in_directory {
            Some(n) => n,
            None => {
                if state.is_gone(to.0) || self.is_known_dead(to.0) {
                    return Err(PushError::Closed);
                }
                // Issued but not registered yet: try where it was issued.
                state.block_owner(to.0).ok_or(PushError::Closed)?
            }
        };
        if target == self.me {
            // Issued or registered here but not live here: it has exited.
            return Err(PushError::Closed);
        }
        if state.node_dead(target).is_some() {
            // A call or monitor made after the verdict would wait on a lane
            // nobody drains (the verdict's DOWNs went out once, before it):
            // it gets its `node_down` now. Plain messages queue as before.
            if let Some((back_to, notice)) = shoal_runtime::calls::node_down_for(to, &message) {
                drop(_shared);
                if let Some(node) = self.node.upgrade() {
                    let _ = node.router().send_message(back_to, notice);
                }
                return Ok(());
            }
        }
        let addr = match state.member(target) {
            Some(n) => n.addr.clone(),
            None => return Err(PushError::Closed),
        };
        // What answers something the receiver already admitted may use the
        // lane's room for what is owed.
        let owed = message.tag.is_owed();
        let (kind, reference) = message.tag.to_wire();
        let msg = LaneMessage {
            from: message.sender.0,
            to: to.0,
            tag: LaneTag {
                kind,
                reference,
                seq: message.seq,
                life: message.life,
            },
            data: Bytes::from(message.data),
        };
        let sent = if owed {
            self.peers.send_owed(&addr, msg)
        } else {
            self.peers.send(&addr, msg)
        };
        sent.map_err(|_| PushError::Full)
    }

    async fn spawn_placed(
        &self,
        parent: Pid,
        target: &str,
        module_ref: &str,
        args: Vec<String>,
        effect: Option<EffectKey>,
    ) -> Result<Pid, i32> {
        let target = Target::parse(target).map_err(|_| errno::INVALID)?;
        let place = || match self.place(&target, 1) {
            Ok(ids) => Ok(ids[0]),
            Err(e) => {
                tracing::warn!("spawn_on {module_ref}: {e}");
                Err(errno::NO_NODE)
            }
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(module_ref.to_string());
        argv.extend(args);
        // Under output commit the child is on record (and in the
        // directory, on `chosen`) before it runs, so a resumed parent's
        // repeat finds it: in the state applied here if it has the record
        // already, else as the answer to recording again.
        let (chosen, recorded, asked_again) = match effect {
            None => (place()?, None, None),
            Some(key) => 'record: {
                let earlier =
                    match crate::records::spawns::recorded(&self.raft.state(), parent, key) {
                        Some(earlier) => earlier,
                        None => {
                            let chosen = place()?;
                            let node = self.node.upgrade().ok_or(errno::UNAVAILABLE)?;
                            let child = node
                                .pids()
                                .allocate_wait(spawn::PID_WAIT)
                                .await
                                .ok_or(errno::UNAVAILABLE)?;
                            match self.record_spawn(parent, key, child, Some(chosen)).await? {
                                SpawnRecord::Start => {
                                    break 'record (chosen, Some((key, child)), None)
                                }
                                SpawnRecord::Spawned(first) => Ok(first),
                                SpawnRecord::Failed(code) => Err(code),
                            }
                        }
                    };
                // A copy resumed inside this spawn: the first copy's node
                // may have died between the record and its request. Ask
                // the child's node again; it starts the child only if it
                // never did.
                let first = earlier?;
                match self.raft.state().directory.get(&first.0) {
                    Some(at) => (at.node, Some((key, first)), Some(first)),
                    None => return Ok(first),
                }
            }
        };
        let request = PeerSpawnRequest {
            module: module_ref.to_string(),
            args: argv,
            env: Vec::new(),
            memory_bytes_max: None,
            preemptible: false,
            // The child is its parent's owner's, wherever it runs.
            owner: Some(self.owner_of(parent)),
            volumes: Vec::new(),
            restart: None,
            recorded: recorded.map(|(key, child)| spawn::RecordedChild {
                pid: child.0,
                parent: parent.0,
                life: key.life,
                seq: key.seq,
            }),
        };
        let answer = self.spawn_at(chosen, &request).await;
        if let (Some(first), Err(e)) = (asked_again, &answer) {
            // Started already, or its node is gone: the record stands.
            tracing::debug!("spawn_on {module_ref} asked again at node {chosen}: {e}");
            return Ok(first);
        }
        match answer {
            Ok(s) => Ok(s.pid),
            Err(e) => {
                tracing::warn!("spawn_on {module_ref} at node {chosen}: {e}");
                let code = e.errno();
                if let Some((key, child)) = recorded {
                    self.spawn_failed(parent, key, child, code).await;
                }
                Err(code)
            }
        }
    }

    async fn record_spawn(
        &self,
        parent: Pid,
        effect: EffectKey,
        child: Pid,
        node: Option<u64>,
    ) -> Result<SpawnRecord, i32> {
        let node = node.unwrap_or(self.me);
        crate::records::spawns::record(&self.raft, parent, effect, child, node).await
    }

    async fn spawn_failed(&self, parent: Pid, effect: EffectKey, child: Pid, errno: i32) {
        crate::records::spawns::failed(&self.raft, parent, effect, child, errno).await;
    }

    async fn register_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        crate::records::names::register(&self.raft, pid, self.owner_of(pid), name).await
    }

    async fn unregister_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        crate::records::names::unregister(&self.raft, pid, self.owner_of(pid), name).await
    }

    fn whereis(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        crate::records::names::whereis(&self.raft.state(), &self.owner_of(asker), name)
    }

    async fn join_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        crate::records::names::join_group(&self.raft, pid, self.owner_of(pid), name).await
    }

    async fn leave_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        crate::records::names::leave_group(&self.raft, pid, self.owner_of(pid), name).await
    }

    fn group_pick(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        let node = self.node.upgrade();
        // A member of this node that is not live here has ended (or is
        // moving away: then it is picked again once it has arrived).
        // A member on a node declared dead is not picked: a call to a group
        // fails over to a live member.
        let state = self.raft.state();
        let gone = |pid: Pid, on: NodeId| {
            self.is_known_dead(pid.0)
                || state.node_dead(on).is_some()
                || (on == self.me && node.as_ref().is_some_and(|n| !n.router().is_local(pid)))
        };
        crate::records::names::group_pick(&state, self.me, &self.owner_of(asker), name, &gone)
    }

    async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32> {
        let node = self.node.upgrade().ok_or(errno::SPAWN_FAILED)?;
        let state = self.raft.state();
        let hex = match reference.strip_prefix("sha256:") {
            Some(h) => h.to_string(),
            None if reference.len() == 64 => reference.to_string(),
            None => state
                .module_names
                .get(reference)
                .cloned()
                .ok_or(errno::NO_MODULE)?,
        };
        let hash: Sha256 = hex.parse().map_err(|_| errno::NO_MODULE)?;
        if node.registry().contains(&hash) {
            return Ok(hash);
        }
        let me = self.me;
        let holders_of = |s: &ClusterState| -> Vec<NodeId> {
            s.modules
                .get(&hex)
                .map(|m| m.holders.iter().copied().filter(|h| *h != me).collect())
                .unwrap_or_default()
        };
        let mut holders = holders_of(&state);
        let mut state = state;
        if holders.is_empty() {
            // Asked by hash, the asker vouches that the module exists (a
            // node that stored it a moment ago forwards spawns by hash):
            // this node's index may lag the write that records it. Wait
            // for it, boundedly, instead of refusing at once.
            if let Ok(s) = self
                .raft
                .wait_for(MODULE_INDEX_WAIT, |s| !holders_of(s).is_empty())
                .await
            {
                holders = holders_of(&s);
                state = s;
            }
        }
        if holders.is_empty() {
            return Err(Self::fetch_error(reference, "no node holds it"));
        }
        let mut last = String::new();
        for holder in holders {
            let Some(addr) = state.member(holder).map(|n| n.addr.clone()) else {
                continue;
            };
            let body = Bytes::from(hex.clone().into_bytes());
            match self.peers.call(&addr, PATH_PEER_BLOB, body).await {
                Ok(bytes) => {
                    // The registry hashes what it stores: a peer that sent
                    // other bytes is caught here, before anything runs.
                    if let Err(e) = node.registry().put_expecting(&hash, &bytes) {
                        last = format!("node {holder} ({addr}) sent a bad blob: {e}");
                        continue;
                    }
                    let held = Command::ModuleHeld {
                        hash: hex.clone(),
                        node: self.me,
                        size_bytes: bytes.len() as u64,
                    };
                    let raft = self.raft.clone();
                    tokio::spawn(async move {
                        let _ = raft.write(held).await;
                    });
                    return Ok(hash);
                }
                Err(e) => last = format!("node {holder} ({addr}): {e}"),
            }
        }
        Err(Self::fetch_error(reference, last))
    }

    fn process_started(&self, pid: Pid, parent: Option<Pid>) {
        if let Some(parent) = parent {
            // A guest's child is its parent's owner's: a guest never
            // leaves its owner's namespace.
            self.owners.claim(pid, self.owner_of(parent));
        }
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // A pid that ended and starts again (a restore that replaces its
        // original) is still registered: its exit is not written.
        if let Some(i) = p.exited.iter().position(|x| *x == pid.0) {
            p.exited.swap_remove(i);
            // A new incarnation: it holds none of the old one's locks.
            if p.reincarnated.len() < DIRECTORY_PENDING_MAX && !p.reincarnated.contains(&pid.0) {
                p.reincarnated.push(pid.0);
            }
        }
        if p.started.len() < DIRECTORY_PENDING_MAX {
            p.started.push(pid.0);
        }
        drop(p);
        self.pending_changed.notify_one();
    }

    fn node_id(&self) -> u64 {
        self.me
    }

    fn keeps_checkpoints(&self, pid: Pid) -> bool {
        self.raft
            .state()
            .failover
            .recoverable
            .get(&pid.0)
            .is_some_and(|r| r.policy.mode != shoal_cluster::state::failover::RestartMode::Never)
    }

    fn process_exited(&self, pid: Pid, reason: Option<&shoal_abi::process::ExitReason>) {
        // Its policy starts it again: it stays in the directory, under its
        // owner, and `crate::failover` restarts it after a backoff.
        if let Some(why) = reason.and_then(|r| self.restart_after(pid, r)) {
            if self.restarts.push(pid.0, why) {
                return;
            }
        }
        let owner = self.owner_of(pid);
        if !owner.is_cluster() {
            self.owners.remember_exited(pid, owner);
        }
        self.owners.unclaim(pid);
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if p.exited.len() < DIRECTORY_PENDING_MAX {
            p.exited.push(pid.0);
        }
        drop(p);
        self.pending_changed.notify_one();
    }
}
