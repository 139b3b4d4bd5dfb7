//! Fences: when a node applies a directory switch of pid P from node S, it
//! sends S a [`Control::Fence`] on the same lane its earlier messages for P
//! took. S forwards it to P's new node after them, and the new node then
//! delivers this node's direct messages (see [`shoal_runtime::handoff`]).
//!
//! A send that read the old directory must be on the lane before the fence:
//! [`crate::link::Link`] holds its routing lock (shared) from the
//! directory lookup to the lane push, and the fence is pushed under the
//! same lock held exclusively, after the new state is published.

use super::wire::Control;
use super::Ctx;
use bytes::Bytes;
use shoal_net::LaneMessage;
use shoal_runtime::node::CONTROL_SENDER;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a fence waits for room on a full lane before giving up (the
/// new node then waits out its fence timeout).
pub const FENCE_PUSH_WAIT: Duration = Duration::from_secs(30);

/// Longest wait for acks before a refused fence push is tried again (a
/// lane that broke instead of filling sends no acks).
const FENCE_RETRY_WAIT: Duration = Duration::from_millis(50);

/// Send fences for every switch this node applies, until the node stops.
pub async fn run(ctx: Arc<Ctx>) {
    let mut moves = ctx.raft.subscribe_moves();
    loop {
        let m = match moves.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    "missed {n} directory moves; their targets will wait out their fence timeout"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // A same-node move is a fence of a called-off attempt; the source
        // itself needs no fence (its own sends go through it).
        if m.from == m.to || m.from == ctx.me {
            continue;
        }
        tracing::debug!(node = %ctx.name, "applied move {m:?}; fencing at {}", m.from);
        let Some(addr) = ctx.raft.state().member(m.from).map(|n| n.addr.clone()) else {
            continue;
        };
        let data = Bytes::from(
            Control::Fence {
                origin: ctx.me,
                epoch: m.epoch,
            }
            .encode(),
        );
        // The lane to the source may be full of this node's earlier
        // messages (that is what the fence is behind): keep trying, boundedly.
        let mut pushed_ok = false;
        let room = ctx.peers.room();
        let deadline = tokio::time::Instant::now() + FENCE_PUSH_WAIT;
        while tokio::time::Instant::now() < deadline {
            // Registered before the attempt, so acks in between wake it.
            let freed = room.notified();
            let pushed = ctx.link.with_routes_fenced(|| {
                ctx.peers.send(
                    &addr,
                    LaneMessage {
                        from: CONTROL_SENDER.0,
                        to: m.pid,
                        tag: Default::default(),
                        data: data.clone(),
                    },
                )
            });
            if pushed.is_ok() {
                pushed_ok = true;
                break;
            }
            let _ = tokio::time::timeout(FENCE_RETRY_WAIT, freed).await;
        }
        if !pushed_ok {
            tracing::warn!(
                "could not fence pid {} at node {} (its lane stayed full); its new node waits out its fence timeout",
                m.pid, m.from
            );
        }
    }
}
