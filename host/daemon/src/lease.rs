//! The lease (issue #16): a node that has not heard from a quorum for
//! [`lease_of`] its failure-detector window suspends its processes, so a
//! node cut off from the majority never runs a process on beside the copy
//! the majority resumed elsewhere.
//!
//! - **Contact** is a ReadIndex that succeeds (`Raft::linearizable_state`):
//!   the leader confirmed, by a round of heartbeats, that a quorum still
//!   follows it. Every node asks every quarter lease (at least every 50
//!   ms); a node counts its lease from when it *asked* for the last answer
//!   that came back.
//! - **Suspension**: once the lease has run out, the node's gate closes
//!   (`shoal_runtime::gate`): its processes may compute but every Shoal
//!   import and every write to stdout or stderr waits. The cluster
//!   declares a node dead only after `--dead-after` ≥ 2 × the lease of
//!   silence on the leader's clock, so the suspension comes first (with a
//!   lease of half the window, the slack covers a message's delay and the
//!   two clocks' drift over one window).
//! - **Return**: when contact comes back, the node first kills the copies
//!   the cluster resumed elsewhere meanwhile (`crate::failover`), then
//!   opens the gate: an old copy never acts again.

use crate::Inner;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lease for a failure-detector window of `dead_after_ms`: half of it.
pub fn lease_of(dead_after_ms: u64) -> Duration {
    Duration::from_millis(dead_after_ms / 2)
}

/// Keep this node's lease (see the module docs). Runs for the daemon's
/// life.
pub async fn run(inner: Arc<Inner>) {
    let lease = lease_of(inner.raft.dead_after_ms());
    let every = (lease / 4).max(Duration::from_millis(50));
    let mut held_since = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        let answer = tokio::time::timeout(lease, inner.raft.linearizable_state()).await;
        match answer {
            Ok(Ok(state)) => {
                held_since = asked;
                if inner.node.is_suspended() {
                    // Back in touch: what resumed elsewhere must not run
                    // here again, before anything here runs on.
                    crate::failover::fence_replaced(&inner, &state);
                    inner.node.set_suspended(false);
                    tracing::warn!(
                        "quorum contact is back: this node's processes are no longer suspended"
                    );
                }
            }
            _ => {
                if held_since.elapsed() > lease && inner.node.set_suspended(true) {
                    tracing::warn!(
                        "no quorum contact for {} ms (lease {} ms): suspending this node's processes",
                        held_since.elapsed().as_millis(),
                        lease.as_millis()
                    );
                }
            }
        }
    }
}
