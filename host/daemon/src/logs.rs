//! `GET /v1/processes/{pid}/logs` on a cluster node: the whole output of a
//! process, from any node, wherever it runs or ended, followed across its
//! moves.
//!
//! # Where a log is
//!
//! A process's log travels with it when it moves, at the same positions
//! (`shoal_runtime::log::LogView`: positions count every byte it wrote,
//! also the ones the cap dropped), and a move called off resumes it with its
//! log whole. So the node that runs a process holds all its output (up to
//! the cap), and once it has ended, the node it ended on holds it (for as
//! long as that node's exit history remembers it). Any other node keeps at
//! most the part written before the process left it, which is never served
//! as the log. The node asked:
//!
//! 1. with `epoch` (the reader saw the process move to that directory
//!    epoch): waits, at most [`SETTLE_WAIT`], until its own directory is
//!    that recent;
//! 2. serves the log itself if the process runs here, or ended here;
//! 3. forwards the request to the node its directory names (each node
//!    decides by its own view; at most [`HOPS_MAX`] forwards in a row);
//! 4. if its directory places the process here but it does not run here, a
//!    move is in flight (frozen for it, or arrived and not started yet):
//!    waits for the process table or the directory to change, at most
//!    [`SETTLE_WAIT`] ([`DECIDE_WAIT`] for a follower);
//! 5. if the directory no longer has it (it ended), asks every other member
//!    ([`PATH_PEER_ENDED`]) whether it runs it or holds its final log, all
//!    at once, each bounded by the failure detector's window (at most
//!    5 s), and forwards to the one that does. A member declared dead or
//!    that does not answer is named in the error ([`LogsError`], 503) when
//!    no answer names a holder: never skipped silently.
//!
//! # Following across a move
//!
//! When a followed process stops here because it moves, the stream waits
//! (at most [`DECIDE_WAIT`]) for the move to be decided, woken by the
//! process table and the directory: called off, the process runs here
//! again and the stream goes on in its log from the same position; moved,
//! the stream ends with an exit report whose reason is `moved` and which
//! names the node and the directory epoch ([`MovedTo`]). The client asks
//! again from its position with that epoch (see `shoal_api`'s
//! `Client::logs`), so nothing is sent twice and nothing is skipped.

use crate::api::handlers::{LogCursor, Pumped};
use crate::api::routes::{log_query, log_response, ApiBody, LOG_FRAMES_QUEUED_MAX};
use crate::api::types::{ExitReport, LogFrame, LogQuery, MovedTo};
use crate::peer_api::{PeerEnded, PATH_PEER_ENDED};
use crate::Inner;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Serialize;
use shoal_cluster::{NodeId, NodeStatus};
use shoal_net::RemoteError;
use shoal_pki::{Owner, Role};
use shoal_runtime::pid::Pid;
use shoal_runtime::process::ExitReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest a logs request waits for a move in flight to settle (the
/// directory to catch up with a move the reader saw, a frozen or arriving
/// process to start).
pub const SETTLE_WAIT: Duration = Duration::from_secs(15);
/// Longest a followed stream waits for the move of its process to be
/// decided once it stopped here (the source's own bound).
pub const DECIDE_WAIT: Duration = crate::migrate::source::DECIDE_WAIT;
/// Most forwards of one logs request in a row (nodes whose views of the
/// directory disagree for a moment).
pub const HOPS_MAX: u32 = 4;
/// The header counting the forwards so far (trusted from nodes only).
pub const HOPS_HEADER: &str = "x-shoal-log-hops";
/// Longest a member is waited for when the holder of an ended process's
/// log is looked for.
pub const ASK_WAIT_MAX: Duration = Duration::from_secs(5);

/// A member that could not say whether it holds a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unasked {
    /// The node's name.
    pub node: String,
    /// Why (declared dead, no answer, ...).
    pub why: String,
}

/// Why a log cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum LogsError {
    /// The process has ended; no member that answered holds its log, and
    /// some could not be asked: one of them may.
    #[error(
        "process {pid} is not running; its log may be on {}, which cannot be asked: {}",
        names(.unasked),
        reasons(.unasked)
    )]
    HolderUnreachable {
        /// The process.
        pid: Pid,
        /// The members not asked, and why.
        unasked: Vec<Unasked>,
    },
    /// No member runs the process or remembers how it ended.
    #[error("no process with pid {pid}: no node runs it or remembers it (it never ran, or ended too long ago to be remembered)")]
    Unknown {
        /// The process.
        pid: Pid,
    },
    /// A move of the process did not settle in time.
    #[error("process {pid} is being moved and did not settle within {waited_ms} ms; try again")]
    InFlight {
        /// The process.
        pid: Pid,
        /// How long this node waited.
        waited_ms: u64,
    },
    /// The request went round too many nodes.
    #[error("the nodes disagree where process {pid} is (the request was passed on {hops} times); try again")]
    TooManyHops {
        /// The process.
        pid: Pid,
        /// Forwards so far.
        hops: u32,
    },
}

fn names(unasked: &[Unasked]) -> String {
    unasked
        .iter()
        .map(|u| u.node.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn reasons(unasked: &[Unasked]) -> String {
    unasked
        .iter()
        .map(|u| format!("{}: {}", u.node, u.why))
        .collect::<Vec<_>>()
        .join("; ")
}

impl LogsError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            LogsError::Unknown { .. } => 404,
            LogsError::HolderUnreachable { .. }
            | LogsError::InFlight { .. }
            | LogsError::TooManyHops { .. } => 503,
        }
    }
}

impl From<LogsError> for RemoteError {
    fn from(e: LogsError) -> Self {
        RemoteError::typed(e.status(), &e)
    }
}

/// Where the log of a pid is, as this node sees it now.
#[derive(Debug, PartialEq, Eq)]
enum Where {
    /// Here: the process runs here, or ended here.
    Here,
    /// On that node (by this node's directory).
    There(NodeId),
    /// Here soon, or elsewhere soon: a move is in flight.
    Moving,
    /// The process has ended on another node: ask the members.
    Ended,
    /// Nobody has it: a pid of this node's that it does not know.
    Unknown,
}

fn locate(inner: &Inner, pid: Pid) -> Where {
    let node = &inner.node;
    if node.module_of(pid).is_some() {
        return Where::Here;
    }
    let ended_here = node.exit_record(pid).is_some();
    let state = inner.raft.state();
    match state.directory.get(&pid.0) {
        Some(e) if e.node != inner.me => Where::There(e.node),
        Some(_) if ended_here => Where::Here,
        Some(_) => Where::Moving,
        None if ended_here => Where::Here,
        None if state.is_gone(pid.0) => Where::Ended,
        // Not registered yet: its node (that of its pid block) knows.
        None => match state.block_owner(pid.0) {
            Some(owner) if owner != inner.me => Where::There(owner),
            Some(_) => Where::Unknown,
            None => Where::Ended,
        },
    }
}

/// Serve `GET /v1/processes/{pid}/logs` for `who` (see the module docs).
/// `direct` is the caller's own identity: only a node's hop count is
/// trusted.
pub async fn serve(
    inner: &Arc<Inner>,
    who: &Owner,
    direct: &Owner,
    pid: Pid,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    let query = log_query(req.uri().query())?;
    let hops = match direct.role {
        Role::Node => req
            .headers()
            .get(HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    if let Some(epoch) = query.epoch {
        // The reader saw the move; this node may not have applied it yet.
        let _ = inner
            .raft
            .wait_for(SETTLE_WAIT, |s| {
                s.directory.get(&pid.0).is_none_or(|e| e.epoch >= epoch)
            })
            .await;
    }
    let started = Instant::now();
    // A follower would rather wait for a slow arrival (its module compiled
    // on the target) than fail.
    let deadline = started
        + if query.follow {
            DECIDE_WAIT
        } else {
            SETTLE_WAIT
        };
    let mut table = inner.node.table_changes();
    let mut applied = inner.raft.subscribe();
    loop {
        // Marked seen before looking: a change after the look wakes us.
        table.borrow_and_update();
        applied.borrow_and_update();
        let target = match locate(inner, pid) {
            Where::Here => {
                crate::access::authorize_pid(inner, who, pid).await?;
                let cursor = LogCursor::open_at(&inner.node, pid, query.from)?;
                return Ok(stream_here(inner.clone(), cursor, query.follow));
            }
            Where::There(id) => id,
            Where::Ended => find_holder(inner, pid).await?.0,
            Where::Unknown => return Err(LogsError::Unknown { pid }.into()),
            Where::Moving => {
                tokio::select! {
                    r = table.changed() => if r.is_err() { break },
                    r = applied.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
                continue;
            }
        };
        if hops >= HOPS_MAX {
            return Err(LogsError::TooManyHops { pid, hops }.into());
        }
        return forward(inner, target, pid, &query, who, hops + 1).await;
    }
    Err(LogsError::InFlight {
        pid,
        waited_ms: started.elapsed().as_millis() as u64,
    }
    .into())
}

/// Pass the request on to node `id`, on behalf of `who`, and stream its
/// answer back.
async fn forward(
    inner: &Inner,
    id: NodeId,
    pid: Pid,
    query: &LogQuery,
    who: &Owner,
    hops: u32,
) -> Result<Response<ApiBody>, RemoteError> {
    let addr = inner
        .link
        .addr_of(id)
        .ok_or(LogsError::Unknown { pid })
        .map_err(RemoteError::from)?;
    let path = format!("/v1/processes/{pid}/logs?{}", query.to_query());
    crate::proxy::forward_with(
        inner,
        &addr,
        hyper::Method::GET,
        &path,
        Bytes::new(),
        Some(who),
        &[(HOPS_HEADER, hops.to_string())],
    )
    .await
}

/// The member that runs `pid` or holds its final log, and what it said:
/// every other member is asked at once (this node has already looked at
/// itself).
pub async fn find_holder(inner: &Inner, pid: Pid) -> Result<(NodeId, PeerEnded), LogsError> {
    let state = inner.raft.state();
    let wait = Duration::from_millis(inner.raft.dead_after_ms()).min(ASK_WAIT_MAX);
    let mut unasked = Vec::new();
    let mut asks = Vec::new();
    for n in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Removed && n.id != inner.me)
    {
        if let Some(l) = state.liveness.get(&n.id).filter(|l| l.dead) {
            unasked.push(Unasked {
                node: n.name.clone(),
                why: format!(
                    "declared dead by node {} after {} ms without contact",
                    l.by, l.silent_ms
                ),
            });
            continue;
        }
        let link = inner.link.clone();
        let (id, addr, name) = (n.id, n.addr.clone(), n.name.clone());
        asks.push(tokio::spawn(async move {
            let body = Bytes::from(pid.to_string());
            let answer = link
                .call_unless_dead(id, &addr, PATH_PEER_ENDED, body, wait)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<PeerEnded>(&b)
                        .map_err(|e| format!("an answer that does not decode: {e}"))
                });
            (id, name, answer)
        }));
    }
    let mut best: Option<(NodeId, PeerEnded)> = None;
    for ask in asks {
        let Ok((id, node, answer)) = ask.await else {
            continue;
        };
        match answer {
            Ok(a) if a.holds_log() => {
                // A live copy first; else the latest end.
                let better = best
                    .as_ref()
                    .is_none_or(|(_, b)| (a.live, a.ended_unix_ms) > (b.live, b.ended_unix_ms));
                if better {
                    best = Some((id, a));
                }
            }
            Ok(_) => {}
            Err(why) => unasked.push(Unasked { node, why }),
        }
    }
    match best {
        Some(found) => Ok(found),
        None if unasked.is_empty() => Err(LogsError::Unknown { pid }),
        None => Err(LogsError::HolderUnreachable { pid, unasked }),
    }
}

/// Stream the log held here from the cursor on (see the module docs for
/// what happens when the process moves).
fn stream_here(inner: Arc<Inner>, cursor: LogCursor, follow: bool) -> Response<ApiBody> {
    let (tx, rx) = mpsc::channel(LOG_FRAMES_QUEUED_MAX);
    tokio::spawn(pump(inner, cursor, follow, tx));
    log_response(rx)
}

async fn pump(inner: Arc<Inner>, mut cursor: LogCursor, follow: bool, tx: mpsc::Sender<LogFrame>) {
    loop {
        let status = match cursor.pump_until_end(follow, &tx).await {
            Pumped::Closed => return,
            Pumped::Ended(status) => status,
        };
        let mut report = status.as_ref().map(ExitReport::from);
        if let Some(r) = report
            .as_mut()
            .filter(|r| follow && r.reason == ExitReason::Moved)
        {
            match decided(&inner, cursor.pid(), &tx).await {
                Decided::Resumed if cursor.reopen() => continue,
                Decided::Closed => return,
                Decided::Moved(to) => r.moved_to = Some(to),
                Decided::Resumed | Decided::Unknown => {}
            }
        }
        let _ = tx.send(LogFrame::End(report)).await;
        return;
    }
}

/// How the move of a process that stopped here ended.
enum Decided {
    /// Called off: it runs here again.
    Resumed,
    /// The directory places it there now.
    Moved(MovedTo),
    /// Not known within [`DECIDE_WAIT`], or it has already ended.
    Unknown,
    /// The reader hung up.
    Closed,
}

/// Wait until the move of `pid` (stopped here) is decided: it runs here
/// again, or the directory places it elsewhere.
async fn decided(inner: &Inner, pid: Pid, tx: &mpsc::Sender<LogFrame>) -> Decided {
    let deadline = Instant::now() + DECIDE_WAIT;
    let mut table = inner.node.table_changes();
    let mut applied = inner.raft.subscribe();
    loop {
        table.borrow_and_update();
        applied.borrow_and_update();
        if inner.node.module_of(pid).is_some() {
            return Decided::Resumed;
        }
        let state = inner.raft.state();
        match state.directory.get(&pid.0) {
            Some(e) if e.node != inner.me => {
                let node = state
                    .nodes
                    .get(&e.node)
                    .map(|n| n.name.clone())
                    .unwrap_or_else(|| e.node.to_string());
                return Decided::Moved(MovedTo {
                    node,
                    epoch: e.epoch,
                });
            }
            None if state.is_gone(pid.0) => return Decided::Unknown,
            _ => {}
        }
        tokio::select! {
            r = table.changed() => if r.is_err() { return Decided::Unknown },
            r = applied.changed() => if r.is_err() { return Decided::Unknown },
            _ = tx.closed() => return Decided::Closed,
            _ = tokio::time::sleep_until(deadline) => return Decided::Unknown,
        }
    }
}
