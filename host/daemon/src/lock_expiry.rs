//! The lock-delay: releasing the locks of processes on a node the cluster
//! declared dead, once [`crate::DaemonConfig::lock_delay`] has passed.
//!
//! The verdict (`NodeDead`) is the leader's and is in Raft; the release
//! (`Command::ExpireLocks`) is written by whichever node leads once the
//! delay has passed on its own monotonic clock since it saw the verdict,
//! and is applied only if the node is still declared dead. Every node
//! follows the verdicts, so a leader elected during the delay still
//! releases them (its delay counts from when it saw the verdict: never
//! sooner than the configured delay after it was decided).

use crate::Inner;
use shoal_cluster::state::ClusterState;
use shoal_cluster::{Command, NodeId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a node whose delay has passed looks again while the locks
/// are still held (it is not the leader, or the write failed).
const RETRY: Duration = Duration::from_millis(500);

/// Whether any lock is held or waited for by a process on `node`.
fn has_locks_on(state: &ClusterState, node: NodeId) -> bool {
    state
        .locks
        .pids()
        .iter()
        .any(|p| state.directory.get(p).is_some_and(|e| e.node == node))
}

/// Release `dead`'s locks after the delay (see the module docs).
async fn expire(inner: Arc<Inner>, dead: NodeId) {
    tokio::time::sleep(inner.lock_delay).await;
    loop {
        let state = inner.raft.state();
        if state.node_dead(dead).is_none() || !has_locks_on(&state, dead) {
            return;
        }
        if inner.raft.status().is_leader {
            match inner.raft.write(Command::ExpireLocks { node: dead }).await {
                Ok(_) => tracing::info!("released the locks of node {dead}'s processes"),
                Err(e) => tracing::warn!("cannot release the locks of node {dead}: {e}"),
            }
        }
        let mut changed = inner.raft.subscribe();
        let _ = tokio::time::timeout(RETRY, changed.changed()).await;
    }
}

/// Start an [`expire`] for every node the state records as dead.
fn expire_all_dead(inner: &Arc<Inner>) {
    let state = inner.raft.state();
    for id in state
        .nodes
        .keys()
        .filter(|id| state.node_dead(**id).is_some())
    {
        tokio::spawn(expire(inner.clone(), *id));
    }
}

/// Follow the verdicts; start one [`expire`] per death.
pub async fn run(inner: Arc<Inner>) {
    let mut verdicts = inner.raft.subscribe_liveness();
    // Deaths already recorded when this node starts.
    expire_all_dead(&inner);
    loop {
        match verdicts.recv().await {
            Ok(change) if change.dead => {
                tokio::spawn(expire(inner.clone(), change.node));
            }
            Ok(_) => {}
            // Missed verdicts: look at every death the state records (an
            // `expire` for a node already handled ends at once, its locks
            // gone).
            Err(RecvError::Lagged(_)) => expire_all_dead(&inner),
            Err(RecvError::Closed) => return,
        }
    }
}
