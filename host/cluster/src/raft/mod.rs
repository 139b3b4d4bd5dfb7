//! The Raft node: openraft behind Shoal's own API. Nothing outside
//! `cluster::raft` names an openraft type.
//!
//! - [`store`]: the redb file (vote, purge point), the write-ahead log
//!   ([`wal`]) and the snapshot file.
//! - [`log_store`] / [`state_machine`]: openraft's storage traits over it.
//! - [`batcher`]: the leader's group commit of concurrent writes.
//! - [`network`]: openraft's network traits over a [`RaftTransport`].
//!
//! Writes go through [`Raft::write`], which forwards to the leader when this
//! node is not it and always answers within `write_timeout_ms` with either
//! the command's result or an error that names the problem (no quorum, no
//! leader, timeout, not a member).

mod batcher;
mod codec;
mod detector_task;
mod log_store;
mod network;
mod prevote;
mod snapshot_file;
mod state_machine;
mod store;
mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use codec::CodecError;
pub use network::{RaftTransport, RpcKind, TransportError};
pub use state_machine::{DroppedChild, MoveApplied};
pub use store::StoreError;

use self::log_store::LogStore;
use self::network::{NetworkFactory, Reachability};
use self::state_machine::{Published, StateMachine};
use self::store::Store;
use super::state::{ClusterState, Command, CommandResult, MemberInfo, NodeId};
use shoal_pki::{Owner, SharedRevocations};

openraft::declare_raft_types!(
    /// openraft's type configuration for Shoal's cluster metadata.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = MemberInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
        AsyncRuntime = openraft::TokioRuntime,
);

type OpenRaft = openraft::Raft<TypeConfig>;

/// Safety bound on retry rounds of one write / membership change (each
/// round also waits, and the whole call is bounded by its timeout).
const ROUNDS_MAX: u32 = 10_000;

/// Whether [`Raft::leader_op`] may try again after an attempt whose
/// outcome is unknown (it may have been applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Only attempts that surely reached no leader (membership changes).
    OnlyUndelivered,
    /// Any attempt: the operation is idempotent ([`Command::Once`]).
    EvenIfDelivered,
}

/// How long [`Raft::shutdown`] waits for openraft's tasks to release the
/// store file (so the same directory can be reopened at once).
const SHUTDOWN_RELEASE_MS: u64 = 10_000;

/// Raft timing and size knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Shortest election timeout (must exceed the heartbeat interval).
    pub election_timeout_min_ms: u64,
    /// Longest election timeout (must exceed the minimum).
    pub election_timeout_max_ms: u64,
    /// Bound on one [`Raft::write`] (and on each step of a membership change).
    pub write_timeout_ms: u64,
    /// Bound on a new member catching up in [`Raft::add_member`].
    pub catch_up_timeout_ms: u64,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_after_entries: u64,
    /// Log entries kept after a snapshot (so slightly lagging followers
    /// still catch up from the log rather than by snapshot).
    pub entries_kept_after_snapshot: u64,
    /// Most entries in one AppendEntries RPC.
    pub max_payload_entries: u64,
    /// Snapshot chunk size for InstallSnapshot RPCs.
    pub snapshot_chunk_bytes: u64,
    /// The leader declares a node dead after hearing nothing from it for
    /// this long on its monotonic clock (see [`crate::detector`]).
    #[serde(default = "dead_after_ms_default")]
    pub dead_after_ms: u64,
}

fn dead_after_ms_default() -> u64 {
    crate::detector::DEAD_AFTER_MS_DEFAULT
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            write_timeout_ms: 3000,
            catch_up_timeout_ms: 30_000,
            snapshot_after_entries: 5000,
            entries_kept_after_snapshot: 1000,
            max_payload_entries: 64,
            snapshot_chunk_bytes: 1 << 20,
            dead_after_ms: crate::detector::DEAD_AFTER_MS_DEFAULT,
        }
    }
}

impl RaftConfig {
    fn to_openraft(&self) -> Result<openraft::Config, ClusterError> {
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms >= self.election_timeout_min_ms
        {
            return Err(ClusterError::Config(format!(
                "heartbeat_interval_ms ({}) must be > 0 and below election_timeout_min_ms ({})",
                self.heartbeat_interval_ms, self.election_timeout_min_ms
            )));
        }
        if self.dead_after_ms <= self.election_timeout_max_ms {
            return Err(ClusterError::Config(format!(
                "dead_after_ms ({}) must exceed election_timeout_max_ms ({}): a node is not dead for missing a heartbeat or two",
                self.dead_after_ms, self.election_timeout_max_ms
            )));
        }
        if self.write_timeout_ms == 0
            || self.snapshot_after_entries == 0
            || self.max_payload_entries == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err(ClusterError::Config(
                "write_timeout_ms, snapshot_after_entries, max_payload_entries and snapshot_chunk_bytes must be > 0"
                    .to_string(),
            ));
        }
        let config = openraft::Config {
            cluster_name: "shoal".to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.write_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            replication_lag_threshold: self.snapshot_after_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ClusterError::Config(e.to_string()))
    }

    /// How recently a voter must have talked to us to count as reachable.
    fn reach_window(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms.saturating_mul(3).max(1000))
    }
}

/// The leader as a user reads it.
/// A write that never left this node was refused; one that may have
/// reached a leader's log is only unconfirmed.
fn verdict(sent: bool) -> &'static str {
    if sent {
        "not confirmed"
    } else {
        "refused"
    }
}

fn sent_text(sent: bool) -> &'static str {
    if sent {
        "; it was sent before this node saw the problem and may still apply (once) when the cluster heals: check before writing it again"
    } else {
        "; nothing was sent"
    }
}

fn leader_text(leader: Option<NodeId>) -> String {
    match leader {
        Some(id) => format!("the leader is node {id}"),
        None => "no leader known".to_string(),
    }
}

impl ClusterError {
    /// Whether the operation may or may not have been applied (a retry of
    /// an idempotent one is safe and may succeed).
    fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClusterError::Timeout { .. }
                | ClusterError::NoQuorum { .. }
                | ClusterError::NoLeader { .. }
                | ClusterError::Transport(TransportError::Failed { .. })
        )
    }
}

/// Everything that can go wrong in the cluster layer, each naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Too few voters are reachable from this node to commit anything.
    #[error("write {}: no quorum (this node sees {reachable} of {voters} voters); the cluster is partitioned or nodes are down{}", verdict(*sent), sent_text(*sent))]
    NoQuorum {
        /// Voters this node heard from recently, itself included.
        reachable: usize,
        /// Voters in the membership.
        voters: usize,
        /// Whether an attempt may have reached a leader's log (then the
        /// outcome is unknown: it may still apply, once).
        sent: bool,
    },
    /// No leader was known for the whole wait.
    #[error("write {}: no leader elected within {waited_ms} ms (an election is in progress){}", verdict(*sent), sent_text(*sent))]
    NoLeader {
        /// How long this call waited.
        waited_ms: u64,
        /// As for `NoQuorum`.
        sent: bool,
    },
    /// A leader was known but did not confirm in time.
    #[error("{what} timed out after {waited_ms} ms ({}){}", leader_text(*leader), sent_text(*sent))]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// How long this call waited.
        waited_ms: u64,
        /// The leader this node knew of at the end.
        leader: Option<NodeId>,
        /// As for `NoQuorum`.
        sent: bool,
    },
    /// The node is not (or no longer) in the Raft membership.
    #[error("refused: node {id} is not a member of the cluster (removed, or not added yet)")]
    NotMember {
        /// The node.
        id: NodeId,
    },
    /// `bootstrap` on a node that already has a cluster.
    #[error("this node already belongs to an initialized cluster")]
    AlreadyInitialized,
    /// A write on a node that has no cluster yet.
    #[error("this node is not part of a cluster yet (bootstrap it, or add it from a member)")]
    NotInitialized,
    /// The state machine refused the bootstrap command.
    #[error("refused by the cluster state: {0}")]
    Refused(crate::state::Refusal),
    /// A forwarded request could not be delivered.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An incoming or returned RPC body did not decode.
    #[error("malformed {kind:?} RPC body: {reason}")]
    BadRpc {
        /// The RPC kind.
        kind: RpcKind,
        /// What was wrong.
        reason: String,
    },
    /// The durable store failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The Raft configuration is invalid.
    #[error("bad raft configuration: {0}")]
    Config(String),
    /// The Raft node stopped (shut down or fatal storage error).
    #[error("raft node {id} is not running: {reason}")]
    Stopped {
        /// This node.
        id: NodeId,
        /// Why.
        reason: String,
    },
    /// Another Raft-level failure (membership change refused, ...).
    #[error("raft: {0}")]
    Raft(String),
    /// The leader refused a forwarded write this node may not make (see
    /// [`ClusterState::may_forward`]).
    #[error("refused by the leader: {0}")]
    Forbidden(crate::state::writers::ForwardRefusal),
    /// A Raft request claimed to come from another node than the one whose
    /// certificate sent it.
    #[error("node {sender:?} sent a {kind:?} request as node {claimed}: a node sends Raft traffic only as itself")]
    Impersonation {
        /// The RPC kind.
        kind: RpcKind,
        /// The certificate's node name.
        sender: String,
        /// The node id the request claimed.
        claimed: NodeId,
    },
}

/// A snapshot of this node's Raft view, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Voter ids (both halves during a joint config).
    pub voters: Vec<NodeId>,
    /// Learner ids.
    pub learners: Vec<NodeId>,
    /// Index of the last applied entry.
    pub last_applied: Option<u64>,
    /// Index of the last entry in the local log.
    pub last_log_index: Option<u64>,
    /// Index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log was purged.
    pub purged_index: Option<u64>,
}

/// A node's Raft role as it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    /// Leads (or believes it still does: see [`RaftView::leader_current`]).
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Raft is not running.
    Stopped,
}

/// [`Raft::wait_for`] gave up: the state never satisfied the condition.
#[derive(Debug, thiserror::Error)]
#[error("the cluster state did not reach the awaited condition within {waited_ms} ms")]
pub struct WaitTimedOut {
    /// How long it waited.
    pub waited_ms: u64,
    /// The last state it saw.
    pub state: Arc<ClusterState>,
}

/// What one node actually knows about its cluster's leadership: what
/// `shoal nodes` shows, so a node cut off by a partition says so instead
/// of claiming a leadership it lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// The node.
    pub id: NodeId,
    /// Its current term.
    pub term: u64,
    /// Its role.
    pub role: RaftRole,
    /// The leader it knows of (maybe stale: see `leader_current`).
    pub leader: Option<NodeId>,
    /// Milliseconds since this node last heard from that leader (on the
    /// leader itself: since a quorum last acknowledged it); `None` if never.
    pub leader_contact_ms: Option<u64>,
    /// Whether that contact is recent enough (within the election window)
    /// for `leader` to be trusted. False on a leader cut off from the
    /// majority and on a follower cut off from its leader.
    pub leader_current: bool,
}

/// Why a forwarded request was not done (wire format between members).
#[derive(Debug, Serialize, Deserialize)]
enum ForwardError {
    NotLeader {
        leader: Option<NodeId>,
    },
    NotMember {
        id: NodeId,
    },
    /// The leader could not confirm in time; the outcome is unknown.
    NoQuorum {
        reachable: usize,
        voters: usize,
    },
    Unconfirmed {
        waited_ms: u64,
    },
    Failed(String),
    /// The sender may not make this write (see `ClusterState::may_forward`).
    Forbidden(crate::state::writers::ForwardRefusal),
}

/// A follower's ReadIndex request (the leader answers the index).
#[derive(Debug, Serialize, Deserialize)]
struct ForwardRead {
    from: NodeId,
}

#[derive(Debug, Serialize, Deserialize)]
struct ForwardWrite {
    from: NodeId,
    cmd: Command,
    /// Whose request this is (the certificate that asked the sender over
    /// the control API); `None`: the sender's own.
    #[serde(default)]
    by: Option<Owner>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ForwardAdd {
    from: NodeId,
    id: NodeId,
    info: MemberInfo,
}

#[derive(Debug, Serialize, Deserialize)]
struct ForwardRemove {
    from: NodeId,
    id: NodeId,
    /// Whose request this is (as in [`ForwardWrite`]).
    #[serde(default)]
    by: Option<Owner>,
}

/// What one attempt of a leader-only operation led to.
enum Step<T> {
    Done(T),
    /// Not (or no longer) the leader; try again after a short wait.
    Retry,
}

/// One Raft member: replicated cluster metadata with a durable store.
/// Cheap to clone.
#[derive(Clone)]
pub struct Raft {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    me: MemberInfo,
    raft: OpenRaft,
    transport: Arc<dyn RaftTransport>,
    config: RaftConfig,
    published: Arc<Published>,
    reach: Arc<Reachability>,
    /// The leader's failure detector task ([`detector_task`]), the
    /// pre-vote guard ([`prevote`]) and the write [`batcher`]: stopped at
    /// shutdown.
    detector: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Completes when openraft's tasks dropped the store (file closed).
    store_closed: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// This run's writer id for at-most-once writes (random; see
    /// [`crate::state::once`]).
    client_id: u64,
    /// The next write's sequence number.
    next_seq: std::sync::atomic::AtomicU64,
    /// Group commit of the writes this node proposes as leader.
    batcher: batcher::Batcher,
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.inner.id)
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn decode<T: DeserializeOwned>(kind: RpcKind, body: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(body).map_err(|e| ClusterError::BadRpc {
        kind,
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(kind: RpcKind, value: &T) -> Result<Vec<u8>, ClusterError> {
    serde_json::to_vec(value).map_err(|e| ClusterError::BadRpc {
        kind,
        reason: e.to_string(),
    })
}

impl Raft {
    /// Open (or reopen after a crash/restart) the node's durable store in
    /// `dir` and start Raft. A reopened node resumes with its log, vote and
    /// state; a new one waits to be bootstrapped or added.
    pub async fn open(
        id: NodeId,
        me: MemberInfo,
        dir: &Path,
        transport: Arc<dyn RaftTransport>,
        config: RaftConfig,
    ) -> Result<Raft, ClusterError> {
        let openraft_config = Arc::new(config.to_openraft()?);
        let (store, store_closed) = Store::open(dir)?;
        let store = Arc::new(store);
        let published = Arc::new(Published::new());
        let state_machine = StateMachine::open(store.clone(), published.clone())?;
        let log = LogStore::new(store.clone());
        let has_history = log.has_history()?;
        let reach = Arc::new(Reachability::default());
        let network = NetworkFactory {
            transport: transport.clone(),
            reach: reach.clone(),
        };
        let raft = OpenRaft::new(id, openraft_config, network, log, state_machine)
            .await
            .map_err(|e| ClusterError::Stopped {
                id,
                reason: e.to_string(),
            })?;
        if has_history {
            // Let openraft load the log before anyone asks is_initialized()
            // or writes (its metrics start empty). Bounded: a failure shows
            // up on the first write instead.
            let mut metrics = raft.metrics();
            let _loaded = tokio::time::timeout(
                Duration::from_millis(config.write_timeout_ms),
                metrics.wait_for(|m| m.last_log_index.is_some()),
            )
            .await
            .map(|r| r.map(|_| ()));
        }
        let (batcher, batcher_task) = batcher::Batcher::start(raft.clone());
        let node = Raft {
            inner: Arc::new(Inner {
                id,
                me,
                raft,
                transport,
                config,
                published,
                reach,
                detector: Mutex::new(Vec::new()),
                store_closed: Mutex::new(Some(store_closed)),
                client_id: rand::random(),
                next_seq: std::sync::atomic::AtomicU64::new(1),
                batcher,
            }),
        };
        let tasks = vec![
            tokio::spawn(detector_task::run(Arc::downgrade(&node.inner))),
            tokio::spawn(prevote::run(Arc::downgrade(&node.inner))),
            batcher_task,
        ];
        *node
            .inner
            .detector
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(node)
    }

    /// First node of a new cluster: initialize membership {this node} and
    /// apply [`Command::Bootstrap`] with this node as the first node and CA
    /// holder, recording the CA certificate `ca_cert_pem` (PEM) that signed
    /// requests are checked against.
    pub async fn bootstrap(
        &self,
        labels: BTreeMap<String, String>,
        ca_cert_pem: String,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let mut members = BTreeMap::new();
        members.insert(self.inner.id, self.inner.me.clone());
        match self.inner.raft.initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                return Err(ClusterError::AlreadyInitialized)
            }
            Err(e) => return Err(ClusterError::Raft(e.to_string())),
        }
        // The membership shows in metrics a moment after `initialize`.
        let wait = Duration::from_millis(self.inner.config.write_timeout_ms);
        let mut metrics = self.inner.raft.metrics();
        let seen = tokio::time::timeout(
            wait,
            metrics.wait_for(|m| m.membership_config.membership().nodes().next().is_some()),
        )
        .await
        // Release the watch read guard at once: holding it would block
        // openraft's metrics updates (and so the whole Raft core).
        .map(|r| r.map(|_| ()));
        match seen {
            Err(_) => {
                return Err(ClusterError::Raft(
                    "initialized membership did not appear".to_string(),
                ))
            }
            Ok(Err(e)) => return Err(self.stopped(e)),
            Ok(Ok(())) => {}
        }
        let cmd = Command::Bootstrap {
            ca_node: self.inner.id,
            ca_cert_pem,
            name: self.inner.me.name.clone(),
            addr: self.inner.me.addr.clone(),
            labels,
            now_ms,
        };
        match self.write(cmd).await? {
            CommandResult::Refused(why) => Err(ClusterError::Refused(why)),
            _ => Ok(()),
        }
    }

    /// Whether this node has a membership (bootstrapped, added, or restored).
    pub fn is_initialized(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.last_log_index.is_some() || m.membership_config.membership().nodes().next().is_some()
    }

    /// Wait, at most `wait_max`, until [`Raft::is_initialized`]: woken by
    /// Raft's metrics, never polling. `false` if it timed out.
    pub async fn wait_initialized(&self, wait_max: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            metrics.borrow_and_update();
            if self.is_initialized() {
                return true;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.is_initialized(),
            }
        }
    }

    /// Wait, at most `wait_max`, until this node has applied every entry
    /// its log held when called (a read that must see what the cluster
    /// committed a moment ago). Woken by Raft's metrics. `false` if it
    /// timed out.
    pub async fn caught_up(&self, wait_max: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        let target = metrics.borrow_and_update().last_log_index;
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            let applied = metrics.borrow_and_update().last_applied.map(|l| l.index);
            if applied >= target {
                return true;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Replicated write; forwards to the leader ([`RpcKind::ClientWrite`])
    /// when this node is not it. Bounded by `write_timeout_ms`. The result
    /// is the command's [`CommandResult`] (which may be a `Refused`).
    ///
    /// The command goes into the log as [`Command::Once`] with this run's
    /// client id and a fresh sequence number, so it is retried — with
    /// whichever node leads by then — whenever an attempt's outcome is
    /// unknown (a leader change, a lost answer, an attempt that took too
    /// long), and still applied at most once. Each attempt is bounded so a
    /// leader cut off by a partition cannot use up the whole budget. After
    /// a final `Timeout`, `NoQuorum` or `Transport` error the outcome is
    /// unknown: the command may still commit later (once).
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, ClusterError> {
        self.write_by(cmd, None).await
    }

    /// [`Raft::write`] on behalf of `by`, the identity that asked this node
    /// (a role-bearing write: a join token, a revocation, a node's removal
    /// or cordon, a module name). A leader that is not this node applies it
    /// only if `by`'s role allows it ([`ClusterState::may_forward`]).
    pub async fn write_as(&self, cmd: Command, by: &Owner) -> Result<CommandResult, ClusterError> {
        self.write_by(cmd, Some(by.clone())).await
    }

    async fn write_by(
        &self,
        cmd: Command,
        by: Option<Owner>,
    ) -> Result<CommandResult, ClusterError> {
        self.check_member()?;
        let seq = self
            .inner
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cmd = Command::Once {
            client: self.inner.client_id,
            seq,
            cmd: Box::new(cmd),
        };
        let body = encode(
            RpcKind::ClientWrite,
            &ForwardWrite {
                from: self.inner.id,
                cmd: cmd.clone(),
                by,
            },
        )?;
        self.leader_op(
            "write",
            self.inner.config.write_timeout_ms,
            Retry::EvenIfDelivered,
            RpcKind::ClientWrite,
            &body,
            |remaining| {
                let cmd = cmd.clone();
                async move { self.local_write(cmd, remaining).await }
            },
        )
        .await
    }

    /// The locally applied state (may lag the leader by a heartbeat). Cheap:
    /// a shared pointer to an immutable value.
    pub fn state(&self) -> Arc<ClusterState> {
        self.inner.published.state()
    }

    /// Wakes with the applied log index whenever the local state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.published.subscribe()
    }

    /// Wait until the locally applied state satisfies `ready`, at most
    /// `wait_max`: woken by each apply, never polling. Returns that state,
    /// or [`WaitTimedOut`] with the last state seen.
    pub async fn wait_for(
        &self,
        wait_max: Duration,
        ready: impl Fn(&ClusterState) -> bool,
    ) -> Result<Arc<ClusterState>, WaitTimedOut> {
        let mut applied = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait_max;
        loop {
            // Subscribed before reading, so no apply between the read and
            // the wait is missed.
            applied.borrow_and_update();
            let state = self.state();
            if ready(&state) {
                return Ok(state);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the state machine is gone (shutdown).
                _ => {
                    let state = self.state();
                    return if ready(&state) {
                        Ok(state)
                    } else {
                        Err(WaitTimedOut {
                            waited_ms: ms(wait_max),
                            state,
                        })
                    };
                }
            }
        }
    }

    /// Every directory move (`MovePid`) applied here from now on, sent
    /// after [`Raft::state`] shows it (migration fences use it).
    pub fn subscribe_moves(&self) -> tokio::sync::broadcast::Receiver<MoveApplied> {
        self.inner.published.subscribe_moves()
    }

    /// Every recorded child that a `SpawnEffectFailed` applied here from
    /// now on dropped from the directory, sent after [`Raft::state`] shows
    /// it (the node it was on kills it if it runs there after all). On
    /// `Lagged`, compare the recorded children started here with
    /// [`ClusterState::directory`].
    pub fn subscribe_dropped_children(&self) -> tokio::sync::broadcast::Receiver<DroppedChild> {
        self.inner.published.subscribe_dropped_children()
    }

    /// Every failure-detector verdict (`NodeDead` / `NodeAlive`) applied
    /// here from now on, sent after [`Raft::state`] shows it: the hook for
    /// features that react to a node's death (see [`crate::detector`]). On
    /// `Lagged`, re-read [`ClusterState::liveness`].
    pub fn subscribe_liveness(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::detector::LivenessChange> {
        self.inner.published.subscribe_liveness()
    }

    /// What this node knows of the leadership: term, role, the leader and
    /// how long ago it heard from it (see [`RaftView`]).
    pub fn view(&self) -> RaftView {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let role = match (&m.running_state, m.state) {
            (Err(_), _) | (_, ServerState::Shutdown) => RaftRole::Stopped,
            (_, ServerState::Leader) => RaftRole::Leader,
            (_, ServerState::Candidate) => RaftRole::Candidate,
            (_, ServerState::Learner) => RaftRole::Learner,
            (_, ServerState::Follower) => RaftRole::Follower,
        };
        let leader_contact_ms = match m.current_leader {
            None => None,
            Some(l) if l == self.inner.id => {
                if role == RaftRole::Leader {
                    m.millis_since_quorum_ack
                } else {
                    None
                }
            }
            Some(l) => self.inner.reach.age(l).map(ms),
        };
        let window_ms = ms(self.inner.config.reach_window());
        RaftView {
            id: self.inner.id,
            term: m.current_term,
            role,
            leader: m.current_leader,
            leader_contact_ms,
            leader_current: role != RaftRole::Stopped
                && leader_contact_ms.is_some_and(|c| c <= window_ms),
        }
    }

    /// The failure detector's silence window, ms.
    pub fn dead_after_ms(&self) -> u64 {
        self.inner.config.dead_after_ms
    }

    /// The revocation list as applied here, as the handle TLS verifiers
    /// read; replaced whenever a Raft entry or snapshot changes it.
    pub fn revocations(&self) -> SharedRevocations {
        self.inner.published.revocations()
    }

    /// Membership by joint consensus: add `id` as a learner, wait (bounded
    /// by `catch_up_timeout_ms`) until it caught up, then promote it to
    /// voter. Forwards to the leader when needed. Adding a current voter
    /// succeeds without change.
    pub async fn add_member(&self, id: NodeId, info: MemberInfo) -> Result<(), ClusterError> {
        self.check_member()?;
        let body = encode(
            RpcKind::AddMember,
            &ForwardAdd {
                from: self.inner.id,
                id,
                info: info.clone(),
            },
        )?;
        let budget_ms = self
            .inner
            .config
            .catch_up_timeout_ms
            .saturating_add(self.inner.config.write_timeout_ms);
        self.leader_op(
            "add_member",
            budget_ms,
            Retry::OnlyUndelivered,
            RpcKind::AddMember,
            &body,
            |remaining| {
                let info = info.clone();
                async move { self.local_add(id, info, remaining).await }
            },
        )
        .await
    }

    /// Remove `id` from the Raft membership (voter or learner) by joint
    /// consensus. Idempotent. Forwards to the leader when needed. (The
    /// node's record, certificates and processes are handled separately by
    /// [`Command::RemoveNode`].)
    pub async fn remove_member(&self, id: NodeId, by: &Owner) -> Result<(), ClusterError> {
        self.check_member()?;
        let body = encode(
            RpcKind::RemoveMember,
            &ForwardRemove {
                from: self.inner.id,
                id,
                by: Some(by.clone()),
            },
        )?;
        self.leader_op(
            "remove_member",
            self.inner.config.write_timeout_ms.saturating_mul(2),
            Retry::OnlyUndelivered,
            RpcKind::RemoveMember,
            &body,
            |remaining| async move { self.local_remove(id, remaining).await },
        )
        .await
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Raft members (voters and learners) and how to reach them.
    pub fn members(&self) -> BTreeMap<NodeId, MemberInfo> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect()
    }

    /// Term, leader, voters, learners and log positions as seen here.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        RaftStatus {
            id: self.inner.id,
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }

    /// The id of the member called `name` (by the membership, else the
    /// applied state), if this node knows it.
    fn member_named(&self, name: &str) -> Option<NodeId> {
        self.members()
            .into_iter()
            .find(|(_, m)| m.name == name)
            .map(|(id, _)| id)
            .or_else(|| self.state().member_by_name(name).map(|n| n.id))
    }

    /// Check that a replication request claiming to come from `claimed`
    /// was sent by that node (`sender`, the certificate's node name). A
    /// sender this node does not know yet (it is new, or far behind) is
    /// taken at its word: it cannot be checked, and there is nothing here
    /// to protect yet.
    fn check_replicator(
        &self,
        kind: RpcKind,
        sender: &str,
        claimed: Option<NodeId>,
    ) -> Result<(), ClusterError> {
        match (self.member_named(sender), claimed) {
            (Some(id), Some(c)) if id != c => Err(ClusterError::Impersonation {
                kind,
                sender: sender.to_string(),
                claimed: c,
            }),
            _ => Ok(()),
        }
    }

    /// Check that a forwarded request's `from` is its sender (whom this
    /// node, the leader, must know).
    fn check_forwarder(
        &self,
        kind: RpcKind,
        sender: &str,
        from: NodeId,
    ) -> Result<(), ClusterError> {
        match self.member_named(sender) {
            Some(id) if id == from => Ok(()),
            _ => Err(ClusterError::Impersonation {
                kind,
                sender: sender.to_string(),
                claimed: from,
            }),
        }
    }

    /// Server side: the transport calls this for an incoming RPC from the
    /// node whose certificate names it `sender` (the transport has checked
    /// it is a node certificate of this cluster) and sends back the
    /// returned body. A node sends Raft traffic only as itself: a request
    /// claiming another node is refused; a forwarded write is applied only
    /// if the sender may make it ([`ClusterState::may_forward`]).
    pub async fn handle_rpc(
        &self,
        kind: RpcKind,
        body: &[u8],
        sender: &str,
    ) -> Result<Vec<u8>, ClusterError> {
        let raft = &self.inner.raft;
        match kind {
            RpcKind::AppendEntries => {
                let req: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(kind, body)?;
                let from = req.vote.leader_id().voted_for();
                self.check_replicator(kind, sender, from)?;
                if let Some(from) = from {
                    self.inner.reach.mark(from);
                }
                encode(kind, &raft.append_entries(req).await)
            }
            RpcKind::Vote => {
                let req: openraft::raft::VoteRequest<NodeId> = decode(kind, body)?;
                let from = req.vote.leader_id().voted_for();
                self.check_replicator(kind, sender, from)?;
                if let Some(from) = from {
                    self.inner.reach.mark(from);
                }
                encode(kind, &raft.vote(req).await)
            }
            RpcKind::PreVote => {
                let req: prevote::PreVoteRequest = decode(kind, body)?;
                self.check_forwarder(kind, sender, req.from)?;
                self.inner.reach.mark(req.from);
                let window = Duration::from_millis(self.inner.config.election_timeout_min_ms);
                let answer = prevote::PreVoteAnswer {
                    leader_alive: prevote::leader_alive(&self.inner, window),
                };
                encode(kind, &answer)
            }
            RpcKind::InstallSnapshot => {
                let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(kind, body)?;
                let from = req.vote.leader_id().voted_for();
                self.check_replicator(kind, sender, from)?;
                // Chunks are written at their offset into the received
                // file: bound where they may land before anything is
                // written (a giant offset would make a giant file).
                let end = req.offset.saturating_add(req.data.len() as u64);
                if end > snapshot_file::SNAPSHOT_BYTES_MAX {
                    return Err(ClusterError::BadRpc {
                        kind,
                        reason: format!(
                            "a snapshot chunk ending at byte {end}, past the {}-byte limit",
                            snapshot_file::SNAPSHOT_BYTES_MAX
                        ),
                    });
                }
                if let Some(from) = from {
                    self.inner.reach.mark(from);
                }
                encode(kind, &raft.install_snapshot(req).await)
            }
            RpcKind::ClientWrite => {
                let req: ForwardWrite = decode(kind, body)?;
                self.check_forwarder(kind, sender, req.from)?;
                self.inner.reach.mark(req.from);
                if let Err(why) = self
                    .state()
                    .may_forward(req.from, req.by.as_ref(), &req.cmd)
                {
                    tracing::warn!("refused a write forwarded by node {sender:?}: {why}");
                    let res: Result<CommandResult, ForwardError> =
                        Err(ForwardError::Forbidden(why));
                    return encode(kind, &res);
                }
                let res = self
                    .serve(req.from, self.inner.config.write_timeout_ms, |remaining| {
                        self.local_write(req.cmd, remaining)
                    })
                    .await;
                encode(kind, &res)
            }
            RpcKind::ReadIndex => {
                let req: ForwardRead = decode(kind, body)?;
                self.check_forwarder(kind, sender, req.from)?;
                self.inner.reach.mark(req.from);
                let res = self
                    .serve(req.from, self.inner.config.write_timeout_ms, |remaining| {
                        self.local_read_index(remaining)
                    })
                    .await;
                encode(kind, &res)
            }
            RpcKind::AddMember => {
                let req: ForwardAdd = decode(kind, body)?;
                self.check_forwarder(kind, sender, req.from)?;
                self.inner.reach.mark(req.from);
                let res = self
                    .serve(
                        req.from,
                        self.inner.config.catch_up_timeout_ms,
                        |remaining| self.local_add(req.id, req.info, remaining),
                    )
                    .await;
                encode(kind, &res)
            }
            RpcKind::RemoveMember => {
                let req: ForwardRemove = decode(kind, body)?;
                self.check_forwarder(kind, sender, req.from)?;
                self.inner.reach.mark(req.from);
                // A node forwards a removal only on behalf of an admin.
                let who = req.by.clone().unwrap_or_else(|| shoal_pki::Owner {
                    role: shoal_pki::Role::Node,
                    id: format!("node {}", req.from),
                });
                if let Err(f) = shoal_pki::need_admin(&who, "removing a node from the membership") {
                    let res: Result<(), ForwardError> = Err(ForwardError::Forbidden(
                        crate::state::writers::ForwardRefusal::Forbidden(f),
                    ));
                    return encode(kind, &res);
                }
                let res = self
                    .serve(req.from, self.inner.config.write_timeout_ms, |remaining| {
                        self.local_remove(req.id, remaining)
                    })
                    .await;
                encode(kind, &res)
            }
        }
    }

    /// Stop Raft and release the store (the directory can then be reopened).
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        let id = self.inner.id;
        let tasks = std::mem::take(
            &mut *self
                .inner
                .detector
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for task in tasks {
            task.abort();
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Stopped {
                id,
                reason: format!("shutdown failed: {e}"),
            })?;
        let closed = self
            .inner
            .store_closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(closed) = closed else {
            return Ok(()); // an earlier shutdown already waited
        };
        // Sender dropped (never sent) is the signal; either result means closed.
        let released =
            tokio::time::timeout(Duration::from_millis(SHUTDOWN_RELEASE_MS), closed).await;
        if released.is_err() {
            return Err(ClusterError::Stopped {
                id,
                reason: "raft tasks did not release the store after shutdown".to_string(),
            });
        }
        Ok(())
    }

    // ---- internals ----

    fn stopped(&self, reason: impl std::fmt::Display) -> ClusterError {
        ClusterError::Stopped {
            id: self.inner.id,
            reason: reason.to_string(),
        }
    }

    /// Refuse early on a node that has no membership or is not in it.
    fn check_member(&self) -> Result<(), ClusterError> {
        let members = self.members();
        if members.is_empty() {
            return Err(ClusterError::NotInitialized);
        }
        if !members.contains_key(&self.inner.id) {
            return Err(ClusterError::NotMember { id: self.inner.id });
        }
        Ok(())
    }

    /// The error for a leader-only operation that ran out of time.
    fn stall_error(&self, what: &'static str, started: Instant, sent: bool) -> ClusterError {
        let waited_ms = ms(started.elapsed());
        let voters: BTreeSet<NodeId> = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            m.membership_config.membership().voter_ids().collect()
        };
        let window = self.inner.config.reach_window();
        let reachable = voters
            .iter()
            .filter(|v| **v == self.inner.id || self.inner.reach.recent(**v, window))
            .count();
        if !voters.is_empty() && reachable < voters.len() / 2 + 1 {
            return ClusterError::NoQuorum {
                reachable,
                voters: voters.len(),
                sent,
            };
        }
        match self.leader() {
            None => ClusterError::NoLeader { waited_ms, sent },
            leader => ClusterError::Timeout {
                what,
                waited_ms,
                leader,
                sent,
            },
        }
    }

    /// Run a leader-only operation: locally when this node leads, else
    /// forwarded to the leader as `kind` with `body`; retried across leader
    /// changes; bounded by `budget_ms`.
    async fn leader_op<T, F, Fut>(
        &self,
        what: &'static str,
        budget_ms: u64,
        retry: Retry,
        kind: RpcKind,
        body: &[u8],
        local: F,
    ) -> Result<T, ClusterError>
    where
        T: DeserializeOwned,
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Step<T>, ClusterError>>,
    {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(budget_ms);
        let pause = Duration::from_millis(self.inner.config.heartbeat_interval_ms);
        let again = retry == Retry::EvenIfDelivered;
        // An idempotent operation bounds each attempt, so an old leader cut
        // off by a partition cannot use up the budget: by the next attempt
        // the majority has elected another.
        let attempt_max = if again {
            Duration::from_millis(
                self.inner
                    .config
                    .election_timeout_max_ms
                    .saturating_mul(2)
                    .max(self.inner.config.heartbeat_interval_ms * 5),
            )
        } else {
            Duration::MAX
        };
        // Whether some attempt may have reached a leader's log: then a
        // final error says the outcome is unknown, not that it was refused.
        let mut sent = false;
        let reach_window = self.inner.config.reach_window();
        for _ in 0..ROUNDS_MAX {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let attempt = remaining.min(attempt_max);
            match self.leader() {
                Some(leader) if leader == self.inner.id => {
                    match local(attempt).await {
                        Ok(Step::Done(v)) => return Ok(v),
                        Ok(Step::Retry) => {}
                        Err(e) if again && e.outcome_unknown() => {
                            sent = true;
                            tracing::debug!("{what}: attempt on this node (leading) gave no answer: {e}; retrying");
                        }
                        Err(e) => return Err(e),
                    }
                }
                // A leader not heard from within the election window is
                // not trusted (this node may be cut off from it): nothing is
                // sent to it, so a write that ends here was refused, not
                // left to apply when the network heals. Wait for a current
                // one instead.
                Some(leader) if !self.inner.reach.recent(leader, reach_window) => {}
                Some(leader) => {
                    let addr = self
                        .members()
                        .get(&leader)
                        .map(|m| m.addr.clone())
                        .unwrap_or_default();
                    let answered = tokio::time::timeout(
                        attempt,
                        self.inner.transport.rpc(leader, &addr, kind, body.to_vec()),
                    )
                    .await;
                    match answered {
                        // No answer in time: maybe delivered.
                        Err(_) if again => sent = true,
                        Err(_) => {
                            sent = true;
                            break;
                        }
                        // Never delivered: safe to try again.
                        Ok(Err(TransportError::Unreachable { .. })) => {}
                        // Maybe delivered: only an idempotent operation may
                        // try again.
                        Ok(Err(TransportError::Failed { .. })) if again => sent = true,
                        Ok(Err(e @ TransportError::Failed { .. })) => return Err(e.into()),
                        Ok(Ok(answer)) => {
                            self.inner.reach.mark(leader);
                            match decode::<Result<T, ForwardError>>(kind, &answer)? {
                                Ok(v) => return Ok(v),
                                Err(ForwardError::NotMember { id }) => {
                                    return Err(ClusterError::NotMember { id })
                                }
                                Err(ForwardError::Failed(why)) => {
                                    return Err(ClusterError::Raft(format!(
                                        "leader {leader}: {why}"
                                    )))
                                }
                                // The leader proposed it and did not see
                                // it commit: it may still.
                                Err(
                                    ForwardError::NoQuorum { .. }
                                    | ForwardError::Unconfirmed { .. },
                                ) if again => sent = true,
                                Err(ForwardError::NoQuorum { reachable, voters }) => {
                                    return Err(ClusterError::NoQuorum {
                                        reachable,
                                        voters,
                                        sent: true,
                                    })
                                }
                                Err(ForwardError::Unconfirmed { waited_ms }) => {
                                    return Err(ClusterError::Timeout {
                                        what,
                                        waited_ms,
                                        leader: Some(leader),
                                        sent: true,
                                    })
                                }
                                Err(ForwardError::Forbidden(why)) => {
                                    return Err(ClusterError::Forbidden(why))
                                }
                                Err(ForwardError::NotLeader { .. }) => {}
                            }
                        }
                    }
                }
                None => {}
            }
            // Try again as soon as another leader is known, or after a
            // heartbeat interval (the same leader, unreachable or slow).
            let remaining = deadline.saturating_duration_since(Instant::now());
            let tried = self.leader();
            let mut metrics = self.inner.raft.metrics();
            let _ = tokio::time::timeout(
                pause.min(remaining),
                metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != tried),
            )
            .await;
        }
        Err(self.stall_error(what, started, sent))
    }

    /// Leader side of a forwarded request: check the sender is a member,
    /// run `local` if this node leads.
    async fn serve<T, F, Fut>(
        &self,
        from: NodeId,
        budget_ms: u64,
        local: F,
    ) -> Result<T, ForwardError>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Step<T>, ClusterError>>,
    {
        if !self.members().contains_key(&from) {
            return Err(ForwardError::NotMember { id: from });
        }
        if self.leader() != Some(self.inner.id) {
            return Err(ForwardError::NotLeader {
                leader: self.leader(),
            });
        }
        match local(Duration::from_millis(budget_ms)).await {
            Ok(Step::Done(v)) => Ok(v),
            Ok(Step::Retry) => Err(ForwardError::NotLeader {
                leader: self.leader(),
            }),
            Err(ClusterError::NoQuorum {
                reachable, voters, ..
            }) => Err(ForwardError::NoQuorum { reachable, voters }),
            Err(
                ClusterError::Timeout { waited_ms, .. } | ClusterError::NoLeader { waited_ms, .. },
            ) => Err(ForwardError::Unconfirmed { waited_ms }),
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        }
    }

    /// The leader's ReadIndex: confirm leadership with a quorum, and answer
    /// the log index a reader must have applied (this node must lead).
    async fn local_read_index(&self, remaining: Duration) -> Result<Step<u64>, ClusterError> {
        let started = Instant::now();
        match tokio::time::timeout(remaining, self.inner.raft.get_read_log_id()).await {
            Err(_) => Err(self.stall_error("linearizable read", started, false)),
            Ok(Ok((read, _applied))) => Ok(Step::Done(read.map_or(0, |l| l.index))),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                _,
            )))) => Ok(Step::Retry),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(
                _,
            )))) => Err(self.stall_error("linearizable read", started, false)),
            Ok(Err(RaftError::Fatal(e))) => Err(self.stopped(e)),
        }
    }

    /// The log index up to which this node must apply so that a read of its
    /// state is linearizable (ReadIndex: the leader confirms it still leads
    /// with a quorum; no log write). Forwarded to the leader by followers.
    pub async fn read_index(&self) -> Result<u64, ClusterError> {
        self.check_member()?;
        let body = encode(
            RpcKind::ReadIndex,
            &ForwardRead {
                from: self.inner.id,
            },
        )?;
        self.leader_op(
            "linearizable read",
            self.inner.config.write_timeout_ms,
            Retry::EvenIfDelivered,
            RpcKind::ReadIndex,
            &body,
            |remaining| self.local_read_index(remaining),
        )
        .await
    }

    /// The state, read linearizably: it reflects every write that completed
    /// (anywhere) before this call began ([`Raft::read_index`], then wait
    /// until this node has applied that far). [`Raft::state`] is the cheaper
    /// stale read.
    pub async fn linearizable_state(&self) -> Result<Arc<ClusterState>, ClusterError> {
        let started = Instant::now();
        let index = self.read_index().await?;
        let mut applied = self.subscribe();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.inner.config.write_timeout_ms);
        loop {
            // The state is published before its index: once the index is
            // reached, the state read after it holds the write.
            if *applied.borrow_and_update() >= index {
                return Ok(self.state());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ClusterError::Timeout {
                        what: "linearizable read (catching up to the read index)",
                        waited_ms: ms(started.elapsed()),
                        leader: self.leader(),
                        sent: false,
                    })
                }
            }
        }
    }

    /// Propose `cmd` on this node (must be the leader), waiting at most
    /// `remaining`. Concurrent writes share log entries ([`batcher`]).
    async fn local_write(
        &self,
        cmd: Command,
        remaining: Duration,
    ) -> Result<Step<CommandResult>, ClusterError> {
        let started = Instant::now();
        match tokio::time::timeout(remaining, self.inner.batcher.propose(cmd)).await {
            // Proposed: it may still commit.
            Err(_) => Err(self.stall_error("write", started, true)),
            Ok(batcher::Outcome::Done(result)) => Ok(Step::Done(result)),
            Ok(batcher::Outcome::NotLeader) => Ok(Step::Retry),
            Ok(batcher::Outcome::Refused(e)) => Err(ClusterError::Raft(e)),
            Ok(batcher::Outcome::Stopped(e)) => Err(self.stopped(e)),
        }
    }

    /// Apply a membership change on this node (must be the leader).
    async fn change(
        &self,
        changes: ChangeMembers<NodeId, MemberInfo>,
        remaining: Duration,
    ) -> Result<Step<()>, ClusterError> {
        let started = Instant::now();
        let call = self.inner.raft.change_membership(changes, false);
        match tokio::time::timeout(remaining, call).await {
            Err(_) => Err(self.stall_error("membership change", started, true)),
            Ok(Ok(_)) => Ok(Step::Done(())),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(Step::Retry),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            )))) => Ok(Step::Retry),
            Ok(Err(RaftError::APIError(e))) => Err(ClusterError::Raft(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(self.stopped(e)),
        }
    }

    async fn local_add(
        &self,
        id: NodeId,
        info: MemberInfo,
        remaining: Duration,
    ) -> Result<Step<()>, ClusterError> {
        let started = Instant::now();
        let is_voter = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id)
        };
        if is_voter {
            return Ok(Step::Done(()));
        }
        let add = self.inner.raft.add_learner(id, info, true);
        match tokio::time::timeout(remaining, add).await {
            Err(_) => {
                return Err(ClusterError::Timeout {
                    what: "adding a member (waiting for it to catch up)",
                    waited_ms: ms(started.elapsed()),
                    leader: self.leader(),
                    sent: true,
                })
            }
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                return Ok(Step::Retry)
            }
            Ok(Err(RaftError::APIError(e))) => return Err(ClusterError::Raft(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => return Err(self.stopped(e)),
        }
        let left = remaining.saturating_sub(started.elapsed());
        let mut ids = BTreeSet::new();
        ids.insert(id);
        self.change(ChangeMembers::AddVoterIds(ids), left).await
    }

    async fn local_remove(
        &self,
        id: NodeId,
        remaining: Duration,
    ) -> Result<Step<()>, ClusterError> {
        let started = Instant::now();
        let (is_voter, is_node) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (
                membership.voter_ids().any(|v| v == id),
                membership.get_node(&id).is_some(),
            )
        };
        let mut ids = BTreeSet::new();
        ids.insert(id);
        if is_voter {
            if let Step::Retry = self
                .change(ChangeMembers::RemoveVoters(ids.clone()), remaining)
                .await?
            {
                return Ok(Step::Retry);
            }
        }
        let still_node = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            m.membership_config.membership().get_node(&id).is_some()
        };
        if is_node && still_node {
            let left = remaining.saturating_sub(started.elapsed());
            return self.change(ChangeMembers::RemoveNodes(ids), left).await;
        }
        Ok(Step::Done(()))
    }
}
