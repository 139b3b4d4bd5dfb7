//! Cluster metadata, replicated with Raft.
//!
//! Every node of a Shoal cluster holds the same [`ClusterState`]: which
//! nodes exist, where each live process runs, who owns which pid block,
//! module and process names, join tokens and revocations. It changes only by
//! [`Command`]s committed to the Raft log and applied, in log order, by the
//! pure function [`ClusterState::apply`]. [`Raft`] is the node's Raft member
//! (openraft inside; no other part of Shoal names an openraft type) with a
//! durable store (a write-ahead log and redb); [`RaftTransport`] is how members reach each other.
//!
//! # The Raft state machine
//!
//! `apply` is deterministic: it reads no clock (times arrive in commands as
//! `now_ms`, Unix milliseconds chosen by the proposer) and no randomness,
//! iterates only ordered maps, and never panics. A command that would break
//! an invariant changes nothing and returns
//! [`CommandResult::Refused`] with a typed [`Refusal`](state::Refusal) (sent
//! as such to whoever asked); otherwise it returns `Ok`, or the
//! value listed below.
//!
//! ## Invariants
//!
//! 1. Node ids start at the bootstrap node's id (1 by convention), grow by
//!    one per new node (`next_node_id`), and are never reused. At most one
//!    non-removed node carries a given name.
//! 2. A `Removed` node stays in `nodes` forever (its id stays taken); it has
//!    no directory entries, holds no modules, and its identity
//!    `node/<name>` is in `revocations`.
//! 3. Pid blocks are `[first, first + PID_BLOCK_SIZE)`, with `first` a
//!    multiple of [`PID_BLOCK_SIZE`] starting at `PID_BLOCK_SIZE` (pids
//!    below are never issued); `next_pid_block` only grows; blocks are never
//!    freed or reassigned, so a pid is never issued twice.
//! 4. Every directory entry points at a non-removed node. A pid enters the
//!    directory only through `Register` by the owner of its block, or
//!    through `SpawnEffect` by the owner of its block for the node it is
//!    to run on; after that it moves only by `MovePid`, which bumps its
//!    epoch.
//! 5. Every process name points at a pid in the directory (names of a pid
//!    are dropped when its entry is).
//! 6. Module hashes are 64 lowercase hex digits; a module's size never
//!    changes; holders are non-removed nodes.
//! 7. Token records hold only the hash of the secret; a token is redeemed
//!    at most once.
//! 8. An identity's generation in `revocations` only grows; its entry is
//!    never dropped.
//!
//! ## Commands
//!
//! - `Signed { proof, cmd }`: applies `cmd` (`CreateToken`, `Revoke`,
//!   `RemoveNode` or `SetCaNode`, which are refused without it) only if
//!   `proof` is an unrevoked admin's signature over exactly what `cmd`
//!   does, made with a certificate of the CA recorded at bootstrap, with a
//!   nonce never applied before and a time within the window of the newest
//!   applied proof (`state::proofs`). Refused otherwise, with the reason.
//! - `Bootstrap { ca_node, ca_cert_pem, name, addr, labels, now_ms }` →
//!   `NodeId(ca_node)`: creates the first node (id `ca_node`, `Active`),
//!   marks it as the CA holder, records the CA certificate, sets
//!   `next_node_id = ca_node + 1`. Refused if any node exists,
//!   if `ca_node` is 0, or if the name is empty / over 255 bytes.
//! - `AddNode { name, addr, labels, now_ms }` → `NodeId(id)`: a new `Active`
//!   node with the next id. Refused when a non-removed node has that name
//!   (a name belongs to one live member; a joiner may not take it, nor its
//!   address). A removed node's name may join again, under a new id.
//!   Refused before bootstrap or for a bad name.
//! - `RemoveNode { id, now_ms }`: status `Removed`; revokes identity
//!   `node/<name>` (moves it to a new generation: every certificate it was
//!   issued, and every renewal of one, is revoked); drops its directory entries (and the
//!   process names pointing at them) and its module holdings; clears
//!   `ca_node` if it was the CA holder. Its pid blocks stay allocated. Refused
//!   for unknown or already removed ids, or when the revocation list is
//!   full.
//! - `SetCaNode { node }` (an admin's write, `shoal ca takeover`): `node`
//!   becomes `ca_node`, the member that admits joiners and renews
//!   certificates. Refused for unknown or removed nodes.
//! - `SetCordon { id, cordoned }`: `Cordoned` / `Active`. Refused for unknown
//!   or removed nodes.
//! - `Heartbeat { id, load, now_ms }`: stores `load`;
//!   `last_heartbeat_ms = max(last, now_ms)`. Refused for unknown or removed
//!   nodes. (Load only: whether a node is up is the failure detector's
//!   verdict, never the age of its heartbeat.)
//! - `AllocPidBlock { node }` → `PidBlock(first)`: the block at
//!   `next_pid_block`, owned by `node`. Refused for unknown or removed nodes
//!   or when the pid space is exhausted.
//! - `Register { node, pids }`: `directory[pid] = { node, epoch 0 }` for each
//!   pid. All or nothing: refused if `node` is unknown/removed, if a new pid
//!   is not in a block owned by `node`, if a pid is already registered on
//!   another node, or if there are more than [`PIDS_PER_COMMAND_MAX`] pids.
//!   Pids already registered on `node` are left as they are.
//! - `Unregister { node, pids }`: removes the entries that still point at
//!   `node` (a process that moved away meanwhile keeps its entry), and the
//!   process names of removed pids. Never refused except for too many pids.
//! - `MovePid { pid, from, to, epoch }`: compare-and-set. Only if the entry
//!   is exactly `{ from, epoch }` and `to` is an `Active` node does it become
//!   `{ to, epoch + 1 }`; otherwise refused with the current entry.
//! - `SetModuleName { name, hash }`: `module_names[name] = hash` (overwrites).
//!   Refused for a bad name or hash.
//! - `RemoveModuleName { name }`: refused if there is no such name.
//! - `ModuleHeld { hash, node, size_bytes }`: adds `node` to the module's
//!   holders (creating the record). Refused for a bad hash, an unknown or
//!   removed node, or a size differing from the recorded one.
//! - `SetProcessName { name, pid }`: refused if the pid is not in the
//!   directory or the name already names another pid; re-setting the same
//!   pair is `Ok`.
//! - `RemoveProcessName { name }`: refused if there is no such name.
//! - `RegisterName { owner, name, pid }`: gives `name` to `pid` in `owner`'s
//!   namespace ([`names`]); refused if another pid of that owner holds it,
//!   the owner is at its quota, the name is bad or the pid is not live.
//!   Dropped when the pid leaves the directory; kept when it moves.
//! - `UnregisterName { owner, name, pid }`: refused unless `pid` holds it.
//! - `JoinGroup { owner, name, pid }` / `LeaveGroup { .. }`: group
//!   membership in `owner`'s namespace; a group counts once against the
//!   owner's quota and has at most `GROUP_MEMBERS_MAX` members; members
//!   are dropped with their directory entry.
//! - `CreateToken { record }`: adds the token record; refused on a duplicate
//!   token id.
//! - `RedeemToken { token, now_ms }` → `Role(role)`: marks the token used.
//!   Refused (with the [`TokenError`](shoal_pki::TokenError)) when it is
//!   malformed, unknown, has the wrong secret, is expired or already used.
//! - `SetGrants { node, pid, grants }`: records what a process started on
//!   `node` was granted (directories, env, memory cap) and by whom; a
//!   migration target applies this record. Refused unless `pid` is live on
//!   `node` (or a fresh pid of its block) and the record is within bounds.
//!   Dropped when the pid leaves the directory.
//! - `NodeDead { node, epoch, silent_ms, by, now_ms }` /
//!   `NodeAlive { node, epoch, by, now_ms }`: the failure detector's
//!   verdicts, written only by the Raft leader ([`detector`] states the
//!   rule). A compare-and-set on the node's liveness epoch: applied only if
//!   `epoch` is the node's current one and the verdict changes something;
//!   bumps the epoch. Refused for unknown or removed nodes. Read with
//!   [`ClusterState::node_dead`].
//! - `Revoke { target, reason, now_ms }`: revokes a serial (→ `Ok`; a
//!   repeat keeps the first entry; the reason is cut to
//!   [`REASON_CHARS_MAX`](state::REASON_CHARS_MAX)) or an identity (role + id) in
//!   `revocations` → `Generation(g)`: the identity moves to generation `g`,
//!   revoking all its certificates issued so far (and their renewals); it
//!   is what the identity's next certificates are issued at. Refused for an
//!   invalid id or, for a new serial or identity, a full list
//!   ([`shoal_pki::REVOCATIONS_MAX`]).
//! - `SetOwners { node, owners }`: records who created each pid started on
//!   `node` (live there, or a fresh pid of its block); the first record
//!   wins; kept across moves, dropped with the directory entry. A pid
//!   without one belongs to `Owner::cluster()` (`state::owners`).
//! - `SpawnEffect { parent, effect, child, node }` → `Child(child)`: a
//!   spawn by a process under output commit (`state::effects`). Registers
//!   `child` on `node` before it starts; refused unless `parent` is live,
//!   `child` is not in the directory and lies in a block of the node
//!   `parent` runs on, and `node` is a non-removed member. A repeat of the
//!   same effect changes nothing and answers as the first did (or
//!   `ChildFailed(errno)` after `SpawnEffectFailed`).
//! - `NameModule { name, hash, by }` / `UnnameModule { name, by }`: point or
//!   delete a module name on behalf of `by`, authorized at apply time by
//!   `shoal_pki::may_act` against the name's owner (its first namer) →
//!   `Forbidden` (typed) when refused. `SetModuleName` never overwrites an
//!   owned name.
//!
//! # The Raft layer
//!
//! [`Raft::write`] proposes a command (forwarding it to the leader when
//! needed, retrying across leader changes) and returns its result within
//! `write_timeout_ms`, or an error naming the problem, such as "write
//! refused: no quorum (this node sees 1 of 3 voters)". Members are added by
//! joint consensus ([`Raft::add_member`]: learner, catch up, voter). The log
//! is snapshotted every `snapshot_after_entries` entries and purged behind
//! the snapshot; lagging or new members catch up by snapshot install.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod detector;
pub mod raft;
pub mod sched;
pub mod state;

/// The name book lives with the state it is part of; this keeps
/// `shoal_cluster::names` as its public path.
pub use state::names;

#[cfg(test)]
mod tests;

pub use detector::{LivenessChange, DEAD_AFTER_MS_DEFAULT};
pub use raft::{
    ClusterError, DroppedChild, MoveApplied, Raft, RaftConfig, RaftRole, RaftStatus, RaftTransport,
    RaftView, RpcKind, StoreError, TransportError, WaitTimedOut,
};
pub use state::{
    ClusterState, Command, CommandResult, DirEntry, Forbidden, GrantedDir, GrantedVolume, Granter,
    MemberInfo, ModuleRecord, NodeId, NodeLiveness, NodeLoad, NodeRecord, NodeStatus, Owner,
    ProcessGrants, Refusal, RefusalKind, RevokeTarget, NAME_BYTES_MAX, PIDS_PER_COMMAND_MAX,
    PID_BLOCK_SIZE,
};
