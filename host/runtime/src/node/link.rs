//! How a node reaches the rest of its cluster: the [`ClusterLink`] the
//! cluster layer attaches (a node alone has none).

use crate::mailbox::PushError;
use crate::pid::Pid;
use shoal_registry::Sha256;
/// How a node reaches the rest of its cluster.
///
/// A node on its own (`shoal run`, tests) has none. The cluster layer
/// (`shoal_cluster`) attaches one with [`Node::attach_cluster`]; from then
/// on a send to a pid that is not on this node, a spawn with a placement
/// target, and a module reference this node cannot resolve go through it,
/// and the node reports its processes' starts and exits so the replicated
/// process directory stays current.
#[async_trait::async_trait]
pub trait ClusterLink: Send + Sync + 'static {
    /// Send to a pid that is not on this node. `Closed` means no such
    /// process anywhere (the ABI's `NO_PROCESS`); `Full` means the way
    /// there is at its bound (the ABI's `MAILBOX_FULL`: retry).
    fn send_remote(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError>;
    /// Start a process somewhere in the cluster. `target` is `""` (let the
    /// scheduler choose), a node name, or label constraints `k=v[,k=v]`.
    /// Errors are ABI codes.
    async fn spawn_placed(
        &self,
        target: &str,
        module_ref: &str,
        args: Vec<String>,
    ) -> Result<Pid, i32>;
    /// Find a module this node's registry does not resolve: a name from the
    /// replicated name registry, its blob fetched from a node that holds it
    /// (and checked against its sha256). Errors are ABI codes.
    async fn fetch_module(&self, reference: &str) -> Result<Sha256, i32>;
    /// A process started on this node.
    fn process_started(&self, pid: Pid);
    /// A process on this node ended.
    fn process_exited(&self, pid: Pid);
    /// This node's id in the cluster (the origin of messages it sends).
    fn node_id(&self) -> u64;
}
