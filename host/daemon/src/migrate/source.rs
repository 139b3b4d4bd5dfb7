//! The source's half of a migration: [`migrate`].
//!
//! 1. **Pre-copy** (the process keeps running): capture it at a blocking
//!    call and let it go on, hash its non-zero pages, offer them to the
//!    target, send only the pages the target lacks.
//! 2. **Freeze**: capture it again and stop it ([`Node::freeze`]); its
//!    queued messages travel in the image, later ones are held here.
//! 3. **Delta + final**: send the pages that changed since the pre-copy
//!    (found by `memcmp`), then globals and host state. The target now
//!    holds a complete image and a handoff for the pid.
//! 4. **Switch**: `MovePid{pid, from: here, to, epoch}` through Raft, a
//!    compare-and-set on the directory epoch. If it fails, the source fences
//!    the attempt with a same-node move (bumping the epoch, so the stale
//!    switch can never commit later), tells the target to forget it, and
//!    resumes the process here with every message it held.
//! 5. **Go**: on the lane to the target, then everything held here is
//!    forwarded after it, in order, followed by the other nodes' fences as
//!    they arrive (see [`shoal_runtime::handoff`]). Once every member has
//!    fenced (or nothing came through for [`super::target::FENCE_WAIT`]) the held mailbox is
//!    closed; late senders find the pid through the directory.

use super::wire::{self, Abort, Control, Final, Offer, OfferAnswer, Started};
use super::Ctx;
use super::MigrateReport;
use crate::api::error::error_chain;
use bytes::Bytes;
use shoal_cluster::sched::Target;
use shoal_cluster::{ClusterState, Command, NodeId, NodeStatus};
use shoal_net::LaneMessage;
use shoal_runtime::handoff::FenceClock;
use shoal_runtime::mailbox::Head;
use shoal_runtime::mailbox::PushError;
use shoal_runtime::memory_copy::MemoryDelta;
use shoal_runtime::node::{ClusterLink, NodeError, CONTROL_SENDER};
use shoal_runtime::pid::Pid;
use shoal_runtime::process::CapturedProcess;
use shoal_runtime::snapshot::format;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest the source waits for a process to reach a blocking call.
pub const CAPTURE_WAIT: Duration = Duration::from_secs(10);
/// Longest one migration request to the target may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the source keeps trying to decide a move through Raft (switch
/// or fence) before it leaves the process frozen and reports it.
pub const DECIDE_WAIT: Duration = Duration::from_secs(60);

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The process does not run on this node.
    #[error("process {0} does not run on this node")]
    NotHere(Pid),
    /// The process has exited: only a running process can move.
    #[error("{}", exited_message(.gone))]
    Exited {
        /// The process and what this node knows of its end.
        gone: shoal_api::types::ProcessGone,
    },
    /// No node can take it.
    #[error("no node can take process {pid}: {why}")]
    NoTarget {
        /// The process.
        pid: Pid,
        /// Why not.
        why: String,
    },
    /// Capturing it failed; it runs on, here.
    #[error("{0}")]
    Capture(#[from] NodeError),
    /// The move failed and the process resumed here.
    #[error("moving process {pid} to node {target} failed ({why}); it goes on running here")]
    Resumed {
        /// The process.
        pid: Pid,
        /// The target's name.
        target: String,
        /// What failed.
        why: String,
    },
    /// The move could not be decided (no quorum); the process is held
    /// frozen here until it can be.
    #[error("process {pid} is frozen: {why}")]
    Undecided {
        /// The process.
        pid: Pid,
        /// What failed.
        why: String,
    },
}

impl MigrateError {
    /// The HTTP status the control API answers with.
    pub fn status(&self) -> u16 {
        match self {
            MigrateError::NotHere(_) => 404,
            MigrateError::Exited { .. } => 410,
            MigrateError::NoTarget { .. } => 409,
            MigrateError::Capture(NodeError::NotCapturable(_)) => 409,
            MigrateError::Capture(NodeError::CaptureTimeout { .. }) => 504,
            MigrateError::Capture(_) => 409,
            MigrateError::Resumed { .. } => 502,
            MigrateError::Undecided { .. } => 503,
        }
    }
}

/// `process 7 exited with code 0 at 2026-12-03 06:40:01 UTC (12 s ago); only a running process can move`.
fn exited_message(gone: &shoal_api::types::ProcessGone) -> String {
    let how = match &gone.reason {
        Some(reason) => format!("process {} {reason}", gone.pid),
        None => format!("process {} has exited", gone.pid),
    };
    let when = match gone.exited_unix_ms {
        Some(ms) => {
            let ago_s = (now_us() / 1000).saturating_sub(ms) / 1000;
            format!(" at {} ({ago_s} s ago)", utc(ms))
        }
        None => String::new(),
    };
    format!("{how}{when}; only a running process can move")
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in ms.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Why `pid` cannot be moved from here although it does not run here: it
/// exited here (with when and how), it has certainly exited somewhere (the
/// directory no longer has it), or it runs elsewhere.
fn not_here(ctx: &Ctx, pid: Pid) -> MigrateError {
    if let Some((status, at)) = ctx.node.exit_record(pid) {
        let exited_unix_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .ok();
        return MigrateError::Exited {
            gone: shoal_api::types::ProcessGone {
                pid,
                exited_unix_ms,
                reason: Some(status.reason),
            },
        };
    }
    if ctx.raft.state().is_gone(pid.0) {
        return MigrateError::Exited {
            gone: shoal_api::types::ProcessGone {
                pid,
                exited_unix_ms: None,
                reason: None,
            },
        };
    }
    MigrateError::NotHere(pid)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn new_id(pid: Pid) -> String {
    format!("{pid}-{:016x}", rand::random::<u64>())
}

struct Phases {
    list: Vec<(String, u64)>,
    at: Instant,
}

impl Phases {
    fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.list
            .push((name.to_string(), (now - self.at).as_micros() as u64));
        self.at = now;
    }
}

/// Choose the node to move `pid` to: `to` by name, else the scheduler's
/// choice among the other healthy, active nodes.
fn choose_target(ctx: &Ctx, pid: Pid, to: Option<&str>) -> Result<NodeId, MigrateError> {
    let target = match to {
        Some(name) if name == ctx.name => {
            return Err(MigrateError::NoTarget {
                pid,
                why: format!("it already runs on node {name}"),
            })
        }
        Some(name) => Target::Node(name.to_string()),
        None => Target::Any,
    };
    ctx.link
        .place_away(&target, ctx.me)
        .map_err(|e| MigrateError::NoTarget {
            pid,
            why: e.to_string(),
        })
}

/// Move process `pid` (running here) to node `to` (by name) or to the
/// scheduler's choice. Returns once it runs there.
pub async fn migrate(
    ctx: &Arc<Ctx>,
    pid: Pid,
    to: Option<&str>,
) -> Result<MigrateReport, MigrateError> {
    let node = &ctx.node;
    let started = Instant::now();
    let module = node.module_of(pid).ok_or_else(|| not_here(ctx, pid))?;
    let target = choose_target(ctx, pid, to)?;
    let state = ctx.raft.state();
    let target_rec = state
        .member(target)
        .cloned()
        .ok_or_else(|| MigrateError::NoTarget {
            pid,
            why: format!("node {target} is not a member"),
        })?;
    let addr = target_rec.addr.clone();
    let target_name = target_rec.name.clone();
    // The directory entry is what the switch compares; a fresh process may
    // not be registered yet (registration is batched).
    let epoch = wait_registered(ctx, pid).await?;
    // One move at a time per node and pid: if the process just arrived here,
    // its hold waits for the other nodes' fences first.
    settle(ctx, pid).await;
    let mut phases = Phases {
        list: Vec::new(),
        at: Instant::now(),
    };
    let id = new_id(pid);
    // This node's page keeper waits until the process runs there.
    let quiet = ctx.keeper.quiet();

    // 1. Pre-copy.
    let first = node.capture(pid, false, CAPTURE_WAIT).await?;
    phases.mark("precopy_capture");
    // Moved out of `first`: the freeze lets go of it below (see there).
    let memory0 = first.memory.into_bytes();
    let first_capture = first.delta.capture;
    let tracked = first.delta.tracked;
    let split = {
        let m = memory0.clone();
        // On the move's path: hashed on every core (one core takes
        // ~38 ms for 64 MiB).
        let threads = super::path_threads();
        tokio::task::spawn_blocking(move || format::split_pages_parallel(&m, threads))
            .await
            .map_err(|e| NodeError::Runtime(format!("page hasher failed: {e}")))?
    };
    let page_bytes = split.page_bytes;
    let offer = Offer {
        id: id.clone(),
        pid: pid.0,
        module: module.to_hex(),
        source: ctx.me,
        epoch,
        memory_bytes: memory0.len() as u64,
        page_bytes,
        pages: split
            .pages
            .iter()
            .map(|p| (p.index, p.hash.to_hex()))
            .collect(),
        preemptible: first.spec.preemptible,
        chunks: shoal_runtime::volume::tree::chunk_refs(&first.volumes)
            .iter()
            .map(|b| b.hash.to_hex())
            .collect(),
        volume_trees: if first.volumes.is_empty() {
            None
        } else {
            serde_json::to_value(&first.volumes).ok()
        },
    };
    let pages_total = offer.pages.len();
    let fail = |why: String| MigrateError::Resumed {
        pid,
        target: target_name.clone(),
        why,
    };
    let answer: OfferAnswer = call_json(ctx, &addr, wire::PATH_OFFER, &offer)
        .await
        .map_err(|e| fail(format!("the offer failed: {}", error_chain(&e))))?;
    phases.mark("offer");
    let mut bytes_sent: u64 = 0;
    let pb = page_bytes as usize;
    for idx in &answer.need {
        if *idx as usize * pb + pb > memory0.len() {
            return Err(fail(format!("target asked for page {idx}, beyond memory")));
        }
    }
    bytes_sent += send_pages(
        ctx,
        &addr,
        wire::PATH_PAGES,
        &id,
        &answer.need,
        &memory0,
        None,
        pb,
    )
    .await
    .map_err(|e| fail(format!("page transfer failed: {}", error_chain(&e))))?;
    phases.mark("precopy_pages");
    let memory_bytes_offered = memory0.len() as u64;
    // With its writes tracked, the freeze learns what changed from the
    // kernel, not by comparing with the pre-copy: let go of it, so the
    // freeze's capture updates the process's kept copy in place instead of
    // copying all of it first (that copy was most of a large freeze).
    let before = if tracked {
        drop(memory0);
        Before::Capture(first_capture)
    } else {
        Before::Bytes(memory0)
    };

    // 2. Freeze. The process's store waits until it runs at the target:
    // giving its memory back competes with the move's last steps.
    let parked = node.park_store(pid);
    let freeze_started_us = now_us();
    let mut image = node.freeze(pid, CAPTURE_WAIT).await?;
    phases.mark("freeze_capture");
    let freeze_copied_memory = image.delta.copied_all;
    // Its queued messages go back in front of the held mailbox: they travel
    // on the lane after `Go`, in order, not inside the final state.
    if let Some(held) = node.router().held(pid) {
        let _ = held.push_front_all(std::mem::take(&mut image.mailbox));
    }

    // 3. Delta + final. From here on a failure resumes the process here.
    let outcome = send_rest(ctx, &addr, pid, &id, &before, &image, pb).await;
    let ((delta_pages, differ, memory_bytes), delta_bytes) = match outcome {
        Ok(x) => x,
        Err(why) => {
            call_off(ctx, &addr, &id).await;
            // Its memory back in the budget first: it starts here again.
            parked.release_now();
            node.unfreeze(pid, module, image).await?;
            return Err(fail(error_chain(&why)));
        }
    };
    bytes_sent += delta_bytes;
    phases.mark("final");

    // 4. Switch.
    match decide(ctx, pid, target, epoch).await {
        Decision::Moved => {}
        Decision::Stays(why) => {
            call_off(ctx, &addr, &id).await;
            // Its memory back in the budget first: it starts here again.
            parked.release_now();
            node.unfreeze(pid, module, image).await?;
            return Err(fail(why));
        }
        Decision::Undecided(why) => {
            // Keep it frozen (its messages held); a later call may decide.
            return Err(MigrateError::Undecided { pid, why });
        }
    }
    phases.mark("switch");
    if ctx.faults.halts_after_switch() {
        return Err(MigrateError::Undecided {
            pid,
            why: "fault injected: the source halted right after the switch".into(),
        });
    }

    // 5. Go, then forward everything held, in order.
    let go = Control::Go { epoch: epoch + 1 };
    push_control(ctx, &addr, pid, go).await;
    tokio::spawn(forward_held(ctx.clone(), pid, addr.clone()));
    let resumed: Result<Started, TransferError> =
        call_json(ctx, &addr, wire::PATH_STARTED, &Abort { id: id.clone() }).await;
    phases.mark("resume");
    drop(parked);
    drop(quiet);
    // Keep the pre-copy's pages here too, so a move back is cheap: those
    // that did not change since are the final image's, written behind
    // the move — once it runs there, so the writing (hashes, files) takes
    // no CPU from the freeze.
    keep_pages(ctx, &image.memory.bytes(), &split, &differ);
    drop(image);
    let (freeze_us, resumed_ok, chunk_bytes_final) = match &resumed {
        Ok(s) => (
            s.resumed_unix_us.saturating_sub(freeze_started_us),
            true,
            s.chunk_bytes_fetched,
        ),
        Err(_) => (0, false, 0),
    };
    if let Err(e) = &resumed {
        tracing::warn!(
            "process {pid} moved to {target_name} but did not report its start: {}",
            error_chain(e)
        );
    }
    Ok(MigrateReport {
        pid,
        from: ctx.name.clone(),
        to: target_name,
        epoch: epoch + 1,
        memory_bytes: memory_bytes as u64,
        memory_bytes_offered,
        pages_total,
        pages_sent: answer.need.len(),
        pages_known: pages_total.saturating_sub(answer.need.len()),
        delta_pages,
        bytes_sent,
        volume_bytes_sent: answer.chunk_bytes_fetched + chunk_bytes_final,
        freeze_us,
        freeze_copied_memory,
        resumed: resumed_ok,
        total_us: started.elapsed().as_micros() as u64,
        phases_us: phases.list,
    })
}

/// Store the pre-copy's pages in this node's registry, in the background
/// (a process that comes back finds them here: [`super::keep`]), from
/// `memory`, the final image: all but the pages `changed` since.
fn keep_pages(ctx: &Ctx, memory: &Arc<Vec<u8>>, split: &format::SplitPages, changed: &[u32]) {
    let pb = split.page_bytes as usize;
    let changed: std::collections::HashSet<u32> = changed.iter().copied().collect();
    let pages: Vec<(shoal_registry::Sha256, std::ops::Range<usize>)> = split
        .pages
        .iter()
        .filter(|p| !changed.contains(&p.index))
        .map(|p| {
            let at = p.index as usize * pb;
            (p.hash, at..at + pb)
        })
        .collect();
    ctx.keeper.keep(
        ctx.node.registry().clone(),
        super::keep::shared_bytes(memory.clone()),
        pages,
    );
}

/// How long a new move waits for the previous one of the same process to
/// settle on this node (its hold to end, its forwarding to finish).
pub const SETTLE_WAIT: Duration = Duration::from_secs(12);

/// Wait (bounded) until no earlier move of `pid` is still holding or
/// forwarding its messages on this node.
pub async fn settle(ctx: &Ctx, pid: Pid) {
    if !ctx.node.router().settled(pid, SETTLE_WAIT).await {
        tracing::warn!(
            "an earlier move of process {pid} did not settle within {} s; moving it anyway",
            SETTLE_WAIT.as_secs()
        );
    }
}

/// The pid's directory epoch once it is registered here.
async fn wait_registered(ctx: &Ctx, pid: Pid) -> Result<u64, MigrateError> {
    // It runs here, so its entry is on its way (it just arrived, or its
    // registration is batched) when this node's state lags.
    let here = |s: &ClusterState| s.directory.get(&pid.0).is_some_and(|e| e.node == ctx.me);
    match ctx.raft.wait_for(REGISTERED_WAIT, here).await {
        Ok(state) => state
            .directory
            .get(&pid.0)
            .map(|e| e.epoch)
            .ok_or(MigrateError::NoTarget {
                pid,
                why: "it left the cluster's directory".into(),
            }),
        Err(t) => Err(MigrateError::NoTarget {
            pid,
            why: match t.state.directory.get(&pid.0) {
                Some(e) => format!(
                    "this node's directory still places it on node {} (is there a quorum?)",
                    e.node
                ),
                None => "it is not in the cluster's directory yet (is there a quorum?)".into(),
            },
        }),
    }
}

/// How long a move waits for the process's directory entry to show it
/// here before it gives up.
const REGISTERED_WAIT: Duration = Duration::from_secs(10);

async fn call_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    addr: &str,
    path: &str,
    body: &T,
) -> Result<R, TransferError> {
    let body = serde_json::to_vec(body).map_err(TransferError::Encode)?;
    let answer = ctx
        .link
        .call_addr_unless_dead(addr, path, Bytes::from(body), REQUEST_TIMEOUT)
        .await?;
    serde_json::from_slice(&answer).map_err(TransferError::Answer)
}

/// Why one step of the transfer to the target failed.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    /// The target could not be reached, refused, or was declared dead.
    #[error(transparent)]
    Peer(#[from] crate::link::PeerCallError),
    /// A request could not be encoded.
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
    /// The target's answer did not decode.
    #[error("bad answer")]
    Answer(#[source] serde_json::Error),
    /// The captured memory is not a whole number of pages.
    #[error("memory of {0} bytes is not whole pages")]
    RaggedMemory(usize),
}

/// Bytes of pages per request: small enough that several are in flight
/// at once (the target checks one while the next crosses the network),
/// large enough that headers and round trips cost little.
const PAGES_BATCH_BYTES: usize = 2 << 20;

/// Page requests in flight at once.
const PAGE_BATCHES_IN_FLIGHT: usize = 4;

/// Send pages `indices` of `memory` in batches, several in flight; returns
/// bytes sent once all are acknowledged. A delta names the frozen memory
/// size (`memory_bytes`) in every batch.
#[allow(clippy::too_many_arguments)]
async fn send_pages(
    ctx: &Ctx,
    addr: &str,
    path: &'static str,
    id: &str,
    indices: &[u32],
    memory: &[u8],
    memory_bytes: Option<u64>,
    pb: usize,
) -> Result<u64, TransferError> {
    use futures_util::StreamExt;
    let per_batch = (PAGES_BATCH_BYTES.min(wire::PAGES_CHUNK_BYTES) / pb).max(1);
    // Built as the stream asks: at most PAGE_BATCHES_IN_FLIGHT bodies exist.
    // Each call owns what it uses (a future borrowing from this frame
    // would not be `Send` for every lifetime the stream needs).
    let link = ctx.link.clone();
    let batches: Vec<Vec<u32>> = indices.chunks(per_batch).map(<[u32]>::to_vec).collect();
    let calls = batches.into_iter().map(|chunk: Vec<u32>| {
        let pages: Vec<&[u8]> = chunk
            .iter()
            .map(|i| &memory[*i as usize * pb..(*i as usize + 1) * pb])
            .collect();
        let header = wire::PagesHeader {
            id: id.to_string(),
            indices: chunk.clone(),
            memory_bytes,
        };
        let body = wire::encode_pages(&header, &pages);
        let len = body.len() as u64;
        let (link, addr) = (link.clone(), addr.to_string());
        async move {
            link.call_addr_unless_dead(&addr, path, Bytes::from(body), REQUEST_TIMEOUT)
                .await
                .map(|_| len)
        }
    });
    let mut in_flight = futures_util::stream::iter(calls).buffer_unordered(PAGE_BATCHES_IN_FLIGHT);
    let mut sent = 0u64;
    while let Some(done) = in_flight.next().await {
        sent += done?;
    }
    Ok(sent)
}

/// What the freeze's memory is compared with to find the pages that
/// changed since the pre-copy.
enum Before {
    /// The pre-copy's bytes.
    Bytes(std::sync::Arc<Vec<u8>>),
    /// The pre-copy's capture number: the freeze's image says which pages
    /// were written since it ([`shoal_runtime::memory_copy::MemoryDelta`]).
    Capture(u64),
}

/// The pages of `now` (of `pb` bytes) that differ from the pre-copy, and
/// those that became zero. Without the pre-copy's bytes and with no delta
/// relative to it (another capture came between), every non-zero page is
/// sent and every zero page listed as zeroed: more bytes, never wrong.
fn changed_pages(
    now: &[u8],
    before: &Before,
    delta: &MemoryDelta,
    pb: usize,
) -> (Vec<u32>, Vec<u32>) {
    let zero = vec![0u8; pb];
    let is_zero = |page: &[u8]| page == &zero[..page.len()];
    let mut changed = Vec::new();
    let mut zeroed = Vec::new();
    let mut sort = |i: usize, page: &[u8]| {
        if is_zero(page) {
            zeroed.push(i as u32);
        } else {
            changed.push(i as u32);
        }
    };
    match before {
        Before::Bytes(before) => {
            for (i, page) in now.chunks(pb).enumerate() {
                match before.get(i * pb..(i + 1) * pb) {
                    Some(old) if old == page => {}
                    None if is_zero(page) => {}
                    _ => sort(i, page),
                }
            }
        }
        Before::Capture(first) => match delta.since(*first) {
            Some(written) => {
                let touched = format::pages_touched(written, pb, now.len() / pb);
                for (i, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
                    sort(i, &now[i * pb..(i + 1) * pb]);
                }
            }
            None => {
                for (i, page) in now.chunks(pb).enumerate() {
                    sort(i, page);
                }
            }
        },
    }
    (changed, zeroed)
}

/// Send the pages that changed since the pre-copy and the final state.
/// Returns ((changed page count, the pages that differ from the pre-copy:
/// changed, then zeroed; final memory size), bytes sent).
async fn send_rest(
    ctx: &Ctx,
    addr: &str,
    pid: Pid,
    id: &str,
    before: &Before,
    image: &CapturedProcess,
    pb: usize,
) -> Result<((usize, Vec<u32>, usize), u64), TransferError> {
    let now = &image.memory.bytes();
    if !now.len().is_multiple_of(pb) {
        return Err(TransferError::RaggedMemory(now.len()));
    }
    let (changed, zeroed) = changed_pages(now, before, &image.delta, pb);
    // Memory can only grow, also between the offer and the freeze: the
    // delta tells the target the frozen size, so pages past the offered
    // memory land in an image of the right size.
    let size = Some(now.len() as u64);
    let mut sent = send_pages(ctx, addr, wire::PATH_DELTA, id, &changed, now, size, pb).await?;
    let state = shoal_runtime::snapshot::HostState::of(image);
    // Frozen: its log is complete.
    let log = ctx.node.log(pid).map(|l| l.view_all()).unwrap_or_default();
    let fin = Final {
        id: id.to_string(),
        memory_bytes: now.len() as u64,
        zeroed: zeroed.clone(),
        globals: image.globals.clone(),
        state,
        log: log.chunks,
        log_start: log.start,
    };
    let body = serde_json::to_vec(&fin).map_err(TransferError::Encode)?;
    sent += body.len() as u64;
    ctx.link
        .call_addr_unless_dead(addr, wire::PATH_FINAL, Bytes::from(body), REQUEST_TIMEOUT)
        .await?;
    // Every page that differs from the pre-copy: changed, or now zero.
    let changed_count = changed.len();
    let mut differ = changed;
    differ.extend(zeroed);
    Ok(((changed_count, differ, now.len()), sent))
}

enum Decision {
    /// The directory now places the pid on the target.
    Moved,
    /// The attempt is fenced; the pid stays here.
    Stays(String),
    /// Neither could be written.
    Undecided(String),
}

/// Switch the directory entry, or fence the attempt.
async fn decide(ctx: &Ctx, pid: Pid, target: NodeId, epoch: u64) -> Decision {
    let switch = Command::MovePid {
        pid: pid.0,
        from: ctx.me,
        to: target,
        epoch,
    };
    let why = if ctx.faults.withholds_switch() {
        "fault injected: the switch was withheld".to_string()
    } else {
        match ctx.raft.write(switch).await {
            Ok(shoal_cluster::CommandResult::Ok) => return Decision::Moved,
            Ok(other) => format!("the switch was refused: {other:?}"),
            Err(e) => format!("the switch could not be written: {e}"),
        }
    };
    // Unknown or refused: fence with a same-node move, unless the switch
    // did land after all.
    let deadline = Instant::now() + DECIDE_WAIT;
    loop {
        let state = ctx.raft.state();
        if let Some(e) = state.directory.get(&pid.0) {
            if e.node == target && e.epoch == epoch + 1 {
                return Decision::Moved;
            }
            if e.node == ctx.me && e.epoch > epoch {
                return Decision::Stays(why);
            }
        }
        let fence = Command::MovePid {
            pid: pid.0,
            from: ctx.me,
            to: ctx.me,
            epoch,
        };
        match ctx.raft.write(fence).await {
            Ok(shoal_cluster::CommandResult::Ok) => return Decision::Stays(why),
            Ok(_) => {} // Refused: the state changed; look again.
            Err(e) if Instant::now() > deadline => {
                return Decision::Undecided(format!("{why}; and the attempt cannot be fenced: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Tell the target to forget the arrival (best effort: it also drops it
/// when the directory shows the fence, or after its TTL).
async fn call_off(ctx: &Ctx, addr: &str, id: &str) {
    let _: Result<serde_json::Value, TransferError> =
        call_json(ctx, addr, wire::PATH_ABORT, &Abort { id: id.to_string() }).await;
}

/// Put a control message on the lane to `addr`, waiting (at most
/// [`CONTROL_PUSH_WAIT`]) for room while it is full.
async fn push_control(ctx: &Ctx, addr: &str, pid: Pid, control: Control) {
    let msg = LaneMessage {
        from: CONTROL_SENDER.0,
        to: pid.0,
        tag: Default::default(),
        data: Bytes::from(control.encode()),
    };
    let deadline = tokio::time::Instant::now() + CONTROL_PUSH_WAIT;
    if let Err(e) = ctx.peers.send_wait(addr, msg, deadline).await {
        tracing::warn!("could not send {control:?} for process {pid} to {addr}: {e}");
    }
}

/// Longest wait for acks before forwarding tries a refused lane again.
const LANE_RETRY_WAIT: Duration = Duration::from_millis(50);

/// How long a control message waits for room on a full lane.
const CONTROL_PUSH_WAIT: Duration = Duration::from_secs(10);

/// Forward what the frozen process's held mailbox receives to the target,
/// in order, until every member has fenced (or the fence wait passed).
async fn forward_held(ctx: Arc<Ctx>, pid: Pid, addr: String) {
    let Some(mailbox) = ctx.node.router().held(pid) else {
        return;
    };
    let mut waiting: BTreeSet<NodeId> = ctx
        .raft
        .state()
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Removed && n.id != ctx.me)
        .map(|n| n.id)
        .collect();
    // The same wait as the target's: while messages keep coming through
    // here, a missing fence may be behind them.
    let mut forwarded: u64 = 0;
    let mut clock = FenceClock::new(
        Instant::now(),
        forwarded,
        super::target::FENCE_WAIT,
        super::target::FENCE_WAIT_MAX,
    );
    let room = ctx.peers.room();
    loop {
        // Registered before the attempt: acks that free room in between
        // wake the wait below.
        let freed = room.notified();
        match mailbox.take_if_fits(usize::MAX) {
            Head::Taken(m) => {
                forwarded += 1;
                let mut data = Bytes::copy_from_slice(&m.data);
                if m.sender == CONTROL_SENDER {
                    if let Some(Control::Fence { origin, epoch }) = Control::decode(&m.data) {
                        waiting.remove(&origin);
                        data = Bytes::from(Control::Fenced { origin, epoch }.encode());
                    }
                }
                let (kind, reference) = m.tag.to_wire();
                let tag = shoal_net::LaneTag {
                    kind,
                    reference,
                    seq: m.seq,
                    life: m.life,
                };
                let sent = if m.sender == CONTROL_SENDER {
                    let msg = LaneMessage {
                        from: m.sender.0,
                        to: pid.0,
                        tag,
                        data,
                    };
                    ctx.peers.send(&addr, msg).is_ok()
                } else {
                    // Through the directory, like any send: if the process
                    // has moved on again, this goes to where it is now, and
                    // this node's fence for that move stays behind it.
                    match ctx.link.send_remote(pid, m.clone()) {
                        Ok(()) => true,
                        Err(PushError::Full) => false,
                        // This node has not applied its own switch yet.
                        Err(PushError::Closed) => {
                            let msg = LaneMessage {
                                from: m.sender.0,
                                to: pid.0,
                                tag,
                                data,
                            };
                            ctx.peers.send(&addr, msg).is_ok()
                        }
                    }
                };
                if !sent {
                    // The lane is full: put it back, wait for acks (a lane
                    // that broke instead is tried again after a while).
                    let _ = mailbox.unshift(m);
                    let _ = tokio::time::timeout(LANE_RETRY_WAIT, freed).await;
                }
            }
            Head::TooBig { .. } => unreachable!("no size limit when forwarding"),
            Head::Empty => {
                // An earlier arrival's hold may still release into this
                // mailbox: keep it open until that hold is gone.
                // And only once this node's own state shows the switch:
                // after the close, senders here route by it.
                let switched = ctx
                    .raft
                    .state()
                    .directory
                    .get(&pid.0)
                    .is_none_or(|e| e.node != ctx.me);
                let done = (waiting.is_empty() || clock.expired(Instant::now(), forwarded))
                    && ctx.node.router().handoff(pid).is_none()
                    && switched;
                // Close only when empty (atomically), then forget it: a
                // sender that reaches it after the close is told `Closed`
                // and routes through the directory, behind everything
                // forwarded here.
                if done && mailbox.close_if_empty() {
                    ctx.node.router().release_held(pid);
                    return;
                }
                let wait_until =
                    std::cmp::min(clock.deadline(), Instant::now() + Duration::from_millis(50));
                mailbox.wait_nonempty(Some(wait_until)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The freeze finds the same changed and zeroed pages from the kernel's
    /// written ranges as from a compare with the pre-copy, and sends every
    /// page when neither is at hand.
    #[test]
    fn changed_pages_from_written_ranges_agree_with_a_compare() {
        let pb = 4096;
        let mut before = vec![0u8; 16 * pb];
        for p in [0, 2, 5, 7] {
            before[p * pb] = 1;
        }
        let mut now = before.clone();
        now[2 * pb] = 9; // changed
        now[5 * pb] = 0; // zeroed
        now[7 * pb + 3] = 4; // changed
        now.resize(20 * pb, 0);
        now[18 * pb] = 1; // grown, non-zero
        let by_compare = changed_pages(
            &now,
            &Before::Bytes(Arc::new(before)),
            &MemoryDelta::default(),
            pb,
        );
        assert_eq!(by_compare, (vec![2, 7, 18], vec![5]));
        let delta = MemoryDelta {
            capture: 2,
            since: Some(1),
            // Two ranges on one page, one page written back unchanged
            // (sent: the kernel only knows it was written), the growth.
            written: vec![
                2 * pb..2 * pb + 8,
                2 * pb + 100..3 * pb,
                5 * pb..6 * pb,
                7 * pb..8 * pb,
                9 * pb..10 * pb,
                16 * pb..20 * pb,
            ],
            tracked: true,
            copied_all: false,
        };
        let (changed, zeroed) = changed_pages(&now, &Before::Capture(1), &delta, pb);
        assert_eq!(changed, vec![2, 7, 18]);
        assert_eq!(zeroed, vec![5, 9, 16, 17, 19]);
        // Relative to another capture: everything.
        let (changed, zeroed) = changed_pages(&now, &Before::Capture(3), &delta, pb);
        assert_eq!(changed, vec![0, 2, 7, 18]);
        assert_eq!(changed.len() + zeroed.len(), 20);
    }
}
