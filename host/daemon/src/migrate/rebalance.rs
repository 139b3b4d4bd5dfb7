//! Rebalancing: the Raft leader evens out process counts by live migration.
//!
//! Every [`RebalanceConfig::interval`] the leader counts the processes of
//! each healthy, active (uncordoned) node in the replicated directory. When
//! the busiest runs more than [`RebalanceConfig::skew_max`] processes more
//! than the least busy, it asks the busiest to move up to
//! [`RebalanceConfig::batch_max`] of them (at most half the difference, so
//! the two never swap roles) to the least busy: `POST
//! /v1/processes/{pid}/migrate` with `to`, sent to the node running the pid
//! (or [`super::source::migrate`] directly when that is the leader). A node
//! that joins starts empty, so it gets its share this way.
//!
//! The leader cannot see whether a process is capturable; one that fails to
//! move (e.g. it never blocks) is skipped for [`FAILED_SKIP`], remembered
//! in a bounded set. Each move is logged in one line.

use super::Ctx;
use bytes::Bytes;
use shoal_cluster::{ClusterState, NodeId, NodeStatus};
use shoal_runtime::pid::Pid;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a pid that failed to move is left alone.
pub const FAILED_SKIP: Duration = Duration::from_secs(60);
/// Most pids remembered as having failed to move.
pub const FAILED_REMEMBERED_MAX: usize = 4096;
/// Shortest interval accepted (a smaller one is raised to this).
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Longest one move request may take (a migration copies the whole memory).
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Rebalancing settings ([`crate::DaemonConfig::rebalance`]); only
/// the leader's apply.
#[derive(Debug, Clone)]
pub struct RebalanceConfig {
    /// Rebalance at all (default true).
    pub enabled: bool,
    /// How often the leader looks (default 5 s).
    pub interval: Duration,
    /// Largest difference in process count left alone (default 2).
    pub skew_max: u32,
    /// Most processes moved per round (default 4).
    pub batch_max: u32,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig {
            enabled: true,
            interval: Duration::from_secs(5),
            skew_max: 2,
            batch_max: 4,
        }
    }
}

/// One round's moves: `pids` from node `from` to node `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The busiest node.
    pub from: NodeId,
    /// The least busy node.
    pub to: NodeId,
    /// Its process count.
    pub from_count: usize,
    /// Its process count.
    pub to_count: usize,
    /// The processes to move.
    pub pids: Vec<Pid>,
}

/// The moves that bring the busiest live active node closer to the
/// least busy one, if they differ by more than `skew_max`; `skip` says
/// which pids not to try. Live: not declared dead by the failure detector
/// ([`ClusterState::node_dead`]).
pub fn plan(
    state: &ClusterState,
    config: &RebalanceConfig,
    skip: impl Fn(u64) -> bool,
) -> Option<Plan> {
    let mut counts: BTreeMap<NodeId, usize> = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Active && crate::link::is_up(state, n.id))
        .map(|n| (n.id, 0))
        .collect();
    if counts.len() < 2 {
        return None;
    }
    for e in state.directory.values() {
        if let Some(c) = counts.get_mut(&e.node) {
            *c += 1;
        }
    }
    // Ties go to the lowest id (BTreeMap order, first wins).
    let (&from, &from_count) = counts.iter().fold(
        None,
        |best: Option<(&NodeId, &usize)>, (id, c)| match best {
            Some((_, bc)) if bc >= c => best,
            _ => Some((id, c)),
        },
    )?;
    let (&to, &to_count) = counts.iter().fold(
        None,
        |best: Option<(&NodeId, &usize)>, (id, c)| match best {
            Some((_, bc)) if bc <= c => best,
            _ => Some((id, c)),
        },
    )?;
    let diff = from_count.saturating_sub(to_count);
    if from == to || diff <= config.skew_max as usize {
        return None;
    }
    let n = (diff / 2).clamp(1, config.batch_max.max(1) as usize);
    // The newest processes first (the highest pids of the node's blocks).
    let pids: Vec<Pid> = state
        .directory
        .iter()
        .rev()
        .filter(|(pid, e)| e.node == from && !skip(**pid))
        .map(|(pid, _)| Pid(*pid))
        .take(n)
        .collect();
    if pids.is_empty() {
        return None;
    }
    Some(Plan {
        from,
        to,
        from_count,
        to_count,
        pids,
    })
}

/// Pids that failed to move recently, forgotten after [`FAILED_SKIP`];
/// at most [`FAILED_REMEMBERED_MAX`] (the oldest dropped first).
#[derive(Default)]
struct RecentFailures {
    at: HashMap<u64, Instant>,
}

impl RecentFailures {
    fn contains(&self, pid: u64) -> bool {
        self.at.get(&pid).is_some_and(|t| t.elapsed() < FAILED_SKIP)
    }

    fn insert(&mut self, pid: u64) {
        self.at.retain(|_, t| t.elapsed() < FAILED_SKIP);
        while self.at.len() >= FAILED_REMEMBERED_MAX {
            let Some(oldest) = self.at.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) else {
                break;
            };
            self.at.remove(&oldest);
        }
        self.at.insert(pid, Instant::now());
    }
}

/// The background task (see the module docs); returns at once when
/// rebalancing is off.
pub async fn run(ctx: Arc<Ctx>) {
    let config = ctx.rebalance.clone();
    if !config.enabled {
        return;
    }
    let mut failures = RecentFailures::default();
    let mut tick = tokio::time::interval(config.interval.max(INTERVAL_MIN));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if ctx.raft.leader() != Some(ctx.me) {
            continue;
        }
        let state = ctx.raft.state();
        let Some(plan) = plan(&state, &config, |pid| failures.contains(pid)) else {
            continue;
        };
        let name = |id: NodeId| {
            state
                .nodes
                .get(&id)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        let (from_name, to_name) = (name(plan.from), name(plan.to));
        let Some(from_addr) = state.member(plan.from).map(|n| n.addr.clone()) else {
            continue;
        };
        let mut moves = tokio::task::JoinSet::new();
        for pid in plan.pids.iter().copied() {
            let ctx = ctx.clone();
            let (from, to_name, from_addr) = (plan.from, to_name.clone(), from_addr.clone());
            moves
                .spawn(async move { (pid, move_one(&ctx, from, &from_addr, pid, &to_name).await) });
        }
        while let Some(joined) = moves.join_next().await {
            let Ok((pid, result)) = joined else { continue };
            match result {
                Ok(()) => tracing::info!(
                    "rebalance: moved process {pid} from {from_name} ({} processes) to {to_name} ({})",
                    plan.from_count, plan.to_count
                ),
                Err(why) => {
                    failures.insert(pid.0);
                    tracing::warn!(
                        "rebalance: process {pid} did not move from {from_name} to {to_name} (skipped for {} s): {why}",
                        FAILED_SKIP.as_secs()
                    );
                }
            }
        }
    }
}

/// Why a rebalancing move did not happen.
#[derive(Debug, thiserror::Error)]
enum MoveError {
    /// The move from this node failed.
    #[error(transparent)]
    Here(#[from] super::source::MigrateError),
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
    /// The node running the process refused, failed or did not answer
    /// within [`MOVE_TIMEOUT`].
    #[error("node at {addr}: {source}")]
    There {
        /// Its address.
        addr: String,
        /// What it said, or why it could not be asked.
        source: shoal_net::NetError,
    },
}

/// Ask node `from` (at `addr`) to move `pid` to node `to`: directly when
/// that is this node, else through its control API (as this node, over the
/// peer connection).
async fn move_one(
    ctx: &Arc<Ctx>,
    from: NodeId,
    addr: &str,
    pid: Pid,
    to: &str,
) -> Result<(), MoveError> {
    if from == ctx.me {
        super::source::migrate(ctx, pid, Some(to)).await?;
        return Ok(());
    }
    let body = serde_json::to_vec(&shoal_api::cluster::MigrateRequest {
        to: Some(to.to_string()),
    })?;
    ctx.peers
        .call_with_timeout(
            addr,
            &format!("/v1/processes/{pid}/migrate"),
            Bytes::from(body),
            MOVE_TIMEOUT,
        )
        .await
        .map_err(|source| MoveError::There {
            addr: addr.to_string(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_cluster::{DirEntry, NodeRecord};

    fn state(counts: &[(NodeId, usize, NodeStatus)]) -> ClusterState {
        let mut s = ClusterState::default();
        let mut pid = 100;
        for (id, n, status) in counts {
            let r = NodeRecord {
                id: *id,
                name: format!("n{id}"),
                addr: format!("127.0.0.1:{}", 7000 + id),
                labels: Default::default(),
                status: *status,
                joined_at_ms: 0,
                last_heartbeat_ms: 1_000,
                load: Default::default(),
            };
            s.nodes.insert(*id, r);
            for _ in 0..*n {
                s.directory.insert(
                    pid,
                    DirEntry {
                        node: *id,
                        epoch: 0,
                    },
                );
                pid += 1;
            }
        }
        s
    }

    #[test]
    fn moves_half_the_skew_capped_by_the_batch() {
        let c = RebalanceConfig::default();
        let s = state(&[(1, 8, NodeStatus::Active), (2, 0, NodeStatus::Active)]);
        let p = plan(&s, &c, |_| false).expect("a plan");
        assert_eq!((p.from, p.to, p.pids.len()), (1, 2, 4));
        let s = state(&[
            (1, 4, NodeStatus::Active),
            (2, 4, NodeStatus::Active),
            (3, 0, NodeStatus::Active),
        ]);
        let p = plan(&s, &c, |_| false).expect("a plan");
        assert_eq!((p.from, p.to, p.pids.len()), (1, 3, 2));
    }

    #[test]
    fn leaves_small_skews_cordoned_and_dead_nodes_alone() {
        let c = RebalanceConfig::default();
        let s = state(&[(1, 4, NodeStatus::Active), (2, 2, NodeStatus::Active)]);
        assert_eq!(plan(&s, &c, |_| false), None);
        let s = state(&[(1, 9, NodeStatus::Active), (2, 0, NodeStatus::Cordoned)]);
        assert_eq!(plan(&s, &c, |_| false), None);
        let s = state(&[(1, 9, NodeStatus::Active), (2, 0, NodeStatus::Active)]);
        let mut dead = s.clone();
        dead.liveness.insert(
            2,
            shoal_cluster::NodeLiveness {
                epoch: 1,
                dead: true,
                since_unix_ms: 0,
                silent_ms: 5_000,
                by: 1,
            },
        );
        assert_eq!(plan(&dead, &c, |_| false), None, "declared dead");
        assert_eq!(plan(&s, &c, |_| true), None, "every pid skipped");
    }
}
