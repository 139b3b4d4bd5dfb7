//! The cluster's one failure detector.
//!
//! # The rule
//!
//! **The Raft leader decides, on its own monotonic clock.** A node is
//! *silent* for as long as the leader has had no Raft traffic from it: no
//! answer to the AppendEntries heartbeats the leader sends every
//! `heartbeat_interval_ms` (100 ms by default), and no request from it. When
//! a node has been silent for more than [`RaftConfig::dead_after_ms`]
//! (default [`DEAD_AFTER_MS_DEFAULT`] = 5 s), the leader commits
//! [`Command::NodeDead`]`{node, epoch}`; when it hears from a dead node
//! again (within [`ALIVE_WITHIN_MS`]), it commits [`Command::NodeAlive`].
//! No wall clock and no timestamp written by another node is involved, so
//! a node whose clock runs ahead or behind is judged like any other.
//!
//! - Only the leader writes verdicts. A node that is not the leader never
//!   judges; a leader cut off from the majority proposes verdicts that
//!   cannot commit.
//! - A new leader gives every node a fresh grace period of `dead_after_ms`
//!   from its election (it cannot know how long a node was silent before
//!   it led), so an election never declares everyone dead at once; a node
//!   the leader first sees in the node table gets the same grace from then.
//! - The leader never declares itself dead, and declares itself alive at
//!   once if a previous leader had declared it dead.
//! - Detection time: a node that stops (SIGKILL, power loss, partition) is
//!   declared dead between `dead_after_ms` and `dead_after_ms +`
//!   [`TICK_MS`] + one Raft commit after its last contact with the leader
//!   (or after the election, whichever is later).
//!
//! # For other features: the one hook
//!
//! Everything that needs to know whether a node is down (placement,
//! `shoal ps`, `shoal nodes`, cross-node calls' `NODE_DOWN`, lock delays,
//! failover) reads this verdict and nothing else:
//!
//! - **query**: [`ClusterState::node_dead`]`(node) -> Option<epoch>` on
//!   [`Raft::state`](crate::Raft::state): `Some(e)` once the death is
//!   applied on this node, with `e` the node's liveness epoch (a later death
//!   has a larger epoch); [`ClusterState::liveness`] holds when, by whom and
//!   after how much silence.
//! - **notification**: [`Raft::subscribe_liveness`](crate::Raft::subscribe_liveness)
//!   yields a [`LivenessChange`] for every verdict applied on this node
//!   (from the log or from an installed snapshot), sent after
//!   [`Raft::state`](crate::Raft::state) shows it. A receiver that lags
//!   behind ([`LIVENESS_BUFFERED_MAX`]) gets `Lagged` and must re-read
//!   [`ClusterState::liveness`].
//!
//! [`RaftConfig::dead_after_ms`]: crate::RaftConfig::dead_after_ms

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::state::{ClusterState, Command, NodeId, NodeStatus};

/// Default silence after which the leader declares a node dead, ms.
pub const DEAD_AFTER_MS_DEFAULT: u64 = 5_000;
/// A dead node is declared alive again once the leader has heard from it
/// within this long, ms.
pub const ALIVE_WITHIN_MS: u64 = 1_000;
/// How often the leader applies the rule, ms.
pub const TICK_MS: u64 = 250;
/// Most verdicts buffered for a slow [`LivenessChange`] subscriber.
pub const LIVENESS_BUFFERED_MAX: usize = 1024;

/// A verdict applied on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LivenessChange {
    /// The node judged.
    pub node: NodeId,
    /// Its liveness epoch after the verdict.
    pub epoch: u64,
    /// Declared dead (`true`) or back alive.
    pub dead: bool,
}

/// The leader's half of the detector: remembers when this node's current
/// leadership began and when it first saw each node, and turns the last
/// contact times it is given into verdicts. Pure: the clock is passed in.
#[derive(Debug)]
pub struct Detector {
    me: NodeId,
    dead_after: Duration,
    alive_within: Duration,
    /// The term of the leadership being judged in, and when it began.
    leading: Option<(u64, Instant)>,
    /// When each node was first seen in the node table during this
    /// leadership.
    first_seen: BTreeMap<NodeId, Instant>,
}

impl Detector {
    /// The detector of node `me`, declaring nodes dead after `dead_after`.
    pub fn new(me: NodeId, dead_after: Duration) -> Detector {
        assert!(!dead_after.is_zero(), "dead_after must be positive");
        Detector {
            me,
            dead_after,
            alive_within: Duration::from_millis(ALIVE_WITHIN_MS).min(dead_after),
            leading: None,
            first_seen: BTreeMap::new(),
        }
    }

    /// This node is not the leader (any more): forget the leadership, so
    /// the next one starts with a fresh grace period.
    pub fn not_leading(&mut self) {
        self.leading = None;
        self.first_seen.clear();
    }

    /// Apply the rule at `now` as the leader of `term`. `last_contact`
    /// says when the leader last had Raft traffic from a node (`None`:
    /// never). Returns the verdicts to propose (nothing is changed here:
    /// the commands change the state once committed).
    pub fn tick(
        &mut self,
        now: Instant,
        term: u64,
        state: &ClusterState,
        last_contact: impl Fn(NodeId) -> Option<Instant>,
        now_unix_ms: u64,
    ) -> Vec<Command> {
        let since = match self.leading {
            Some((t, since)) if t == term => since,
            _ => {
                self.first_seen.clear();
                self.leading = Some((term, now));
                now
            }
        };
        let mut verdicts = Vec::new();
        for n in state.nodes.values() {
            if n.status == NodeStatus::Removed {
                continue;
            }
            let first = *self.first_seen.entry(n.id).or_insert(now);
            let epoch = state.liveness_epoch(n.id);
            let dead = state.node_dead(n.id).is_some();
            if n.id == self.me {
                if dead {
                    verdicts.push(Command::NodeAlive {
                        node: n.id,
                        epoch,
                        by: self.me,
                        now_ms: now_unix_ms,
                    });
                }
                continue;
            }
            let contact = last_contact(n.id);
            if dead {
                let recent =
                    contact.is_some_and(|t| now.saturating_duration_since(t) <= self.alive_within);
                if recent {
                    verdicts.push(Command::NodeAlive {
                        node: n.id,
                        epoch,
                        by: self.me,
                        now_ms: now_unix_ms,
                    });
                }
                continue;
            }
            // Silence counts from the latest of: the last contact, this
            // leadership's start, the first sight of the node.
            let from = [contact.unwrap_or(since), since, first]
                .into_iter()
                .max()
                .unwrap_or(since);
            let silent = now.saturating_duration_since(from);
            if silent > self.dead_after {
                verdicts.push(Command::NodeDead {
                    node: n.id,
                    epoch,
                    silent_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                    by: self.me,
                    now_ms: now_unix_ms,
                });
            }
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CommandResult;

    fn three() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            ca_cert_pem: String::new(),
            ca_node: 1,
            name: "n1".into(),
            addr: "a".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        for n in ["n2", "n3"] {
            s.apply(&Command::AddNode {
                name: n.into(),
                addr: "a".into(),
                labels: BTreeMap::new(),
                now_ms: 1,
            });
        }
        s
    }

    fn apply_all(s: &mut ClusterState, cmds: &[Command]) {
        for c in cmds {
            assert_eq!(s.apply(c), CommandResult::Ok, "{c:?}");
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_node_is_declared_dead_after_the_window_and_alive_when_heard_again() {
        let t0 = Instant::now();
        let mut s = three();
        let mut d = Detector::new(1, 5 * SEC);
        // n2 answers all along; n3 answered until t0 + 1 s.
        let n3_last = std::cell::Cell::new(t0 + SEC);
        let contact = |now: Instant| {
            let n3 = n3_last.get();
            move |n: NodeId| match n {
                2 => Some(now),
                3 => Some(n3),
                _ => None,
            }
        };
        for step in 0..=24 {
            let now = t0 + Duration::from_millis(250 * step);
            let v = d.tick(now, 7, &s, contact(now), 0);
            assert!(v.is_empty(), "nothing to declare at {step}: {v:?}");
        }
        // 6.25 s after t0, 5.25 s after n3's last contact.
        let now = t0 + Duration::from_millis(6_250);
        let v = d.tick(now, 7, &s, contact(now), 0);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(
            v[0],
            Command::NodeDead {
                node: 3,
                epoch: 0,
                silent_ms: 5_250,
                by: 1,
                ..
            }
        ));
        apply_all(&mut s, &v);
        assert_eq!(s.node_dead(3), Some(1));
        // Dead and silent: nothing more to say.
        let now = t0 + 20 * SEC;
        assert!(d.tick(now, 7, &s, contact(now), 0).is_empty());
        // Heard again: back alive.
        n3_last.set(now);
        let now = now + Duration::from_millis(300);
        let v = d.tick(now, 7, &s, contact(now), 0);
        assert!(
            matches!(
                v[..],
                [Command::NodeAlive {
                    node: 3,
                    epoch: 1,
                    ..
                }]
            ),
            "{v:?}"
        );
        apply_all(&mut s, &v);
        assert_eq!(s.node_dead(3), None);
    }

    #[test]
    fn a_new_leader_gives_everyone_a_fresh_grace_period() {
        let t0 = Instant::now();
        let s = three();
        let mut d = Detector::new(1, 5 * SEC);
        // Nobody was heard from for a long time before this election.
        let never = |_: NodeId| None;
        let long_ago = |_: NodeId| Some(t0);
        let elected = t0 + 60 * SEC;
        assert!(d.tick(elected, 3, &s, long_ago, 0).is_empty());
        assert!(d.tick(elected + 4 * SEC, 3, &s, never, 0).is_empty());
        let v = d.tick(
            elected + 5 * SEC + Duration::from_millis(1),
            3,
            &s,
            long_ago,
            0,
        );
        assert_eq!(v.len(), 2, "both silent peers, never the leader: {v:?}");
        // Losing and regaining leadership (a new term) starts over.
        d.not_leading();
        let again = elected + 30 * SEC;
        assert!(d.tick(again, 4, &s, long_ago, 0).is_empty());
        // So does a new term without a visible gap.
        let mut d = Detector::new(1, 5 * SEC);
        assert!(d.tick(t0, 1, &s, never, 0).is_empty());
        assert!(d.tick(t0 + 10 * SEC, 2, &s, never, 0).is_empty());
    }

    #[test]
    fn a_node_first_seen_late_gets_its_own_grace_and_the_leader_revives_itself() {
        let t0 = Instant::now();
        let mut s = three();
        let mut d = Detector::new(1, 5 * SEC);
        let never = |_: NodeId| None;
        assert!(d.tick(t0, 1, &s, never, 0).is_empty());
        s.apply(&Command::AddNode {
            name: "n4".into(),
            addr: "a".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        assert!(d.tick(t0 + 3 * SEC, 1, &s, never, 0).is_empty());
        let v = d.tick(t0 + 6 * SEC, 1, &s, never, 0);
        let judged: Vec<NodeId> = v
            .iter()
            .map(|c| match c {
                Command::NodeDead { node, .. } => *node,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            judged,
            vec![2, 3],
            "n4 joined 3 s in: still within its grace"
        );
        // A previous leader had declared this one (n1) dead.
        s.apply(&Command::NodeDead {
            node: 1,
            epoch: 0,
            silent_ms: 9,
            by: 2,
            now_ms: 0,
        });
        let v = d.tick(t0 + 6 * SEC, 1, &s, |_| Some(t0 + 6 * SEC), 0);
        assert!(
            matches!(
                v[..],
                [Command::NodeAlive {
                    node: 1,
                    epoch: 1,
                    by: 1,
                    ..
                }]
            ),
            "{v:?}"
        );
    }
}
