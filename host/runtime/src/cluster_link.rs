//! How a node reaches the rest of its cluster: the [`ClusterLink`] the
//! cluster layer attaches (a node alone has none).

use crate::mailbox::{Message, PushError};
use crate::pid::Pid;
use shoal_registry::Sha256;

/// A key-value write a guest asks for (see [`ClusterLink::kv_write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// `kv_set`.
    Set(Vec<u8>),
    /// `kv_cas`: only if the key is at `expected` (0: absent).
    Cas {
        /// The version the key must be at.
        expected: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// `kv_increment`.
    Increment(i64),
    /// `kv_delete`.
    Delete,
}

/// What a key-value write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvWritten {
    /// Set or cas: the entry's new version.
    Version(u64),
    /// Increment: the counter's new value.
    Counter(i64),
    /// Delete: whether the key existed.
    Deleted(bool),
}

/// A batch write (`kv_set_many`, `kv_delete_many`): all of it or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvBatchWrite {
    /// Set these `(key, value)` entries.
    Set(Vec<(Vec<u8>, Vec<u8>)>),
    /// Delete these keys.
    Delete(Vec<Vec<u8>>),
}

/// A fenced write's lock and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvFence {
    /// The lock, in the writer's owner's namespace.
    pub lock: String,
    /// The token the writer holds it under.
    pub token: u64,
}

/// Which effect of which run of a process a write is, so that a copy
/// resumed inside the same call makes it once ([`crate::abi::effect`]).
pub use shoal_abi::process::EffectKey;

/// What the cluster answered when a spawn under output commit was
/// recorded ([`ClusterLink::record_spawn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnRecord {
    /// The record is new: start the child under the pid that was offered.
    Start,
    /// A repeat (a copy resumed inside the same `spawn`): the effect's
    /// child is this pid, started by the first copy. Start nothing here
    /// (a `spawn_on`'s link asks the child's node again, which starts a
    /// recorded child once: the first copy may have died before asking).
    Spawned(Pid),
    /// A repeat of a spawn whose child could not start: this ABI error.
    Failed(i32),
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Sees every write completed before it started, anywhere (ReadIndex).
    Linearizable,
    /// This node's applied state as it is.
    Stale,
}

/// What a lock request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAnswer {
    /// Held under this fencing token.
    Granted(u64),
    /// Queued behind the holder: wait with [`ClusterLink::lock_wait`].
    Queued,
}

/// How a node reaches the rest of its cluster.
///
/// A node on its own (`shoal run`, tests) has none. The cluster layer
/// (`shoal_cluster`) attaches one with [`crate::Node::attach_cluster`]; from then
/// on a send to a pid that is not on this node, a spawn with a placement
/// target, and a module reference this node cannot resolve go through it,
/// and the node reports its processes' starts and exits so the replicated
/// process directory stays current.
#[async_trait::async_trait]
pub trait ClusterLink: KvLocks + SharedFiles + Send + Sync + 'static {
    /// Send to a pid that is not on this node. `Closed` means no such
    /// process anywhere (the ABI's `NO_PROCESS`); `Full` means the way
    /// there is at its bound (the ABI's `MAILBOX_FULL`: retry).
    /// `message` may be plain or tagged ([`crate::mailbox::Tag`]); its
    /// sender is `message.sender`.
    fn send_remote(&self, to: Pid, message: Message) -> Result<(), PushError>;
    /// Notified whenever a way to another node frees room. A sender that
    /// retries a `Full` from [`ClusterLink::send_remote`] registers
    /// `room().notified()` before the attempt and awaits it after the
    /// refusal (woken by the peer's acks, never polling).
    fn room(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Start a process somewhere in the cluster. `target` is `""` (let the
    /// scheduler choose), a node name, or label constraints `k=v[,k=v]`.
    /// Errors are ABI codes.
    ///
    /// The child is `parent`'s: it gets `parent`'s owner. With `effect`
    /// (a parent under output commit), the child is recorded as that
    /// effect before it starts, so a copy of `parent` resumed inside the
    /// same `spawn_on` gets the same child ([`ClusterLink::record_spawn`]).
    async fn spawn_placed(
        &self,
        parent: Pid,
        target: &str,
        module_ref: &str,
        args: Vec<String>,
        effect: Option<EffectKey>,
    ) -> Result<Pid, i32>;
    /// Record, before it starts, that `parent`'s effect `effect` spawns
    /// `child` (a fresh pid of this node's) on `node` (`None`: here); the
    /// record registers the child in the directory. A repeat of the effect
    /// answers what the first record did instead. Errors are ABI codes.
    async fn record_spawn(
        &self,
        parent: Pid,
        effect: EffectKey,
        child: Pid,
        node: Option<u64>,
    ) -> Result<SpawnRecord, i32>;
    /// The child recorded for `parent`'s `effect` did not start (the
    /// guest was told `errno`): a repeat of the effect answers `errno`
    /// too. Best effort: if this is lost, a repeat finds a child that
    /// never ran (as one that ended at once).
    async fn spawn_failed(&self, parent: Pid, effect: EffectKey, child: Pid, errno: i32);
    /// Find a module this node's registry does not resolve: a name from the
    /// replicated name registry, its blob fetched from a node that holds it
    /// (and checked against its sha256). Errors are ABI codes.
    async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32>;
    /// A process started on this node; `parent` is the process whose
    /// `spawn` started it (its owner is the child's), `None` for processes
    /// the node's operator or API started.
    fn process_started(&self, pid: Pid, parent: Option<Pid>);
    /// A process on this node ended, for `reason` (`None`: its mailbox
    /// went away without an exit status, e.g. a host-side mailbox).
    fn process_exited(&self, pid: Pid, reason: Option<&shoal_abi::process::ExitReason>);
    /// This node's id in the cluster (the origin of messages it sends).
    fn node_id(&self) -> u64;
    /// Is `pid` protected: may it resume from a checkpoint after the loss
    /// of its node (`--restart on-failure|always`)? Messages to it are then
    /// kept by their senders until its checkpoints cover them
    /// ([`crate::outbox`]).
    fn keeps_checkpoints(&self, _pid: Pid) -> bool {
        false
    }
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

/// Key-value and locks for guests (`abi/kv.rs`), held in the cluster's
/// Raft state: the part of [`ClusterLink`] host functions may reach
/// (through [`crate::host::ProcessHost::kv`]).
#[async_trait::async_trait]
pub trait KvLocks: Send + Sync {
    /// The value and version of `key` in `pid`'s owner's `bucket`
    /// (`None`: absent). Errors are ABI codes.
    async fn kv_read(
        &self,
        pid: Pid,
        bucket: &str,
        key: &[u8],
        mode: ReadMode,
    ) -> Result<Option<(Vec<u8>, u64)>, i32>;
    /// Keys of `pid`'s owner's `bucket` starting with `prefix`, after
    /// `cursor`, at most `shoal_abi::kv::LIST_KEYS_MAX`. Errors are ABI
    /// codes.
    async fn kv_list(
        &self,
        pid: Pid,
        bucket: &str,
        prefix: &[u8],
        cursor: Option<&[u8]>,
        mode: ReadMode,
    ) -> Result<Vec<Vec<u8>>, i32>;
    /// Write `key` of `pid`'s owner's `bucket` through Raft. Errors are ABI
    /// codes.
    async fn kv_write(
        &self,
        pid: Pid,
        bucket: &str,
        key: &[u8],
        op: KvWrite,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<KvWritten, i32>;
    /// The values and versions of `keys` in `pid`'s owner's `bucket`, all
    /// read from one state, in order (`None`: absent). Errors are ABI
    /// codes.
    async fn kv_read_many(
        &self,
        pid: Pid,
        bucket: &str,
        keys: &[Vec<u8>],
        mode: ReadMode,
    ) -> Result<Vec<Option<(Vec<u8>, u64)>>, i32>;
    /// Apply a batch to `pid`'s owner's `bucket` through Raft, all or
    /// nothing: how many entries were set (or keys existed). Errors are ABI
    /// codes.
    async fn kv_write_many(
        &self,
        pid: Pid,
        bucket: &str,
        batch: KvBatchWrite,
        fence: Option<KvFence>,
        effect: Option<EffectKey>,
    ) -> Result<u64, i32>;
    /// Ask for lock `name` of `pid`'s owner (`wait`: queue behind its
    /// holder, else `BUSY`). Errors are ABI codes (`DEADLOCK`, ...).
    async fn lock(&self, pid: Pid, name: &str, wait: bool) -> Result<LockAnswer, i32>;
    /// Wait until `pid`'s queued request for `name` is granted (its token)
    /// or `wait_max` passes (`None`: no limit; then `TIMEOUT`: the wait is
    /// withdrawn, and a grant that came meanwhile released). `LOCK_LOST` if
    /// the wait vanished (its node declared dead, ...).
    async fn lock_wait(
        &self,
        pid: Pid,
        name: &str,
        wait_max: Option<std::time::Duration>,
    ) -> Result<u64, i32>;
    /// Release `name`, held by `pid` under `token`. Errors are ABI codes.
    async fn unlock(&self, pid: Pid, name: &str, token: u64) -> Result<(), i32>;
    /// `Ok` if `token` is the current holder's of `asker`'s owner's lock
    /// `name` (linearizable), else `FENCED`.
    async fn lock_check(&self, asker: Pid, name: &str, token: u64) -> Result<(), i32>;
}

pub use crate::volume::link::{SharedError, SharedFiles, SharedInfo, SharedOp, SharedStat};
