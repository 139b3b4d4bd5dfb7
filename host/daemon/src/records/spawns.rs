//! Spawns by processes under output commit (issue #16): the Raft records
//! that make a resumed parent's repeated `spawn` find the child the first
//! copy started instead of starting a second one.
//!
//! The parent's node draws the child's pid from its own block and records
//! it as the parent's effect ([`Command::SpawnEffect`]) before the child
//! runs; the record registers the child on the node that will run it. A
//! copy of the parent resumed inside the same `spawn` records again under
//! the same key and is answered with the first child. A child recorded on
//! another node is started there only if that node's applied state shows
//! the record ([`recorded_here`]), and only once ([`StartedChildren`]).
//!
//! The parent's node can die between the record and its start request to
//! the child's node. The copy resumed inside the same `spawn_on` then finds
//! the record and asks the child's node again: the child starts if that
//! node never started it, and not a second time if it did (the first
//! request arrived, or arrives later).
//!
//! A start that fails is recorded too ([`failed`]): the child leaves the
//! directory (no entry for a process that never ran), repeats get the
//! error, and a child that started after all (its answer was lost) is
//! killed by its node ([`kill_dropped`]), so what runs is what the parent
//! was told.

use super::kv::raft_effect;
use shoal_cluster::state::effects;
use shoal_cluster::{ClusterState, Command, CommandResult, NodeId, Raft};
use shoal_runtime::abi::errno;
use shoal_runtime::cluster_link::{EffectKey, SpawnRecord};
use shoal_runtime::node::Node;
use shoal_runtime::pid::Pid;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a record waits for its just-started parent to reach the
/// directory, and a child's node for the record to be applied there.
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// The error codes a failed spawn may report (anything else recorded is
/// reported as `SPAWN_FAILED`).
const SPAWN_ERRNOS: [i32; 6] = [
    errno::LIMIT,
    errno::NO_MODULE,
    errno::NO_NODE,
    errno::SPAWN_FAILED,
    errno::UNAVAILABLE,
    errno::INVALID,
];

/// Record that `parent`'s `effect` spawns `child` on `node`.
pub async fn record(
    raft: &Raft,
    parent: Pid,
    effect: EffectKey,
    child: Pid,
    node: NodeId,
) -> Result<SpawnRecord, i32> {
    raft.wait_for(RECORD_WAIT, |s| s.directory.contains_key(&parent.0))
        .await
        .map_err(|_| errno::NO_PROCESS)?;
    let cmd = Command::SpawnEffect {
        parent: parent.0,
        effect: raft_effect(effect),
        child: child.0,
        node,
    };
    match raft.write(cmd).await {
        Ok(CommandResult::Child(c)) if c == child.0 => Ok(SpawnRecord::Start),
        Ok(CommandResult::Child(c)) => Ok(SpawnRecord::Spawned(Pid(c))),
        Ok(CommandResult::ChildFailed(code)) => Ok(SpawnRecord::Failed(reported_errno(code))),
        // The chosen node was declared dead meanwhile.
        Ok(CommandResult::Refused(shoal_cluster::Refusal::LivenessSame { .. })) => {
            Err(errno::NO_NODE)
        }
        Ok(other) => {
            tracing::warn!("spawn by pid {parent} not recorded: {other:?}");
            Err(errno::SPAWN_FAILED)
        }
        Err(e) => {
            tracing::warn!("spawn by pid {parent} not recorded: {e}");
            // It may have been applied all the same: a repeat then finds
            // the failure, not a child that never ran.
            failed(raft, parent, effect, child, errno::UNAVAILABLE).await;
            Err(errno::UNAVAILABLE)
        }
    }
}

/// What `parent`'s `effect` was answered, if this node's applied state
/// already holds its record: the child, or the error its failed start
/// reported. A copy resumed inside a `spawn_on` finds its child here
/// without placing it again (which would draw a pid for nothing, and could
/// fail with `NO_NODE` though the child is on record).
pub fn recorded(state: &ClusterState, parent: Pid, effect: EffectKey) -> Option<Result<Pid, i32>> {
    match *state.effects.done(parent.0, &raft_effect(effect))? {
        CommandResult::Child(c) => Some(Ok(Pid(c))),
        CommandResult::ChildFailed(code) => Some(Err(reported_errno(code))),
        _ => None,
    }
}

/// The error code a recorded failed spawn reports to a repeat
/// (`SPAWN_FAILED` for anything not in [`SPAWN_ERRNOS`]).
fn reported_errno(code: i32) -> i32 {
    if SPAWN_ERRNOS.contains(&code) {
        code
    } else {
        errno::SPAWN_FAILED
    }
}

/// The child recorded for `parent`'s `effect` did not start (best effort).
pub async fn failed(raft: &Raft, parent: Pid, effect: EffectKey, child: Pid, code: i32) {
    let cmd = Command::SpawnEffectFailed {
        parent: parent.0,
        effect: raft_effect(effect),
        child: child.0,
        errno: code,
    };
    if let Err(e) = raft.write(cmd).await {
        tracing::warn!("cannot record that child {child} of pid {parent} did not start: {e}");
    }
}

/// Does node `me`'s applied state (waited for, at most [`RECORD_WAIT`])
/// show `child` as `parent`'s effect `effect`, registered on `me`? Only
/// then may `me` start a process under a pid another node drew.
pub async fn recorded_here(
    raft: &Raft,
    me: NodeId,
    parent: Pid,
    effect: EffectKey,
    child: Pid,
) -> bool {
    let key = raft_effect(effect);
    let shows = |s: &ClusterState| is_recorded(s, me, parent, &key, child);
    raft.wait_for(RECORD_WAIT, shows).await.is_ok()
}

fn is_recorded(
    s: &ClusterState,
    me: NodeId,
    parent: Pid,
    key: &effects::EffectKey,
    child: Pid,
) -> bool {
    s.effects.done(parent.0, key) == Some(&CommandResult::Child(child.0))
        && s.directory.get(&child.0).is_some_and(|e| e.node == me)
}

/// When the book holds this many children, those the applied state no
/// longer shows registered here are forgotten (they ended or moved; the
/// record check refuses them anyway). What stays is bounded by the
/// directory's entries for this node.
const STARTED_PRUNE_AT: usize = 1024;

/// The recorded children this node has started (or is starting): a
/// recorded child is started at most once, however many requests for it
/// arrive (the first parent's and a resumed copy's, in either order).
#[derive(Debug, Default)]
pub struct StartedChildren {
    pids: Mutex<Started>,
}

#[derive(Debug, Default)]
struct Started {
    pids: BTreeSet<u64>,
    /// Prune when the book reaches this size: [`STARTED_PRUNE_AT`], or
    /// twice what the last pruning kept, so a node with many recorded
    /// children still running does not scan them on every claim.
    prune_at: usize,
}

impl StartedChildren {
    /// Claim the start of `child` on node `me`: true the first time only.
    /// Checked and claimed under one lock, so two requests racing each
    /// other start it once.
    pub fn claim(&self, state: &ClusterState, me: NodeId, child: Pid) -> bool {
        let mut book = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if book.pids.len() >= book.prune_at.max(STARTED_PRUNE_AT) {
            book.pids
                .retain(|p| state.directory.get(p).is_some_and(|e| e.node == me));
            book.prune_at = book.pids.len().saturating_mul(2);
        }
        book.pids.insert(child.0)
    }

    /// The recorded children in the book (started here, some since ended
    /// or moved).
    fn pids(&self) -> Vec<u64> {
        let book = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        book.pids.iter().copied().collect()
    }
}

/// Kill, on node `me`, every recorded child that runs here though the
/// directory dropped it as failed (`SpawnEffectFailed`: its parent was told
/// the spawn failed, because the answer to its start request was lost).
/// Follows the drops as they are applied; if it falls behind, it compares
/// the children started here with the directory instead.
pub async fn kill_dropped(node: Node, raft: Raft, started: Arc<StartedChildren>, me: NodeId) {
    let mut drops = raft.subscribe_dropped_children();
    loop {
        let pids = match drops.recv().await {
            Ok(d) if d.node == me => vec![d.pid],
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                let state = raft.state();
                started
                    .pids()
                    .into_iter()
                    .filter(|p| !state.directory.contains_key(p))
                    .collect()
            }
            Err(RecvError::Closed) => return,
        };
        for pid in pids {
            kill_if_running(&node, Pid(pid));
        }
    }
}

/// Kill `child` if it runs here (a dropped recorded child).
pub fn kill_if_running(node: &Node, child: Pid) {
    if node.router().is_local(child) && node.kill(child).is_ok() {
        tracing::info!(
            pid = child.0,
            "killed a recorded child its parent's node reported as failed to start"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The attack: a member asks another to start a process under a pid
    /// of its choosing (a live process's, to have two under one pid). A
    /// node starts a pid another node drew only if its applied state shows
    /// that pid recorded as a spawn effect to run on it.
    /// A state with members n1 and n2, and a pid block of `node`'s (its
    /// first pid).
    fn two_nodes(node: NodeId) -> (ClusterState, u64) {
        let mut s = ClusterState::default();
        for (i, name) in ["n1", "n2"].iter().enumerate() {
            let cmd = if i == 0 {
                Command::Bootstrap {
                    ca_cert_pem: String::new(),
                    ca_node: 1,
                    name: name.to_string(),
                    addr: format!("{name}:1"),
                    labels: BTreeMap::new(),
                    now_ms: 1,
                }
            } else {
                Command::AddNode {
                    name: name.to_string(),
                    addr: format!("{name}:1"),
                    labels: BTreeMap::new(),
                    now_ms: 1,
                }
            };
            assert!(matches!(s.apply(&cmd), CommandResult::NodeId(_)));
        }
        let CommandResult::PidBlock(first) = s.apply(&Command::AllocPidBlock { node }) else {
            panic!("no block")
        };
        (s, first)
    }

    #[test]
    fn only_a_child_on_record_for_this_node_is_started_under_a_drawn_pid() {
        let (mut s, first) = two_nodes(1);
        let (parent, live, child) = (Pid(first), Pid(first + 1), Pid(first + 2));
        s.apply(&Command::Register {
            node: 1,
            pids: vec![parent.0, live.0],
        });
        let key = EffectKey { life: 9, seq: 4 };
        assert_eq!(
            s.apply(&Command::SpawnEffect {
                parent: parent.0,
                effect: raft_effect(key),
                child: child.0,
                node: 2,
            }),
            CommandResult::Child(child.0)
        );
        let recorded =
            |me, key: EffectKey, pid| is_recorded(&s, me, parent, &raft_effect(key), pid);
        assert!(recorded(2, key, child));
        // Not for another node, another effect, or a pid not on record
        // (such as a live process's).
        assert!(!recorded(1, key, child));
        assert!(!recorded(2, EffectKey { life: 9, seq: 5 }, child));
        assert!(!recorded(2, EffectKey { life: 8, seq: 4 }, child));
        assert!(!recorded(2, key, live));
        assert!(!recorded(2, key, Pid(first + 3)));
    }

    /// A recorded child is started once however many requests arrive
    /// (the first parent's late one after a resumed copy's); the book
    /// forgets children no longer registered here once it is full, and
    /// only those.
    #[test]
    fn a_recorded_child_is_claimed_once_and_the_book_stays_bounded() {
        let (mut s, first) = two_nodes(2);
        let book = StartedChildren::default();
        let here: Vec<u64> = (first..first + 10).collect();
        assert!(matches!(
            s.apply(&Command::Register {
                node: 2,
                pids: here.clone(),
            }),
            CommandResult::Ok
        ));
        for &p in &here {
            assert!(book.claim(&s, 2, Pid(p)));
        }
        assert!(!book.claim(&s, 2, Pid(first)));
        for p in first + 100..first + 100 + STARTED_PRUNE_AT as u64 {
            book.claim(&s, 2, Pid(p));
        }
        let left = book.pids.lock().unwrap().pids.clone();
        assert!(left.len() < STARTED_PRUNE_AT, "{}", left.len());
        // Still registered here: still claimed.
        for p in here {
            assert!(left.contains(&p), "{p}");
            assert!(!book.claim(&s, 2, Pid(p)));
        }
    }
}
