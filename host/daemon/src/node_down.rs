//! Where the cluster's decision that a node is dead reaches calls and
//! monitors: the one hook to call when a `NodeDead` record is applied.
//!
//! Nothing here detects failures: the decision is the leader's, recorded in
//! Raft (the failure detector lives elsewhere). When it is applied on a
//! node, that node calls [`on_node_dead`] with the directory as it stood
//! then, so that every call in progress and every monitor of a process on
//! this node whose target was on the dead node fails with `NODE_DOWN` /
//! DOWN `node_down` — except for processes that will resume elsewhere
//! (a failover), which the caller leaves out of `resuming`.

use shoal_cluster::state::ClusterState;
use shoal_cluster::NodeId;
use shoal_runtime::node::Node;
use std::collections::BTreeSet;

/// Fail, on this node, the calls and monitors whose target ran on `dead`
/// (per `state`'s directory) and is not in `resuming`. Returns how many
/// DOWNs were queued.
pub fn on_node_dead(
    node: &Node,
    state: &ClusterState,
    dead: NodeId,
    resuming: &BTreeSet<u64>,
) -> usize {
    let gone: BTreeSet<u64> = state
        .directory
        .iter()
        .filter(|(pid, e)| e.node == dead && !resuming.contains(pid))
        .map(|(pid, _)| *pid)
        .collect();
    if gone.is_empty() {
        return 0;
    }
    let n = shoal_runtime::calls::node_down(node.router(), &|p| gone.contains(&p.0));
    tracing::info!(
        dead,
        processes = gone.len(),
        downs = n,
        "node declared dead: failed the calls and monitors on its processes"
    );
    n
}
