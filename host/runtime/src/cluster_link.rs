//! How a node reaches the rest of its cluster: the [`ClusterLink`] the
//! cluster layer attaches (a node alone has none).

use crate::mailbox::{Message, PushError};
use crate::pid::Pid;
use shoal_registry::Sha256;

/// How a node reaches the rest of its cluster.
///
/// A node on its own (`shoal run`, tests) has none. The cluster layer
/// (`shoal_cluster`) attaches one with [`crate::Node::attach_cluster`]; from then
/// on a send to a pid that is not on this node, a spawn with a placement
/// target, and a module reference this node cannot resolve go through it,
/// and the node reports its processes' starts and exits so the replicated
/// process directory stays current.
#[async_trait::async_trait]
pub trait ClusterLink: Send + Sync + 'static {
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
    /// The child is `parent`'s: it gets `parent`'s owner.
    async fn spawn_placed(
        &self,
        parent: Pid,
        target: &str,
        module_ref: &str,
        args: Vec<String>,
    ) -> Result<Pid, i32>;
    /// Find a module this node's registry does not resolve: a name from the
    /// replicated name registry, its blob fetched from a node that holds it
    /// (and checked against its sha256). Errors are ABI codes.
    async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32>;
    /// A process started on this node; `parent` is the process whose
    /// `spawn` started it (its owner is the child's), `None` for processes
    /// the node's operator or API started.
    fn process_started(&self, pid: Pid, parent: Option<Pid>);
    /// A process on this node ended.
    fn process_exited(&self, pid: Pid);
    /// This node's id in the cluster (the origin of messages it sends).
    fn node_id(&self) -> u64;
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
