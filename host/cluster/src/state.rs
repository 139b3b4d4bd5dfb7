//! The replicated cluster state and the one deterministic function that
//! changes it: [`ClusterState::apply`].
//!
//! Every node applies the same [`Command`]s in the same order and so holds
//! the same [`ClusterState`]. `apply` therefore reads no clock and no
//! randomness (times travel inside commands) and never panics: a command
//! that would break an invariant leaves the state untouched and returns
//! [`CommandResult::Refused`] with the reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use shoal_pki::{RevocationList, Role, Serial, TokenBook, TokenRecord};

pub mod effects;
pub mod failover;
pub mod kv;
pub(crate) mod kv_disk;
mod liveness;
pub mod locks;
pub mod names;
pub mod once;
mod owners;
pub mod proofs;
mod refusal;
pub mod volumes;
pub mod writers;

pub use liveness::NodeLiveness;
pub use refusal::{NameKind, Refusal, RefusalKind};
pub use shoal_pki::{Forbidden, Owner};

/// A node's cluster-wide id. Also its Raft id. Ids start at 1 and are never
/// reused, even after the node is removed.
pub type NodeId = u64;

/// A table of the replicated state that grows with the cluster's work
/// (processes, names, modules, clients): a persistent ordered map, so the
/// state machine publishes a new state after every applied batch with an
/// O(1) clone and an apply costs what it changes (O(log n) per row), not
/// what the state holds. Iterates in key order like a `BTreeMap`.
pub type Table<K, V> = imbl::OrdMap<K, V>;

/// The first pid of the first block: pids below it are never issued.
pub const PID_BLOCK_SIZE: u64 = 1 << 16;

/// Most pids one `Register`/`Unregister` command may carry (bounds the size
/// of a single log entry).
pub const PIDS_PER_COMMAND_MAX: usize = 4096;

/// Most writes one [`Command::Batch`] carries: the leader's group commit
/// stops gathering there (with [`BATCH_BYTES_MAX`]), and an apply refuses
/// a longer batch whole.
pub const BATCH_COMMANDS_MAX: usize = 256;

/// Most encoded bytes the leader gathers into one [`Command::Batch`] (a
/// single larger write goes alone): bounds one log entry and one
/// replication message.
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Longest name (node, module or process name) the state accepts.
pub const NAME_BYTES_MAX: usize = 255;

/// How to reach a Raft member: what the membership config stores per node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The node's name (also the id in its certificate, `shoal://node/<name>`).
    pub name: String,
    /// Where its node-to-node endpoint listens (`host:port`).
    pub addr: String,
}

/// Resource figures a node reports with each heartbeat, for placement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Memory still available for processes, bytes.
    pub memory_bytes_free: u64,
    /// Memory the node may give processes in total, bytes.
    pub memory_bytes_total: u64,
    /// CPU load in thousandths of one core (1500 = one and a half cores busy).
    pub cpu_load_milli: u32,
    /// Number of processes running on the node.
    pub process_count: u32,
}

/// Where a node stands in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Member that takes new processes.
    Active,
    /// Member that keeps its processes but takes no new ones (and no
    /// migrations in).
    Cordoned,
    /// Removed for good: its certificates are revoked; its id is never reused.
    Removed,
}

/// Everything the cluster knows about one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id (key of [`ClusterState::nodes`]).
    pub id: NodeId,
    /// The node's name, unique among non-removed nodes.
    pub name: String,
    /// Its node-to-node address.
    pub addr: String,
    /// Operator labels for placement (`zone=a`, ...).
    pub labels: BTreeMap<String, String>,
    /// Active, cordoned or removed.
    pub status: NodeStatus,
    /// When it was added, Unix ms (from the command).
    pub joined_at_ms: u64,
    /// Its latest heartbeat, Unix ms (from the command).
    pub last_heartbeat_ms: u64,
    /// Load reported with the latest heartbeat.
    pub load: NodeLoad,
}

/// Where one live process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The node running it.
    pub node: NodeId,
    /// Bumped on every move, so a stale mover's compare-and-set fails.
    pub epoch: u64,
}

/// A content-addressed module and the nodes that hold its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// Size of the module, bytes.
    pub size_bytes: u64,
    /// Nodes with the module in their cache.
    pub holders: BTreeSet<NodeId>,
}

/// A host directory granted to a process: host path on the node that
/// runs it, and the path the guest sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedDir {
    /// Path on the host.
    pub host: String,
    /// Path the guest sees.
    pub guest: String,
}

/// Who made a grant: the role and id of the certificate that asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granter {
    /// Its role.
    pub role: Role,
    /// Its id (client, admin or node name).
    pub id: String,
}

/// The capabilities a process was granted when it was deployed or
/// restored, and by whom. A node a process migrates to applies these, never
/// what the source sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGrants {
    /// Preopened host directories, in preopen order.
    pub dirs: Vec<GrantedDir>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Memory cap in bytes (`None`: the running node's default).
    pub memory_bytes_max: Option<u64>,
    /// Private volumes with their quotas, in preopen order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<GrantedVolume>,
    /// Who granted them.
    pub granted_by: Granter,
}

/// A volume as granted: the guest path and its quotas (a private one), or
/// the shared volume it mounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedVolume {
    /// Path the guest sees.
    pub guest: String,
    /// Most bytes.
    pub bytes_max: u64,
    /// Most files and directories.
    pub files_max: u64,
    /// The shared volume of the process's owner it mounts, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

/// Most volumes one grant record may hold.
pub const GRANT_VOLUMES_MAX: usize = 16;

/// Most directories one grant record may hold.
pub const GRANT_DIRS_MAX: usize = 64;
/// Most environment variables one grant record may hold.
pub const GRANT_ENV_MAX: usize = 1024;
/// Longest path or variable in a grant record, in bytes.
pub const GRANT_TEXT_BYTES_MAX: usize = 4096;

impl ProcessGrants {
    fn validate(&self) -> Result<(), Refusal> {
        let long = |t: &str| t.len() > GRANT_TEXT_BYTES_MAX;
        if self.dirs.len() > GRANT_DIRS_MAX
            || self.volumes.len() > GRANT_VOLUMES_MAX
            || self.volumes.iter().any(|v| long(&v.guest))
            || self.env.len() > GRANT_ENV_MAX
            || self.dirs.iter().any(|d| long(&d.host) || long(&d.guest))
            || self.env.iter().any(|(k, v)| long(k) || long(v))
            || self.granted_by.id.len() > NAME_BYTES_MAX
        {
            return Err(Refusal::GrantTooLarge {
                dirs_max: GRANT_DIRS_MAX,
                env_max: GRANT_ENV_MAX,
                text_bytes_max: GRANT_TEXT_BYTES_MAX,
            });
        }
        Ok(())
    }
}

/// The whole replicated cluster metadata. See the `cluster` module docs for
/// the invariants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Every node ever added, removed ones included.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The id the next `AddNode` hands out.
    pub next_node_id: NodeId,
    /// The node holding the CA key (signs joins); `None` before bootstrap or
    /// after that node was removed.
    pub ca_node: Option<NodeId>,
    /// Live processes: pid → where it runs.
    pub directory: Table<u64, DirEntry>,
    /// Allocated pid blocks: first pid → owning node. Never freed.
    pub pid_blocks: BTreeMap<u64, NodeId>,
    /// First pid of the next block to allocate.
    pub next_pid_block: u64,
    /// Module names → sha256 hex of the module.
    pub module_names: Table<String, String>,
    /// Known modules by sha256 hex.
    pub modules: Table<String, ModuleRecord>,
    /// Registered process names → pid (always a pid in `directory`).
    pub process_names: Table<String, u64>,
    /// Revoked certificates and removed identities.
    pub revocations: RevocationList,
    /// Join tokens (hashes only).
    pub tokens: TokenBook,
    /// The highest pid each node has registered. A node issues and
    /// registers its pids in increasing order, so a pid from one of its
    /// blocks at or below this mark that is not in `directory` has exited:
    /// a send to it fails at once instead of travelling to learn that.
    #[serde(default)]
    pub registered_max: BTreeMap<NodeId, u64>,
    /// What each live process was granted, and by whom (only processes
    /// granted something are listed). Dropped with the directory entry.
    #[serde(default)]
    pub grants: Table<u64, ProcessGrants>,
    /// The failure detector's verdicts (see [`ClusterState::node_dead`]):
    /// a node not listed is alive at liveness epoch 0.
    #[serde(default)]
    pub liveness: BTreeMap<NodeId, NodeLiveness>,
    /// Process names in their owners' namespaces (`register`/`whereis`
    /// of guests: [`crate::names`]).
    #[serde(default)]
    pub names: names::NameBook,
    /// Results of writes by `(client, seq)`, so a retried write applies
    /// once ([`once`]).
    #[serde(default)]
    pub once: once::OnceBook,
    /// Who created each live process ([`owners`](self::owners) states the
    /// rule); a pid not listed belongs to [`Owner::cluster`]. Dropped with
    /// the directory entry, kept across moves.
    #[serde(default)]
    pub owners: Table<u64, Owner>,
    /// Who first named each module name in `module_names` (names from
    /// before owners were recorded are not listed: the cluster's).
    #[serde(default)]
    pub module_name_owners: Table<String, Owner>,
    /// The cluster CA's certificate (PEM), recorded at bootstrap: signed
    /// requests are checked against it.
    #[serde(default)]
    pub ca_cert_pem: String,
    /// The nonces of recently applied signed requests and the newest
    /// proof's time ([`proofs`](self::proofs)).
    #[serde(default)]
    pub proofs: proofs::ProofBook,
    /// Guests' replicated key-value, bucket by owner ([`kv`]).
    #[serde(default)]
    pub kv: kv::KvBook,
    /// Guests' locks, by owner ([`locks`]).
    #[serde(default)]
    pub locks: locks::LockBook,
    /// Shared volumes' trees, by owner ([`volumes`]).
    #[serde(default)]
    pub volumes: volumes::VolumeBook,
    /// Restart policies, checkpoints and what failover did ([`failover`]).
    #[serde(default)]
    pub failover: failover::FailoverBook,
    /// The newest key-value effect of each process under output commit,
    /// so a resumed copy's repeat applies once ([`effects`]).
    #[serde(default)]
    pub effects: effects::EffectBook,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            nodes: BTreeMap::new(),
            next_node_id: 1,
            ca_node: None,
            directory: Table::new(),
            pid_blocks: BTreeMap::new(),
            next_pid_block: PID_BLOCK_SIZE,
            module_names: Table::new(),
            modules: Table::new(),
            process_names: Table::new(),
            names: Default::default(),
            revocations: RevocationList::new(),
            tokens: TokenBook::new(),
            registered_max: BTreeMap::new(),
            grants: Table::new(),
            liveness: BTreeMap::new(),
            once: Default::default(),
            owners: Table::new(),
            module_name_owners: Table::new(),
            ca_cert_pem: String::new(),
            proofs: Default::default(),
            kv: Default::default(),
            locks: Default::default(),
            volumes: Default::default(),
            failover: Default::default(),
            effects: Default::default(),
        }
    }
}

/// Longest revocation reason kept, in characters (longer ones are cut).
pub const REASON_CHARS_MAX: usize = 256;

/// What to revoke with [`Command::Revoke`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevokeTarget {
    /// One certificate.
    Serial {
        /// Its serial.
        serial: Serial,
        /// Its expiry if known, so the entry can be pruned after it.
        cert_not_after_ms: Option<u64>,
    },
    /// Every certificate of a holder issued up to now.
    Identity {
        /// The holder's role.
        role: Role,
        /// The holder's id (node or client name).
        id: String,
    },
}

/// A change to the cluster state: the payload of every Raft log entry.
/// Each variant's effect and refusals are listed in the `cluster` module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `cmd`, applied at most once for `(client, seq)`: a repeat answers
    /// what the first application answered ([`once`]). Every
    /// [`crate::Raft::write`] is sent so, so it can be retried safely.
    Once {
        /// The writer: one run of one node (random).
        client: u64,
        /// The writer's sequence number of this write.
        seq: u64,
        /// The command.
        cmd: Box<Command>,
    },
    /// Several writes the leader proposed as one log entry (group commit,
    /// [`crate::raft`]'s batcher): applied in order, each as if alone,
    /// answering [`CommandResult::Batch`]. Only the leader makes one; it is
    /// never accepted from another node nor inside another envelope.
    Batch {
        /// The writes, at most [`BATCH_COMMANDS_MAX`].
        cmds: Vec<Command>,
    },
    /// `cmd` with the signed request of the admin who asked for it: the
    /// writes that mint or take away credentials and authority
    /// (`CreateToken`, `Revoke`, `RemoveNode`, `SetCaNode`) are applied
    /// only so, after every node checks the proof ([`proofs`](self::proofs)).
    Signed {
        /// The requester's signature over what it asked.
        proof: shoal_pki::Proof,
        /// The command, which must do what the proof says.
        cmd: Box<Command>,
    },
    /// Create the cluster: the first node, which holds the CA key, gets id
    /// `ca_node` (1 by convention: the bootstrapping Raft node's id).
    Bootstrap {
        /// Id of the first node, which holds the CA key.
        ca_node: NodeId,
        /// The cluster CA's certificate (PEM): what signed requests
        /// ([`Command::Signed`]) are checked against from then on.
        #[serde(default)]
        ca_cert_pem: String,
        /// Its name.
        name: String,
        /// Its address.
        addr: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
        /// Unix ms.
        now_ms: u64,
    },
    /// Admit a node (→ `NodeId`); idempotent by name for non-removed nodes.
    AddNode {
        /// Node name (certificate id).
        name: String,
        /// Its address.
        addr: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
        /// Unix ms.
        now_ms: u64,
    },
    /// Remove a node for good.
    RemoveNode {
        /// The node.
        id: NodeId,
        /// Unix ms (revocation time).
        now_ms: u64,
    },
    /// Cordon or uncordon a node.
    SetCordon {
        /// The node.
        id: NodeId,
        /// Cordoned or not.
        cordoned: bool,
    },
    /// A node reports it is alive, with its load.
    Heartbeat {
        /// The node.
        id: NodeId,
        /// Its load.
        load: NodeLoad,
        /// Unix ms.
        now_ms: u64,
    },
    /// Give `node` a fresh block of `PID_BLOCK_SIZE` pids (→ `PidBlock`).
    AllocPidBlock {
        /// The owner.
        node: NodeId,
    },
    /// Record processes now running on `node`.
    Register {
        /// Where they run.
        node: NodeId,
        /// Their pids.
        pids: Vec<u64>,
    },
    /// Forget processes that ended on `node`.
    Unregister {
        /// Where they ran.
        node: NodeId,
        /// Their pids.
        pids: Vec<u64>,
    },
    /// Compare-and-set move of one process (migration).
    MovePid {
        /// The process.
        pid: u64,
        /// Where the caller believes it runs.
        from: NodeId,
        /// Where it runs after the move.
        to: NodeId,
        /// The epoch the caller saw.
        epoch: u64,
    },
    /// Point a module name at a module hash.
    SetModuleName {
        /// The name.
        name: String,
        /// sha256 hex.
        hash: String,
    },
    /// Delete a module name.
    RemoveModuleName {
        /// The name.
        name: String,
    },
    /// `node` holds the module `hash` of `size_bytes` bytes.
    ModuleHeld {
        /// sha256 hex.
        hash: String,
        /// The holder.
        node: NodeId,
        /// Module size.
        size_bytes: u64,
    },
    /// Register a process name.
    SetProcessName {
        /// The name.
        name: String,
        /// The process.
        pid: u64,
    },
    /// Delete a process name.
    RemoveProcessName {
        /// The name.
        name: String,
    },
    /// Add a join token record (made on the node that ran `token create`).
    CreateToken {
        /// The record (hash of the secret only).
        record: TokenRecord,
    },
    /// Redeem a join token (→ `Role`).
    RedeemToken {
        /// The presented token, `id.secret`.
        token: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Record what process `pid`, started on `node`, was granted.
    SetGrants {
        /// The node that started it.
        node: NodeId,
        /// The process.
        pid: u64,
        /// Its grants and who made them.
        grants: ProcessGrants,
    },
    /// The leader's failure detector declares `node` dead (written by the
    /// Raft leader only; see [`crate::detector`]).
    NodeDead {
        /// The node.
        node: NodeId,
        /// The node's liveness epoch the leader saw (compare-and-set).
        epoch: u64,
        /// How long the leader had heard nothing from it, ms (monotonic).
        silent_ms: u64,
        /// The leader.
        by: NodeId,
        /// Unix ms, for display only.
        now_ms: u64,
    },
    /// The leader hears from a node it had declared dead again.
    NodeAlive {
        /// The node.
        node: NodeId,
        /// The node's liveness epoch the leader saw (compare-and-set).
        epoch: u64,
        /// The leader.
        by: NodeId,
        /// Unix ms, for display only.
        now_ms: u64,
    },
    /// Give a process a name in its owner's namespace.
    RegisterName {
        /// Whose namespace.
        owner: names::Owner,
        /// The name.
        name: String,
        /// The process.
        pid: u64,
    },
    /// Take a name away from the process holding it.
    UnregisterName {
        /// Whose namespace.
        owner: names::Owner,
        /// The name.
        name: String,
        /// The process that holds it.
        pid: u64,
    },
    /// Add a process to a group in its owner's namespace.
    JoinGroup {
        /// Whose namespace.
        owner: names::Owner,
        /// The group.
        name: String,
        /// The process.
        pid: u64,
    },
    /// Take a process out of a group.
    LeaveGroup {
        /// Whose namespace.
        owner: names::Owner,
        /// The group.
        name: String,
        /// The process.
        pid: u64,
    },
    /// Make `node` the CA node: the member that admits joiners and renews
    /// certificates (an admin's write, sent by the node itself once it holds
    /// the restored CA key: `shoal ca takeover`).
    SetCaNode {
        /// The new CA node (a live member).
        node: NodeId,
    },
    /// Revoke a certificate or an identity.
    Revoke {
        /// What.
        target: RevokeTarget,
        /// Why (shown in refusals).
        reason: String,
        /// Unix ms.
        now_ms: u64,
    },
    /// Record who created processes started on `node` (see
    /// [`owners`](self::owners)).
    SetOwners {
        /// The node that started them.
        node: NodeId,
        /// Each pid and its owner.
        owners: Vec<(u64, Owner)>,
    },
    /// Point a module name at a module hash on behalf of `by`, if the
    /// ownership rule lets `by` (→ `Forbidden` otherwise). A new name
    /// becomes `by`'s.
    NameModule {
        /// The name.
        name: String,
        /// sha256 hex.
        hash: String,
        /// Who asked (from their certificate).
        by: Owner,
    },
    /// Delete a module name on behalf of `by`, if the ownership rule lets
    /// `by` (→ `Forbidden` otherwise).
    UnnameModule {
        /// The name.
        name: String,
        /// Who asked (from their certificate).
        by: Owner,
    },
    /// A guest's key-value write ([`kv`]): process `pid` (forwarded by the
    /// node it runs on) writes in its owner's `bucket`. Applied only if
    /// `pid` is live and `owner` is its owner.
    Kv {
        /// The asking process.
        pid: u64,
        /// Whose bucket: the process's owner.
        owner: Owner,
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// What to do.
        op: kv::KvOp,
        /// A fenced write: applied only if this token is the current
        /// holder's of this lock (of the same owner), else refused
        /// `Fenced`.
        #[serde(default)]
        fence: Option<Fence>,
        /// An effect of a process under output commit: applied once per
        /// key, a repeat answered as the first was ([`effects`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effect: Option<effects::EffectKey>,
    },
    /// A guest's batch write (`kv_set_many`, `kv_delete_many`) in its
    /// owner's `bucket`: all of it or nothing, in one apply (so one fence
    /// check covers every entry).
    KvBatch {
        /// The asking process.
        pid: u64,
        /// Whose bucket: the process's owner.
        owner: Owner,
        /// The bucket.
        bucket: String,
        /// What to do.
        op: kv::KvBatchOp,
        /// A fenced batch: applied only if this token is the current
        /// holder's of this lock, else refused `Fenced`.
        #[serde(default)]
        fence: Option<Fence>,
        /// An effect of a process under output commit ([`effects`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effect: Option<effects::EffectKey>,
    },
    /// An operator's key-value write (`shoal kv set|del`, [`kv`]): `by`,
    /// the identity whose certificate asked a node's control API, writes
    /// in `owner`'s `bucket`. No process is involved (unlike
    /// [`Command::Kv`]); applied only if the ownership rule lets `by` act
    /// on `owner` (an admin, or `owner` itself: → `Forbidden` otherwise),
    /// with the bounds, quotas and versions of guests' writes. A node
    /// forwards it only on behalf of that same `by`
    /// ([`ClusterState::may_forward`]).
    KvByCaller {
        /// Whose bucket.
        owner: Owner,
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// What to do.
        op: kv::KvOp,
        /// Who asked (from their certificate).
        by: Owner,
    },
    /// A guest's lock request ([`locks`]): process `pid` (forwarded by the
    /// node it runs on) acts on its owner's lock `name`.
    Lock {
        /// The asking process.
        pid: u64,
        /// Whose namespace: the process's owner.
        owner: Owner,
        /// The lock.
        name: String,
        /// What to do.
        op: LockOp,
    },
    /// Release the locks held by processes of `node`, and drop their
    /// waits, if `node` is still declared dead (written by the leader once
    /// the lock-delay has passed since it saw the verdict).
    ExpireLocks {
        /// The dead node.
        node: NodeId,
    },
    /// Processes of `node` started again under their pids (a restore that
    /// replaced them): new incarnations, which hold no lock of the old
    /// ones. Their locks are released and their waits dropped.
    Reincarnated {
        /// The node they run on.
        node: NodeId,
        /// The pids.
        pids: Vec<u64>,
    },
    /// A shared-volume command ([`volumes`]) on `owner`'s volume `name`,
    /// asked by a guest (forwarded by its node; checked live and
    /// `owner`'s) or by an operator (the ownership rule decides).
    Volume {
        /// Who asks.
        actor: VolumeActor,
        /// Whose volume.
        owner: Owner,
        /// The volume.
        name: String,
        /// What to do.
        op: volumes::VolumeOp,
    },
    /// Record the restart policy of process `pid`, started by `node`
    /// ([`failover`]), with what a fresh start needs.
    SetRestart {
        /// The node that started it.
        node: NodeId,
        /// The process.
        pid: u64,
        /// Its policy, module and arguments.
        spec: failover::RestartSpec,
    },
    /// `node`, running `pid` at directory `epoch`, has a complete
    /// checkpoint of it on every holder named ([`failover`]).
    Checkpointed {
        /// The node running it.
        node: NodeId,
        /// The process.
        pid: u64,
        /// Its directory epoch when captured.
        epoch: u64,
        /// The checkpoint.
        checkpoint: failover::Checkpoint,
    },
    /// Effect `effect` of `parent` (a process under output commit) is the
    /// spawn of `child` on `node` ([`effects`]): registers `child` there
    /// before it starts → `Child(child)`. `child` must be a fresh pid of a
    /// block of the node `parent` runs on (which writes this). A repeat of
    /// the effect (a copy resumed inside the same `spawn`) registers
    /// nothing and answers what the first did, so it starts no second
    /// child.
    SpawnEffect {
        /// The spawning process.
        parent: u64,
        /// Which of its effects.
        effect: effects::EffectKey,
        /// The child's pid.
        child: u64,
        /// Where the child is to run.
        node: NodeId,
    },
    /// The child of `parent`'s effect `effect` could not start: a repeat
    /// of the effect answers `ChildFailed(errno)` from now on (the first
    /// copy's guest was told `errno`), and the child leaves the directory
    /// (its node kills it if it did start after all).
    SpawnEffectFailed {
        /// The spawning process.
        parent: u64,
        /// Which of its effects.
        effect: effects::EffectKey,
        /// The child that did not start.
        child: u64,
        /// The ABI error code the spawn returned.
        errno: i32,
    },
    /// `pid` ended on `node` and its restart policy starts it again there
    /// (a new incarnation, fresh).
    Restarted {
        /// Where.
        node: NodeId,
        /// The process.
        pid: u64,
        /// How it ended.
        why: String,
        /// Unix ms, for display only.
        now_ms: u64,
    },
}

/// Who asks for a [`Command::Volume`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeActor {
    /// A guest process (which may not create or remove volumes).
    Process {
        /// The process.
        pid: u64,
        /// Under output commit, which of its effects the write is: a
        /// resumed copy's repeat answers the first result ([`effects`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effect: Option<effects::EffectKey>,
    },
    /// An operator, by the identity of their certificate.
    Caller {
        /// Who.
        by: Owner,
    },
}

/// A lock and token a fenced key-value write names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The lock (in the writer's owner's namespace).
    pub lock: String,
    /// The token the writer holds it under.
    pub token: u64,
}

/// A lock request, as [`Command::Lock`] carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// `lock` (`wait`) or `try_lock` (→ `LockGranted`, `LockQueued`).
    Acquire {
        /// Queue behind the holder rather than refuse `Busy`.
        wait: bool,
    },
    /// `unlock` of the grant under `token` (→ `Ok`, or `Lost`).
    Release {
        /// The token of the grant.
        token: u64,
    },
    /// A `lock` whose wait timed out: withdraw it (→ `Ok`).
    Cancel,
}

impl Command {
    /// The writes one log entry carries: a [`Command::Batch`]'s, in order,
    /// or the command itself.
    pub fn writes(&self) -> &[Command] {
        match self {
            Command::Batch { cmds } => cmds,
            one => std::slice::from_ref(one),
        }
    }

    /// The command inside its [`Command::Once`] envelope (itself if none).
    pub fn unwrapped(&self) -> &Command {
        match self {
            Command::Once { cmd, .. } => cmd,
            other => other,
        }
    }
}

/// What applying a [`Command`] returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Done.
    Ok,
    /// `AddNode` / `Bootstrap`: the node's id.
    NodeId(NodeId),
    /// `AllocPidBlock`: the first pid of the new block.
    PidBlock(u64),
    /// `RedeemToken`: the role the token grants.
    Role(Role),
    /// `Revoke` of an identity, `RemoveNode`: the identity's new
    /// generation (its certificates below it are revoked).
    Generation(u64),
    /// The command was refused and changed nothing.
    Refused(Refusal),
    /// The ownership rule refused the command (it changed nothing).
    Forbidden(Forbidden),
    /// `Kv` set or cas: the entry's new version.
    KvVersion(u64),
    /// `Kv` increment: the counter's new value.
    KvCounter(i64),
    /// `Kv` delete: whether the key existed.
    KvDeleted(bool),
    /// `KvBatch`: how many entries were set, or keys existed.
    KvCount(u64),
    /// `Lock` acquire: granted under this fencing token.
    LockGranted(u64),
    /// `Lock` acquire: queued behind the holder.
    LockQueued,
    /// `Volume`: the write's version.
    VolumeVersion(u64),
    /// `SpawnEffect`: the effect's child (a repeat: the first one's).
    Child(u64),
    /// `SpawnEffect` repeated after `SpawnEffectFailed`: the spawn failed
    /// with this ABI error code.
    ChildFailed(i32),
    /// `Batch`: each write's own result, in order.
    Batch(Vec<CommandResult>),
}

type Outcome = Result<CommandResult, Refusal>;

fn valid_name(kind: NameKind, name: &str) -> Result<(), Refusal> {
    refusal::valid_name(kind, name, NAME_BYTES_MAX)
}

fn valid_hash(hash: &str) -> Result<(), Refusal> {
    let ok = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadHash {
            hash: hash.chars().take(80).collect(),
        })
    }
}

fn valid_pids(pids: &[u64]) -> Result<(), Refusal> {
    if pids.len() > PIDS_PER_COMMAND_MAX {
        return Err(Refusal::TooManyPids {
            count: pids.len(),
            max: PIDS_PER_COMMAND_MAX,
        });
    }
    Ok(())
}

impl ClusterState {
    /// Apply one command. Deterministic; never panics; a refusal changes
    /// nothing.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        if let Command::Batch { cmds } = cmd {
            if cmds.len() > BATCH_COMMANDS_MAX {
                return CommandResult::Refused(Refusal::BatchTooLarge {
                    count: cmds.len(),
                    max: BATCH_COMMANDS_MAX,
                });
            }
            let results = cmds
                .iter()
                .map(|c| match c {
                    Command::Batch { .. } => CommandResult::Refused(Refusal::NestedOnce),
                    c => self.apply(c),
                })
                .collect();
            return CommandResult::Batch(results);
        }
        if let Command::Once { client, seq, cmd } = cmd {
            if let Some(done) = self.once.seen(*client, *seq) {
                return done.clone();
            }
            let result = match **cmd {
                Command::Once { .. } | Command::Batch { .. } => {
                    CommandResult::Refused(Refusal::NestedOnce)
                }
                ref inner => self.apply(inner),
            };
            self.once.record(*client, *seq, result.clone());
            return result;
        }
        match cmd {
            Command::Signed { proof, cmd } => self.apply_signed(proof, cmd),
            cmd if proofs::needs_proof(cmd) => {
                CommandResult::Refused(Refusal::Proof(shoal_pki::ProofError::Missing {
                    what: writers::command_name(cmd).to_string(),
                }))
            }
            cmd => self.apply_checked(cmd),
        }
    }

    /// Apply `cmd` whose writer's authority was checked: by the leader
    /// ([`ClusterState::may_forward`]), and for the writes that need one,
    /// by a signed request ([`proofs`](self::proofs)).
    fn apply_checked(&mut self, cmd: &Command) -> CommandResult {
        let outcome = match cmd {
            Command::Signed { .. } => Err(Refusal::NestedOnce),
            // Handled above; kept total so `apply` has no panic path.
            Command::Once { .. } | Command::Batch { .. } => Err(Refusal::NestedOnce),
            Command::Bootstrap {
                ca_node,
                ca_cert_pem,
                name,
                addr,
                labels,
                now_ms,
            } => self
                .bootstrap(*ca_node, name, addr, labels, *now_ms)
                .inspect(|_| self.ca_cert_pem = ca_cert_pem.clone()),
            Command::AddNode {
                name,
                addr,
                labels,
                now_ms,
            } => self.add_node(name, addr, labels, *now_ms),
            Command::RemoveNode { id, now_ms } => self.remove_node(*id, *now_ms),
            Command::SetCaNode { node } => self.set_ca_node(*node),
            Command::SetCordon { id, cordoned } => self.set_cordon(*id, *cordoned),
            Command::Heartbeat { id, load, now_ms } => self.heartbeat(*id, load, *now_ms),
            Command::AllocPidBlock { node } => self.alloc_pid_block(*node),
            Command::Register { node, pids } => self.register(*node, pids),
            Command::Unregister { node, pids } => self.unregister(*node, pids),
            Command::MovePid {
                pid,
                from,
                to,
                epoch,
            } => self.move_pid(*pid, *from, *to, *epoch),
            Command::SetModuleName { name, hash } => self.set_module_name(name, hash),
            Command::RemoveModuleName { name } => match self.module_names.remove(name) {
                Some(_) => {
                    self.module_name_owners.remove(name);
                    Ok(CommandResult::Ok)
                }
                None => Err(Refusal::NoModule { name: name.clone() }),
            },
            Command::ModuleHeld {
                hash,
                node,
                size_bytes,
            } => self.module_held(hash, *node, *size_bytes),
            Command::SetProcessName { name, pid } => self.set_process_name(name, *pid),
            Command::RegisterName { owner, name, pid } => {
                let live = self.directory.contains_key(pid);
                self.names
                    .register(owner, name, *pid, live, NAME_BYTES_MAX)
                    .map(|()| CommandResult::Ok)
                    .map_err(Refusal::from)
            }
            Command::JoinGroup { owner, name, pid } => {
                let live = self.directory.contains_key(pid);
                self.names
                    .join_group(owner, name, *pid, live, NAME_BYTES_MAX)
                    .map(|()| CommandResult::Ok)
                    .map_err(Refusal::from)
            }
            Command::Kv {
                pid,
                owner,
                bucket,
                key,
                op,
                fence,
                effect,
            } => self.once_per_effect(*pid, effect.as_ref(), |s| {
                s.apply_kv(*pid, owner, bucket, key, op, fence.as_ref())
            }),
            Command::KvBatch {
                pid,
                owner,
                bucket,
                op,
                fence,
                effect,
            } => self.once_per_effect(*pid, effect.as_ref(), |s| {
                s.apply_kv_batch(*pid, owner, bucket, op, fence.as_ref())
            }),
            Command::KvByCaller {
                owner,
                bucket,
                key,
                op,
                by,
            } => self.apply_kv_by_caller(owner, bucket, key, op, by),
            Command::Lock {
                pid,
                owner,
                name,
                op,
            } => self.apply_lock(*pid, owner, name, op),
            Command::ExpireLocks { node } => self.expire_locks(*node),
            Command::Volume {
                actor,
                owner,
                name,
                op,
            } => self.apply_volume(actor, owner, name, op),
            Command::Reincarnated { node, pids } => self.reincarnated(*node, pids),
            Command::SetRestart { node, pid, spec } => self.set_restart(*node, *pid, spec),
            Command::Checkpointed {
                node,
                pid,
                epoch,
                checkpoint,
            } => self.checkpointed(*node, *pid, *epoch, checkpoint),
            Command::Restarted {
                node,
                pid,
                why,
                now_ms,
            } => self.restarted(*node, *pid, why, *now_ms),
            Command::SpawnEffect {
                parent,
                effect,
                child,
                node,
            } => self.once_per_effect(*parent, Some(effect), |s| {
                s.spawn_effect(*parent, *child, *node)
            }),
            Command::SpawnEffectFailed {
                parent,
                effect,
                child,
                errno,
            } => {
                let failed = CommandResult::ChildFailed(*errno);
                // The record registered the child before it ran: a child
                // on record as failed leaves the directory (else `ps` shows
                // a process that never ran, and its name stays taken). If
                // it did start (its answer was lost), its node kills it on
                // seeing this (`Raft::subscribe_dropped_children`): the
                // record is what the parent, and any resumed copy, saw.
                if self.effects.child_failed(*parent, effect, *child, failed) {
                    self.forget_pids(&BTreeSet::from([*child]));
                }
                Ok(CommandResult::Ok)
            }
            Command::LeaveGroup { owner, name, pid } => self
                .names
                .leave_group(owner, name, *pid)
                .map(|()| CommandResult::Ok)
                .map_err(Refusal::from),
            Command::UnregisterName { owner, name, pid } => self
                .names
                .unregister(owner, name, *pid)
                .map(|()| CommandResult::Ok)
                .map_err(Refusal::from),
            Command::RemoveProcessName { name } => match self.process_names.remove(name) {
                Some(_) => Ok(CommandResult::Ok),
                None => Err(Refusal::NoProcessName { name: name.clone() }),
            },
            Command::CreateToken { record } => self
                .tokens
                .insert(record.clone())
                .map(|()| CommandResult::Ok)
                .map_err(Refusal::from),
            Command::RedeemToken { token, now_ms } => self
                .tokens
                .redeem(token, *now_ms)
                .map(CommandResult::Role)
                .map_err(Refusal::from),
            Command::SetGrants { node, pid, grants } => self.set_grants(*node, *pid, grants),
            Command::NodeDead {
                node,
                epoch,
                silent_ms,
                by,
                now_ms,
            } => self
                .node_verdict(*node, *epoch, true, *silent_ms, *by, *now_ms)
                .inspect(|_| self.fail_over(*node, *now_ms)),
            Command::NodeAlive {
                node,
                epoch,
                by,
                now_ms,
            } => self
                .node_verdict(*node, *epoch, false, 0, *by, *now_ms)
                .inspect(|_| self.back_alive(*node)),
            Command::SetOwners { node, owners } => self.set_owners(*node, owners),
            Command::NameModule { name, hash, by } => self.name_module(name, hash, by),
            Command::UnnameModule { name, by } => self.unname_module(name, by),
            Command::Revoke {
                target,
                reason,
                now_ms,
            } => {
                match target {
                    RevokeTarget::Serial {
                        serial,
                        cert_not_after_ms,
                    } => {
                        let reason: String = reason.chars().take(REASON_CHARS_MAX).collect();
                        if let Err(full) = self.revocations.revoke_serial(
                            serial.clone(),
                            *now_ms,
                            reason,
                            *cert_not_after_ms,
                        ) {
                            return CommandResult::Refused(full.into());
                        }
                    }
                    RevokeTarget::Identity { role, id } => {
                        if shoal_pki::role::validate_id(id).is_err() {
                            return CommandResult::Refused(Refusal::BadIdentity {
                                role: *role,
                                id: id.chars().take(80).collect(),
                            });
                        }
                        let reason: String = reason.chars().take(REASON_CHARS_MAX).collect();
                        return match self.revocations.revoke_identity(*role, id, *now_ms, reason) {
                            Ok(generation) => CommandResult::Generation(generation),
                            Err(full) => CommandResult::Refused(full.into()),
                        };
                    }
                }
                Ok(CommandResult::Ok)
            }
        };
        outcome.unwrap_or_else(CommandResult::Refused)
    }

    /// Whether applying `cmd` would only repeat an earlier application (a
    /// retried [`Command::Once`] already recorded): it changes nothing.
    pub fn is_repeat(&self, cmd: &Command) -> bool {
        debug_assert!(
            !matches!(cmd, Command::Batch { .. }),
            "a batch is judged write by write"
        );
        match cmd {
            Command::Once { client, seq, .. } => self.once.seen(*client, *seq).is_some(),
            _ => false,
        }
    }

    /// The node record if `id` names a node that is not removed.
    pub fn member(&self, id: NodeId) -> Option<&NodeRecord> {
        self.nodes
            .get(&id)
            .filter(|n| n.status != NodeStatus::Removed)
    }

    /// The non-removed node called `name`, if any.
    pub fn member_by_name(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes
            .values()
            .find(|n| n.name == name && n.status != NodeStatus::Removed)
    }

    /// True when `pid` certainly does not exist any more (or never did):
    /// it is not in the directory, and the node that issued it has already
    /// registered it or a later pid (see [`ClusterState::registered_max`]).
    pub fn is_gone(&self, pid: u64) -> bool {
        if self.directory.contains_key(&pid) {
            return false;
        }
        match self.block_owner(pid) {
            None => true,
            Some(owner) => self.registered_max.get(&owner).is_some_and(|m| pid <= *m),
        }
    }

    /// The node owning the pid block that contains `pid`, if allocated.
    pub fn block_owner(&self, pid: u64) -> Option<NodeId> {
        let (first, owner) = self.pid_blocks.range(..=pid).next_back()?;
        (pid - first < PID_BLOCK_SIZE).then_some(*owner)
    }

    fn live_member(&self, id: NodeId) -> Result<&NodeRecord, Refusal> {
        match self.nodes.get(&id) {
            None => Err(Refusal::NoNode { id }),
            Some(n) if n.status == NodeStatus::Removed => Err(Refusal::NodeRemoved {
                id,
                name: n.name.clone(),
            }),
            Some(n) => Ok(n),
        }
    }

    fn set_ca_node(&mut self, node: NodeId) -> Outcome {
        self.live_member(node)?;
        self.ca_node = Some(node);
        Ok(CommandResult::Ok)
    }

    fn bootstrap(
        &mut self,
        ca_node: NodeId,
        name: &str,
        addr: &str,
        labels: &BTreeMap<String, String>,
        now_ms: u64,
    ) -> Outcome {
        if !self.nodes.is_empty() {
            return Err(Refusal::AlreadyBootstrapped);
        }
        valid_name(NameKind::Node, name)?;
        let next = ca_node
            .checked_add(1)
            .filter(|_| ca_node != 0)
            .ok_or(Refusal::BadNodeId { id: ca_node })?;
        self.nodes.insert(
            ca_node,
            NodeRecord {
                id: ca_node,
                name: name.to_string(),
                addr: addr.to_string(),
                labels: labels.clone(),
                status: NodeStatus::Active,
                joined_at_ms: now_ms,
                last_heartbeat_ms: now_ms,
                load: NodeLoad::default(),
            },
        );
        self.next_node_id = next;
        self.ca_node = Some(ca_node);
        Ok(CommandResult::NodeId(ca_node))
    }

    fn add_node(
        &mut self,
        name: &str,
        addr: &str,
        labels: &BTreeMap<String, String>,
        now_ms: u64,
    ) -> Outcome {
        if self.nodes.is_empty() {
            return Err(Refusal::NotBootstrapped);
        }
        valid_name(NameKind::Node, name)?;
        // A name belongs to one live member: a joiner may not take it (and
        // with it the member's address and identity).
        if let Some(n) = self.member_by_name(name) {
            return Err(Refusal::NodeNameTaken {
                name: n.name.clone(),
                id: n.id,
            });
        }
        let id = self.next_node_id;
        let next = id.checked_add(1).ok_or(Refusal::NodeIdsExhausted)?;
        self.nodes.insert(
            id,
            NodeRecord {
                id,
                name: name.to_string(),
                addr: addr.to_string(),
                labels: labels.clone(),
                status: NodeStatus::Active,
                joined_at_ms: now_ms,
                last_heartbeat_ms: now_ms,
                load: NodeLoad::default(),
            },
        );
        self.next_node_id = next;
        Ok(CommandResult::NodeId(id))
    }

    fn remove_node(&mut self, id: NodeId, now_ms: u64) -> Outcome {
        let name = self.live_member(id)?.name.clone();
        self.revocations.revoke_identity(
            Role::Node,
            &name,
            now_ms,
            format!("node {id} removed"),
        )?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.status = NodeStatus::Removed;
        }
        let gone: BTreeSet<u64> = self
            .directory
            .iter()
            .filter(|(_, e)| e.node == id)
            .map(|(pid, _)| *pid)
            .collect();
        self.forget_pids(&gone);
        self.forget_unregistered_owners(id);
        let held: Vec<String> = self
            .modules
            .iter()
            .filter(|(_, m)| m.holders.contains(&id))
            .map(|(hash, _)| hash.clone())
            .collect();
        for hash in held {
            if let Some(module) = self.modules.get_mut(&hash) {
                module.holders.remove(&id);
            }
        }
        if self.ca_node == Some(id) {
            self.ca_node = None;
        }
        Ok(CommandResult::Ok)
    }

    fn set_cordon(&mut self, id: NodeId, cordoned: bool) -> Outcome {
        self.live_member(id)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.status = if cordoned {
                NodeStatus::Cordoned
            } else {
                NodeStatus::Active
            };
        }
        Ok(CommandResult::Ok)
    }

    fn heartbeat(&mut self, id: NodeId, load: &NodeLoad, now_ms: u64) -> Outcome {
        self.live_member(id)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.last_heartbeat_ms = node.last_heartbeat_ms.max(now_ms);
            node.load = load.clone();
        }
        Ok(CommandResult::Ok)
    }

    fn alloc_pid_block(&mut self, node: NodeId) -> Outcome {
        self.live_member(node)?;
        let first = self.next_pid_block;
        let next = first
            .checked_add(PID_BLOCK_SIZE)
            .ok_or(Refusal::PidSpaceExhausted)?;
        self.pid_blocks.insert(first, node);
        self.next_pid_block = next;
        Ok(CommandResult::PidBlock(first))
    }

    fn register(&mut self, node: NodeId, pids: &[u64]) -> Outcome {
        valid_pids(pids)?;
        self.live_member(node)?;
        for &pid in pids {
            match self.directory.get(&pid) {
                Some(e) if e.node != node => {
                    return Err(Refusal::PidElsewhere { pid, node: e.node })
                }
                Some(_) => {}
                None => {
                    if self.block_owner(pid) != Some(node) {
                        return Err(Refusal::PidNotInBlock { pid, node });
                    }
                }
            }
        }
        for &pid in pids {
            self.directory
                .entry(pid)
                .or_insert(DirEntry { node, epoch: 0 });
            if self.block_owner(pid) == Some(node) {
                let max = self.registered_max.entry(node).or_insert(0);
                *max = (*max).max(pid);
            }
        }
        Ok(CommandResult::Ok)
    }

    fn unregister(&mut self, node: NodeId, pids: &[u64]) -> Outcome {
        valid_pids(pids)?;
        let gone: BTreeSet<u64> = pids
            .iter()
            .copied()
            .filter(|pid| self.directory.get(pid).is_some_and(|e| e.node == node))
            .collect();
        self.forget_pids(&gone);
        Ok(CommandResult::Ok)
    }

    /// Drop directory entries and the process names pointing at them.
    fn forget_pids(&mut self, gone: &BTreeSet<u64>) {
        if gone.is_empty() {
            return;
        }
        for pid in gone {
            self.directory.remove(pid);
            self.grants.remove(pid);
        }
        // Only the rows that change are written (see [`Table`]).
        let names: Vec<String> = self
            .process_names
            .iter()
            .filter(|(_, pid)| gone.contains(pid))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.process_names.remove(&name);
        }
        self.names.forget(gone);
        self.forget_owners(gone);
        self.forget_recoverable(gone);
        self.effects.forget(gone);
        let holders: Vec<u64> = gone
            .iter()
            .copied()
            .filter(|p| self.locks.involves(*p))
            .collect();
        self.release_locks_of(&holders);
    }

    fn move_pid(&mut self, pid: u64, from: NodeId, to: NodeId, epoch: u64) -> Outcome {
        let current = *self
            .directory
            .get(&pid)
            .ok_or(Refusal::PidNotLive { pid })?;
        if current.node != from || current.epoch != epoch {
            return Err(Refusal::MovedMeanwhile {
                pid,
                node: current.node,
                epoch: current.epoch,
                from,
                expected_epoch: epoch,
            });
        }
        let target = self.live_member(to)?;
        // A move to the same node only bumps the epoch (a called-off
        // migration fencing its stale attempt); a cordon does not forbid it.
        if to != from && target.status != NodeStatus::Active {
            return Err(Refusal::Cordoned { id: to });
        }
        let next = epoch.checked_add(1).ok_or(Refusal::EpochOverflow)?;
        self.directory.insert(
            pid,
            DirEntry {
                node: to,
                epoch: next,
            },
        );
        Ok(CommandResult::Ok)
    }

    fn set_module_name(&mut self, name: &str, hash: &str) -> Outcome {
        valid_name(NameKind::Module, name)?;
        valid_hash(hash)?;
        // The ownerless form never overwrites an owned name.
        if let Some(owner) = self.module_name_owners.get(name) {
            return Ok(CommandResult::Forbidden(Forbidden::NotOwner {
                who: Owner::cluster(),
                owner: owner.clone(),
                what: format!("module name {name:?}"),
            }));
        }
        self.module_names.insert(name.to_string(), hash.to_string());
        Ok(CommandResult::Ok)
    }

    fn module_held(&mut self, hash: &str, node: NodeId, size_bytes: u64) -> Outcome {
        valid_hash(hash)?;
        self.live_member(node)?;
        if let Some(m) = self.modules.get(hash) {
            if m.size_bytes != size_bytes {
                return Err(Refusal::ModuleSize {
                    hash: hash.to_string(),
                    size_bytes: m.size_bytes,
                    claimed_bytes: size_bytes,
                });
            }
        }
        let m = self
            .modules
            .entry(hash.to_string())
            .or_insert_with(|| ModuleRecord {
                size_bytes,
                holders: BTreeSet::new(),
            });
        m.holders.insert(node);
        Ok(CommandResult::Ok)
    }

    /// Whether `pid` runs on `node` as far as a record about it goes: its
    /// directory entry is there, or (registration is batched) it is a
    /// fresh pid of `node`'s own block not registered yet. `Ok(false)` for
    /// one of its block that already ended (nothing left to record); a
    /// refusal if it runs elsewhere or is no live pid at all.
    pub fn started_on(&self, node: NodeId, pid: u64) -> Result<bool, Refusal> {
        match self.directory.get(&pid) {
            Some(e) if e.node != node => Err(Refusal::PidNotOn {
                pid,
                node: e.node,
                asked: node,
            }),
            Some(_) => Ok(true),
            None if self.block_owner(pid) == Some(node) => Ok(!self.is_gone(pid)),
            None => Err(Refusal::PidNotLive { pid }),
        }
    }

    fn set_grants(&mut self, node: NodeId, pid: u64, grants: &ProcessGrants) -> Outcome {
        self.live_member(node)?;
        grants.validate()?;
        if !self.started_on(node, pid)? {
            return Ok(CommandResult::Ok);
        }
        self.grants.insert(pid, grants.clone());
        Ok(CommandResult::Ok)
    }

    fn set_process_name(&mut self, name: &str, pid: u64) -> Outcome {
        valid_name(NameKind::Process, name)?;
        if !self.directory.contains_key(&pid) {
            return Err(Refusal::PidNotLive { pid });
        }
        if let Some(&other) = self.process_names.get(name) {
            if other != pid {
                return Err(Refusal::ProcessNameTaken {
                    name: name.to_string(),
                    pid: other,
                });
            }
        }
        self.process_names.insert(name.to_string(), pid);
        Ok(CommandResult::Ok)
    }
}

impl ClusterState {
    /// [`Command::Kv`]: the asking process must be live and `owner` its
    /// owner (a node forwards only for processes it runs, and cannot name
    /// another owner's bucket through them).
    fn apply_kv(
        &mut self,
        pid: u64,
        owner: &Owner,
        bucket: &str,
        key: &[u8],
        op: &kv::KvOp,
        fence: Option<&Fence>,
    ) -> Outcome {
        self.check_kv_writer(pid, owner, fence)?;
        self.kv_op(owner, bucket, key, op)
    }

    /// Apply `f`, once per effect `key` of `pid` when it is one: a repeat
    /// (a copy resumed inside the same call) answers what the first
    /// application answered, refusals included ([`effects`]).
    fn once_per_effect(
        &mut self,
        pid: u64,
        key: Option<&effects::EffectKey>,
        f: impl FnOnce(&mut Self) -> Outcome,
    ) -> Outcome {
        let Some(key) = key else {
            return f(self);
        };
        if let Some(done) = self.effects.done(pid, key) {
            return Ok(done.clone());
        }
        let outcome = f(self);
        if self.directory.contains_key(&pid) {
            let result = outcome.clone().unwrap_or_else(CommandResult::Refused);
            self.effects.record(pid, *key, result);
        }
        debug_assert!(self.effects.len() <= self.directory.len());
        outcome
    }

    /// Register `child`, a fresh pid of the block of the node `parent`
    /// runs on, on `node`, before it starts (a spawn under output commit).
    fn spawn_effect(&mut self, parent: u64, child: u64, node: NodeId) -> Outcome {
        let Some(at) = self.directory.get(&parent).map(|e| e.node) else {
            return Err(Refusal::PidNotLive { pid: parent });
        };
        valid_pids(&[child])?;
        self.live_member(node)?;
        // A node declared dead would keep the child's entry for ever (its
        // processes were dealt with when the verdict was applied).
        if let Some(epoch) = self.node_dead(node) {
            return Err(Refusal::LivenessSame {
                node,
                dead: true,
                epoch,
            });
        }
        if let Some(e) = self.directory.get(&child) {
            return Err(Refusal::PidElsewhere {
                pid: child,
                node: e.node,
            });
        }
        if self.block_owner(child) != Some(at) {
            return Err(Refusal::PidNotInBlock {
                pid: child,
                node: at,
            });
        }
        self.directory.insert(child, DirEntry { node, epoch: 0 });
        Ok(CommandResult::Child(child))
    }

    /// What every guest key-value write must pass first: the asker is
    /// live and `owner`'s, and a fence names the lock's current token.
    fn check_kv_writer(
        &self,
        pid: u64,
        owner: &Owner,
        fence: Option<&Fence>,
    ) -> Result<(), Refusal> {
        self.check_asker(pid, owner)?;
        if let Some(f) = fence {
            self.locks.check(owner, &f.lock, f.token)?;
        }
        Ok(())
    }

    /// [`Command::KvBatch`]: the same checks as [`Command::Kv`], then the
    /// whole batch or nothing.
    fn apply_kv_batch(
        &mut self,
        pid: u64,
        owner: &Owner,
        bucket: &str,
        op: &kv::KvBatchOp,
        fence: Option<&Fence>,
    ) -> Outcome {
        self.check_kv_writer(pid, owner, fence)?;
        self.kv
            .batch(owner, bucket, op)
            .map(CommandResult::KvCount)
            .map_err(Refusal::from)
    }
}

impl ClusterState {
    /// Do `op` on `owner`'s entry (the asker was checked): its result.
    fn kv_op(&mut self, owner: &Owner, bucket: &str, key: &[u8], op: &kv::KvOp) -> Outcome {
        let done = match op {
            kv::KvOp::Set { value } => self
                .kv
                .set(owner, bucket, key, value)
                .map(CommandResult::KvVersion),
            kv::KvOp::Cas { expected, value } => self
                .kv
                .cas(owner, bucket, key, *expected, value)
                .map(CommandResult::KvVersion),
            kv::KvOp::Increment { delta } => self
                .kv
                .increment(owner, bucket, key, *delta)
                .map(CommandResult::KvCounter),
            kv::KvOp::Delete => self
                .kv
                .delete(owner, bucket, key)
                .map(CommandResult::KvDeleted),
        };
        done.map_err(Refusal::from)
    }

    /// [`Command::KvByCaller`]: `by` must be allowed to act on `owner`'s
    /// resources ([`shoal_pki::may_act`]: an admin, or the same identity);
    /// then the same bounds, quotas and versions as a guest's write.
    fn apply_kv_by_caller(
        &mut self,
        owner: &Owner,
        bucket: &str,
        key: &[u8],
        op: &kv::KvOp,
        by: &Owner,
    ) -> Outcome {
        if owner.id.len() > NAME_BYTES_MAX || by.id.len() > NAME_BYTES_MAX {
            return Err(Refusal::OwnerIdTooLong {
                max_bytes: NAME_BYTES_MAX,
            });
        }
        if let Err(f) = shoal_pki::may_act(by, owner, &format!("bucket {bucket:?} of {owner}")) {
            return Ok(CommandResult::Forbidden(f));
        }
        self.kv_op(owner, bucket, key, op)
    }
}

impl ClusterState {
    /// [`Command::Volume`]: the actor may act on `owner`'s volumes, then
    /// the book applies it ([`volumes::VolumeBook::apply`]).
    fn apply_volume(
        &mut self,
        actor: &VolumeActor,
        owner: &Owner,
        name: &str,
        op: &volumes::VolumeOp,
    ) -> Outcome {
        if owner.id.len() > NAME_BYTES_MAX {
            return Err(Refusal::OwnerIdTooLong {
                max_bytes: NAME_BYTES_MAX,
            });
        }
        let by_process = match actor {
            VolumeActor::Process { pid, effect } => {
                return self.once_per_effect(*pid, effect.as_ref(), |s| {
                    s.check_asker(*pid, owner)?;
                    s.volume_op(owner, name, op, true)
                });
            }
            VolumeActor::Caller { by } => {
                if by.id.len() > NAME_BYTES_MAX {
                    return Err(Refusal::OwnerIdTooLong {
                        max_bytes: NAME_BYTES_MAX,
                    });
                }
                if let Err(f) =
                    shoal_pki::may_act(by, owner, &format!("volume {name:?} of {owner}"))
                {
                    return Ok(CommandResult::Forbidden(f));
                }
                false
            }
        };
        self.volume_op(owner, name, op, by_process)
    }

    /// Apply a checked [`Command::Volume`]'s op to the book.
    fn volume_op(
        &mut self,
        owner: &Owner,
        name: &str,
        op: &volumes::VolumeOp,
        by_process: bool,
    ) -> Outcome {
        let nodes = &self.nodes;
        let is_node = |n: NodeId| {
            nodes
                .get(&n)
                .is_some_and(|r| r.status != NodeStatus::Removed)
        };
        self.volumes
            .apply(owner, name, op, by_process, is_node)
            .map(CommandResult::VolumeVersion)
            .map_err(Refusal::from)
    }

    /// The asker of a guest's command must be live and `owner` its owner
    /// (a node forwards only for processes it runs, and cannot name another
    /// owner's bucket or lock through them).
    fn check_asker(&self, pid: u64, owner: &Owner) -> Result<(), Refusal> {
        if !self.directory.contains_key(&pid) {
            return Err(kv::KvRefusal::NotLive(pid).into());
        }
        let actual = self.owner_of(pid);
        if actual != *owner {
            return Err(kv::KvRefusal::NotTheOwner {
                pid,
                owner: actual.to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// [`Command::Lock`].
    fn apply_lock(&mut self, pid: u64, owner: &Owner, name: &str, op: &LockOp) -> Outcome {
        self.check_asker(pid, owner)?;
        let (directory, liveness) = (&self.directory, &self.liveness);
        let gone = |p: u64| lock_gone(directory, liveness, p);
        let done = match op {
            LockOp::Acquire { wait } => {
                self.locks
                    .acquire(owner, name, pid, *wait)
                    .map(|a| match a {
                        locks::Acquired::Granted(t) => CommandResult::LockGranted(t),
                        locks::Acquired::Queued => CommandResult::LockQueued,
                    })
            }
            LockOp::Release { token } => self
                .locks
                .release(owner, name, pid, *token, &gone)
                .map(|()| CommandResult::Ok),
            LockOp::Cancel => {
                self.locks.cancel(owner, name, pid, &gone);
                Ok(CommandResult::Ok)
            }
        };
        done.map_err(Refusal::from)
    }

    /// [`Command::ExpireLocks`].
    fn expire_locks(&mut self, node: NodeId) -> Outcome {
        if self.node_dead(node).is_none() {
            return Ok(CommandResult::Ok);
        }
        let on_node: Vec<u64> = self
            .locks
            .pids()
            .into_iter()
            .filter(|p| self.directory.get(p).is_some_and(|e| e.node == node))
            .collect();
        self.release_locks_of(&on_node);
        Ok(CommandResult::Ok)
    }

    /// [`Command::Reincarnated`].
    fn reincarnated(&mut self, node: NodeId, pids: &[u64]) -> Outcome {
        valid_pids(pids)?;
        let here: Vec<u64> = pids
            .iter()
            .copied()
            .filter(|p| self.directory.get(p).is_some_and(|e| e.node == node))
            .collect();
        self.release_locks_of(&here);
        Ok(CommandResult::Ok)
    }

    /// Release every lock `pids` hold and drop their waits (granting on to
    /// waiters that may still be granted).
    fn release_locks_of(&mut self, pids: &[u64]) {
        if pids.is_empty() {
            return;
        }
        let (directory, liveness) = (&self.directory, &self.liveness);
        let gone = |p: u64| pids.contains(&p) || lock_gone(directory, liveness, p);
        for pid in pids {
            self.locks.release_pid(*pid, &gone);
        }
    }
}

/// Whether process `pid` may no longer be granted a lock: it ended (it is
/// not in the directory), or its node is declared dead. Takes the two
/// tables rather than the state so the lock book can change while it asks.
fn lock_gone(
    directory: &Table<u64, DirEntry>,
    liveness: &BTreeMap<NodeId, NodeLiveness>,
    pid: u64,
) -> bool {
    directory
        .get(&pid)
        .is_none_or(|e| liveness::dead_epoch(liveness, e.node).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::proofs::test_support::{self, apply_signed};
    use shoal_pki::{CertInfo, JoinToken};
    use std::time::Duration;

    const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HASH_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn refused(r: CommandResult) -> String {
        match r {
            CommandResult::Refused(why) => why.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn node_id(r: CommandResult) -> NodeId {
        match r {
            CommandResult::NodeId(id) => id,
            other => panic!("expected a node id, got {other:?}"),
        }
    }

    fn block(r: CommandResult) -> u64 {
        match r {
            CommandResult::PidBlock(first) => first,
            other => panic!("expected a pid block, got {other:?}"),
        }
    }

    fn add(s: &mut ClusterState, name: &str) -> NodeId {
        node_id(s.apply(&Command::AddNode {
            name: name.to_string(),
            addr: format!("{name}:7000"),
            labels: BTreeMap::new(),
            now_ms: 2000,
        }))
    }

    /// A bootstrapped cluster with node 1 ("n1") and node 2 ("n2").
    fn two_nodes() -> ClusterState {
        let mut s = ClusterState::default();
        let id = node_id(s.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "n1".to_string(),
            addr: "n1:7000".to_string(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            now_ms: 1000,
        }));
        assert_eq!(id, 1);
        assert_eq!(add(&mut s, "n2"), 2);
        s
    }

    /// Bootstrapped, with a block for node 1 and pids registered there.
    fn with_pids(pids: &[u64]) -> (ClusterState, u64) {
        let mut s = two_nodes();
        let first = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        let pids: Vec<u64> = pids.iter().map(|p| first + p).collect();
        assert_eq!(
            s.apply(&Command::Register { node: 1, pids }),
            CommandResult::Ok
        );
        (s, first)
    }

    /// Make the client `alice` the owner of live process `pid`.
    fn owned_by_alice(s: &mut ClusterState, pid: u64) -> Owner {
        let alice = Owner {
            role: Role::Client,
            id: "alice".into(),
        };
        assert_eq!(
            s.apply(&Command::SetOwners {
                node: 1,
                owners: vec![(pid, alice.clone())],
            }),
            CommandResult::Ok
        );
        alice
    }

    fn grants_by(id: &str) -> ProcessGrants {
        ProcessGrants {
            dirs: vec![GrantedDir {
                host: "/srv/data".into(),
                guest: "/data".into(),
            }],
            env: vec![("K".into(), "V".into())],
            memory_bytes_max: Some(1 << 20),
            volumes: Vec::new(),
            granted_by: Granter {
                role: Role::Client,
                id: id.into(),
            },
        }
    }

    /// `KvByCaller`: an operator writes a bucket without a process, only
    /// one whose owner it may act on, with the bounds of guests' writes;
    /// a node forwards it only on behalf of the identity it names.
    #[test]
    fn an_operator_writes_only_buckets_of_owners_it_may_act_on() {
        let mut s = two_nodes();
        let who = |role, id: &str| Owner {
            role,
            id: id.to_string(),
        };
        let (alice, bob, root) = (
            who(Role::Client, "alice"),
            who(Role::Client, "bob"),
            who(Role::Admin, "root"),
        );
        let write = |owner: &Owner, by: &Owner, key: &[u8], op: kv::KvOp| Command::KvByCaller {
            owner: owner.clone(),
            bucket: "b".into(),
            key: key.to_vec(),
            op,
            by: by.clone(),
        };
        let set = |v: &[u8]| kv::KvOp::Set { value: v.to_vec() };
        let entry = |s: &ClusterState, owner: &Owner| {
            s.kv.get(owner, "b", b"k")
                .map(|e| (e.value.clone(), e.version))
        };
        // Alice writes her own bucket: no live process needed.
        let CommandResult::KvVersion(v1) = s.apply(&write(&alice, &alice, b"k", set(b"1"))) else {
            panic!("alice's own write refused")
        };
        assert_eq!(entry(&s, &alice), Some((b"1".to_vec(), v1)));
        // Bob may not write alice's bucket, nor the cluster's: typed
        // refusals, nothing changed.
        let before = s.clone();
        for owner in [&alice, &Owner::cluster()] {
            let r = s.apply(&write(owner, &bob, b"k", set(b"2")));
            assert!(
                matches!(
                    r,
                    CommandResult::Forbidden(shoal_pki::Forbidden::NotOwner { .. })
                ),
                "{r:?}"
            );
        }
        assert_eq!(s, before);
        // An admin may, in alice's bucket and in the cluster's.
        let CommandResult::KvVersion(v2) = s.apply(&write(&alice, &root, b"k", set(b"3"))) else {
            panic!("the admin's write refused")
        };
        assert!(v2 > v1);
        assert_eq!(entry(&s, &alice), Some((b"3".to_vec(), v2)));
        assert!(matches!(
            s.apply(&write(&Owner::cluster(), &root, b"k", set(b"c"))),
            CommandResult::KvVersion(_)
        ));
        assert_eq!(
            entry(&s, &Owner::cluster()).map(|e| e.0),
            Some(b"c".to_vec())
        );
        // The bounds of guests' writes.
        let before = s.clone();
        assert!(matches!(
            s.apply(&write(&alice, &alice, b"", set(b"x"))),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::BadKey { .. }))
        ));
        let huge = vec![0u8; kv::VALUE_BYTES_MAX + 1];
        assert!(matches!(
            s.apply(&write(&alice, &alice, b"k", kv::KvOp::Set { value: huge })),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::ValueTooLarge { .. }))
        ));
        assert_eq!(s, before);
        // Bob's delete of alice's key is refused; hers is applied.
        assert!(matches!(
            s.apply(&write(&alice, &bob, b"k", kv::KvOp::Delete)),
            CommandResult::Forbidden(_)
        ));
        assert_eq!(
            s.apply(&write(&alice, &alice, b"k", kv::KvOp::Delete)),
            CommandResult::KvDeleted(true)
        );
        assert_eq!(entry(&s, &alice), None);
        // Forwarded only on behalf of the identity the command names.
        let cmd = write(&alice, &alice, b"k", set(b"4"));
        assert_eq!(s.may_forward(2, Some(&alice), &cmd), Ok(()));
        for relayed in [None, Some(&bob), Some(&root)] {
            assert!(
                matches!(
                    s.may_forward(2, relayed, &cmd),
                    Err(crate::state::writers::ForwardRefusal::Forbidden(_))
                ),
                "{relayed:?}"
            );
        }
        assert_eq!(
            s.may_forward(2, Some(&root), &write(&alice, &root, b"k", set(b"5"))),
            Ok(())
        );
    }

    #[test]
    fn a_kv_write_is_applied_for_a_live_process_in_its_owners_bucket_only() {
        let (mut s, first) = with_pids(&[0, 1]);
        let alice = owned_by_alice(&mut s, first);
        let kv = |pid: u64, owner: &Owner, op: kv::KvOp| Command::Kv {
            pid,
            owner: owner.clone(),
            bucket: "b".into(),
            key: b"k".to_vec(),
            op,
            fence: None,
            effect: None,
        };
        let set = |v: &[u8]| kv::KvOp::Set { value: v.to_vec() };
        let CommandResult::KvVersion(v1) = s.apply(&kv(first, &alice, set(b"1"))) else {
            panic!("set refused")
        };
        assert_eq!(s.kv.get(&alice, "b", b"k").map(|e| e.version), Some(v1));
        // Another owner's bucket through alice's process: refused, nothing
        // changed.
        let before = s.clone();
        let mallory = Owner {
            role: Role::Client,
            id: "mallory".into(),
        };
        assert!(matches!(
            s.apply(&kv(first, &mallory, set(b"x"))),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::NotTheOwner { .. }))
        ));
        // A process that is not live: refused.
        assert!(matches!(
            s.apply(&kv(first + 99, &alice, set(b"x"))),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::NotLive(_)))
        ));
        assert_eq!(s, before);
        // cas, increment, delete, each with its result.
        let cas = kv::KvOp::Cas {
            expected: v1,
            value: b"2".to_vec(),
        };
        assert!(
            matches!(s.apply(&kv(first, &alice, cas.clone())), CommandResult::KvVersion(v) if v > v1)
        );
        assert!(matches!(
            s.apply(&kv(first, &alice, cas)),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::VersionMismatch { .. }))
        ));
        let inc_as = |d, effect| Command::Kv {
            pid: first,
            owner: alice.clone(),
            bucket: "c".into(),
            key: b"n".to_vec(),
            op: kv::KvOp::Increment { delta: d },
            fence: None,
            effect,
        };
        let inc = |d| inc_as(d, None);
        assert_eq!(s.apply(&inc(2)), CommandResult::KvCounter(2));
        assert_eq!(s.apply(&inc(3)), CommandResult::KvCounter(5));
        // An effect of a process under output commit applies once per key:
        // a resumed copy's repeat answers the first result, and changes
        // nothing; the next effect applies.
        let effect = |seq, d| inc_as(d, Some(effects::EffectKey { life: 7, seq }));
        assert_eq!(s.apply(&effect(4, 1)), CommandResult::KvCounter(6));
        assert_eq!(s.apply(&effect(4, 1)), CommandResult::KvCounter(6));
        assert_eq!(s.apply(&effect(5, 1)), CommandResult::KvCounter(7));
        // A refusal is remembered too: its repeat is refused, not applied.
        assert!(matches!(
            s.apply(&effect(6, i64::MAX)),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::Overflow))
        ));
        assert_eq!(s.apply(&inc(-7)), CommandResult::KvCounter(0));
        assert!(matches!(
            s.apply(&effect(6, i64::MAX)),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::Overflow))
        ));
        assert_eq!(s.apply(&inc(5)), CommandResult::KvCounter(5));
        assert_eq!(s.effects.len(), 1);
        assert_eq!(
            s.apply(&kv(first, &alice, kv::KvOp::Delete)),
            CommandResult::KvDeleted(true)
        );
        assert_eq!(
            s.apply(&kv(first, &alice, kv::KvOp::Delete)),
            CommandResult::KvDeleted(false)
        );
        s.kv.check().unwrap();
        // The whole state, with its book, round trips through JSON.
        let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // The slot goes with the process.
        s.apply(&Command::Unregister {
            node: 1,
            pids: vec![first],
        });
        assert!(s.effects.is_empty());
    }

    /// A shared-volume write of a process under output commit applies once
    /// per effect: a resumed copy's repeat of its `mkdir` or its
    /// exclusive create answers the first version instead of `Exists`, and
    /// changes nothing; without an effect key the repeat is refused.
    #[test]
    fn a_volume_write_effect_applies_once() {
        let (mut s, first) = with_pids(&[0]);
        let alice = owned_by_alice(&mut s, first);
        let create = Command::Volume {
            actor: VolumeActor::Caller { by: alice.clone() },
            owner: alice.clone(),
            name: "v".into(),
            op: volumes::VolumeOp::Create {
                replicas: 1,
                bytes_max: 1 << 20,
                files_max: 100,
                now_ms: 1,
            },
        };
        assert!(matches!(s.apply(&create), CommandResult::VolumeVersion(_)));
        let write = |effect, op| Command::Volume {
            actor: VolumeActor::Process { pid: first, effect },
            owner: alice.clone(),
            name: "v".into(),
            op,
        };
        let mkdir = |path: &str| volumes::VolumeOp::Mkdir {
            path: path.into(),
            mtime_ms: 2,
        };
        let key = |seq| Some(effects::EffectKey { life: 9, seq });
        let CommandResult::VolumeVersion(v) = s.apply(&write(key(1), mkdir("d"))) else {
            panic!("mkdir refused")
        };
        let before = s.volumes.clone();
        assert_eq!(
            s.apply(&write(key(1), mkdir("d"))),
            CommandResult::VolumeVersion(v)
        );
        assert_eq!(s.volumes, before, "a repeat changed the volume");
        // The next effect, and a write with no key, apply as written.
        assert!(matches!(
            s.apply(&write(key(2), mkdir("d"))),
            CommandResult::Refused(_)
        ));
        assert!(matches!(
            s.apply(&write(None, mkdir("d"))),
            CommandResult::Refused(_)
        ));
        // Another owner's volume through alice's process: refused, and the
        // refusal is what its repeat answers.
        let mallory = Owner {
            role: Role::Client,
            id: "mallory".into(),
        };
        let theirs = Command::Volume {
            actor: VolumeActor::Process {
                pid: first,
                effect: key(3),
            },
            owner: mallory,
            name: "v".into(),
            op: mkdir("e"),
        };
        let refused = s.apply(&theirs);
        assert!(matches!(refused, CommandResult::Refused(_)), "{refused:?}");
        assert_eq!(s.apply(&theirs), refused);
        assert_eq!(s.volumes, before);
        // The command round trips, and one without a key reads as before.
        let json = serde_json::to_string(&write(None, mkdir("d"))).unwrap();
        assert!(!json.contains("effect"), "{json}");
        let back: Command = serde_json::from_str(&json).unwrap();
        assert_eq!(back, write(None, mkdir("d")));
    }

    /// A spawn under output commit registers its child before it starts,
    /// once per effect: a resumed copy's repeat (with the other pid its
    /// node drew) gets the first child and registers nothing; a failed
    /// start's repeat gets the failure. Only a fresh pid of the parent's
    /// node's block, for a live parent, written by that node.
    #[test]
    fn a_spawn_effect_registers_one_child_per_effect() {
        let (mut s, first) = with_pids(&[0]);
        let parent = first;
        let key = |seq| effects::EffectKey { life: 3, seq };
        let spawn = |seq, child, node| Command::SpawnEffect {
            parent,
            effect: key(seq),
            child,
            node,
        };
        assert_eq!(
            s.apply(&spawn(1, first + 5, 2)),
            CommandResult::Child(first + 5)
        );
        assert_eq!(s.directory.get(&(first + 5)).map(|e| e.node), Some(2));
        // The repeat: another drawn pid, the same child, nothing new.
        let before = s.clone();
        assert_eq!(
            s.apply(&spawn(1, first + 9, 1)),
            CommandResult::Child(first + 5)
        );
        assert_eq!(s, before);
        // The child's node registers it as it starts: accepted.
        assert_eq!(
            s.apply(&Command::Register {
                node: 2,
                pids: vec![first + 5],
            }),
            CommandResult::Ok
        );
        // Refused: a pid already in the directory, a pid of another
        // node's block, a parent that is not live.
        assert!(matches!(
            s.apply(&spawn(2, first + 5, 1)),
            CommandResult::Refused(Refusal::PidElsewhere { .. })
        ));
        let theirs = block(s.apply(&Command::AllocPidBlock { node: 2 }));
        assert!(matches!(
            s.apply(&spawn(3, theirs, 1)),
            CommandResult::Refused(Refusal::PidNotInBlock { .. })
        ));
        let orphan = Command::SpawnEffect {
            parent: first + 77,
            effect: key(4),
            child: first + 6,
            node: 1,
        };
        assert!(matches!(
            s.apply(&orphan),
            CommandResult::Refused(Refusal::PidNotLive { .. })
        ));
        // A start that failed: its repeat answers the failure.
        assert_eq!(
            s.apply(&spawn(5, first + 7, 1)),
            CommandResult::Child(first + 7)
        );
        let failed = |child| Command::SpawnEffectFailed {
            parent,
            effect: key(5),
            child,
            errno: -9,
        };
        // Naming another child changes nothing.
        let before = s.clone();
        s.apply(&failed(first + 8));
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&spawn(5, first + 10, 1)),
            CommandResult::Child(first + 7)
        );
        // The failure is answered to repeats, and the child it registered
        // leaves the directory (no phantom entry); a second report of it
        // changes nothing more.
        assert!(s.directory.contains_key(&(first + 7)));
        s.apply(&failed(first + 7));
        assert!(!s.directory.contains_key(&(first + 7)));
        let before = s.clone();
        s.apply(&failed(first + 7));
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&spawn(5, first + 10, 1)),
            CommandResult::ChildFailed(-9)
        );
        // Only the node the parent runs on writes them.
        assert_eq!(s.may_forward(1, None, &spawn(6, first + 11, 2)), Ok(()));
        assert!(s.may_forward(2, None, &spawn(6, first + 11, 2)).is_err());
        assert!(s.may_forward(2, None, &failed(first + 7)).is_err());
        // The whole state round trips through JSON.
        let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // Not onto a node declared dead.
        let epoch = s.liveness_epoch(2);
        s.apply(&Command::NodeDead {
            node: 2,
            epoch,
            silent_ms: 5000,
            by: 1,
            now_ms: 10,
        });
        assert!(matches!(
            s.apply(&spawn(7, first + 12, 2)),
            CommandResult::Refused(Refusal::LivenessSame { node: 2, .. })
        ));
        assert!(!s.directory.contains_key(&(first + 12)));
    }

    /// Locks through the state machine: the owner rule, fenced writes,
    /// release on exit and on a new incarnation, and the lock-delay release
    /// only once the holder's node is declared dead.
    #[test]
    fn locks_fence_writes_and_go_with_their_holders() {
        let (mut s, first) = with_pids(&[0, 1, 2, 3]);
        let alice = Owner {
            role: Role::Client,
            id: "alice".into(),
        };
        let owners = (0..4).map(|i| (first + i, alice.clone())).collect();
        assert_eq!(
            s.apply(&Command::SetOwners { node: 1, owners }),
            CommandResult::Ok
        );
        let lock = |pid: u64, op: LockOp| Command::Lock {
            pid,
            owner: alice.clone(),
            name: "m".into(),
            op,
        };
        let acquire = LockOp::Acquire { wait: true };
        let CommandResult::LockGranted(t1) = s.apply(&lock(first, acquire.clone())) else {
            panic!("free lock not granted")
        };
        assert_eq!(
            s.apply(&lock(first + 1, acquire.clone())),
            CommandResult::LockQueued
        );
        // Another owner cannot use alice's process to take her lock.
        let mallory = Owner {
            role: Role::Client,
            id: "mallory".into(),
        };
        assert!(matches!(
            s.apply(&Command::Lock {
                pid: first + 2,
                owner: mallory,
                name: "m".into(),
                op: acquire.clone(),
            }),
            CommandResult::Refused(Refusal::Kv(kv::KvRefusal::NotTheOwner { .. }))
        ));
        let fenced = |pid: u64, token: u64| Command::Kv {
            pid,
            owner: alice.clone(),
            bucket: "b".into(),
            key: b"k".to_vec(),
            op: kv::KvOp::Set {
                value: b"v".to_vec(),
            },
            fence: Some(Fence {
                lock: "m".into(),
                token,
            }),
            effect: None,
        };
        assert!(matches!(
            s.apply(&fenced(first, t1)),
            CommandResult::KvVersion(_)
        ));
        // The holder ends: the waiter is granted under a larger token, and
        // the old token is fenced.
        assert_eq!(
            s.apply(&Command::Unregister {
                node: 1,
                pids: vec![first]
            }),
            CommandResult::Ok
        );
        let t2 = s
            .locks
            .get(&alice, "m")
            .and_then(|l| l.holder)
            .map(|h| h.token);
        assert!(t2.is_some_and(|t| t > t1), "{t2:?} after {t1}");
        let t2 = t2.unwrap_or_default();
        assert!(matches!(
            s.apply(&fenced(first + 1, t1)),
            CommandResult::Refused(Refusal::Lock(locks::LockRefusal::Fenced { .. }))
        ));
        // A new incarnation of the holder holds nothing; the next waiter
        // gets it.
        assert_eq!(
            s.apply(&lock(first + 2, acquire.clone())),
            CommandResult::LockQueued
        );
        assert_eq!(
            s.apply(&Command::Reincarnated {
                node: 1,
                pids: vec![first + 1]
            }),
            CommandResult::Ok
        );
        assert!(matches!(
            s.apply(&lock(first + 1, LockOp::Release { token: t2 })),
            CommandResult::Refused(Refusal::Lock(locks::LockRefusal::Lost { .. }))
        ));
        let holder = s.locks.get(&alice, "m").and_then(|l| l.holder);
        assert_eq!(holder.map(|h| h.pid), Some(first + 2));
        // Node 1 is alive: expiring its locks does nothing. Once it is
        // declared dead, they are released.
        let before = s.clone();
        assert_eq!(
            s.apply(&Command::ExpireLocks { node: 1 }),
            CommandResult::Ok
        );
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&Command::NodeDead {
                node: 1,
                epoch: 0,
                silent_ms: 5000,
                by: 2,
                now_ms: 9000,
            }),
            CommandResult::Ok
        );
        assert!(
            s.locks.get(&alice, "m").is_some(),
            "kept until the lock-delay"
        );
        assert_eq!(
            s.apply(&Command::ExpireLocks { node: 1 }),
            CommandResult::Ok
        );
        assert!(s.locks.get(&alice, "m").is_none());
        s.locks.check_invariants().expect("invariants");
        let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn grants_are_recorded_for_live_pids_of_the_writer_and_go_with_them() {
        let (mut s, first) = with_pids(&[0, 1]);
        let set = |node, pid| Command::SetGrants {
            node,
            pid,
            grants: grants_by("carol"),
        };
        assert_eq!(s.apply(&set(1, first)), CommandResult::Ok);
        assert_eq!(s.grants[&first].granted_by.id, "carol");
        // Not node 2's process.
        let before = s.clone();
        refused(s.apply(&set(2, first + 1)));
        assert_eq!(s, before);
        // Too big a record.
        let mut huge = grants_by("carol");
        huge.env = vec![("K".into(), "V".into()); GRANT_ENV_MAX + 1];
        refused(s.apply(&Command::SetGrants {
            node: 1,
            pid: first + 1,
            grants: huge,
        }));
        // Gone with its directory entry; not recorded again once gone.
        assert_eq!(
            s.apply(&Command::Unregister {
                node: 1,
                pids: vec![first]
            }),
            CommandResult::Ok
        );
        assert!(!s.grants.contains_key(&first));
        assert_eq!(s.apply(&set(1, first)), CommandResult::Ok);
        assert!(!s.grants.contains_key(&first));
    }

    #[test]
    fn bootstrap_creates_first_node_once() {
        let s = two_nodes();
        let n1 = &s.nodes[&1];
        assert_eq!(n1.name, "n1");
        assert_eq!(n1.status, NodeStatus::Active);
        assert_eq!(n1.joined_at_ms, 1000);
        assert_eq!(n1.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(s.ca_node, Some(1));
        assert_eq!(s.next_node_id, 3);
        let mut again = s.clone();
        let why = refused(again.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "x".to_string(),
            addr: String::new(),
            labels: BTreeMap::new(),
            now_ms: 0,
        }));
        assert!(why.contains("already bootstrapped"), "{why}");
        assert_eq!(again, s, "a refusal changes nothing");
    }

    #[test]
    fn bootstrap_refuses_id_zero_and_empty_name() {
        let mut s = ClusterState::default();
        let bad = |ca_node, name: &str| Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node,
            name: name.to_string(),
            addr: String::new(),
            labels: BTreeMap::new(),
            now_ms: 0,
        };
        refused(s.apply(&bad(0, "n")));
        refused(s.apply(&bad(1, "")));
        refused(s.apply(&bad(1, &"x".repeat(NAME_BYTES_MAX + 1))));
        assert_eq!(s, ClusterState::default());
    }

    #[test]
    fn add_node_before_bootstrap_is_refused() {
        let mut s = ClusterState::default();
        let why = refused(s.apply(&Command::AddNode {
            name: "n2".to_string(),
            addr: String::new(),
            labels: BTreeMap::new(),
            now_ms: 0,
        }));
        assert!(why.contains("not bootstrapped"), "{why}");
    }

    #[test]
    fn a_live_members_name_cannot_be_taken_by_a_joiner() {
        let mut s = two_nodes();
        let r = s.apply(&Command::AddNode {
            name: "n2".to_string(),
            addr: "elsewhere:7001".to_string(),
            labels: BTreeMap::new(),
            now_ms: 9999,
        });
        assert_eq!(
            r,
            CommandResult::Refused(Refusal::NodeNameTaken {
                name: "n2".into(),
                id: 2
            })
        );
        assert_eq!(s.nodes[&2].addr, "n2:7000", "address kept");
        assert_eq!(s.next_node_id, 3, "no id consumed");
        assert_eq!(s.nodes.len(), 2);
    }

    #[test]
    fn removed_name_rejoins_under_a_new_id() {
        let mut s = two_nodes();
        assert_eq!(
            apply_signed(
                &mut s,
                Command::RemoveNode {
                    id: 2,
                    now_ms: 5000
                }
            ),
            CommandResult::Ok
        );
        assert_eq!(add(&mut s, "n2"), 3);
        assert_eq!(s.nodes[&2].status, NodeStatus::Removed);
        assert_eq!(s.nodes[&3].status, NodeStatus::Active);
        assert_eq!(s.member_by_name("n2").map(|n| n.id), Some(3));
    }

    #[test]
    fn remove_node_revokes_and_drops_its_entries() {
        let mut s = two_nodes();
        let b1 = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        let b2 = block(s.apply(&Command::AllocPidBlock { node: 2 }));
        assert_eq!(
            s.apply(&Command::Register {
                node: 1,
                pids: vec![b1, b1 + 1]
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::Register {
                node: 2,
                pids: vec![b2, b2 + 1]
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "on2".to_string(),
                pid: b2
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "on1".to_string(),
                pid: b1
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::ModuleHeld {
                hash: HASH_A.to_string(),
                node: 2,
                size_bytes: 10
            }),
            CommandResult::Ok
        );
        assert_eq!(
            apply_signed(
                &mut s,
                Command::RemoveNode {
                    id: 2,
                    now_ms: 5000
                }
            ),
            CommandResult::Ok
        );
        assert_eq!(s.nodes[&2].status, NodeStatus::Removed);
        // Its processes and their names are gone; node 1's stay.
        assert!(!s.directory.contains_key(&b2));
        assert!(!s.directory.contains_key(&(b2 + 1)));
        assert!(s.directory.contains_key(&b1));
        assert!(!s.process_names.contains_key("on2"));
        assert_eq!(s.process_names.get("on1"), Some(&b1));
        assert!(s.modules[HASH_A].holders.is_empty());
        // Its pid block stays allocated: those pids are never issued again.
        assert_eq!(s.pid_blocks.get(&b2), Some(&2));
        assert!(s.next_pid_block > b2);
        // Its certificates (issued before the removal, whatever their
        // dates, and their renewals) are revoked; a re-join gets the next
        // generation.
        let cert = |generation, not_before_unix_ms| CertInfo {
            role: Role::Node,
            id: "n2".to_string(),
            serial: Serial::from_bytes(&[1]),
            not_before_unix_ms,
            not_after_unix_ms: u64::MAX,
            generation,
        };
        assert!(s.revocations.check(&cert(0, 4000)).is_some());
        assert!(s.revocations.check(&cert(0, 6000)).is_some());
        assert_eq!(s.revocations.generation(Role::Node, "n2"), 1);
        assert!(s.revocations.check(&cert(1, 6000)).is_none());
        // It can no longer act.
        refused(s.apply(&Command::Heartbeat {
            id: 2,
            load: NodeLoad::default(),
            now_ms: 6000,
        }));
        refused(s.apply(&Command::AllocPidBlock { node: 2 }));
        refused(apply_signed(
            &mut s,
            Command::RemoveNode {
                id: 2,
                now_ms: 6000,
            },
        ));
        refused(apply_signed(
            &mut s,
            Command::RemoveNode {
                id: 77,
                now_ms: 6000,
            },
        ));
    }

    #[test]
    fn removing_the_ca_node_clears_ca_node() {
        let mut s = two_nodes();
        assert_eq!(
            apply_signed(&mut s, Command::RemoveNode { id: 1, now_ms: 1 }),
            CommandResult::Ok
        );
        assert_eq!(s.ca_node, None);
    }

    #[test]
    fn cordon_and_heartbeat() {
        let mut s = two_nodes();
        assert_eq!(
            s.apply(&Command::SetCordon {
                id: 2,
                cordoned: true
            }),
            CommandResult::Ok
        );
        assert_eq!(s.nodes[&2].status, NodeStatus::Cordoned);
        assert_eq!(
            s.apply(&Command::SetCordon {
                id: 2,
                cordoned: false
            }),
            CommandResult::Ok
        );
        assert_eq!(s.nodes[&2].status, NodeStatus::Active);
        refused(s.apply(&Command::SetCordon {
            id: 9,
            cordoned: true,
        }));

        let load = NodeLoad {
            memory_bytes_free: 1,
            memory_bytes_total: 2,
            cpu_load_milli: 3,
            process_count: 4,
        };
        assert_eq!(
            s.apply(&Command::Heartbeat {
                id: 2,
                load: load.clone(),
                now_ms: 7000
            }),
            CommandResult::Ok
        );
        assert_eq!(s.nodes[&2].load, load);
        assert_eq!(s.nodes[&2].last_heartbeat_ms, 7000);
        // A late (reordered) heartbeat never moves the time backwards.
        s.apply(&Command::Heartbeat {
            id: 2,
            load: NodeLoad::default(),
            now_ms: 6000,
        });
        assert_eq!(s.nodes[&2].last_heartbeat_ms, 7000);
        refused(s.apply(&Command::Heartbeat {
            id: 9,
            load: NodeLoad::default(),
            now_ms: 1,
        }));
    }

    #[test]
    fn pid_blocks_are_disjoint_and_never_below_the_first_block() {
        let mut s = two_nodes();
        let a = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        let b = block(s.apply(&Command::AllocPidBlock { node: 2 }));
        let c = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        assert_eq!(a, PID_BLOCK_SIZE);
        assert_eq!(b, 2 * PID_BLOCK_SIZE);
        assert_eq!(c, 3 * PID_BLOCK_SIZE);
        assert_eq!(s.block_owner(a), Some(1));
        assert_eq!(s.block_owner(a + PID_BLOCK_SIZE - 1), Some(1));
        assert_eq!(s.block_owner(b), Some(2));
        assert_eq!(s.block_owner(5), None);
        assert_eq!(s.block_owner(4 * PID_BLOCK_SIZE), None);
        refused(s.apply(&Command::AllocPidBlock { node: 42 }));
        let mut full = s.clone();
        full.next_pid_block = u64::MAX - 5;
        let why = refused(full.apply(&Command::AllocPidBlock { node: 1 }));
        assert!(why.contains("exhausted"), "{why}");
    }

    #[test]
    fn a_pid_below_its_issuers_mark_and_not_in_the_directory_is_gone() {
        let mut s = two_nodes();
        let b1 = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        assert!(
            !s.is_gone(b1),
            "issued but not registered yet: maybe starting"
        );
        assert_eq!(
            s.apply(&Command::Register {
                node: 1,
                pids: vec![b1, b1 + 1]
            }),
            CommandResult::Ok
        );
        assert!(!s.is_gone(b1) && !s.is_gone(b1 + 1));
        assert!(!s.is_gone(b1 + 2), "above the mark: not known yet");
        assert_eq!(
            s.apply(&Command::Unregister {
                node: 1,
                pids: vec![b1]
            }),
            CommandResult::Ok
        );
        assert!(s.is_gone(b1));
        assert!(s.is_gone(3), "never issued");
    }

    #[test]
    fn register_requires_owned_block_and_is_all_or_nothing() {
        let mut s = two_nodes();
        let b1 = block(s.apply(&Command::AllocPidBlock { node: 1 }));
        let b2 = block(s.apply(&Command::AllocPidBlock { node: 2 }));
        let before = s.clone();
        // b2 belongs to node 2: the whole command is refused.
        let why = refused(s.apply(&Command::Register {
            node: 1,
            pids: vec![b1, b2],
        }));
        assert!(why.contains("not in a pid block owned by node 1"), "{why}");
        assert_eq!(s, before);
        refused(s.apply(&Command::Register {
            node: 1,
            pids: vec![3],
        }));
        refused(s.apply(&Command::Register {
            node: 9,
            pids: vec![b1],
        }));
        let too_many: Vec<u64> = (0..=PIDS_PER_COMMAND_MAX as u64).map(|i| b1 + i).collect();
        refused(s.apply(&Command::Register {
            node: 1,
            pids: too_many,
        }));
        assert_eq!(
            s.apply(&Command::Register {
                node: 1,
                pids: vec![b1, b1 + 1]
            }),
            CommandResult::Ok
        );
        assert_eq!(s.directory[&b1], DirEntry { node: 1, epoch: 0 });
        // Registering again on the same node is a no-op (keeps epochs).
        assert_eq!(
            s.apply(&Command::Register {
                node: 1,
                pids: vec![b1]
            }),
            CommandResult::Ok
        );
    }

    #[test]
    fn unregister_only_removes_entries_still_owned_by_that_node() {
        let (mut s, first) = with_pids(&[0, 1, 2]);
        // pid first+1 migrates to node 2.
        assert_eq!(
            s.apply(&Command::MovePid {
                pid: first + 1,
                from: 1,
                to: 2,
                epoch: 0
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "moved".to_string(),
                pid: first + 1
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "stays".to_string(),
                pid: first
            }),
            CommandResult::Ok
        );
        // Node 1 (late) unregisters all three: the moved one survives.
        assert_eq!(
            s.apply(&Command::Unregister {
                node: 1,
                pids: vec![first, first + 1, first + 2, 12345]
            }),
            CommandResult::Ok
        );
        assert!(!s.directory.contains_key(&first));
        assert!(!s.directory.contains_key(&(first + 2)));
        assert_eq!(s.directory[&(first + 1)], DirEntry { node: 2, epoch: 1 });
        assert_eq!(s.process_names.get("moved"), Some(&(first + 1)));
        assert!(!s.process_names.contains_key("stays"));
        // A migrated pid cannot be re-registered by its block owner.
        let why = refused(s.apply(&Command::Register {
            node: 1,
            pids: vec![first + 1],
        }));
        assert!(why.contains("already registered on node 2"), "{why}");
    }

    #[test]
    fn move_pid_is_compare_and_set() {
        let (mut s, first) = with_pids(&[0]);
        let pid = first;
        // Wrong epoch, wrong source, unknown pid: refused, nothing changes.
        let why = refused(s.apply(&Command::MovePid {
            pid,
            from: 1,
            to: 2,
            epoch: 7,
        }));
        assert!(why.contains("node 1 at epoch 0"), "{why}");
        refused(s.apply(&Command::MovePid {
            pid,
            from: 2,
            to: 1,
            epoch: 0,
        }));
        refused(s.apply(&Command::MovePid {
            pid: 999,
            from: 1,
            to: 2,
            epoch: 0,
        }));
        assert_eq!(s.directory[&pid], DirEntry { node: 1, epoch: 0 });
        // The right expectation wins once; a second mover with the same view loses.
        assert_eq!(
            s.apply(&Command::MovePid {
                pid,
                from: 1,
                to: 2,
                epoch: 0
            }),
            CommandResult::Ok
        );
        assert_eq!(s.directory[&pid], DirEntry { node: 2, epoch: 1 });
        refused(s.apply(&Command::MovePid {
            pid,
            from: 1,
            to: 2,
            epoch: 0,
        }));
        // Back again with the new epoch.
        assert_eq!(
            s.apply(&Command::MovePid {
                pid,
                from: 2,
                to: 1,
                epoch: 1
            }),
            CommandResult::Ok
        );
        assert_eq!(s.directory[&pid], DirEntry { node: 1, epoch: 2 });
        // Not onto a cordoned or unknown node.
        s.apply(&Command::SetCordon {
            id: 2,
            cordoned: true,
        });
        let why = refused(s.apply(&Command::MovePid {
            pid,
            from: 1,
            to: 2,
            epoch: 2,
        }));
        assert!(why.contains("cordoned"), "{why}");
        refused(s.apply(&Command::MovePid {
            pid,
            from: 1,
            to: 50,
            epoch: 2,
        }));
        assert_eq!(s.directory[&pid], DirEntry { node: 1, epoch: 2 });
    }

    #[test]
    fn module_names_and_holders() {
        let mut s = two_nodes();
        assert_eq!(
            s.apply(&Command::SetModuleName {
                name: "web".to_string(),
                hash: HASH_A.to_string()
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetModuleName {
                name: "web".to_string(),
                hash: HASH_B.to_string()
            }),
            CommandResult::Ok
        );
        assert_eq!(s.module_names["web"], HASH_B);
        refused(s.apply(&Command::SetModuleName {
            name: "x".to_string(),
            hash: "abc".to_string(),
        }));
        refused(s.apply(&Command::SetModuleName {
            name: "x".to_string(),
            hash: HASH_A.to_uppercase(),
        }));
        refused(s.apply(&Command::SetModuleName {
            name: String::new(),
            hash: HASH_A.to_string(),
        }));
        assert_eq!(
            s.apply(&Command::RemoveModuleName {
                name: "web".to_string()
            }),
            CommandResult::Ok
        );
        refused(s.apply(&Command::RemoveModuleName {
            name: "web".to_string(),
        }));

        assert_eq!(
            s.apply(&Command::ModuleHeld {
                hash: HASH_A.to_string(),
                node: 1,
                size_bytes: 100
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::ModuleHeld {
                hash: HASH_A.to_string(),
                node: 2,
                size_bytes: 100
            }),
            CommandResult::Ok
        );
        assert_eq!(s.modules[HASH_A].holders, BTreeSet::from([1, 2]));
        let why = refused(s.apply(&Command::ModuleHeld {
            hash: HASH_A.to_string(),
            node: 1,
            size_bytes: 101,
        }));
        assert!(why.contains("100 bytes"), "{why}");
        refused(s.apply(&Command::ModuleHeld {
            hash: HASH_B.to_string(),
            node: 9,
            size_bytes: 1,
        }));
        assert!(!s.modules.contains_key(HASH_B));
    }

    #[test]
    fn process_names_point_at_live_pids() {
        let (mut s, first) = with_pids(&[0, 1]);
        refused(s.apply(&Command::SetProcessName {
            name: "a".to_string(),
            pid: 5,
        }));
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "a".to_string(),
                pid: first
            }),
            CommandResult::Ok
        );
        assert_eq!(
            s.apply(&Command::SetProcessName {
                name: "a".to_string(),
                pid: first
            }),
            CommandResult::Ok
        );
        let why = refused(s.apply(&Command::SetProcessName {
            name: "a".to_string(),
            pid: first + 1,
        }));
        assert!(why.contains("already names pid"), "{why}");
        assert_eq!(
            s.apply(&Command::RemoveProcessName {
                name: "a".to_string()
            }),
            CommandResult::Ok
        );
        refused(s.apply(&Command::RemoveProcessName {
            name: "a".to_string(),
        }));
    }

    #[test]
    fn tokens_redeem_once() {
        let mut s = two_nodes();
        let token = JoinToken::generate().expect("os rng");
        let record = TokenRecord::new(&token, Role::Node, 1000, Duration::from_secs(60));
        assert_eq!(
            apply_signed(
                &mut s,
                Command::CreateToken {
                    record: record.clone()
                }
            ),
            CommandResult::Ok
        );
        let why = refused(apply_signed(&mut s, Command::CreateToken { record }));
        assert!(why.contains("already exists"), "{why}");
        let redeem = |now_ms| Command::RedeemToken {
            token: token.to_string(),
            now_ms,
        };
        assert_eq!(s.apply(&redeem(2000)), CommandResult::Role(Role::Node));
        let why = refused(s.apply(&redeem(3000)));
        assert!(why.contains("already used"), "{why}");
        let why = refused(s.apply(&Command::RedeemToken {
            token: "nope".to_string(),
            now_ms: 1,
        }));
        assert!(why.contains("malformed"), "{why}");

        let late = JoinToken::generate().expect("os rng");
        let record = TokenRecord::new(&late, Role::Admin, 1000, Duration::from_secs(1));
        apply_signed(&mut s, Command::CreateToken { record });
        let why = refused(s.apply(&Command::RedeemToken {
            token: late.to_string(),
            now_ms: 5000,
        }));
        assert!(why.contains("expired"), "{why}");
    }

    #[test]
    fn revoke_serial_and_identity() {
        let mut s = two_nodes();
        let serial = Serial::from_bytes(&[0xab, 0xcd]);
        let cmd = Command::Revoke {
            target: RevokeTarget::Serial {
                serial: serial.clone(),
                cert_not_after_ms: Some(9000),
            },
            reason: "leaked".to_string(),
            now_ms: 100,
        };
        assert_eq!(apply_signed(&mut s, cmd.clone()), CommandResult::Ok);
        assert_eq!(
            apply_signed(&mut s, cmd),
            CommandResult::Ok,
            "repeat is fine"
        );
        assert_eq!(
            s.revocations.get_serial(&serial).map(|r| r.reason.as_str()),
            Some("leaked")
        );
        assert_eq!(
            apply_signed(
                &mut s,
                Command::Revoke {
                    target: RevokeTarget::Identity {
                        role: Role::Client,
                        id: "alice".to_string()
                    },
                    reason: "left".to_string(),
                    now_ms: 200,
                }
            ),
            CommandResult::Generation(1)
        );
        assert_eq!(s.revocations.len(), 2);
        assert_eq!(s.revocations.generation(Role::Client, "alice"), 1);
        assert!(matches!(
            apply_signed(
                &mut s,
                Command::Revoke {
                    target: RevokeTarget::Identity {
                        role: Role::Client,
                        id: String::new(),
                    },
                    reason: "?".to_string(),
                    now_ms: 300,
                }
            ),
            CommandResult::Refused(Refusal::BadIdentity { .. })
        ));
    }

    /// A serial revocation is bounded like an identity's: its reason is cut
    /// to [`REASON_CHARS_MAX`], and into a full list it is refused (it used
    /// to answer `Ok` and keep nothing, so an operator believed a
    /// certificate revoked that still worked).
    #[test]
    fn a_serial_revocation_is_bounded_and_refused_when_the_list_is_full() {
        let mut s = two_nodes();
        let serial = |n: u32| Serial::from_bytes(&n.to_be_bytes());
        let revoke = |serial: Serial, reason: String| Command::Revoke {
            target: RevokeTarget::Serial {
                serial,
                cert_not_after_ms: None,
            },
            reason,
            now_ms: 100,
        };
        assert_eq!(
            apply_signed(&mut s, revoke(serial(0), "x".repeat(100_000))),
            CommandResult::Ok
        );
        let kept = s.revocations.get_serial(&serial(0)).map(|r| r.reason.len());
        assert_eq!(kept, Some(REASON_CHARS_MAX));
        for i in 1..shoal_pki::REVOCATIONS_MAX as u32 {
            s.revocations
                .revoke_serial(serial(i), 1, "x", None)
                .expect("room until the bound");
        }
        let full = apply_signed(&mut s, revoke(serial(u32::MAX), "late".to_string()));
        assert!(
            matches!(full, CommandResult::Refused(Refusal::RevocationsFull(_))),
            "{full:?}"
        );
        assert!(s.revocations.get_serial(&serial(u32::MAX)).is_none());
        // Repeating one already listed is still fine.
        assert_eq!(
            apply_signed(&mut s, revoke(serial(0), "again".to_string())),
            CommandResult::Ok
        );
    }

    /// `SetCaNode` moves the CA role to a live member only.
    #[test]
    fn the_ca_node_moves_only_to_a_live_member() {
        let mut s = two_nodes();
        assert_eq!(s.ca_node, Some(1));
        assert!(matches!(
            apply_signed(&mut s, Command::SetCaNode { node: 9 }),
            CommandResult::Refused(Refusal::NoNode { id: 9 })
        ));
        assert_eq!(
            apply_signed(&mut s, Command::SetCaNode { node: 2 }),
            CommandResult::Ok
        );
        assert_eq!(s.ca_node, Some(2));
        // A node may not make itself the CA node: only an admin may.
        assert!(matches!(
            s.may_forward(2, None, &Command::SetCaNode { node: 2 }),
            Err(crate::state::writers::ForwardRefusal::Forbidden(_))
        ));
        let removed = apply_signed(&mut s, Command::RemoveNode { id: 1, now_ms: 10 });
        assert!(!matches!(removed, CommandResult::Refused(_)), "{removed:?}");
        assert!(matches!(
            apply_signed(&mut s, Command::SetCaNode { node: 1 }),
            CommandResult::Refused(Refusal::NodeRemoved { id: 1, .. })
        ));
        assert_eq!(s.ca_node, Some(2));
    }

    #[test]
    fn apply_is_deterministic_and_state_round_trips_through_json() {
        let (mut a, first) = with_pids(&[0, 1, 2]);
        a.ca_cert_pem = test_support::ca_pem().to_string();
        let remove = test_support::signed_by(
            &mut a.clone(),
            test_support::admin(),
            Command::RemoveNode { id: 2, now_ms: 50 },
        );
        let mut b = a.clone();
        let cmds = [
            Command::MovePid {
                pid: first,
                from: 1,
                to: 2,
                epoch: 0,
            },
            Command::SetProcessName {
                name: "p".to_string(),
                pid: first + 2,
            },
            Command::Heartbeat {
                id: 1,
                load: NodeLoad::default(),
                now_ms: 4,
            },
            remove,
        ];
        let ra: Vec<_> = cmds.iter().map(|c| a.apply(c)).collect();
        let rb: Vec<_> = cmds.iter().map(|c| b.apply(c)).collect();
        assert_eq!(ra, rb);
        assert_eq!(ra[3], CommandResult::Ok, "the signed removal applies");
        assert_eq!(a, b);
        let json = serde_json::to_vec(&a).expect("serialize");
        let back: ClusterState = serde_json::from_slice(&json).expect("deserialize");
        assert_eq!(back, a);
    }
}
