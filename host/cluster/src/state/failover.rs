//! Failover: which processes may come back after the death of their node,
//! their latest complete replicated checkpoint, and what happened to each
//! (the replicated half of `shoal deploy --restart`).
//!
//! # The rules
//!
//! - A process's restart policy is recorded by the node that placed it
//!   ([`Command::SetRestart`], beside its grants), with its module and
//!   arguments so that it can also be started fresh.
//! - A checkpoint counts only once it is complete on every holder it names
//!   ([`Command::Checkpointed`], written by the node running the process
//!   after its replicas confirmed they hold every page): a checkpoint of a
//!   copy that no longer owns the pid (its directory epoch moved) is
//!   refused, so a stale copy can never become what a failover resumes.
//! - When a `NodeDead` verdict is applied, every process the directory
//!   places on the dead node and whose policy lets it come back is given,
//!   in the same apply (so every node decides the same), to a live active
//!   node: a holder of its latest checkpoint first, with room for its
//!   memory cap, least loaded, lowest id. Its directory entry moves there
//!   under a new epoch and its incarnation is bumped: the chosen node
//!   restores it from that checkpoint (or starts it fresh if it had none).
//!   A process that may not come back, or that no node can take, stays
//!   where it was (it runs again only if its node comes back) and is shown
//!   `lost` with the reason.
//! - Every decision is an [`Event`] in a bounded log (`shoal events`).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use super::{ClusterState, CommandResult, DirEntry, NodeId, NodeStatus, Outcome, Refusal};

/// Most events kept; older ones are dropped first.
pub const EVENTS_MAX: usize = 1024;
/// Most checkpoint holders a process may ask for (`--replicas`).
pub const REPLICAS_MAX: u8 = 7;
/// Shortest checkpoint interval, ms.
pub const CHECKPOINT_EVERY_MS_MIN: u64 = 100;
/// Longest checkpoint interval, ms (a day).
pub const CHECKPOINT_EVERY_MS_MAX: u64 = 86_400_000;
/// Most arguments recorded for a fresh start.
pub const ARGS_MAX: usize = 256;
/// Most bytes of all arguments together.
pub const ARGS_BYTES_MAX: usize = 64 * 1024;
/// Longest reason text kept in an event, characters.
pub const WHY_CHARS_MAX: usize = 200;

/// When a process comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Never (the default: no checkpoints are taken, nothing is spent).
    #[default]
    Never,
    /// After a trap, a non-zero exit or the loss of its node.
    OnFailure,
    /// After any end, and after the loss of its node.
    Always,
}

impl RestartMode {
    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        }
    }
}

impl std::str::FromStr for RestartMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" => Ok(RestartMode::Never),
            "on-failure" => Ok(RestartMode::OnFailure),
            "always" => Ok(RestartMode::Always),
            other => Err(format!(
                "unknown restart policy {other:?} (never, on-failure or always)"
            )),
        }
    }
}

/// A process's restart policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When it comes back.
    pub mode: RestartMode,
    /// How often its node checkpoints it, ms.
    pub checkpoint_every_ms: u64,
    /// How many other nodes hold each checkpoint.
    pub replicas: u8,
}

impl RestartPolicy {
    fn validate(&self) -> Result<(), Refusal> {
        if !(CHECKPOINT_EVERY_MS_MIN..=CHECKPOINT_EVERY_MS_MAX).contains(&self.checkpoint_every_ms)
            || self.replicas == 0
            || self.replicas > REPLICAS_MAX
        {
            return Err(Refusal::BadRestart {
                checkpoint_every_ms: self.checkpoint_every_ms,
                replicas: self.replicas,
            });
        }
        Ok(())
    }
}

/// What [`Command::SetRestart`](super::Command::SetRestart) records: a
/// process's policy and what a fresh start needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    /// Its policy.
    pub policy: RestartPolicy,
    /// Its module, sha256 hex.
    pub module: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its memory cap, bytes.
    pub memory_bytes_max: u64,
    /// It runs the preemptible variant of its module.
    #[serde(default)]
    pub preemptible: bool,
}

/// A complete checkpoint: a stored snapshot held whole by `holders`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Per process, strictly increasing.
    pub seq: u64,
    /// The snapshot's id (sha256 hex of its manifest).
    pub snapshot: String,
    /// The nodes that hold it complete (the taker first).
    pub holders: Vec<NodeId>,
    /// When it was taken, Unix ms (the taker's clock; for people).
    pub taken_unix_ms: u64,
    /// Its linear memory, bytes.
    pub memory_bytes: u64,
}

/// What the cluster keeps of a process that may come back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recoverable {
    /// Its policy.
    pub policy: RestartPolicy,
    /// Its module, sha256 hex (for a fresh start).
    pub module: String,
    /// Its arguments (for a fresh start).
    pub args: Vec<String>,
    /// Its memory cap, bytes (what a survivor must have room for).
    pub memory_bytes_max: u64,
    /// It runs the preemptible variant of its module.
    #[serde(default)]
    pub preemptible: bool,
    /// 0 for the first run; bumped by each resume or restart.
    pub incarnation: u64,
    /// Its latest complete checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// What happened to a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Its node was declared dead and it resumes on `to`.
    Resumed {
        /// The dead node.
        from: NodeId,
        /// Where it resumes.
        to: NodeId,
        /// The checkpoint it resumes from (`None`: started fresh).
        checkpoint_seq: Option<u64>,
        /// How old that checkpoint was at the verdict, ms (wall clocks of
        /// two nodes: for people only).
        checkpoint_age_ms: Option<u64>,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// Its node was declared dead and it does not come back.
    Lost {
        /// The dead node.
        node: NodeId,
        /// Why not.
        why: LostReason,
    },
    /// It ended on `node` and its policy started it again there.
    Restarted {
        /// Where.
        node: NodeId,
        /// Its new incarnation.
        incarnation: u64,
        /// How the previous one ended.
        why: String,
    },
}

/// Why a process does not come back after the death of its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LostReason {
    /// Its restart policy is `never` (the default).
    RestartNever,
    /// No live active node has room for its memory cap.
    NoRoom {
        /// The cap, bytes.
        memory_bytes_max: u64,
    },
    /// No live node holds its latest checkpoint (a lone node kept it
    /// alone, or every holder died): resuming from an older state or
    /// afresh could repeat output it released, so it does not resume.
    CheckpointGone {
        /// The checkpoint.
        seq: u64,
    },
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostReason::RestartNever => f.write_str("its restart policy is never"),
            LostReason::NoRoom { memory_bytes_max } => write!(
                f,
                "no live node has room for its memory cap of {memory_bytes_max} bytes"
            ),
            LostReason::CheckpointGone { seq } => {
                write!(f, "no live node holds its latest checkpoint ({seq})")
            }
        }
    }
}

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Cluster-wide, strictly increasing.
    pub seq: u64,
    /// The process.
    pub pid: u64,
    /// When, Unix ms (the leader's clock; for people).
    pub at_unix_ms: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The replicated failover records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverBook {
    /// Processes that may come back, by pid (dropped with the directory
    /// entry).
    pub recoverable: BTreeMap<u64, Recoverable>,
    /// The latest events, oldest first, at most [`EVENTS_MAX`].
    pub events: VecDeque<Event>,
    /// The next event's `seq`.
    pub next_event: u64,
    /// Processes shown `lost` (their node is dead and they do not come
    /// back): pid → the reason. Dropped when the node comes back or the
    /// pid is forgotten.
    pub lost: BTreeMap<u64, LostReason>,
}

impl FailoverBook {
    fn push(&mut self, pid: u64, at_unix_ms: u64, kind: EventKind) {
        let seq = self.next_event;
        self.next_event = self.next_event.saturating_add(1);
        self.events.push_back(Event {
            seq,
            pid,
            at_unix_ms,
            kind,
        });
        while self.events.len() > EVENTS_MAX {
            self.events.pop_front();
        }
        debug_assert!(self.events.len() <= EVENTS_MAX);
    }

    /// The events after `after` (all with `None`), oldest first.
    pub fn events_after(&self, after: Option<u64>) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |e| after.is_none_or(|a| e.seq > a))
    }
}

impl ClusterState {
    /// [`Command::SetRestart`](super::Command::SetRestart).
    pub(super) fn set_restart(&mut self, node: NodeId, pid: u64, spec: &RestartSpec) -> Outcome {
        let RestartSpec {
            policy,
            module,
            args,
            memory_bytes_max,
            preemptible,
        } = spec;
        let (memory_bytes_max, preemptible) = (*memory_bytes_max, *preemptible);
        self.live_member(node)?;
        policy.validate()?;
        super::valid_hash(module)?;
        let args_bytes: usize = args.iter().map(|a| a.len()).sum();
        if args.len() > ARGS_MAX || args_bytes > ARGS_BYTES_MAX {
            return Err(Refusal::ArgsTooLarge);
        }
        if !self.started_on(node, pid)? {
            return Ok(CommandResult::Ok);
        }
        if policy.mode == RestartMode::Never {
            self.failover.recoverable.remove(&pid);
            return Ok(CommandResult::Ok);
        }
        let incarnation = self
            .failover
            .recoverable
            .get(&pid)
            .map_or(0, |r| r.incarnation);
        self.failover.recoverable.insert(
            pid,
            Recoverable {
                policy: policy.clone(),
                module: module.to_string(),
                args: args.to_vec(),
                memory_bytes_max,
                preemptible,
                incarnation,
                checkpoint: None,
            },
        );
        Ok(CommandResult::Ok)
    }

    /// [`Command::Checkpointed`](super::Command::Checkpointed).
    pub(super) fn checkpointed(
        &mut self,
        node: NodeId,
        pid: u64,
        epoch: u64,
        checkpoint: &Checkpoint,
    ) -> Outcome {
        self.live_member(node)?;
        super::valid_hash(&checkpoint.snapshot)?;
        let current = *self
            .directory
            .get(&pid)
            .ok_or(Refusal::PidNotLive { pid })?;
        // Only the copy that owns the pid now may record what it resumes
        // from: a stale copy (moved away, or replaced by a failover) is
        // refused here.
        if current.node != node || current.epoch != epoch {
            return Err(Refusal::MovedMeanwhile {
                pid,
                node: current.node,
                epoch: current.epoch,
                from: node,
                expected_epoch: epoch,
            });
        }
        let Some(record) = self.failover.recoverable.get(&pid) else {
            return Err(Refusal::NotRecoverable { pid });
        };
        let mut holders = checkpoint.holders.clone();
        holders.dedup();
        if holders.first() != Some(&node)
            || holders.len() > usize::from(REPLICAS_MAX) + 1
            || holders.iter().any(|h| self.live_member(*h).is_err())
        {
            return Err(Refusal::BadCheckpoint { pid });
        }
        if record
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.seq >= checkpoint.seq)
        {
            return Err(Refusal::BadCheckpoint { pid });
        }
        let mut checkpoint = checkpoint.clone();
        checkpoint.holders = holders;
        if let Some(r) = self.failover.recoverable.get_mut(&pid) {
            r.checkpoint = Some(checkpoint);
        }
        Ok(CommandResult::Ok)
    }

    /// [`Command::Restarted`](super::Command::Restarted): `pid` ended on
    /// `node` and its policy starts it again there.
    pub(super) fn restarted(&mut self, node: NodeId, pid: u64, why: &str, now_ms: u64) -> Outcome {
        self.live_member(node)?;
        if !self.started_on(node, pid)? {
            return Err(Refusal::PidNotLive { pid });
        }
        let Some(r) = self.failover.recoverable.get_mut(&pid) else {
            return Err(Refusal::NotRecoverable { pid });
        };
        r.incarnation = r.incarnation.saturating_add(1);
        // A fresh start: what it was captured with is no longer its state.
        r.checkpoint = None;
        let incarnation = r.incarnation;
        // A new incarnation holds no lock of the old one.
        self.release_locks_of(&[pid]);
        self.failover.push(
            pid,
            now_ms,
            EventKind::Restarted {
                node,
                incarnation,
                why: why.chars().take(WHY_CHARS_MAX).collect(),
            },
        );
        Ok(CommandResult::Ok)
    }

    /// After `dead` was declared dead: give each of its processes that may
    /// come back to a survivor, and show the others `lost`. Deterministic
    /// (part of the `NodeDead` apply).
    pub(super) fn fail_over(&mut self, dead: NodeId, now_ms: u64) {
        let on_dead: Vec<u64> = self
            .directory
            .iter()
            .filter(|(_, e)| e.node == dead)
            .map(|(pid, _)| *pid)
            .collect();
        // Memory each survivor still has, as the placements below use it.
        let mut room: BTreeMap<NodeId, (u64, u32)> = self
            .nodes
            .values()
            .filter(|n| {
                n.id != dead
                    && n.status == NodeStatus::Active
                    && super::liveness::dead_epoch(&self.liveness, n.id).is_none()
            })
            .map(|n| {
                // A node that has not reported its load yet is not judged
                // full.
                let free = if n.load.memory_bytes_total == 0 {
                    u64::MAX
                } else {
                    n.load.memory_bytes_free
                };
                (n.id, (free, n.load.process_count))
            })
            .collect();
        let mut resumed = Vec::new();
        for pid in on_dead {
            let Some(r) = self.failover.recoverable.get(&pid) else {
                self.failover.lost.insert(pid, LostReason::RestartNever);
                self.failover.push(
                    pid,
                    now_ms,
                    EventKind::Lost {
                        node: dead,
                        why: LostReason::RestartNever,
                    },
                );
                continue;
            };
            let need = r.memory_bytes_max;
            let holders: Vec<NodeId> = r
                .checkpoint
                .as_ref()
                .map(|c| c.holders.clone())
                .unwrap_or_default();
            // Its latest checkpoint covers output it released: without a
            // live copy of it, it may not come back at all.
            if let Some(c) = &r.checkpoint {
                let serves = |h: &NodeId| {
                    *h != dead
                        && self
                            .nodes
                            .get(h)
                            .is_some_and(|n| n.status != NodeStatus::Removed)
                        && super::liveness::dead_epoch(&self.liveness, *h).is_none()
                };
                if !c.holders.iter().any(serves) {
                    let why = LostReason::CheckpointGone { seq: c.seq };
                    self.failover.lost.insert(pid, why.clone());
                    self.failover
                        .push(pid, now_ms, EventKind::Lost { node: dead, why });
                    continue;
                }
            }
            let fits = |id: &NodeId, room: &BTreeMap<NodeId, (u64, u32)>| {
                room.get(id).is_some_and(|(free, _)| *free >= need)
            };
            // A holder of its checkpoint first (no page travels), else the
            // least loaded node with room (it fetches the pages).
            let by_load = |a: &NodeId, b: &NodeId, room: &BTreeMap<NodeId, (u64, u32)>| {
                let (fa, ca) = room[a];
                let (fb, cb) = room[b];
                (ca, std::cmp::Reverse(fa), *a).cmp(&(cb, std::cmp::Reverse(fb), *b))
            };
            let mut candidates: Vec<NodeId> =
                holders.iter().copied().filter(|h| fits(h, &room)).collect();
            if candidates.is_empty() {
                candidates = room.keys().copied().filter(|id| fits(id, &room)).collect();
            }
            candidates.sort_by(|a, b| by_load(a, b, &room));
            let Some(&to) = candidates.first() else {
                let why = LostReason::NoRoom {
                    memory_bytes_max: need,
                };
                self.failover.lost.insert(pid, why.clone());
                self.failover
                    .push(pid, now_ms, EventKind::Lost { node: dead, why });
                continue;
            };
            if let Some((free, count)) = room.get_mut(&to) {
                *free = free.saturating_sub(need);
                *count = count.saturating_add(1);
            }
            let epoch = self.directory.get(&pid).map_or(0, |e| e.epoch);
            self.directory.insert(
                pid,
                DirEntry {
                    node: to,
                    epoch: epoch.saturating_add(1),
                },
            );
            resumed.push(pid);
            let Some(r) = self.failover.recoverable.get_mut(&pid) else {
                continue;
            };
            r.incarnation = r.incarnation.saturating_add(1);
            let incarnation = r.incarnation;
            let (seq, age) = match &r.checkpoint {
                Some(c) => (Some(c.seq), Some(now_ms.saturating_sub(c.taken_unix_ms))),
                None => (None, None),
            };
            self.failover.push(
                pid,
                now_ms,
                EventKind::Resumed {
                    from: dead,
                    to,
                    checkpoint_seq: seq,
                    checkpoint_age_ms: age,
                    incarnation,
                },
            );
        }
        // A new incarnation holds no lock of the old one: they are released
        // (a guest that believed it held one gets `LOCK_LOST`).
        self.release_locks_of(&resumed);
    }

    /// `node` is back: its processes that stayed in the directory are no
    /// longer lost.
    pub(super) fn back_alive(&mut self, node: NodeId) {
        let back: Vec<u64> = self
            .failover
            .lost
            .keys()
            .copied()
            .filter(|pid| self.directory.get(pid).is_some_and(|e| e.node == node))
            .collect();
        for pid in back {
            self.failover.lost.remove(&pid);
        }
    }

    /// Drop what the failover book keeps of pids that are gone.
    pub(super) fn forget_recoverable(&mut self, gone: &std::collections::BTreeSet<u64>) {
        for pid in gone {
            self.failover.recoverable.remove(pid);
            self.failover.lost.remove(pid);
        }
    }

    /// What a node resuming `pid` needs: its record, if the directory
    /// gives it to `node`.
    pub fn resume_of(&self, node: NodeId, pid: u64) -> Option<&Recoverable> {
        self.directory
            .get(&pid)
            .filter(|e| e.node == node)
            .and_then(|_| self.failover.recoverable.get(&pid))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;

    const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn ok(s: &mut ClusterState, cmd: Command) {
        assert_eq!(s.apply(&cmd), CommandResult::Ok, "{cmd:?}");
    }

    /// Three nodes; `pids` processes registered on node 3, the first
    /// `recoverable` of them with a restart policy.
    fn cluster(pids: usize, recoverable: usize) -> (ClusterState, Vec<u64>) {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&Command::Bootstrap {
                ca_cert_pem: String::new(),
                ca_node: 1,
                name: "n1".into(),
                addr: "n1:1".into(),
                labels: Default::default(),
                now_ms: 1,
            }),
            CommandResult::NodeId(1)
        );
        for name in ["n2", "n3"] {
            s.apply(&Command::AddNode {
                name: name.into(),
                addr: format!("{name}:1"),
                labels: Default::default(),
                now_ms: 1,
            });
        }
        let first = match s.apply(&Command::AllocPidBlock { node: 3 }) {
            CommandResult::PidBlock(f) => f,
            other => panic!("{other:?}"),
        };
        let pids: Vec<u64> = (0..pids as u64).map(|i| first + i).collect();
        ok(
            &mut s,
            Command::Register {
                node: 3,
                pids: pids.clone(),
            },
        );
        for pid in pids.iter().take(recoverable) {
            ok(
                &mut s,
                Command::SetRestart {
                    node: 3,
                    pid: *pid,
                    spec: RestartSpec {
                        policy: RestartPolicy {
                            mode: RestartMode::OnFailure,
                            checkpoint_every_ms: 1000,
                            replicas: 1,
                        },
                        module: HASH.into(),
                        args: vec!["app".into()],
                        memory_bytes_max: 1 << 20,
                        preemptible: false,
                    },
                },
            );
        }
        (s, pids)
    }

    fn checkpoint(seq: u64, holders: Vec<NodeId>) -> Checkpoint {
        Checkpoint {
            seq,
            snapshot: HASH.into(),
            holders,
            taken_unix_ms: 100,
            memory_bytes: 65536,
        }
    }

    fn dead(s: &mut ClusterState, node: NodeId) {
        let epoch = s.liveness_epoch(node);
        ok(
            s,
            Command::NodeDead {
                node,
                epoch,
                silent_ms: 5000,
                by: 1,
                now_ms: 1000,
            },
        );
    }

    #[test]
    fn a_dead_nodes_recoverable_processes_go_to_their_checkpoint_holder_and_the_rest_are_lost() {
        let (mut s, pids) = cluster(3, 2);
        ok(
            &mut s,
            Command::Checkpointed {
                node: 3,
                pid: pids[0],
                epoch: 0,
                checkpoint: checkpoint(1, vec![3, 2]),
            },
        );
        dead(&mut s, 3);
        // With a checkpoint held by node 2: there, from it.
        assert_eq!(
            s.directory.get(&pids[0]).map(|e| (e.node, e.epoch)),
            Some((2, 1))
        );
        assert_eq!(s.failover.recoverable[&pids[0]].incarnation, 1);
        // Without one: somewhere alive, fresh.
        let e = s.directory.get(&pids[1]).copied().unwrap();
        assert!(e.node == 1 || e.node == 2, "{e:?}");
        // Never: stays on node 3, lost.
        assert_eq!(s.directory.get(&pids[2]).map(|e| e.node), Some(3));
        assert_eq!(
            s.failover.lost.get(&pids[2]),
            Some(&LostReason::RestartNever)
        );
        let kinds: Vec<&EventKind> = s.failover.events.iter().map(|e| &e.kind).collect();
        assert!(matches!(
            kinds[0],
            EventKind::Resumed {
                from: 3,
                to: 2,
                checkpoint_seq: Some(1),
                checkpoint_age_ms: Some(900),
                incarnation: 1
            }
        ));
        assert!(matches!(
            kinds[1],
            EventKind::Resumed {
                checkpoint_seq: None,
                ..
            }
        ));
        assert!(matches!(kinds[2], EventKind::Lost { node: 3, .. }));
        // The same verdict applied again is refused and changes nothing.
        let before = s.clone();
        assert!(matches!(
            s.apply(&Command::NodeDead {
                node: 3,
                epoch: 0,
                silent_ms: 1,
                by: 1,
                now_ms: 2
            }),
            CommandResult::Refused(_)
        ));
        assert_eq!(s, before);
    }

    /// A checkpoint only the dead node held (a lone node's, or one whose
    /// every holder died) cannot be resumed from, and nothing older or
    /// fresh may stand in for it: the process is lost, with the reason.
    #[test]
    fn a_process_whose_checkpoint_no_live_node_holds_is_lost_not_restarted() {
        let (mut s, pids) = cluster(2, 2);
        for (pid, holders) in [(pids[0], vec![3]), (pids[1], vec![3, 2])] {
            ok(
                &mut s,
                Command::Checkpointed {
                    node: 3,
                    pid,
                    epoch: 0,
                    checkpoint: checkpoint(4, holders),
                },
            );
        }
        dead(&mut s, 2);
        dead(&mut s, 3);
        for pid in &pids {
            assert_eq!(s.directory.get(pid).map(|e| e.node), Some(3));
            assert_eq!(
                s.failover.lost.get(pid),
                Some(&LostReason::CheckpointGone { seq: 4 })
            );
            assert_eq!(s.failover.recoverable[pid].incarnation, 0);
        }
    }

    #[test]
    fn a_checkpoint_from_a_copy_that_no_longer_owns_the_pid_is_refused() {
        let (mut s, pids) = cluster(1, 1);
        let pid = pids[0];
        ok(
            &mut s,
            Command::Checkpointed {
                node: 3,
                pid,
                epoch: 0,
                checkpoint: checkpoint(1, vec![3, 1]),
            },
        );
        // Not newer than the last: refused.
        assert_eq!(
            s.apply(&Command::Checkpointed {
                node: 3,
                pid,
                epoch: 0,
                checkpoint: checkpoint(1, vec![3, 1]),
            }),
            CommandResult::Refused(Refusal::BadCheckpoint { pid })
        );
        // The taker must come first, and holders be members.
        assert!(matches!(
            s.apply(&Command::Checkpointed {
                node: 3,
                pid,
                epoch: 0,
                checkpoint: checkpoint(2, vec![1, 3]),
            }),
            CommandResult::Refused(Refusal::BadCheckpoint { .. })
        ));
        assert!(matches!(
            s.apply(&Command::Checkpointed {
                node: 3,
                pid,
                epoch: 0,
                checkpoint: checkpoint(2, vec![3, 9]),
            }),
            CommandResult::Refused(_)
        ));
        dead(&mut s, 3);
        let e = *s.directory.get(&pid).unwrap();
        assert_eq!((e.node, e.epoch), (1, 1));
        // The old copy on node 3 (cut off, not dead) cannot record what
        // the cluster would resume from any more.
        assert!(matches!(
            s.apply(&Command::Checkpointed {
                node: 3,
                pid,
                epoch: 0,
                checkpoint: checkpoint(5, vec![3, 2]),
            }),
            CommandResult::Refused(_)
        ));
        // The new one can, at its epoch.
        ok(
            &mut s,
            Command::Checkpointed {
                node: 1,
                pid,
                epoch: 1,
                checkpoint: checkpoint(2, vec![1, 2]),
            },
        );
    }

    #[test]
    fn a_node_without_room_is_not_chosen_and_no_room_anywhere_is_lost() {
        let (mut s, pids) = cluster(1, 1);
        for (id, free) in [(1, 1u64 << 19), (2, 1u64 << 19)] {
            ok(
                &mut s,
                Command::Heartbeat {
                    id,
                    load: super::super::NodeLoad {
                        memory_bytes_free: free,
                        memory_bytes_total: 1 << 30,
                        cpu_load_milli: 0,
                        process_count: 0,
                    },
                    now_ms: 5,
                },
            );
        }
        dead(&mut s, 3);
        assert_eq!(
            s.failover.lost.get(&pids[0]),
            Some(&LostReason::NoRoom {
                memory_bytes_max: 1 << 20
            })
        );
        assert_eq!(s.directory.get(&pids[0]).map(|e| e.node), Some(3));
    }

    #[test]
    fn bad_policies_and_arguments_are_refused() {
        let (mut s, pids) = cluster(1, 0);
        let spec = |every: u64, replicas: u8, args: Vec<String>| RestartSpec {
            policy: RestartPolicy {
                mode: RestartMode::Always,
                checkpoint_every_ms: every,
                replicas,
            },
            module: HASH.into(),
            args,
            memory_bytes_max: 1,
            preemptible: false,
        };
        for bad in [
            spec(10, 1, vec![]),
            spec(1000, 0, vec![]),
            spec(1000, REPLICAS_MAX + 1, vec![]),
            spec(1000, 1, vec!["x".repeat(ARGS_BYTES_MAX + 1)]),
            spec(1000, 1, vec![String::new(); ARGS_MAX + 1]),
        ] {
            assert!(
                matches!(
                    s.apply(&Command::SetRestart {
                        node: 3,
                        pid: pids[0],
                        spec: bad.clone()
                    }),
                    CommandResult::Refused(_)
                ),
                "{bad:?}"
            );
        }
        // Another node may not set a policy for a process it does not run.
        assert!(matches!(
            s.apply(&Command::SetRestart {
                node: 1,
                pid: pids[0],
                spec: spec(1000, 1, vec![])
            }),
            CommandResult::Refused(Refusal::PidNotOn { .. })
        ));
    }
}
