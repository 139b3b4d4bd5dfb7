//! The leader's failure-detector loop: every [`TICK_MS`], on the leader
//! only, apply [`Detector`]'s rule to the monotonic times of the last Raft
//! traffic from each node ([`super::network::Reachability`]) and propose
//! the verdicts locally (never forwarded: a node that is not the leader
//! does not judge). Ends when the Raft node is dropped or stopped.

use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use super::Inner;
use crate::detector::{Detector, TICK_MS};
use crate::state::{Command, CommandResult};

pub(super) async fn run(weak: Weak<Inner>) {
    let (me, dead_after, write_timeout) = match weak.upgrade() {
        Some(inner) => (
            inner.id,
            Duration::from_millis(inner.config.dead_after_ms),
            Duration::from_millis(inner.config.write_timeout_ms),
        ),
        None => return,
    };
    let mut detector = Detector::new(me, dead_after);
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let (leading, term, stopped) = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            (
                m.state == ServerState::Leader,
                m.current_term,
                m.running_state.is_err() || m.state == ServerState::Shutdown,
            )
        };
        if stopped {
            return;
        }
        if !leading {
            detector.not_leading();
            continue;
        }
        let state = inner.published.state();
        let verdicts = detector.tick(
            Instant::now(),
            term,
            &state,
            |n| inner.reach.last(n),
            shoal_pki::now_unix_ms(),
        );
        for cmd in verdicts {
            match &cmd {
                Command::NodeDead {
                    node, silent_ms, ..
                } => tracing::warn!(
                    node = *node,
                    silent_ms = *silent_ms,
                    "declaring node {node} dead: no Raft traffic from it for {silent_ms} ms"
                ),
                Command::NodeAlive { node, .. } => {
                    tracing::info!(node = *node, "node {node} is heard from again: alive")
                }
                _ => {}
            }
            match tokio::time::timeout(write_timeout, inner.raft.client_write(cmd)).await {
                Ok(Ok(r)) => {
                    if let CommandResult::Refused(why) = r.data {
                        tracing::debug!("liveness verdict refused: {why}");
                    }
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    detector.not_leading();
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!("liveness verdict not written: {e}");
                    break;
                }
                // No quorum: a leader cut off from the majority; its
                // verdicts cannot commit, and that is right.
                Err(_) => {
                    tracing::debug!("liveness verdict not committed within {write_timeout:?}");
                    break;
                }
            }
        }
    }
}
