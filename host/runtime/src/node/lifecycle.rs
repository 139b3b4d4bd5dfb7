//! A process's life on this node: its WASI context and store are built,
//! its task runs, and it ends exactly once (recorded in the exit history,
//! its mailbox closed or held for a move, the cluster told).

use super::host::NodeHost;
use super::table::{Exited, ProcessEntry};
use super::{NodeError, Shared, SpawnSpec};
use crate::capture::CaptureSignal;
use crate::limits::ProcessLimiter;

/// Bytes in a Wasm page.
const WASM_PAGE_BYTES: u64 = 64 * 1024;
use crate::log::{ProcessLog, Stream};
use crate::mailbox::Mailbox;
use crate::modules::LoadedModule;
use crate::pid::Pid;
use crate::process::{self, ExitReason, ExitStatus, ProcessCtx, RestoreImage};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};
use wasmtime::Store;

impl Shared {
    /// A fresh directory for the volumes of `pid` on this node (a new one
    /// each start: the previous incarnation's may still be going away).
    fn volumes_dir(&self, pid: Pid) -> std::path::PathBuf {
        self.config.data_dir.join("volumes").join(format!(
            "{}.{:016x}",
            pid.0,
            rand::random::<u64>()
        ))
    }

    /// Volumes for `pid` under a fresh directory: `mounts`, rebuilt from
    /// `trees` (see [`crate::volume::Volumes::create`]).
    pub(super) fn new_volumes(
        &self,
        pid: Pid,
        mounts: &[crate::volume::VolumeMount],
        trees: &[crate::volume::VolumeTree],
    ) -> Result<crate::volume::Volumes, NodeError> {
        let access = self.router.cluster().map(|link| {
            let link: Arc<dyn crate::volume::link::SharedFiles> = link.clone();
            crate::volume::SharedAccess { link, pid }
        });
        crate::volume::Volumes::create(
            mounts,
            &self.volumes_dir(pid),
            trees,
            &self.registry,
            access,
        )
        .map_err(|e| NodeError::InvalidSpawn(e.to_string()))
    }

    /// What was staged for `pid` by [`super::Node::stage_volumes`], taken.
    pub(super) fn take_staged_volumes(&self, pid: Pid) -> Option<crate::volume::Volumes> {
        self.staged_volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid)
    }

    /// The WASI context of a process started with `spec`, writing to
    /// `log`, whose monotonic clock starts at `monotonic_start` (zero for a
    /// new process, the captured reading for a restored or arrived one).
    fn build_wasi(
        &self,
        spec: &SpawnSpec,
        log: &Arc<ProcessLog>,
        monotonic_start: Duration,
        volumes: &crate::volume::Volumes,
    ) -> Result<wasi_common::WasiCtx, NodeError> {
        let mut ctx = wasi_common::WasiCtx::new(
            wasi_common::tokio::random_ctx(),
            crate::clock::clocks_from(monotonic_start),
            wasi_common::tokio::sched::sched_ctx(),
            wasi_common::Table::new(),
        );
        for arg in &spec.args {
            ctx.push_arg(arg)
                .map_err(|e| NodeError::InvalidSpawn(format!("bad argument: {e}")))?;
        }
        for (name, value) in &spec.env {
            ctx.push_env(name, value)
                .map_err(|e| NodeError::InvalidSpawn(format!("bad environment variable: {e}")))?;
        }
        if spec.inherit_stdin {
            ctx.set_stdin(Box::new(wasi_common::tokio::stdio::stdin()));
        } else {
            ctx.set_stdin(Box::new(crate::stdio::EmptyStdin));
        }
        ctx.set_stdout(Box::new(crate::stdio::Output::gated(
            log.writer(Stream::Stdout),
            self.gate.gate(),
        )));
        ctx.set_stderr(Box::new(crate::stdio::Output::gated(
            log.writer(Stream::Stderr),
            self.gate.gate(),
        )));
        // Volumes first (fds 3..), then granted directories: the order a
        // captured image's open files refer to.
        let preopens = volumes
            .preopens()
            .map_err(|e| NodeError::InvalidSpawn(e.to_string()))?;
        for (guest, dir) in preopens {
            ctx.push_preopened_dir(dir, &guest)
                .map_err(|e| NodeError::InvalidSpawn(format!("volume {guest}: {e}")))?;
        }
        for grant in &spec.dirs {
            // Nobody, whatever the path to this point, is given the data
            // dir (it holds the CA key and the compiled-code cache).
            let host = crate::grants::refuse_data_dir(&grant.host, &self.data_dir_canonical)?;
            let dir = cap_std::fs::Dir::open_ambient_dir(&host, cap_std::ambient_authority())
                .map_err(|source| NodeError::Dir {
                    path: grant.host.clone(),
                    source,
                })?;
            let dir = Box::new(wasi_common::tokio::Dir::from_cap_std(dir));
            ctx.push_preopened_dir(dir, &grant.guest)
                .map_err(|e| NodeError::Dir {
                    path: grant.host.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        Ok(ctx)
    }

    pub(super) fn start_as(
        self: &Arc<Self>,
        spec: SpawnSpec,
        module: Arc<LoadedModule>,
        restore: Option<RestoreImage>,
        pid: Option<Pid>,
        mailbox: Option<Arc<Mailbox>>,
        prepared: Option<super::prepared::PreparedInstance>,
    ) -> Result<Pid, NodeError> {
        // An instance made ahead serves only the image it was made for.
        let mut prepared = prepared.filter(|p| {
            p.module == module.hash
                && restore
                    .as_ref()
                    .is_some_and(|r| r.spec.preemptible == p.preemptible)
        });
        // A process given its mailbox is one that moved (arrived here, or
        // stayed after a called-off move): the directory already has it.
        let announce = mailbox.is_none();
        let parent = spec.parent;
        if let Some(p) = pid {
            if self.entry(p).is_some() {
                return Err(NodeError::InvalidSpawn(format!("pid {p} is still live")));
            }
        }
        let pid = match pid {
            Some(p) => p,
            None => self.pids.try_allocate().ok_or_else(|| {
                NodeError::Runtime("no pids left: waiting for the cluster to grant a block".into())
            })?,
        };
        let memory_max = spec
            .memory_bytes_max
            .unwrap_or(self.config.process_memory_bytes_max)
            .min(self.config.engine.memory_bytes_max);
        if let Some(image) = &restore {
            // Every field a snapshot writer or a peer controls is bounded
            // before anything uses it.
            crate::grants::check_image(image, memory_max, spec.preopens())?;
        }
        let capture = Arc::new(CaptureSignal::default());
        let capturable = module.module.get_export("asyncify_start_unwind").is_some();
        let log = ProcessLog::new(self.config.log_bytes_max, spec.forward_output);
        if let Some(image) = &restore {
            // Its output so far, at the same positions (a move, or a move
            // called off): a reader goes on from where it was.
            log.carry(image.log_start, &image.log);
        }
        // Output commit: readers see only what a recorded checkpoint covers.
        let output_commit = restore
            .as_ref()
            .map_or(spec.output_commit, |i| i.outbox.output_commit);
        if output_commit {
            log.hold_output(restore.as_ref().and_then(|i| i.log_visible));
        }
        let monotonic_start = restore
            .as_ref()
            .map(|r| Duration::from_nanos(r.monotonic_ns))
            .unwrap_or_default();
        // Its volumes, rebuilt from the image when it has one (every chunk
        // checked); removed with the process.
        let trees = restore
            .as_ref()
            .map(|r| r.volumes.as_slice())
            .unwrap_or(&[]);
        let staged = self
            .take_staged_volumes(pid)
            .filter(|v| restore.is_some() && v.mounts() == spec.volumes);
        let volumes = match staged {
            // Rebuilt during the pre-copy: only what changed since.
            Some(mut v) => v
                .update(trees)
                .map(|()| v)
                .map_err(|e| NodeError::InvalidSpawn(e.to_string()))?,
            None => self.new_volumes(pid, &spec.volumes, trees)?,
        };
        let wasi = self.build_wasi(&spec, &log, monotonic_start, &volumes)?;
        // Under output commit its shared-volume writes are effects, and
        // its open copies are published only by them.
        volumes.set_output_commit(output_commit);
        let shared_fds = volumes
            .shared_preopen_positions()
            .into_iter()
            .filter_map(|i| i.checked_add(crate::grants::FIRST_PREOPEN_FD))
            .map(|fd| (fd, crate::volume::shared::SharedHandle::Dir))
            .collect();
        let mailbox = mailbox.unwrap_or_else(|| Arc::new(Mailbox::new(self.config.mailbox)));
        // Before it is reachable: calls to a module that cannot see them
        // are refused from the first message on.
        mailbox.set_sees_calls(crate::calls::module_sees_calls(
            module.module.imports().map(|i| (i.module(), i.name())),
        ));
        if restore.is_none() {
            mailbox.set_output_commit(spec.output_commit);
        }
        if let Some(image) = &restore {
            // Calls and monitors first: they decide which answers queue.
            mailbox.restore_calls(image.calls.clone());
            if mailbox.life() == image.inbox.life {
                // Its own mailbox, held through a move called off: its
                // channels went on meanwhile.
                mailbox.thaw();
            } else {
                mailbox.restore_channels(image.outbox.clone(), image.inbox.clone());
            }
            for m in &image.mailbox {
                mailbox.push_image(m.clone()).map_err(|e| {
                    NodeError::InvalidSpawn(format!(
                        "snapshot mailbox does not fit this node's bounds: {e}"
                    ))
                })?;
            }
        }
        // The node's budget: refuse a process whose memory cannot fit now,
        // with a clear error (its limiter also charges every later growth).
        let needed_bytes = match &restore {
            Some(image) => image.memory.len() as u64,
            None => module
                .module
                .resources_required()
                .max_initial_memory_size
                .unwrap_or(0)
                .saturating_mul(WASM_PAGE_BYTES),
        };
        let memory_max = usize::try_from(memory_max).unwrap_or(usize::MAX);
        let mut limiter = match prepared.as_mut() {
            // What its memory is already charged to.
            Some(p) => p.take_limiter(memory_max),
            None => ProcessLimiter::with_budget(memory_max, self.memory_budget.clone()),
        };
        // Charged now, not when the task instantiates it: the next spawn
        // must see this one. Given back when the limiter is dropped (with
        // the store, or right here on an early return).
        if !limiter.reserve(usize::try_from(needed_bytes).unwrap_or(usize::MAX)) {
            let budget = &self.memory_budget;
            return Err(NodeError::MemoryBudget {
                needed_bytes,
                used_bytes: budget.used_bytes(),
                budget_bytes: budget.budget_bytes(),
            });
        }
        let ctx = ProcessCtx {
            pid,
            wasi,
            limiter,
            mailbox: mailbox.clone(),
            log: log.clone(),
            host: Arc::new(NodeHost(self.clone())),
            capture: capture.clone(),
            capturable,
            resume: None,
            pending: None,
            asyncify_buffer: None,
            spec: spec.clone(),
            open_files: Default::default(),
            shared_fds,
            volumes,
            gate: self.gate.gate(),
            memory_copy: Default::default(),
        };
        let (mut store, instantiate) = match prepared {
            Some(p) => {
                let mut store = p.store;
                // The real context replaces the placeholder.
                *store.data_mut() = ctx;
                (store, process::Instantiate::Ready(p.instance))
            }
            None => (
                Store::new(module.module.engine(), ctx),
                process::Instantiate::Pre(module.clone()),
            ),
        };
        store.limiter(|c| &mut c.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let fuel = restore
            .as_ref()
            .and_then(|r| r.fuel_remaining)
            .or(self.config.process_fuel);
        if let Some(f) = fuel {
            store
                .set_fuel(f)
                .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
        }
        let (status_tx, status_rx) = watch::channel(None);
        let (running_tx, running_rx) = watch::channel(false);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        {
            let mut procs = self.processes.write().unwrap_or_else(|p| p.into_inner());
            if procs.len() >= self.config.engine.processes_max as usize {
                return Err(NodeError::ProcessLimit(self.config.engine.processes_max));
            }
            self.router.attach(pid, mailbox.clone());
            procs.insert(
                pid,
                Arc::new(ProcessEntry {
                    module: module.hash,
                    tier: module.tier,
                    mailbox,
                    log,
                    started_at: SystemTime::now(),
                    status: status_rx,
                    running: running_rx,
                    kill: Mutex::new(Some(kill_tx)),
                    capture,
                    capturable,
                }),
            );
        }
        self.table_changed();
        if let Some(link) = self.router.cluster().filter(|_| announce) {
            link.process_started(pid, parent);
        }
        let shared = self.clone();
        tokio::spawn(async move {
            // Whatever happens to this task — even a panic in a host
            // function — the process leaves the table.
            let mut guard = FinishGuard {
                shared,
                pid,
                status_tx: Some(status_tx),
            };
            let (reason, store) = tokio::select! {
                (reason, store) = process::run(store, instantiate, fuel, restore, running_tx) => {
                    (reason, Some(store))
                }
                Ok(()) = kill_rx => (ExitReason::Killed, None),
            };
            // A process that moved or was snapshotted away publishes
            // nothing as it drops: its store (its instance's memory given
            // back: ~3 ms at 64 MiB) is parked for its move, or dropped
            // off this thread, and its end told at once (see
            // `parking`). Any other end is told once its store is gone
            // (files it left open published).
            match (&reason, store) {
                (ExitReason::Moved | ExitReason::Snapshotted, Some(store)) => {
                    guard.shared.parking.park_or_drop(pid, store);
                }
                (_, store) => drop(store),
            }
            guard.finish(reason);
        });
        Ok(pid)
    }

    fn finish(&self, status: ExitStatus, status_tx: watch::Sender<Option<ExitStatus>>) {
        let pid = status.pid;
        let moved = status.reason == ExitReason::Moved;
        // Record the exit before removing the live entry, so a concurrent
        // `wait` or `log` always finds the process in one of the two.
        let entry = self.entry(pid);
        if let Some(entry) = &entry {
            if moved {
                // Keep its mailbox open and reachable: what arrives now is
                // held for the move (`Node::freeze`).
                self.router.hold(pid, entry.mailbox.clone());
            } else {
                if !matches!(status.reason, ExitReason::Killed | ExitReason::Snapshotted) {
                    // It ended on its own: its end is final, so is what it
                    // sent and wrote before (output commit has no later
                    // checkpoint to wait for). A kill — an operator's, or
                    // the fence of a copy resumed elsewhere — discards
                    // what no checkpoint covered.
                    entry.mailbox.with_outbox(|o| o.commit(o.produced()));
                    self.router.flush(pid, &entry.mailbox);
                    entry.log.release_to(u64::MAX);
                }
                // Closes the mailbox; its watchers and callers are told.
                crate::calls::on_exit(&self.router, pid, &status.reason, &entry.mailbox);
            }
            // Nothing more is written: give back what the log does not hold.
            entry.log.shrink();
            let mut exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
            if exited.len() >= self.config.exited_history_max {
                exited.pop_front();
            }
            exited.push_back((
                pid,
                Exited {
                    status: status.clone(),
                    log: entry.log.clone(),
                    at: SystemTime::now(),
                },
            ));
        }
        self.router.detach(pid);
        self.processes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        self.table_changed();
        // A moved process is not gone: its directory entry is switched by
        // the move, not removed.
        if !moved {
            if let Some(link) = self.router.cluster() {
                link.process_exited(pid, Some(&status.reason));
            }
        }
        let _ = status_tx.send(Some(status));
    }
}

/// Ends a process's table entry exactly once: with the reason its task
/// returned, or, if the task unwinds (a panic), as trapped.
struct FinishGuard {
    shared: Arc<Shared>,
    pid: Pid,
    status_tx: Option<watch::Sender<Option<ExitStatus>>>,
}

impl FinishGuard {
    fn finish(&mut self, reason: ExitReason) {
        if let Some(tx) = self.status_tx.take() {
            self.shared.finish(
                ExitStatus {
                    pid: self.pid,
                    reason,
                },
                tx,
            );
        }
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if self.status_tx.is_some() {
            tracing::error!(pid = %self.pid, "a process task failed; the process is removed");
            self.finish(ExitReason::Trapped {
                message: "the process's host task failed".into(),
            });
        }
    }
}
