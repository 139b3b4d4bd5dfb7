//! Node liveness as the cluster decided it: the replicated half of the
//! failure detector ([`crate::detector`] is the leader's half).
//!
//! Only the Raft leader proposes [`Command::NodeDead`] and
//! [`Command::NodeAlive`](super::Command::NodeAlive); every node applies
//! them in log order, so every node holds the same verdict. A node with no
//! entry in [`ClusterState::liveness`] is alive at epoch 0.
//!
//! Each verdict is a compare-and-set on the node's liveness epoch (like
//! `MovePid` on a directory epoch): the command carries the epoch the
//! leader saw, and applying it bumps the epoch. So a repeated or stale
//! decision is refused instead of applied twice, and a consumer can tell
//! "dead since epoch 3" from a later death at epoch 5.
//!
//! [`Command::NodeDead`]: super::Command::NodeDead

use serde::{Deserialize, Serialize};

use super::{ClusterState, CommandResult, NodeId, Outcome, Refusal};

/// The cluster's verdict on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLiveness {
    /// Bumped by every applied `NodeDead` / `NodeAlive`; 0 before the
    /// first verdict. Odd after a death, even after a return.
    pub epoch: u64,
    /// Declared dead (no return declared since).
    pub dead: bool,
    /// When the leader made this verdict, Unix ms (its wall clock, for
    /// people to read; never used to judge anything).
    pub since_unix_ms: u64,
    /// For a death: how long the leader had heard nothing from the node,
    /// on its monotonic clock, ms.
    pub silent_ms: u64,
    /// The leader that made the verdict.
    pub by: NodeId,
}

impl ClusterState {
    /// `Some(epoch)` if the leader declared `node` dead (at that liveness
    /// epoch) and has not declared it back; `None` for a node that is alive
    /// (or unknown). The one answer placement, `shoal ps`, `shoal nodes`
    /// and every other feature go by; see [`crate::detector`].
    pub fn node_dead(&self, node: NodeId) -> Option<u64> {
        dead_epoch(&self.liveness, node)
    }

    /// The pids the directory places on a node declared dead now (what
    /// calls and monitors on them get `node_down` for).
    pub fn pids_on_dead_nodes(&self) -> std::collections::BTreeSet<u64> {
        if !self.liveness.values().any(|l| l.dead) {
            return Default::default();
        }
        self.directory
            .iter()
            .filter(|(_, e)| self.node_dead(e.node).is_some())
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The node's liveness epoch (0 if no verdict was ever made).
    pub fn liveness_epoch(&self, node: NodeId) -> u64 {
        self.liveness.get(&node).map_or(0, |l| l.epoch)
    }

    pub(super) fn node_verdict(
        &mut self,
        node: NodeId,
        epoch: u64,
        dead: bool,
        silent_ms: u64,
        by: NodeId,
        now_ms: u64,
    ) -> Outcome {
        self.live_member(node)?;
        let current = self.liveness.get(&node);
        let (seen, was_dead) = current.map_or((0, false), |l| (l.epoch, l.dead));
        if seen != epoch {
            return Err(Refusal::LivenessMoved {
                node,
                epoch: seen,
                expected: epoch,
            });
        }
        if was_dead == dead {
            return Err(Refusal::LivenessSame {
                node,
                dead,
                epoch: seen,
            });
        }
        let next = epoch.checked_add(1).ok_or(Refusal::EpochOverflow)?;
        self.liveness.insert(
            node,
            NodeLiveness {
                epoch: next,
                dead,
                since_unix_ms: now_ms,
                silent_ms: if dead { silent_ms } else { 0 },
                by,
            },
        );
        Ok(CommandResult::Ok)
    }
}

/// [`ClusterState::node_dead`] on the liveness table alone (for code that
/// must not borrow the whole state while it changes another part).
pub(super) fn dead_epoch(
    liveness: &std::collections::BTreeMap<NodeId, NodeLiveness>,
    node: NodeId,
) -> Option<u64> {
    liveness.get(&node).filter(|l| l.dead).map(|l| l.epoch)
}

#[cfg(test)]
mod tests {
    use super::super::{Command, NodeStatus};
    use super::*;
    use std::collections::BTreeMap;

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

    fn dead(node: NodeId, epoch: u64) -> Command {
        Command::NodeDead {
            node,
            epoch,
            silent_ms: 5_000,
            by: 1,
            now_ms: 100,
        }
    }

    fn alive(node: NodeId, epoch: u64) -> Command {
        Command::NodeAlive {
            node,
            epoch,
            by: 1,
            now_ms: 200,
        }
    }

    #[test]
    fn a_verdict_is_a_compare_and_set_on_the_liveness_epoch() {
        let mut s = three();
        assert_eq!(s.node_dead(2), None);
        assert_eq!(s.apply(&dead(2, 0)), CommandResult::Ok);
        assert_eq!(s.node_dead(2), Some(1));
        assert_eq!(s.liveness[&2].silent_ms, 5_000);
        let before = s.clone();
        // The same decision again (a retried write): refused, no change.
        assert!(matches!(s.apply(&dead(2, 0)), CommandResult::Refused(_)));
        // A death at the current epoch of a node already dead: refused.
        assert!(matches!(s.apply(&dead(2, 1)), CommandResult::Refused(_)));
        // A return based on a stale epoch: refused.
        assert!(matches!(s.apply(&alive(2, 0)), CommandResult::Refused(_)));
        assert_eq!(s, before);
        assert_eq!(s.apply(&alive(2, 1)), CommandResult::Ok);
        assert_eq!(s.node_dead(2), None);
        assert_eq!(s.liveness_epoch(2), 2);
        // Alive nodes cannot be declared alive again.
        assert!(matches!(s.apply(&alive(3, 0)), CommandResult::Refused(_)));
        // A second death gets a new epoch: consumers tell them apart.
        assert_eq!(s.apply(&dead(2, 2)), CommandResult::Ok);
        assert_eq!(s.node_dead(2), Some(3));
        assert_eq!(s.node_dead(3), None);
    }

    #[test]
    fn verdicts_on_unknown_or_removed_nodes_are_refused() {
        let mut s = three();
        assert!(matches!(s.apply(&dead(9, 0)), CommandResult::Refused(_)));
        crate::state::proofs::test_support::apply_signed(
            &mut s,
            Command::RemoveNode { id: 3, now_ms: 5 },
        );
        assert_eq!(s.nodes[&3].status, NodeStatus::Removed);
        assert!(matches!(s.apply(&dead(3, 0)), CommandResult::Refused(_)));
        assert!(s.liveness.is_empty());
    }

    #[test]
    fn liveness_survives_a_json_round_trip_and_old_states_read_as_all_alive() {
        let mut s = three();
        s.apply(&dead(3, 0));
        let json = serde_json::to_value(&s).expect("encode");
        let back: ClusterState = serde_json::from_value(json.clone()).expect("decode");
        assert_eq!(back, s);
        let mut old = json;
        old.as_object_mut().expect("object").remove("liveness");
        let back: ClusterState = serde_json::from_value(old).expect("decode old");
        assert_eq!(back.node_dead(3), None);
    }
}
