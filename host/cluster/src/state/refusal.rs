//! Why the state machine refused a command: one typed value per cause, so
//! callers (the control API, the join path, migration) choose their answer
//! by variant and send the value itself on the wire, never a sentence to be
//! parsed. A refusal changes nothing (see [`super::ClusterState::apply`]).

use super::NodeId;
use crate::state::kv::KvRefusal;
use crate::state::locks::LockRefusal;
use crate::state::names::NameRefusal;
use serde::{Deserialize, Serialize};
use shoal_pki::TokenError;

/// What kind of refusal: how an API answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The command itself is malformed (a bad name, hash, or too many items).
    Invalid,
    /// It names something that does not exist (or no longer does).
    NotFound,
    /// The state changed under it, or it collides with what exists.
    Conflict,
    /// It presents a credential that does not hold (a join token).
    Forbidden,
    /// A space the cluster allocates from is used up.
    Exhausted,
}

/// Which name a [`Refusal::BadName`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameKind {
    /// A node's name.
    Node,
    /// A module name.
    Module,
    /// A process name (`shoal deploy --name`).
    Process,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Node => "node",
            NameKind::Module => "module",
            NameKind::Process => "process",
        })
    }
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// A write that needs an admin's signed request came without a valid
    /// one ([`super::proofs`]).
    #[error(transparent)]
    Proof(shoal_pki::ProofError),
    /// `Bootstrap` on a cluster that has nodes.
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// A command that needs a cluster, before `Bootstrap`.
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    /// Node id 0, or one that leaves no room for more.
    #[error("node id {id} is not a valid first node id")]
    BadNodeId {
        /// The id.
        id: NodeId,
    },
    /// Every node id was handed out.
    #[error("node ids exhausted")]
    NodeIdsExhausted,
    /// Every pid block was handed out.
    #[error("pid space exhausted")]
    PidSpaceExhausted,
    /// A name is empty or too long.
    #[error("{kind} name is {len_bytes} bytes long (1 to {max_bytes})")]
    BadName {
        /// What the name names.
        kind: NameKind,
        /// Its length.
        len_bytes: usize,
        /// The bound.
        max_bytes: usize,
    },
    /// A module hash that is not a sha256 in lowercase hex.
    #[error("module hash {hash:?} is not 64 lowercase hex digits (sha256)")]
    BadHash {
        /// The hash as given.
        hash: String,
    },
    /// More pids in one command than allowed.
    #[error("{count} pids in one command (at most {max})")]
    TooManyPids {
        /// How many were given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// No node has this id.
    #[error("no node with id {id}")]
    NoNode {
        /// The id.
        id: NodeId,
    },
    /// The node was removed from the cluster.
    #[error("node {id} ({name}) was removed")]
    NodeRemoved {
        /// Its id.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// A joining node asked for the name of a live member (a name belongs
    /// to one live member: remove that node first).
    #[error("node name {name:?} belongs to live member {id}; remove that node first")]
    NodeNameTaken {
        /// The name.
        name: String,
        /// The member holding it.
        id: NodeId,
    },
    /// The node is cordoned and takes no processes.
    #[error("node {id} is cordoned and takes no processes")]
    Cordoned {
        /// Its id.
        id: NodeId,
    },
    /// Registering a pid another node holds.
    #[error("pid {pid} is already registered on node {node}")]
    PidElsewhere {
        /// The pid.
        pid: u64,
        /// Where it is registered.
        node: NodeId,
    },
    /// Registering a new pid outside the node's own blocks.
    #[error("pid {pid} is not in a pid block owned by node {node}")]
    PidNotInBlock {
        /// The pid.
        pid: u64,
        /// The node that asked.
        node: NodeId,
    },
    /// The pid is not in the directory.
    #[error("pid {pid} is not a live process")]
    PidNotLive {
        /// The pid.
        pid: u64,
    },
    /// A command about a pid on `asked`, which runs on `node`.
    #[error("pid {pid} runs on node {node}, not {asked}")]
    PidNotOn {
        /// The pid.
        pid: u64,
        /// Where it runs.
        node: NodeId,
        /// The node the command named.
        asked: NodeId,
    },
    /// A move whose expected place is stale.
    #[error(
        "pid {pid} moved meanwhile: it is on node {node} at epoch {epoch}, not node {from} at epoch {expected_epoch}"
    )]
    MovedMeanwhile {
        /// The pid.
        pid: u64,
        /// Where it is.
        node: NodeId,
        /// Its epoch there.
        epoch: u64,
        /// Where the move expected it.
        from: NodeId,
        /// The epoch the move expected.
        expected_epoch: u64,
    },
    /// An epoch (a pid's, or a node's liveness) reached `u64::MAX`.
    #[error("epoch overflow")]
    EpochOverflow,
    /// A module name that names nothing.
    #[error("no module named {name:?}")]
    NoModule {
        /// The name.
        name: String,
    },
    /// A module recorded with another size.
    #[error("module {hash} is {size_bytes} bytes, not {claimed_bytes}")]
    ModuleSize {
        /// The module.
        hash: String,
        /// Its recorded size.
        size_bytes: u64,
        /// The size claimed.
        claimed_bytes: u64,
    },
    /// A process name that names nothing.
    #[error("no process named {name:?}")]
    NoProcessName {
        /// The name.
        name: String,
    },
    /// A process name held by another pid.
    #[error("name {name:?} already names pid {pid}")]
    ProcessNameTaken {
        /// The name.
        name: String,
        /// Its holder.
        pid: u64,
    },
    /// A grant record over its bounds.
    #[error(
        "a grant holds at most {dirs_max} directories and {env_max} variables, each at most {text_bytes_max} bytes"
    )]
    GrantTooLarge {
        /// Most directories.
        dirs_max: usize,
        /// Most variables.
        env_max: usize,
        /// Longest path or variable.
        text_bytes_max: usize,
    },
    /// A liveness verdict whose epoch is stale.
    #[error("node {node}'s liveness changed meanwhile: it is at epoch {epoch}, not {expected}")]
    LivenessMoved {
        /// The node.
        node: NodeId,
        /// Its liveness epoch.
        epoch: u64,
        /// The epoch the verdict expected.
        expected: u64,
    },
    /// A liveness verdict the node already has.
    #[error("node {node} is already {} at epoch {epoch}", if *.dead { "dead" } else { "alive" })]
    LivenessSame {
        /// The node.
        node: NodeId,
        /// Whether it is dead.
        dead: bool,
        /// Its liveness epoch.
        epoch: u64,
    },
    /// An owner id longer than a name may be.
    #[error("an owner id is over {max_bytes} bytes")]
    OwnerIdTooLong {
        /// The bound.
        max_bytes: usize,
    },
    /// A `Batch` of more writes than [`super::BATCH_COMMANDS_MAX`].
    #[error("a batch of {count} writes (at most {max})")]
    BatchTooLarge {
        /// Writes in the batch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A `Once` envelope inside another.
    #[error("a write envelope inside a write envelope")]
    NestedOnce,
    /// A restart policy outside its bounds ([`super::failover`]).
    #[error(
        "a checkpoint interval is {min} to {max} ms and replicas 1 to {replicas_max} (got {checkpoint_every_ms} ms, {replicas})",
        min = super::failover::CHECKPOINT_EVERY_MS_MIN,
        max = super::failover::CHECKPOINT_EVERY_MS_MAX,
        replicas_max = super::failover::REPLICAS_MAX
    )]
    BadRestart {
        /// The interval asked, ms.
        checkpoint_every_ms: u64,
        /// The replicas asked.
        replicas: u8,
    },
    /// Process arguments over their bounds.
    #[error("process arguments are at most {args_max} and {bytes_max} bytes in all", args_max = super::failover::ARGS_MAX, bytes_max = super::failover::ARGS_BYTES_MAX)]
    ArgsTooLarge,
    /// A checkpoint or restart of a process with no restart policy.
    #[error("process {pid} has no restart policy")]
    NotRecoverable {
        /// The process.
        pid: u64,
    },
    /// A checkpoint record that is not newer than the last, or names
    /// holders that are not live members (the taker first).
    #[error("a stale or malformed checkpoint of process {pid}")]
    BadCheckpoint {
        /// The process.
        pid: u64,
    },
    /// A process-name or group command refused ([`crate::names`]).
    #[error(transparent)]
    Name(#[from] NameRefusal),
    /// A key-value write refused ([`super::kv`]).
    #[error(transparent)]
    Kv(#[from] KvRefusal),
    /// A guest's lock command, or a fenced write, was refused.
    #[error(transparent)]
    Lock(#[from] LockRefusal),
    /// A shared-volume command refused ([`super::volumes`]).
    #[error(transparent)]
    Volume(#[from] super::volumes::VolumeRefusal),
    /// A join token refused, or a token record that collides.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The revocation list is at its bound
    /// ([`shoal_pki::REVOCATIONS_MAX`]).
    #[error(transparent)]
    RevocationsFull(#[from] shoal_pki::RevocationsFull),
    /// A revocation naming no valid identity (an empty or malformed id).
    #[error("cannot revoke {role}/{id:?}: not a valid certificate id")]
    BadIdentity {
        /// The role.
        role: shoal_pki::Role,
        /// The id given (at most 80 characters of it).
        id: String,
    },
}

impl Refusal {
    /// How an API should answer it.
    pub fn kind(&self) -> RefusalKind {
        use Refusal::*;
        match self {
            AlreadyBootstrapped
            | NotBootstrapped
            | Cordoned { .. }
            | PidElsewhere { .. }
            | PidNotOn { .. }
            | MovedMeanwhile { .. }
            | ModuleSize { .. }
            | ProcessNameTaken { .. }
            | NodeNameTaken { .. }
            | LivenessMoved { .. }
            | LivenessSame { .. } => RefusalKind::Conflict,
            BadNodeId { .. }
            | BadName { .. }
            | BadHash { .. }
            | TooManyPids { .. }
            | PidNotInBlock { .. }
            | NestedOnce
            | BatchTooLarge { .. }
            | OwnerIdTooLong { .. }
            | BadRestart { .. }
            | ArgsTooLarge
            | BadCheckpoint { .. }
            | BadIdentity { .. }
            | GrantTooLarge { .. } => RefusalKind::Invalid,
            NoNode { .. }
            | NodeRemoved { .. }
            | PidNotLive { .. }
            | NoModule { .. }
            | NotRecoverable { .. }
            | NoProcessName { .. } => RefusalKind::NotFound,
            NodeIdsExhausted | PidSpaceExhausted | EpochOverflow | RevocationsFull(_) => {
                RefusalKind::Exhausted
            }
            Name(n) => match n {
                NameRefusal::Taken { .. } | NameRefusal::GroupFull { .. } => RefusalKind::Conflict,
                NameRefusal::Quota { .. } => RefusalKind::Exhausted,
                NameRefusal::BadName { .. } => RefusalKind::Invalid,
                NameRefusal::NotLive(_)
                | NameRefusal::NotMember { .. }
                | NameRefusal::NotHeld { .. } => RefusalKind::NotFound,
            },
            Kv(k) => match k {
                KvRefusal::VersionMismatch { .. } => RefusalKind::Conflict,
                KvRefusal::Quota { .. } => RefusalKind::Exhausted,
                KvRefusal::BadKey { .. }
                | KvRefusal::BadBatch { .. }
                | KvRefusal::ValueTooLarge { .. }
                | KvRefusal::BadBucket { .. }
                | KvRefusal::NotACounter
                | KvRefusal::Overflow => RefusalKind::Invalid,
                KvRefusal::NotLive(_) => RefusalKind::NotFound,
                KvRefusal::NotTheOwner { .. } => RefusalKind::Forbidden,
            },
            Lock(l) => match l {
                LockRefusal::Busy { .. }
                | LockRefusal::Deadlock { .. }
                | LockRefusal::Fenced { .. }
                | LockRefusal::AlreadyWaiting { .. } => RefusalKind::Conflict,
                LockRefusal::Lost { .. } => RefusalKind::NotFound,
                LockRefusal::BadName { .. } => RefusalKind::Invalid,
                LockRefusal::TooManyHeld { .. }
                | LockRefusal::TooManyWaiters { .. }
                | LockRefusal::Quota { .. } => RefusalKind::Exhausted,
            },
            Volume(v) => {
                use super::volumes::VolumeRefusal as V;
                match v {
                    V::VolumeExists { .. } | V::Exists { .. } | V::NotEmpty { .. } => {
                        RefusalKind::Conflict
                    }
                    V::NoVolume { .. } | V::NotFound { .. } => RefusalKind::NotFound,
                    V::TooManyVolumes { .. } | V::Quota { .. } => RefusalKind::Exhausted,
                    V::NotForProcesses => RefusalKind::Forbidden,
                    V::ReservedName => RefusalKind::Invalid,
                    V::BadName { .. }
                    | V::BadPath { .. }
                    | V::BadSettings { .. }
                    | V::NotADirectory { .. }
                    | V::IsADirectory { .. }
                    | V::IntoItself { .. }
                    | V::RenameTooLarge { .. }
                    | V::BadContent { .. } => RefusalKind::Invalid,
                }
            }
            Token(TokenError::DuplicateId(_)) => RefusalKind::Conflict,
            Token(_) | Proof(_) => RefusalKind::Forbidden,
        }
    }

    /// The HTTP status an API answers it with.
    pub fn http_status(&self) -> u16 {
        match self.kind() {
            RefusalKind::Invalid => 400,
            RefusalKind::Forbidden => 403,
            RefusalKind::NotFound => 404,
            RefusalKind::Conflict => 409,
            RefusalKind::Exhausted => 507,
        }
    }
}

/// `Ok` when `name` is a usable `kind` name (1 to `max_bytes` bytes).
pub(super) fn valid_name(kind: NameKind, name: &str, max_bytes: usize) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > max_bytes {
        return Err(Refusal::BadName {
            kind,
            len_bytes: name.len(),
            max_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_crosses_the_wire_as_itself() {
        let all = [
            Refusal::MovedMeanwhile {
                pid: 7,
                node: 2,
                epoch: 3,
                from: 1,
                expected_epoch: 2,
            },
            Refusal::Name(NameRefusal::Taken {
                name: "db".into(),
                pid: 9,
            }),
            Refusal::Token(TokenError::AlreadyUsed {
                id: "abcdef".into(),
                used_unix_ms: 5,
            }),
            Refusal::LivenessSame {
                node: 3,
                dead: true,
                epoch: 1,
            },
        ];
        for r in all {
            let json = serde_json::to_string(&r).unwrap();
            let back: Refusal = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn statuses_follow_the_kind() {
        assert_eq!(Refusal::NoModule { name: "x".into() }.http_status(), 404);
        assert_eq!(Refusal::Token(TokenError::Unknown).http_status(), 403);
        assert_eq!(Refusal::Cordoned { id: 2 }.http_status(), 409);
        assert_eq!(
            Refusal::LivenessSame {
                node: 3,
                dead: false,
                epoch: 2
            }
            .to_string(),
            "node 3 is already alive at epoch 2"
        );
    }
}
