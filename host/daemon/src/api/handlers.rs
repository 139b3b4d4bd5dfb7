//! What each API request does, independent of any transport.
//!
//! Every handler takes a [`Node`] and a request struct from [`super::types`]
//! and returns a response struct or an [`ApiError`]. Nothing here knows
//! about HTTP, sockets or bodies: the Unix-socket server in
//! [`super::server`] calls these, and so will a TCP + mTLS transport later.
//! Blocking work (registry writes, hashing, file encoding) runs on tokio's
//! blocking pool, so handlers are safe to await from any connection task.

use super::error::ApiError;
use super::types::{
    ExitReport, LogFrame, ModuleAdded, NameRequest, NodeStatus, ProcessSummary, RestoreRequest,
    Restored, SnapshotImported, SnapshotReport, SnapshotRequest, SpawnRequest, Spawned,
};
use super::{snapshot_wait, KILL_WAIT_MAX};
use bytes::Bytes;
use shoal_registry::Sha256;
use shoal_runtime::grants::{DirAuthority, Grants};
use shoal_runtime::log::{Chunk, ProcessLog, Stream};
use shoal_runtime::node::{DirGrant, Node, SpawnSpec};
use shoal_runtime::pid::Pid;
use shoal_runtime::process::ExitStatus;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Run blocking work off the async threads, turning a panic into an error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("node worker failed: {e}")))?
}

/// `GET /v1/node`: the node's version and capacity.
pub fn status(node: &Node) -> NodeStatus {
    let c = node.config();
    NodeStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: c.data_dir.display().to_string(),
        processes_live: node.processes().len(),
        processes_max: c.engine.processes_max,
        process_memory_bytes_max: c.process_memory_bytes_max,
    }
}

/// `POST /v1/modules`: validate a module, store it in the registry, and
/// optionally name it. Only valid modules are stored, so a later spawn
/// fails for runtime reasons only.
pub async fn add_module(
    node: &Node,
    wasm: Bytes,
    name: Option<String>,
) -> Result<ModuleAdded, ApiError> {
    let node = node.clone();
    blocking(move || {
        shoal_prepare::validate(&wasm)
            .map_err(|e| ApiError::BadRequest(format!("not a usable WebAssembly module: {e}")))?;
        let hash = node.add_module(&wasm)?;
        if let Some(n) = &name {
            node.registry().set_name(n, &hash)?;
        }
        Ok(ModuleAdded {
            hash,
            name,
            size_bytes: wasm.len() as u64,
        })
    })
    .await
}

/// `PUT /v1/names/{name}`: point `name` at a module the node already has.
pub async fn set_name(
    node: &Node,
    name: String,
    req: NameRequest,
) -> Result<ModuleAdded, ApiError> {
    let node = node.clone();
    blocking(move || {
        let hash = resolve(&node, &req.module)?;
        node.registry().set_name(&name, &hash)?;
        let size_bytes = node.registry().size_of(&hash)?;
        Ok(ModuleAdded {
            hash,
            name: Some(name),
            size_bytes,
        })
    })
    .await
}

fn resolve(node: &Node, reference: &str) -> Result<Sha256, ApiError> {
    node.resolve(reference).map_err(|e| match ApiError::from(e) {
        ApiError::NotFound(m) => ApiError::NotFound(format!(
            "`{reference}` is not a module in the node's registry ({m}); deploy a .wasm file, or see `shoal ls`"
        )),
        other => other,
    })
}

pub(crate) fn check_env(env: &[(String, String)]) -> Result<(), ApiError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ApiError::BadRequest(format!(
                "bad environment variable `{k}`: the name must be non-empty without `=`, and neither may contain NUL"
            )));
        }
    }
    Ok(())
}

/// `POST /v1/processes`: start `count` processes of one module. All or
/// none: on the first failure the processes already started are killed.
pub async fn spawn(node: &Node, req: SpawnRequest) -> Result<Vec<Spawned>, ApiError> {
    let max = node.config().engine.processes_max;
    if req.count == 0 {
        return Err(ApiError::BadRequest("count must be at least 1".into()));
    }
    if req.count > max {
        return Err(ApiError::BadRequest(format!(
            "count {} is more than this node runs at once ({max}; see `shoal node start --processes-max`)",
            req.count
        )));
    }
    check_env(&req.env)?;
    let volumes = volume_mounts(&req.volumes)?;
    let hash = {
        let node = node.clone();
        let module = req.module.clone();
        blocking(move || resolve(&node, &module)).await?
    };
    let mut argv = vec![req.argv0.clone().unwrap_or_else(|| req.module.clone())];
    argv.extend(req.args.iter().cloned());
    let mut started = Vec::with_capacity(req.count as usize);
    for _ in 0..req.count {
        let mut spec = SpawnSpec::new(hash, argv.clone());
        spec.env = req.env.clone();
        spec.memory_bytes_max = req.memory_bytes_max;
        spec.preemptible = req.preemptible;
        spec.volumes = volumes.clone();
        match node.spawn(spec).await {
            Ok(pid) => started.push(Spawned {
                pid,
                module: hash,
                node: None,
            }),
            Err(e) => {
                for s in &started {
                    let _ = node.kill(s.pid);
                }
                let e = ApiError::from(e);
                return Err(if started.is_empty() {
                    e
                } else {
                    let n = started.len();
                    let msg = format!(
                        "{e} (after starting {n} of {}: those were killed)",
                        req.count
                    );
                    match e {
                        ApiError::Conflict(_) => ApiError::Conflict(msg),
                        ApiError::BadRequest(_) => ApiError::BadRequest(msg),
                        _ => ApiError::Internal(msg),
                    }
                });
            }
        }
    }
    Ok(started)
}

/// The private volumes a spawn asks for, with the default quotas where
/// none is given; refused (400) if malformed, repeated or over the
/// ceilings.
pub fn volume_mounts(
    asked: &[shoal_api::types::VolumeRequest],
) -> Result<Vec<shoal_runtime::volume::VolumeMount>, ApiError> {
    let mounts: Vec<shoal_runtime::volume::VolumeMount> = asked
        .iter()
        .map(|v| {
            let mut m = shoal_runtime::volume::VolumeMount::new(v.guest.clone());
            m.bytes_max = v.bytes_max.unwrap_or(m.bytes_max);
            m.files_max = v.files_max.unwrap_or(m.files_max);
            m.shared = v.shared.clone();
            m
        })
        .collect();
    shoal_runtime::volume::check_mounts(&mounts)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(mounts)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `GET /v1/processes`: the live processes, by pid, with their modules'
/// registry names.
pub async fn processes(node: &Node) -> Result<Vec<ProcessSummary>, ApiError> {
    let list = node.processes();
    let names = {
        let node = node.clone();
        // Names are a convenience: a registry that cannot list them does not
        // hide the processes.
        blocking(move || Ok(node.registry().names().unwrap_or_default())).await?
    };
    let mut by_hash: HashMap<Sha256, Vec<String>> = HashMap::new();
    for (n, h) in names {
        by_hash.entry(h).or_default().push(n);
    }
    let now = SystemTime::now();
    Ok(list
        .into_iter()
        .map(|p| ProcessSummary {
            pid: p.pid,
            module: Some(p.module),
            module_names: by_hash.get(&p.module).cloned().unwrap_or_default(),
            started_at_unix_ms: Some(unix_ms(p.started_at)),
            age_ms: Some(
                now.duration_since(p.started_at)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
            mailbox_len: Some(p.mailbox_len),
            node: None,
            state: Default::default(),
            node_state: None,
            lost: None,
            restart: None,
            code_tier: Some(match p.tier {
                shoal_runtime::modules::Tier::Baseline => shoal_api::types::CodeTier::Baseline,
                shoal_runtime::modules::Tier::Optimized => shoal_api::types::CodeTier::Optimized,
            }),
        })
        .collect())
}

/// `DELETE /v1/processes/{pid}`: kill a process and report how it ended
/// (waiting at most [`KILL_WAIT_MAX`]).
pub async fn kill(node: &Node, pid: Pid) -> Result<ExitReport, ApiError> {
    node.kill(pid).map_err(|e| match ApiError::from(e) {
        ApiError::NotFound(m) => ApiError::NotFound(format!(
            "{m}: it is not running on this node (see `shoal ps`)"
        )),
        other => other,
    })?;
    match tokio::time::timeout(KILL_WAIT_MAX, node.wait(pid)).await {
        Ok(Some(status)) => Ok(ExitReport::from(&status)),
        Ok(None) => Err(ApiError::Internal(format!(
            "process {pid} was killed but its exit status was not recorded"
        ))),
        Err(_) => Err(ApiError::Timeout(format!(
            "process {pid} did not end within {KILL_WAIT_MAX:?} of being killed"
        ))),
    }
}

/// A reader of one process's captured output that remembers how far it has
/// read, so a follower sends each byte once.
///
/// Positions count every byte the process ever wrote (see
/// [`shoal_runtime::log::LogView`]): the log keeps the newest bytes and
/// counts the ones it dropped, so the bytes it holds start at its
/// `dropped_bytes()`; anything between the cursor and that point was lost
/// and is reported as [`LogFrame::Dropped`]. Positions go on across moves,
/// so a cursor can start where a reader on another node left off.
pub struct LogCursor {
    node: Node,
    pid: Pid,
    log: Arc<ProcessLog>,
    sent: u64,
}

/// How a [`LogCursor::pump_until_end`] ended.
#[derive(Debug)]
pub enum Pumped {
    /// The receiver is gone (the client hung up).
    Closed,
    /// Everything the log held was sent; the process has ended with this
    /// status (`None` when only the output so far was asked for, and the
    /// process runs on).
    Ended(Option<ExitStatus>),
}

/// Consecutive chunks of one stream are merged into frames up to this size.
const FRAME_MERGE_BYTES: usize = 64 << 10;

/// The frames for a reader at position `sent` of a log that holds `chunks`,
/// the first of which starts at position `held_start` (the bytes before it
/// were dropped); and the reader's new position. A reader past the end
/// gets nothing (until the log passes its position).
pub(crate) fn frames_since(sent: u64, held_start: u64, chunks: &[Chunk]) -> (Vec<LogFrame>, u64) {
    let mut sent = sent;
    let mut frames = Vec::new();
    if sent < held_start {
        frames.push(LogFrame::Dropped(held_start - sent));
        sent = held_start;
    }
    let mut pos = held_start;
    for chunk in chunks {
        let end = pos + chunk.data.len() as u64;
        if end > sent {
            let skip = sent.saturating_sub(pos) as usize;
            let data = &chunk.data[skip..];
            match frames.last_mut() {
                Some(LogFrame::Output { stream, data: d })
                    if *stream == chunk.stream
                        && !matches!(stream, Stream::Log(_))
                        && d.len() + data.len() <= FRAME_MERGE_BYTES =>
                {
                    d.extend_from_slice(data)
                }
                _ => frames.push(LogFrame::Output {
                    stream: chunk.stream,
                    data: data.to_vec(),
                }),
            }
            sent = end;
        }
        pos = end;
    }
    (frames, sent)
}

impl LogCursor {
    /// A cursor at the start of `pid`'s output, or `NotFound` if the node
    /// neither runs it nor remembers it.
    pub fn open(node: &Node, pid: Pid) -> Result<LogCursor, ApiError> {
        Self::open_at(node, pid, 0)
    }

    /// A cursor at position `from` of `pid`'s output (a reader that has
    /// `from` bytes already: nothing before it is sent).
    pub fn open_at(node: &Node, pid: Pid, from: u64) -> Result<LogCursor, ApiError> {
        let log = node.log(pid).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no process with pid {pid}: it never ran on this node, or ended too long ago to be remembered"
            ))
        })?;
        Ok(LogCursor {
            node: node.clone(),
            pid,
            log,
            sent: from,
        })
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Go on in the process's current log here (it resumed after a move
    /// was called off: a new log, carrying the old one at the same
    /// positions). False if the node has no log of it.
    pub fn reopen(&mut self) -> bool {
        match self.node.log(self.pid) {
            Some(log) => {
                self.log = log;
                true
            }
            None => false,
        }
    }

    /// The frames for output written since the last call.
    pub fn read_new(&mut self) -> Vec<LogFrame> {
        if self.log.written_bytes() <= self.sent {
            return Vec::new();
        }
        let view = self.log.view();
        let (frames, sent) = frames_since(self.sent, view.start, &view.chunks);
        self.sent = sent;
        frames
    }

    async fn send_new(&mut self, tx: &mpsc::Sender<LogFrame>) -> bool {
        for f in self.read_new() {
            if tx.send(f).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Send everything held from the cursor on, then (with `follow`) new
    /// output as it is written (woken by the log) until the process ends here
    /// (also by moving away); sends no [`LogFrame::End`].
    pub async fn pump_until_end(&mut self, follow: bool, tx: &mpsc::Sender<LogFrame>) -> Pumped {
        let node = self.node.clone();
        let pid = self.pid;
        let live = || node.module_of(pid).is_some();
        if !follow || !live() {
            let status = if live() { None } else { node.wait(pid).await };
            if !self.send_new(tx).await {
                return Pumped::Closed;
            }
            return Pumped::Ended(status);
        }
        let wait = node.wait(pid);
        tokio::pin!(wait);
        loop {
            let log = self.log.clone();
            let written = log.written();
            tokio::pin!(written);
            // Armed before the read: a write between the read and the wait
            // still wakes it.
            written.as_mut().enable();
            if !self.send_new(tx).await {
                return Pumped::Closed;
            }
            tokio::select! {
                status = &mut wait => {
                    // The process has ended: all it wrote is in the log now.
                    if !self.send_new(tx).await {
                        return Pumped::Closed;
                    }
                    return Pumped::Ended(status);
                }
                _ = &mut written => {}
                _ = tx.closed() => return Pumped::Closed,
            }
        }
    }

    /// [`LogCursor::pump_until_end`], then one [`LogFrame::End`]. Returns
    /// early, quietly, when the receiver is gone (the client hung up).
    pub async fn pump(mut self, follow: bool, tx: mpsc::Sender<LogFrame>) {
        if let Pumped::Ended(status) = self.pump_until_end(follow, &tx).await {
            let _ = tx
                .send(LogFrame::End(status.as_ref().map(ExitReport::from)))
                .await;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `POST /v1/processes/{pid}/snapshot`: capture a process at its next
/// blocking call and store the snapshot in the node's registry.
pub async fn snapshot(
    node: &Node,
    pid: Pid,
    req: SnapshotRequest,
) -> Result<SnapshotReport, ApiError> {
    let wait_max = snapshot_wait(req.wait_max_ms);
    let info = node.snapshot(pid, req.stop, wait_max).await?;
    Ok(SnapshotReport {
        id: info.id,
        pid: info.pid,
        module: info.module,
        parent: info.parent,
        memory_bytes: info.memory_bytes,
        pages_total: info.pages_total,
        pages_new: info.pages_new,
        bytes_new: info.bytes_new,
        waited_ms: ms(info.waited),
        capture_ms: ms(info.store_time),
        pending_call: info.pending_call,
        stopped: req.stop,
    })
}

/// `GET /v1/snapshots/{id}`: a stored snapshot as one self-contained file.
pub async fn export_snapshot(node: &Node, id: Sha256) -> Result<Vec<u8>, ApiError> {
    let node = node.clone();
    blocking(move || Ok(node.export_snapshot(&id)?)).await
}

/// `POST /v1/snapshots`: verify a snapshot file completely and store it.
pub async fn import_snapshot(node: &Node, file: Bytes) -> Result<SnapshotImported, ApiError> {
    let node = node.clone();
    blocking(move || {
        Ok(SnapshotImported {
            id: node.import_snapshot(&file)?,
        })
    })
    .await
}

/// `POST /v1/snapshots/{id}/restore`: start a process from a stored
/// snapshot; it continues inside the call it was captured in, with what
/// the restorer grants now (checked against `authority`) and nothing the
/// snapshot says. Returns the answer and the grants as admitted
/// (canonical host paths), for the cluster's record. A process that does
/// not take its original's pid starts as `pid` if given (see
/// [`Node::restore_snapshot_as`]).
pub async fn restore(
    node: &Node,
    id: Sha256,
    req: RestoreRequest,
    authority: DirAuthority,
    pid: Option<Pid>,
) -> Result<(Restored, Grants), ApiError> {
    check_env(&req.env)?;
    let asked = Grants {
        dirs: req
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: d.host.clone().into(),
                guest: d.guest.clone(),
            })
            .collect(),
        env: req.env.clone(),
        memory_bytes_max: req.memory_bytes_max,
        volumes: Vec::new(),
    };
    let grants = {
        let node = node.clone();
        blocking(move || Ok(node.admit_grants(&asked, authority)?)).await?
    };
    let pid = node
        .restore_snapshot_as(&id, req.replace, &grants, pid)
        .await?;
    Ok((Restored { id, pid }, grants))
}

/// Kill every live process and wait (bounded) for each to end: the node's
/// part of a daemon shutdown.
pub async fn kill_all(node: &Node) {
    let pids: Vec<Pid> = node.processes().into_iter().map(|p| p.pid).collect();
    for pid in &pids {
        let _ = node.kill(*pid);
    }
    for pid in pids {
        let _ = tokio::time::timeout(KILL_WAIT_MAX, node.wait(pid)).await;
    }
}
