//! A pre-vote guard: a node that cannot reach a majority does not start
//! elections, so a node cut off by a partition cannot unseat the leader
//! when the partition heals.
//!
//! openraft 0.9 has no pre-vote. Without one, a follower cut off from the
//! leader times out, votes for itself and raises its term, again and again
//! while it is cut off; when the partition heals, its higher term makes
//! the healthy leader step down and the whole cluster elects again (no
//! leader anywhere for seconds, and every view disagrees meanwhile).
//!
//! The rule: elections are off unless a majority agrees the leader is
//! gone. Every heartbeat interval, on every node:
//! - a leader, a non-voter, or a voter that heard from its leader within
//!   half the minimum election timeout keeps elections off (openraft's
//!   timer would not fire for it anyway);
//! - any other voter asks the other voters, in parallel, whether *they*
//!   have heard from a leader within the minimum election timeout
//!   ([`PreVoteRequest`]), and elections are on exactly while this node and
//!   the voters that have not — together a majority — agree that there is
//!   no leader.
//!
//! Off is the default, so the guard fails safe: when this task is starved
//! (a loaded machine), an election is late, never spurious. An earlier
//! version switched elections off only when the leader fell silent, which
//! left a race on a busy machine: when the guard's tick came late, the
//! election timer of a freshly cut-off follower fired first and the term
//! rose anyway.
//!
//! So the leader's death still leads to an election (the survivors agree
//! there is none, one probe round-trip after noticing), while a node on the
//! minority side of a partition, or a follower that merely missed some
//! heartbeats while the others still hear the leader, never raises its
//! term.

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::network::RpcKind;
use super::Inner;
use crate::state::NodeId;

/// A voter asks whether the asked node has a live leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreVoteRequest {
    /// The asking node (checked against its certificate).
    pub(crate) from: NodeId,
}

/// The answer: whether the asked node leads, or heard from its leader,
/// within the minimum election timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreVoteAnswer {
    /// A leader is alive as far as the asked node knows.
    pub(crate) leader_alive: bool,
}

/// Whether `inner` leads or heard from its leader within `window`.
pub(crate) fn leader_alive(inner: &Inner, window: Duration) -> bool {
    let (state, leader) = {
        let metrics = inner.raft.metrics();
        let m = metrics.borrow();
        (m.state, m.current_leader)
    };
    if state == ServerState::Leader {
        return true;
    }
    leader.is_some_and(|l| l != inner.id && inner.reach.recent(l, window))
}

/// The guard's loop; ends when the Raft node is dropped or stopped.
pub(super) async fn run(weak: Weak<Inner>) {
    let (tick_every, quiet_after, window) = match weak.upgrade() {
        Some(inner) => (
            Duration::from_millis(inner.config.heartbeat_interval_ms),
            Duration::from_millis(inner.config.election_timeout_min_ms / 2),
            Duration::from_millis(inner.config.election_timeout_min_ms),
        ),
        None => return,
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Off before openraft's first election tick: on only with a majority.
    match weak.upgrade() {
        Some(inner) => inner.raft.runtime_config().elect(false),
        None => return,
    }
    let mut allowed = false;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let (state, leader, voters, stopped) = {
            let metrics = inner.raft.metrics();
            let m = metrics.borrow();
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            (
                m.state,
                m.current_leader,
                voters,
                m.running_state.is_err() || m.state == ServerState::Shutdown,
            )
        };
        if stopped {
            return;
        }
        let heard = leader.is_some_and(|l| l != inner.id && inner.reach.recent(l, quiet_after));
        let allow = if state == ServerState::Leader || !voters.contains(&inner.id) || heard {
            false
        } else {
            drop(inner);
            let Some(agree) = ask_voters(&weak, &voters, window).await else {
                return;
            };
            agree * 2 > voters.len()
        };
        let Some(inner) = weak.upgrade() else { return };
        if allow != allowed {
            tracing::debug!(
                node = inner.id,
                allow,
                "pre-vote guard: elections {}",
                if allow {
                    "allowed (a majority agrees the leader is gone)"
                } else {
                    "off"
                }
            );
            inner.raft.runtime_config().elect(allow);
            allowed = allow;
        }
    }
}

/// How many voters, this node included, have no live leader: this node
/// (it has not heard from one) plus every other voter that answers, within
/// `window`, that it has none. `None` when the node is gone.
async fn ask_voters(
    weak: &Weak<Inner>,
    voters: &BTreeSet<NodeId>,
    window: Duration,
) -> Option<usize> {
    let inner = weak.upgrade()?;
    let me = inner.id;
    let members = {
        let metrics = inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.addr.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let body = serde_json::to_vec(&PreVoteRequest { from: me }).ok()?;
    let asks = voters.iter().filter(|v| **v != me).filter_map(|v| {
        let addr = members.get(v)?.clone();
        let transport = inner.transport.clone();
        let body = body.clone();
        let target = *v;
        Some(async move {
            let answer =
                tokio::time::timeout(window, transport.rpc(target, &addr, RpcKind::PreVote, body))
                    .await;
            match answer {
                Ok(Ok(bytes)) => {
                    serde_json::from_slice::<PreVoteAnswer>(&bytes).is_ok_and(|a| !a.leader_alive)
                }
                // Unreachable or silent: no agreement from it.
                _ => false,
            }
        })
    });
    let answers = futures_util::future::join_all(asks).await;
    Some(1 + answers.into_iter().filter(|agrees| *agrees).count())
}
