//! Draining a node: cordon it, then move every process it runs to other
//! nodes by live migration ([`super::source::migrate`], the scheduler
//! choosing each target).
//!
//! The job runs on the drained node itself (a migration must start where
//! the process runs); the control API forwards a drain request for another
//! node to that node. At most [`DRAIN_CONCURRENCY`] migrations are in
//! flight at once. The job keeps a [`DrainStatus`] that `GET
//! /v1/nodes/{name}/drain` returns while it runs and after it ended.
//!
//! - **cancel**: no new migration starts; those in flight finish (a
//!   migration is never abandoned half-way); moved processes stay moved and
//!   the node stays cordoned.
//! - **deadline**: the same, at the deadline; the job ends
//!   `deadline_passed` and lists the processes left.
//! - a process that cannot move (it never blocks, so it cannot be captured;
//!   no node can take it) is recorded in `failed` with the reason. A move
//!   that failed and left the process running here is tried again once.

use super::source::{migrate, MigrateError};
use super::Ctx;
pub use shoal_api::cluster::{DrainFailure, DrainRequest, DrainState, DrainStatus};
use shoal_runtime::node::NodeError;
use shoal_runtime::pid::Pid;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Most migrations of one drain in flight at once.
pub const DRAIN_CONCURRENCY: usize = 4;
/// Deadline when the request names none.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Longest deadline accepted.
pub const DEADLINE_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most attempts at moving one process (a move that failed with the
/// process resumed here is worth one more try; a refusal is not).
pub const ATTEMPTS_MAX: u32 = 2;
/// Most times the job looks again for processes that started here while it
/// ran (a cordon stops placement, not local spawns).
pub const SWEEPS_MAX: u32 = 3;
pub use shoal_api::cluster::CANCEL_WAIT;

/// Why a drain request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// One is running already.
    #[error("node {node} is already being drained (moved {moved} of {total} so far); cancel it first or wait for it to end")]
    Running {
        /// The node.
        node: String,
        /// Moved so far.
        moved: usize,
        /// Found so far.
        total: usize,
    },
    /// Nothing to report or cancel.
    #[error("node {0} has not been drained since it started")]
    NeverStarted(String),
    /// Nothing to cancel.
    #[error("no drain is running on node {node} (the last one ended {state})")]
    NotRunning {
        /// The node.
        node: String,
        /// How the last one ended.
        state: DrainState,
    },
    /// The deadline is out of range.
    #[error("a drain deadline must be between 1 ms and {days} days, not {0} ms", days = DEADLINE_MAX.as_secs() / 86_400)]
    BadDeadline(u64),
    /// The node could not be cordoned (no quorum?): nothing was moved.
    #[error("cannot cordon node {node} before draining it: {why}")]
    Cordon {
        /// The node.
        node: String,
        /// The cordon's error.
        why: String,
    },
}

impl DrainError {
    /// The HTTP status the control API answers with.
    pub fn status(&self) -> u16 {
        match self {
            DrainError::Running { .. } | DrainError::NotRunning { .. } => 409,
            DrainError::NeverStarted(_) => 404,
            DrainError::BadDeadline(_) => 400,
            DrainError::Cordon { .. } => 503,
        }
    }
}

/// One drain job.
struct Job {
    status: Mutex<DrainStatus>,
    cancelled: AtomicBool,
    wake: tokio::sync::Notify,
    /// Woken after every status update (a cancel waits on it).
    updated: tokio::sync::Notify,
}

impl Job {
    fn snapshot(&self) -> DrainStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut DrainStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
        self.updated.notify_waiters();
    }
}

/// The node's drain job (the latest one, running or ended). One per node;
/// kept in [`Ctx`].
#[derive(Default)]
pub struct Drains {
    current: Mutex<Option<Arc<Job>>>,
}

impl Drains {
    fn get(&self) -> Option<Arc<Job>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The processes running here, by pid: the local process list (exact on
/// this node) and the directory entries naming this node that are still
/// local processes (host mailboxes, which are in the directory too, are
/// not processes and stay).
fn local_pids(ctx: &Ctx) -> BTreeSet<Pid> {
    let mut pids: BTreeSet<Pid> = ctx.node.processes().iter().map(|p| p.pid).collect();
    let state = ctx.raft.state();
    pids.extend(
        state
            .directory
            .iter()
            .filter(|(_, e)| e.node == ctx.me)
            .map(|(pid, _)| Pid(*pid))
            .filter(|pid| ctx.node.module_of(*pid).is_some()),
    );
    pids
}

/// Start draining this node: cordon it, then move its processes in the
/// background. Returns the initial status.
pub async fn start(ctx: &Arc<Ctx>, deadline: Option<Duration>) -> Result<DrainStatus, DrainError> {
    let deadline = deadline.unwrap_or(DEADLINE_DEFAULT);
    let deadline_ms = deadline.as_millis().min(u128::from(u64::MAX)) as u64;
    if deadline_ms == 0 || deadline > DEADLINE_MAX {
        return Err(DrainError::BadDeadline(deadline_ms));
    }
    let started = Instant::now();
    let job = {
        let mut current = ctx.drains.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = current.as_ref() {
            let s = j.snapshot();
            if s.state == DrainState::Running {
                return Err(DrainError::Running {
                    node: s.node,
                    moved: s.moved,
                    total: s.total,
                });
            }
        }
        let job = Arc::new(Job {
            status: Mutex::new(DrainStatus {
                node: ctx.name.clone(),
                total: 0,
                moved: 0,
                gone: 0,
                failed: Vec::new(),
                remaining: Vec::new(),
                state: DrainState::Running,
                started_unix_ms: shoal_pki::now_unix_ms(),
                ended_unix_ms: None,
                deadline_ms,
            }),
            cancelled: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            updated: tokio::sync::Notify::new(),
        });
        *current = Some(job.clone());
        job
    };
    if let Err(e) = crate::records::set_cordon(&ctx.raft, ctx.me, true, None).await {
        job.update(|s| {
            s.state = DrainState::Cancelled;
            s.ended_unix_ms = Some(shoal_pki::now_unix_ms());
        });
        return Err(DrainError::Cordon {
            node: ctx.name.clone(),
            why: e.message,
        });
    }
    let pids = local_pids(ctx);
    job.update(|s| {
        s.total = pids.len();
        s.remaining = pids.iter().copied().collect();
    });
    tracing::info!(
        "draining node {}: cordoned, moving {} process(es), deadline {} ms",
        ctx.name,
        pids.len(),
        deadline_ms
    );
    let status = job.snapshot();
    tokio::spawn(run(ctx.clone(), job, pids, started + deadline));
    Ok(status)
}

/// The status of this node's latest drain.
pub fn status(ctx: &Ctx) -> Result<DrainStatus, DrainError> {
    ctx.drains
        .get()
        .map(|j| j.snapshot())
        .ok_or_else(|| DrainError::NeverStarted(ctx.name.clone()))
}

/// Cancel this node's running drain; answers once the migrations in flight
/// finished (or after [`CANCEL_WAIT`], still `running` then).
pub async fn cancel(ctx: &Ctx) -> Result<DrainStatus, DrainError> {
    let job = ctx
        .drains
        .get()
        .ok_or_else(|| DrainError::NeverStarted(ctx.name.clone()))?;
    let s = job.snapshot();
    if s.state != DrainState::Running {
        return Err(DrainError::NotRunning {
            node: s.node,
            state: s.state,
        });
    }
    job.cancelled.store(true, Ordering::SeqCst);
    job.wake.notify_one();
    let until = tokio::time::Instant::now() + CANCEL_WAIT;
    loop {
        // Registered before the check, so an update in between wakes it.
        let updated = job.updated.notified();
        let s = job.snapshot();
        if s.state != DrainState::Running {
            return Ok(s);
        }
        if tokio::time::timeout_at(until, updated).await.is_err() {
            return Ok(job.snapshot());
        }
    }
}

/// How one attempt ended.
enum Outcome {
    Moved,
    Gone,
    Retry(String),
    Failed(String),
}

fn outcome(r: &Result<super::MigrateReport, MigrateError>, attempt: u32) -> Outcome {
    match r {
        Ok(_) => Outcome::Moved,
        Err(MigrateError::NotHere(_))
        | Err(MigrateError::Exited { .. })
        | Err(MigrateError::Capture(NodeError::NoProcess(_))) => Outcome::Gone,
        Err(
            e @ (MigrateError::Resumed { .. }
            | MigrateError::Capture(NodeError::CaptureTimeout { .. })),
        ) if attempt < ATTEMPTS_MAX => Outcome::Retry(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The job: keep up to [`DRAIN_CONCURRENCY`] migrations in flight until
/// every process was tried, the job is cancelled, or the deadline passes.
async fn run(ctx: Arc<Ctx>, job: Arc<Job>, pids: BTreeSet<Pid>, deadline: Instant) {
    let mut queue: VecDeque<Pid> = pids.iter().copied().collect();
    let mut seen: HashSet<Pid> = pids.into_iter().collect();
    let mut attempts: HashMap<Pid, u32> = HashMap::new();
    let mut flight: JoinSet<(Pid, Result<super::MigrateReport, MigrateError>)> = JoinSet::new();
    let mut in_flight: BTreeSet<Pid> = BTreeSet::new();
    let mut sweeps = 0;
    loop {
        let stopping = job.cancelled.load(Ordering::SeqCst) || Instant::now() >= deadline;
        while !stopping && flight.len() < DRAIN_CONCURRENCY {
            let Some(pid) = queue.pop_front() else { break };
            *attempts.entry(pid).or_insert(0) += 1;
            in_flight.insert(pid);
            let ctx = ctx.clone();
            // A spawned task: a migration runs to its end even if this
            // job stops waiting for it.
            flight.spawn(async move { (pid, migrate(&ctx, pid, None).await) });
        }
        job.update(|s| {
            s.remaining = queue.iter().chain(in_flight.iter()).copied().collect();
            s.remaining.sort();
        });
        if flight.is_empty() {
            if stopping || !queue.is_empty() {
                break;
            }
            // Everything was tried: anything new here?
            if sweeps < SWEEPS_MAX {
                sweeps += 1;
                let new: Vec<Pid> = local_pids(&ctx)
                    .into_iter()
                    .filter(|p| seen.insert(*p))
                    .collect();
                if !new.is_empty() {
                    job.update(|s| s.total += new.len());
                    queue.extend(new);
                    continue;
                }
            }
            break;
        }
        tokio::select! {
            joined = flight.join_next() => {
                let Some(joined) = joined else { continue };
                let (pid, result) = match joined {
                    Ok(r) => r,
                    Err(e) => {
                        // The migration task panicked; the pid is unknown
                        // here, so it stays in `remaining` if unlisted.
                        tracing::warn!("a drain migration failed: {e}");
                        continue;
                    }
                };
                in_flight.remove(&pid);
                let attempt = attempts.get(&pid).copied().unwrap_or(1);
                match outcome(&result, attempt) {
                    Outcome::Moved => job.update(|s| s.moved += 1),
                    Outcome::Gone => job.update(|s| s.gone += 1),
                    Outcome::Retry(why) => {
                        tracing::info!("drain: process {pid} did not move ({why}); trying again");
                        queue.push_back(pid);
                    }
                    Outcome::Failed(why) => {
                        tracing::warn!("drain: process {pid} cannot be moved: {why}");
                        job.update(|s| s.failed.push(DrainFailure { pid, why }));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if Instant::now() < deadline => {}
            _ = job.wake.notified() => {}
        }
    }
    let cancelled = job.cancelled.load(Ordering::SeqCst);
    job.update(|s| {
        s.remaining = queue.iter().copied().collect();
        s.remaining.sort();
        s.state = if cancelled {
            DrainState::Cancelled
        } else if !s.remaining.is_empty() {
            DrainState::DeadlinePassed
        } else {
            DrainState::Done
        };
        s.ended_unix_ms = Some(shoal_pki::now_unix_ms());
    });
    let s = job.snapshot();
    tracing::info!(
        "drain of node {} {}: moved {} of {}, {} failed, {} left, {} exited",
        s.node,
        s.state,
        s.moved,
        s.total,
        s.failed.len(),
        s.remaining.len(),
        s.gone
    );
}
