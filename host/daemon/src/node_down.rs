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
use shoal_cluster::{NodeId, Raft};
use shoal_runtime::node::Node;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::broadcast::error::RecvError;

/// Follow the failure detector's verdicts as they are applied here and run
/// [`on_node_dead`] once per death (a node's liveness epoch names each
/// one). If this task falls behind the notifications, it re-reads the
/// verdicts from the state, so no death is missed or handled twice.
pub async fn follow(node: Node, raft: Raft) {
    let mut verdicts = raft.subscribe_liveness();
    // Node → the liveness epoch of the death already handled (one entry
    // per member at most).
    let mut handled: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut handle = |state: &ClusterState, dead: NodeId, epoch: u64| {
        if handled.insert(dead, epoch) != Some(epoch) {
            on_node_dead(&node, state, dead, &BTreeSet::new());
        }
    };
    loop {
        match verdicts.recv().await {
            Ok(change) if change.dead => handle(&raft.state(), change.node, change.epoch),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                let state = raft.state();
                let dead: Vec<(NodeId, u64)> = state
                    .nodes
                    .keys()
                    .filter_map(|id| state.node_dead(*id).map(|epoch| (*id, epoch)))
                    .collect();
                for (id, epoch) in dead {
                    handle(&state, id, epoch);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

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
