//! Periodic checkpoints of the processes that may come back after the
//! death of their node (`shoal deploy --restart on-failure|always`; issue
//! #16).
//!
//! Every [`TICK`], this node looks for the processes it runs whose policy
//! the cluster records ([`shoal_cluster::state::failover`]) and whose last
//! checkpoint is older than their interval. For each, one at a time:
//!
//! 1. capture it at its next blocking call and store the snapshot,
//!    incremental over its previous one (the process goes on);
//! 2. have `replicas` other live members pull a complete copy (only the
//!    pages and chunks they lack), the previous holders first;
//! 3. write [`Command::Checkpointed`] naming the holders, a compare-and-set
//!    on the directory epoch read before the capture: a copy that no
//!    longer owns the pid cannot record a checkpoint.
//!
//! A checkpoint no other node holds is not recorded (it could not survive
//! the death of this node) unless no other live member exists to hold it:
//! a lone node records it alone, so output commit still releases what the
//! checkpoint covers (a cluster of one runs its processes' output as it
//! goes). Such a checkpoint cannot be resumed from: if this node dies
//! before a later checkpoint reaches a member, the process is lost
//! (`LostReason::CheckpointGone`), never resumed from an older state or
//! afresh.

use crate::Inner;
use shoal_cluster::state::failover::Checkpoint;
use shoal_cluster::{Command, CommandResult, NodeId};
use shoal_runtime::node::NodeError;
use shoal_runtime::pid::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the checkpointer looks for due processes.
pub const TICK: Duration = Duration::from_millis(50);
/// How often every local mailbox is looked at for what it still owes (a
/// resend or a release that met a full way): a fallback, so not on every
/// wake-up of this task.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Longest a checkpoint waits for its process to reach a blocking call.
pub const CAPTURE_WAIT: Duration = Duration::from_secs(2);

/// What this node remembers of its last checkpoint of a process.
struct Last {
    /// When it was taken (or last tried).
    at: Instant,
    /// Its holders, asked first next time.
    holders: Vec<NodeId>,
    /// The process cannot be captured (its module never blocks): do not
    /// try again.
    uncapturable: bool,
}

/// Checkpoint this node's recoverable processes when due (see the module
/// docs). Runs for the daemon's life.
pub async fn run(inner: Arc<Inner>) {
    let mut last: BTreeMap<u64, Last> = BTreeMap::new();
    let mut flushed = Instant::now();
    loop {
        // Output waiting for a checkpoint wakes it at once (output commit
        // costs a checkpoint's time, not a tick's).
        let _ = tokio::time::timeout(TICK, inner.node.router().output().notified()).await;
        // What could not be sent when it was due (a full way, a resend).
        if flushed.elapsed() >= FLUSH_EVERY {
            inner.node.router().flush_all();
            flushed = Instant::now();
        }
        let state = inner.raft.state();
        let mine: Vec<(u64, u64, u64)> = state
            .failover
            .recoverable
            .iter()
            .filter_map(|(pid, r)| {
                let e = state.directory.get(pid)?;
                (e.node == inner.me).then_some((*pid, e.epoch, r.policy.checkpoint_every_ms))
            })
            .collect();
        let live: BTreeSet<u64> = mine.iter().map(|(p, _, _)| *p).collect();
        last.retain(|pid, _| live.contains(pid));
        for (pid, epoch, every_ms) in mine {
            if inner.node.module_of(Pid(pid)).is_none() {
                continue;
            }
            // Output waiting for a checkpoint makes one due at once: output
            // commit costs a checkpoint's time, not its interval.
            let waiting = inner.node.output_waiting(Pid(pid));
            let due = last.get(&pid).is_none_or(|l| {
                !l.uncapturable && (waiting || l.at.elapsed() >= Duration::from_millis(every_ms))
            });
            if !due {
                continue;
            }
            let prefer = last
                .get(&pid)
                .map(|l| l.holders.clone())
                .unwrap_or_default();
            let started = Instant::now();
            let (holders, uncapturable) = match checkpoint(&inner, Pid(pid), epoch, &prefer).await {
                Ok(holders) => (holders, false),
                Err(Failed::Uncapturable) => (prefer, true),
                Err(Failed::Other(why)) => {
                    tracing::warn!("checkpoint of process {pid} failed: {why}");
                    (prefer, false)
                }
            };
            last.insert(
                pid,
                Last {
                    at: started,
                    holders,
                    uncapturable,
                },
            );
        }
    }
}

enum Failed {
    Uncapturable,
    Other(String),
}

/// Take, replicate and record one checkpoint of `pid` (at directory
/// `epoch`). Returns its holders.
async fn checkpoint(
    inner: &Arc<Inner>,
    pid: Pid,
    epoch: u64,
    prefer: &[NodeId],
) -> Result<Vec<NodeId>, Failed> {
    let state = inner.raft.state();
    let Some(record) = state.failover.recoverable.get(&pid.0) else {
        return Err(Failed::Other("no restart policy on record".into()));
    };
    let replicas = usize::from(record.policy.replicas);
    let seq = record.checkpoint.as_ref().map_or(1, |c| c.seq + 1);
    drop(state);
    let info = match inner.node.checkpoint(pid, CAPTURE_WAIT).await {
        Ok(info) => info,
        Err(NodeError::NotCapturable(_)) => {
            tracing::warn!(
                "process {pid} can never be checkpointed (its module never blocks): \
                 after the loss of its node it starts fresh"
            );
            return Err(Failed::Uncapturable);
        }
        Err(e) => return Err(Failed::Other(e.to_string())),
    };
    let holders = inner
        .link
        .replicate_checkpoint(&info.id, replicas, prefer)
        .await;
    if holders.len() < 2 && inner.link.has_replica_candidates() {
        return Err(Failed::Other(format!(
            "no other node could keep checkpoint {} (it would not survive this node)",
            info.id
        )));
    }
    if holders.len() < replicas + 1 && holders.len() > 1 {
        tracing::warn!(
            "checkpoint of process {pid} is on {} other node(s), not {replicas}",
            holders.len() - 1
        );
    }
    let cmd = Command::Checkpointed {
        node: inner.me,
        pid: pid.0,
        epoch,
        checkpoint: Checkpoint {
            seq,
            snapshot: info.id.to_hex(),
            holders: holders.clone(),
            taken_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            memory_bytes: info.memory_bytes,
        },
    };
    match inner.raft.write(cmd).await {
        Ok(CommandResult::Refused(why)) => Err(Failed::Other(why.to_string())),
        Ok(_) => {
            // Recorded: what it covers may be released and acknowledged.
            inner.node.commit_checkpoint(pid, &info.commit);
            tracing::debug!(
                "checkpoint {seq} of process {pid}: {} new pages, held by {holders:?}",
                info.pages_new
            );
            Ok(holders)
        }
        Err(e) => Err(Failed::Other(e.to_string())),
    }
}
