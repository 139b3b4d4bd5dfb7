//! The process table: live processes ([`ProcessEntry`]) and the bounded
//! history of those that ended here ([`Exited`]), with the queries over
//! both (status, logs, the last snapshot).

use super::{Node, NodeError, Shared};
use crate::capture::CaptureSignal;
use crate::log::{ProcessLog, Stream};
use crate::mailbox::Mailbox;
use crate::modules::Tier;
use crate::pid::Pid;
use crate::process::{ExitReason, ExitStatus};
use shoal_registry::Sha256;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{oneshot, watch};

/// What the node knows about a live process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
    /// Which compiler made the code it runs (see
    /// [`crate::modules::ModuleCache::with_baseline`]).
    pub tier: Tier,
    /// When it started.
    pub started_at: SystemTime,
    /// Messages waiting in its mailbox.
    pub mailbox_len: usize,
}

/// A live process, as the node keeps it.
pub(super) struct ProcessEntry {
    pub(super) module: Sha256,
    pub(super) tier: Tier,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) log: Arc<ProcessLog>,
    pub(super) started_at: SystemTime,
    pub(super) status: watch::Receiver<Option<ExitStatus>>,
    /// Whether it runs: instantiated and, if it was restored, its image
    /// applied.
    pub(super) running: watch::Receiver<bool>,
    pub(super) kill: Mutex<Option<oneshot::Sender<()>>>,
    pub(super) capture: Arc<CaptureSignal>,
    pub(super) capturable: bool,
}

/// A process that ended here (kept for `wait`, `logs` and exit records).
pub(super) struct Exited {
    pub(super) status: ExitStatus,
    pub(super) log: Arc<ProcessLog>,
    /// When it ended here.
    pub(super) at: SystemTime,
}

impl Node {
    /// Wait for a process to end. Returns `None` if the pid was never seen
    /// (or has been forgotten).
    pub async fn wait(&self, pid: Pid) -> Option<ExitStatus> {
        self.shared.wait(pid).await
    }

    /// Wait until a process runs: instantiated and, if it was restored or
    /// arrived, its image written into its memory (a restore returns as
    /// soon as the process is started, before that). `false` if it ended
    /// first or is not here.
    pub async fn until_running(&self, pid: Pid) -> bool {
        let Some(entry) = self.shared.entry(pid) else {
            return false;
        };
        let mut running = entry.running.clone();
        let mut status = entry.status.clone();
        drop(entry);
        let ran = tokio::select! {
            r = running.wait_for(|r| *r) => r.is_ok(),
            _ = status.wait_for(|s| s.is_some()) => false,
        };
        ran || *running.borrow()
    }

    /// Kill a process. It ends with [`ExitReason::Killed`].
    pub fn kill(&self, pid: Pid) -> Result<(), NodeError> {
        let entry = self.shared.entry(pid).ok_or(NodeError::NoProcess(pid))?;
        let sender = entry.kill.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = sender {
            let _ = tx.send(());
        }
        Ok(())
    }

    /// The module a live process runs.
    pub fn module_of(&self, pid: Pid) -> Option<Sha256> {
        self.shared.entry(pid).map(|e| e.module)
    }

    /// The last snapshot taken of `pid` on this node.
    pub fn last_snapshot(&self, pid: Pid) -> Option<crate::snapshot::Parent> {
        self.shared
            .last_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()
    }

    /// Remember `id` as the latest snapshot of `pid` (bounded map).
    pub fn set_last_snapshot(&self, pid: Pid, id: crate::snapshot::Parent) {
        let mut map = self
            .shared
            .last_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= 4096 && !map.contains_key(&pid) {
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        map.insert(pid, id);
    }

    /// Live processes.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let procs = self
            .shared
            .processes
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<ProcessInfo> = procs
            .iter()
            .map(|(pid, e)| ProcessInfo {
                pid: *pid,
                module: e.module,
                tier: e.tier,
                started_at: e.started_at,
                mailbox_len: e.mailbox.len(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    /// The captured output of a live or recently exited process (of its
    /// latest stay here, for one that moved away and back).
    pub fn log(&self, pid: Pid) -> Option<Arc<ProcessLog>> {
        if let Some(e) = self.shared.entry(pid) {
            return Some(e.log.clone());
        }
        let exited = self.shared.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .map(|(_, e)| e.log.clone())
    }

    /// How and when process `pid` ended on this node, if it ended here
    /// (not by moving away) and is still in the exit history. `None` while
    /// it runs here.
    pub fn exit_record(&self, pid: Pid) -> Option<(ExitStatus, SystemTime)> {
        if self.shared.entry(pid).is_some() {
            return None;
        }
        let exited = self.shared.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .filter(|(_, e)| e.status.reason != ExitReason::Moved)
            .map(|(_, e)| (e.status.clone(), e.at))
    }

    /// Changes to the process table: the value is bumped whenever a
    /// process starts here (spawned, restored, arrived, resumed after a
    /// called-off move) or ends here (also by moving away). Subscribe,
    /// then look, then wait for a change: nothing in between is missed.
    pub fn table_changes(&self) -> watch::Receiver<u64> {
        self.shared.table_version.subscribe()
    }

    /// The captured stdout of a process, as text (lossy UTF-8).
    pub fn stdout_text(&self, pid: Pid) -> String {
        self.log(pid)
            .map(|l| String::from_utf8_lossy(&l.stream_bytes(Stream::Stdout)).into_owned())
            .unwrap_or_default()
    }
}

impl Shared {
    /// Tell [`Node::table_changes`] watchers that the table changed.
    pub(super) fn table_changed(&self) {
        self.table_version.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(super) fn entry(&self, pid: Pid) -> Option<Arc<ProcessEntry>> {
        self.processes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()
    }

    pub(super) async fn wait(&self, pid: Pid) -> Option<ExitStatus> {
        if let Some(entry) = self.entry(pid) {
            let mut rx = entry.status.clone();
            drop(entry);
            loop {
                if let Some(s) = rx.borrow().clone() {
                    return Some(s);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        let exited = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        exited
            .iter()
            .rev()
            .find(|(p, _)| *p == pid)
            .map(|(_, e)| e.status.clone())
    }
}
