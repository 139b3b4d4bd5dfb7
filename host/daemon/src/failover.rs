//! This node's side of failover (issue #16): start the processes the
//! cluster gave it when their node was declared dead, and never let an old
//! copy run on after this node itself was declared dead and replaced.
//!
//! The decision is in Raft (`shoal_cluster::state::failover`: applied with
//! the `NodeDead` verdict, so every node agrees on who resumes what). This
//! task only carries it out:
//!
//! - **resume**: a pid the directory places here, with a restart policy on
//!   record, that this node neither runs nor saw end, is resumed from its
//!   latest complete checkpoint (fetching what it lacks from the holders),
//!   under its own pid, with the grants the cluster recorded for it — or
//!   started fresh from its module and arguments if it had no checkpoint.
//! - **restart**: a process that ended here and whose policy starts it
//!   again (`on-failure` after a trap or a non-zero exit, `always` after
//!   any end but a kill, a snapshot `--stop` or a move) is started fresh
//!   under its pid after its backoff ([`crate::link::checkpoints::Restarts`]),
//!   as a new incarnation (`Command::Restarted`): its checkpoint would only
//!   trap again.
//! - **fence**: when this node applies a `NodeDead` verdict about itself
//!   (it was cut off and comes back), every process it runs that the
//!   directory now places elsewhere is killed at once: that pid resumed
//!   on another node, and its old copy must not go on.

use crate::Inner;
use shoal_cluster::state::failover::Recoverable;
use shoal_cluster::ClusterState;
use shoal_registry::Sha256;
use shoal_runtime::node::SpawnSpec;
use shoal_runtime::pid::Pid;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How often the directory is looked at again without a verdict (a resume
/// that failed is retried then).
const SWEEP: Duration = Duration::from_millis(500);
/// Most attempts to resume one incarnation.
const ATTEMPTS_MAX: u32 = 5;

/// Follow the verdicts and the directory (see the module docs).
pub async fn run(inner: Arc<Inner>) {
    let mut verdicts = inner.raft.subscribe_liveness();
    // pid → (incarnation, attempts made, last attempt).
    let mut tried: BTreeMap<u64, (u64, u32, Instant)> = BTreeMap::new();
    loop {
        let state = inner.raft.state();
        resume_mine(&inner, &state, &mut tried).await;
        let (due, next) = inner.link.restarts.take_due();
        for (pid, why) in due {
            restart(&inner, Pid(pid), &why).await;
        }
        let wait = next.map_or(SWEEP, |at| {
            at.saturating_duration_since(Instant::now()).min(SWEEP)
        });
        tokio::select! {
            verdict = verdicts.recv() => match verdict {
                Ok(change) if change.dead && change.node == inner.me => {
                    fence_replaced(&inner, &inner.raft.state());
                }
                Err(RecvError::Lagged(_)) => {
                    let state = inner.raft.state();
                    if state.node_dead(inner.me).is_some() {
                        fence_replaced(&inner, &state);
                    }
                }
                Err(RecvError::Closed) => return,
                _ => {}
            },
            _ = inner.link.restarts.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Start `pid`, which ended here (`why`), again, fresh, as its policy asks.
async fn restart(inner: &Arc<Inner>, pid: Pid, why: &str) {
    use shoal_runtime::node::ClusterLink;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let cmd = shoal_cluster::Command::Restarted {
        node: inner.me,
        pid: pid.0,
        why: why.to_string(),
        now_ms,
    };
    match inner.raft.write(cmd).await {
        Ok(shoal_cluster::CommandResult::Refused(refusal)) => {
            // No longer ours to restart (its policy or entry is gone):
            // its end is written as for any process.
            tracing::info!("process {pid} is not restarted: {refusal}");
            inner.link.process_exited(pid, None);
            return;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("cannot record the restart of process {pid}: {e}; trying again");
            inner.link.restarts.push(pid.0, why.to_string());
            return;
        }
    }
    let state = inner.raft.state();
    let Some(record) = state.failover.recoverable.get(&pid.0).cloned() else {
        inner.link.process_exited(pid, None);
        return;
    };
    drop(state);
    match start_fresh(inner, pid, &record).await {
        Ok(()) => tracing::info!(
            "process {pid} restarted after it {why} (incarnation {})",
            record.incarnation
        ),
        Err(e) => {
            tracing::warn!("cannot restart process {pid}: {e}; trying again after a backoff");
            inner
                .link
                .restarts
                .push(pid.0, format!("failed to restart: {e}"));
        }
    }
}

/// Kill the processes running here that the directory places elsewhere
/// and that may come back (they were resumed on another node).
pub(crate) fn fence_replaced(inner: &Inner, state: &ClusterState) {
    for p in inner.node.processes() {
        let pid = p.pid;
        let elsewhere = state
            .directory
            .get(&pid.0)
            .is_some_and(|e| e.node != inner.me);
        if elsewhere && state.failover.recoverable.contains_key(&pid.0) {
            tracing::warn!(
                "process {pid} was resumed on another node while this node was declared dead: \
                 killing the old copy here"
            );
            let _ = inner.node.kill(pid);
        }
    }
}

/// Resume every process the cluster gave this node that does not run here.
async fn resume_mine(
    inner: &Arc<Inner>,
    state: &ClusterState,
    tried: &mut BTreeMap<u64, (u64, u32, Instant)>,
) {
    let mine: Vec<(u64, Recoverable)> = state
        .failover
        .recoverable
        .iter()
        .filter(|(pid, _)| {
            state
                .directory
                .get(*pid)
                .is_some_and(|e| e.node == inner.me)
        })
        .filter(|(pid, _)| {
            // Not running here, and not ended here (an end waiting to be
            // written to the directory) other than by moving away.
            inner.node.module_of(Pid(**pid)).is_none()
                && inner
                    .node
                    .exit_record(Pid(**pid))
                    .is_none_or(|(status, _)| {
                        matches!(status.reason, shoal_abi::process::ExitReason::Moved)
                    })
        })
        .map(|(pid, r)| (*pid, r.clone()))
        .collect();
    tried.retain(|pid, _| mine.iter().any(|(p, _)| p == pid));
    for (pid, record) in mine {
        let entry = tried
            .entry(pid)
            .or_insert((record.incarnation, 0, Instant::now()));
        if entry.0 != record.incarnation {
            *entry = (record.incarnation, 0, Instant::now());
        }
        if entry.1 >= ATTEMPTS_MAX {
            continue;
        }
        // Back off between attempts: 0, 0.5, 1, 2, 4 s.
        let wait = match entry.1 {
            0 => Duration::ZERO,
            n => Duration::from_millis(250u64 << n.min(6)),
        };
        if entry.2.elapsed() < wait {
            continue;
        }
        entry.1 += 1;
        entry.2 = Instant::now();
        let started = Instant::now();
        match resume(inner, Pid(pid), &record).await {
            Ok(how) => {
                // Reported once it runs: its memory written into its
                // instance, which the resume's return does not wait for.
                let node = inner.node.clone();
                let incarnation = record.incarnation;
                tokio::spawn(async move {
                    if node.until_running(Pid(pid)).await {
                        tracing::info!(
                            "process {pid} resumed here {how} (incarnation {incarnation}) in {} ms",
                            started.elapsed().as_millis()
                        );
                    } else {
                        tracing::warn!(
                            "process {pid} ended before it ran again here {how} (incarnation {incarnation})"
                        );
                    }
                });
            }
            Err(why) => tracing::warn!(
                "cannot resume process {pid} here (attempt {} of {ATTEMPTS_MAX}): {why}",
                entry.1
            ),
        }
    }
}

/// Start `pid` here from its checkpoint, or fresh. Says which.
async fn resume(inner: &Arc<Inner>, pid: Pid, record: &Recoverable) -> Result<String, String> {
    if let Some(c) = &record.checkpoint {
        let grants = crate::records::grants::recorded(&inner.raft, &inner.node, pid)
            .map_err(|e| e.to_string())?;
        let id: Sha256 = c
            .snapshot
            .parse()
            .map_err(|_| format!("checkpoint id {:?} is not sha256", c.snapshot))?;
        inner
            .link
            .fetch_snapshot(&c.holders, &id)
            .await
            .map_err(|e| e.to_string())?;
        inner
            .node
            .resume_checkpoint(&id, pid, &grants)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(format!("from checkpoint {}", c.seq));
    }
    start_fresh(inner, pid, record).await?;
    Ok("fresh (it had no checkpoint yet)".into())
}

/// Start `pid` here from its module and arguments, with the grants the
/// cluster recorded for it.
async fn start_fresh(inner: &Arc<Inner>, pid: Pid, record: &Recoverable) -> Result<(), String> {
    let grants = crate::records::grants::recorded(&inner.raft, &inner.node, pid)
        .map_err(|e| e.to_string())?;
    let module: Sha256 = record
        .module
        .parse()
        .map_err(|_| format!("module {:?} is not sha256", record.module))?;
    if !inner.node.registry().contains(&module) {
        inner
            .node
            .fetch_module(&record.module)
            .await
            .map_err(|code| {
                format!(
                    "its module could not be fetched ({})",
                    shoal_runtime::abi::errno::name(code)
                )
            })?;
    }
    let mut spec = SpawnSpec::new(module, record.args.clone());
    spec.env = grants.env.clone();
    spec.dirs = grants.dirs.clone();
    spec.volumes = grants.volumes.clone();
    spec.memory_bytes_max = Some(record.memory_bytes_max);
    spec.preemptible = record.preemptible;
    spec.output_commit = record.policy.mode != shoal_cluster::state::failover::RestartMode::Never;
    inner
        .node
        .spawn_as(spec, pid)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
