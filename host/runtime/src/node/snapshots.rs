//! A node's snapshots: capture a process and store it
//! ([`Node::snapshot`]), export and import the self-contained file, and
//! restore under the grants of whoever restores. How an image becomes a
//! stored snapshot and back is [`crate::snapshot`]; this file is the
//! node's side of it (its process table, registry and config).

use super::{Node, NodeError};
use crate::calls::DownReason;
use crate::mailbox::{Message, PushError, Tag};
use crate::pid::Pid;
use crate::snapshot::format::{self, SnapshotFormatError};
use crate::snapshot::{load, store, Parent, SnapshotInfo};
use shoal_registry::Sha256;
use std::time::{Duration, Instant};

impl Node {
    /// Capture process `pid` at its next blocking call and store it as a
    /// snapshot (incremental over its previous one). With `stop` the process
    /// then ends; otherwise it goes on.
    pub async fn snapshot(
        &self,
        pid: Pid,
        stop: bool,
        wait_max: Duration,
    ) -> Result<SnapshotInfo, NodeError> {
        self.snapshot_with(pid, stop, wait_max, false).await
    }

    /// A checkpoint of process `pid` (issue #16): [`Node::snapshot`] of a
    /// process that goes on, carrying its output (so a copy resumed from it
    /// shows the same log), with what a recorded checkpoint of it covers in
    /// [`SnapshotInfo::commit`].
    pub async fn checkpoint(
        &self,
        pid: Pid,
        wait_max: Duration,
    ) -> Result<SnapshotInfo, NodeError> {
        self.snapshot_with(pid, false, wait_max, true).await
    }

    /// Prepare and compile module `hash` (the `preemptible` variant or
    /// not) now, if this node has not yet, at the lower priority of work
    /// ahead of need: a node that keeps a checkpoint does it ahead of a
    /// failover, and every node ahead of spawns and moves, so that none of
    /// them waits for it.
    pub async fn warm_module(&self, hash: Sha256, preemptible: bool) -> Result<(), NodeError> {
        self.shared
            .load_with(hash, preemptible, crate::low_priority::Priority::Ahead)
            .await
            .map(drop)
    }

    /// A recorded checkpoint of `pid` covers `point`: release its output up
    /// to there (messages and log) and acknowledge what it took.
    pub fn commit_checkpoint(&self, pid: Pid, point: &crate::outbox::CommitPoint) {
        self.router().committed(pid, point);
        if let Some(log) = self.log(pid) {
            log.release_to(point.log_end);
        }
    }

    /// Does `pid` have output (messages or log) that waits for a
    /// checkpoint?
    pub fn output_waiting(&self, pid: Pid) -> bool {
        self.router().uncommitted(pid) || self.log(pid).is_some_and(|l| l.held_back())
    }

    async fn snapshot_with(
        &self,
        pid: Pid,
        stop: bool,
        wait_max: Duration,
        with_log: bool,
    ) -> Result<SnapshotInfo, NodeError> {
        let module = self.module_of(pid).ok_or(NodeError::NoProcess(pid))?;
        let started = Instant::now();
        let mut image = self.capture(pid, stop, wait_max).await?;
        let waited = started.elapsed();
        let log_end = image.log.iter().fold(image.log_start, |p, c| {
            p.saturating_add(c.data.len() as u64)
        });
        if !with_log {
            // A snapshot anyone may restore as a copy: without the output.
            image.log.clear();
            image.log_start = 0;
            image.log_visible = None;
        }
        // Record the effective memory cap, so a node with another default
        // restores the same limit.
        if image.spec.memory_bytes_max.is_none() {
            image.spec.memory_bytes_max = Some(self.config().process_memory_bytes_max);
        }
        let parent = self.last_snapshot(pid);
        let registry = self.registry().clone();
        let t = Instant::now();
        let pending_call = image.pending.import.clone();
        let capture = image.delta.capture;
        let commit = crate::outbox::CommitPoint {
            produced: image.outbox.produced(),
            seen: image.inbox.seen.clone(),
            log_end,
        };
        let (manifest, id, pages_new, bytes_new) = tokio::task::spawn_blocking(move || {
            store(&registry, module, pid, &image, parent.as_ref())
        })
        .await
        .map_err(|e| NodeError::Runtime(format!("snapshot writer panicked: {e}")))??;
        self.set_last_snapshot(pid, Parent::of(id, &manifest, capture));
        Ok(SnapshotInfo {
            id,
            pid,
            module,
            parent: manifest.parent,
            memory_bytes: manifest.memory_bytes,
            pages_total: manifest.pages.len(),
            pages_new,
            bytes_new,
            waited,
            store_time: t.elapsed(),
            pending_call,
            commit,
        })
    }

    /// The self-contained file form of a stored snapshot.
    pub fn export_snapshot(&self, id: &Sha256) -> Result<Vec<u8>, NodeError> {
        Ok(format::export_file(self.registry(), id)?)
    }

    /// Verify a snapshot file completely and store it; returns its id. A
    /// truncated, corrupt or wrong-version file is refused, naming why.
    pub fn import_snapshot(&self, bytes: &[u8]) -> Result<Sha256, NodeError> {
        Ok(format::import_file(self.registry(), bytes)?)
    }

    /// The largest snapshot file this node takes: enough for the largest
    /// memory a process may have here, its page records and the largest
    /// header, and no more.
    pub fn snapshot_file_bytes_max(&self) -> u64 {
        let memory = self.config().engine.memory_bytes_max;
        memory
            .saturating_add(memory / 512)
            .saturating_add(format::MAX_HEADER_BYTES)
            .saturating_add(4096)
    }

    /// [`Node::import_snapshot`] for a file arriving from `reader`
    /// (blocking: call it off the async threads): decoded as it comes,
    /// holding at most its header and one page, refused as soon as its
    /// envelope announces more than [`Node::snapshot_file_bytes_max`].
    pub fn import_snapshot_stream(
        &self,
        reader: &mut dyn std::io::Read,
    ) -> Result<Sha256, NodeError> {
        Ok(format::import_stream(
            self.registry(),
            reader,
            self.snapshot_file_bytes_max(),
        )?)
    }

    /// Restore a stored snapshot. The process continues inside the call it
    /// was captured in. With `replace`, a live process with the snapshot's
    /// pid on this node is killed and the restored process takes its pid;
    /// otherwise the restored process gets a new pid.
    ///
    /// The process gets the capabilities in `grants` and nothing the
    /// snapshot says (its directories, environment, memory cap, stdin or
    /// output forwarding): a snapshot is data anyone can write. If the
    /// process had guest directories that `grants` does not grant again,
    /// the restore is refused naming them ([`crate::grants::ImageError`]).
    pub async fn restore_snapshot(
        &self,
        id: &Sha256,
        replace: bool,
        grants: &crate::grants::Grants,
    ) -> Result<Pid, NodeError> {
        self.restore_snapshot_as(id, replace, grants, None).await
    }

    /// [`Node::restore_snapshot`], starting a process that does not take
    /// its original's pid as `pid` (allocated by the caller from
    /// [`Node::pids`], so it could note what belongs to the pid, e.g. its
    /// owner, before the process runs); `None`: a fresh pid.
    pub async fn restore_snapshot_as(
        &self,
        id: &Sha256,
        replace: bool,
        grants: &crate::grants::Grants,
        pid: Option<Pid>,
    ) -> Result<Pid, NodeError> {
        let (manifest, mut image) = self.load_snapshot(id).await?;
        if !self.registry().contains(&manifest.module) {
            return Err(NodeError::Snapshot(SnapshotFormatError::BadHeader(
                format!(
                    "the snapshot's module {} is not in this node's registry (push it first)",
                    manifest.module
                ),
            )));
        }
        let spec = crate::grants::spec_for(manifest.module, &image, grants)?;
        let memory_max = spec
            .memory_bytes_max
            .unwrap_or(self.config().process_memory_bytes_max)
            .min(self.config().engine.memory_bytes_max);
        crate::grants::check_image(&image, memory_max, spec.preopens())?;
        // A restored process is a new incarnation. Who watched the captured
        // one, and the callers it was serving, were told when that one ended
        // (or still wait on it, if it goes on): never on this one, whose end
        // must not reach them as the original's.
        image.calls.watchers.clear();
        image.calls.serving.clear();
        let original = Pid(manifest.pid);
        let reuse = if replace && self.module_of(original).is_some() {
            let _ = self.kill(original);
            self.wait(original).await;
            Some(original)
        } else {
            pid
        };
        if reuse == Some(original) {
            // The same pid goes on: answers and DOWNs addressed to it reach
            // it, so its call, requests and monitors stay as captured; the
            // output its image holds is the state it goes on from.
            image.outbox.commit(image.outbox.produced());
            return self
                .restore_with_spec(manifest.module, image, spec, reuse)
                .await;
        }
        // A copy under a new pid never sent what its image records: the
        // answer to the call or the requests in progress goes to the
        // original. They are dropped (a `call` waiting in the image returns
        // `TIMEOUT` at once: whether the callee served it is unknown, as
        // after any timeout; `recv_match` for a dropped request is
        // `INVALID`). Its monitors are asked again under its own pid, so
        // their targets' ends reach it (those whose DOWN it already queues
        // are not: no second DOWN).
        image.calls.calling = None;
        image.calls.requests.clear();
        // Nor what its outbox holds (sent as the original), and it takes
        // from its own channels.
        image.outbox = crate::outbox::Outbox::new(image.outbox.output_commit);
        image.inbox = crate::outbox::Inbox::new();
        let monitors = monitors_to_ask_again(&image);
        let copy = self
            .restore_with_spec(manifest.module, image, spec, reuse)
            .await?;
        for (reference, target) in monitors {
            self.remonitor(copy, reference, target);
        }
        Ok(copy)
    }

    /// Load stored snapshot `id` (off the async threads), every page
    /// verified, its memory within this node's largest.
    async fn load_snapshot(
        &self,
        id: &Sha256,
    ) -> Result<
        (
            std::sync::Arc<crate::snapshot::format::Manifest>,
            crate::process::CapturedProcess,
        ),
        NodeError,
    > {
        let registry = self.registry().clone();
        let id = *id;
        let memory_max = self.config().engine.memory_bytes_max;
        tokio::task::spawn_blocking(move || load(&registry, &id, memory_max))
            .await
            .map_err(|e| NodeError::Runtime(format!("snapshot reader panicked: {e}")))?
            .map_err(NodeError::from)
    }

    /// Resume a process from its checkpoint `id` after the death of the
    /// node it ran on (a failover): under its own pid, which the cluster's
    /// directory already places here, continuing inside the call it was
    /// captured in, with `grants` (what the cluster recorded for it, never
    /// what the snapshot says). Its callers and the call it waits on stay
    /// as captured: the same pid goes on, so their answers reach it. The
    /// callee of its call and of each request in progress is asked whether
    /// it is still there ([`Node::probe_callee`]): a DOWN it sent while no
    /// node ran this process reached no one, and the call would wait for
    /// its deadline. Its monitors are asked again ([`Node::remonitor`]): a DOWN the lost copy
    /// took after this checkpoint was taken with it, and one sent while no
    /// node ran the process reached no one, so a monitor whose target is
    /// gone gets its DOWN (`noproc`) now; one whose DOWN the image already
    /// holds is left as it is (no second DOWN). A process of that pid
    /// already running here is refused.
    pub async fn resume_checkpoint(
        &self,
        id: &Sha256,
        pid: Pid,
        grants: &crate::grants::Grants,
    ) -> Result<Pid, NodeError> {
        let id = *id;
        let (manifest, image) = self.load_snapshot(&id).await?;
        if manifest.pid != pid.0 {
            return Err(NodeError::Snapshot(SnapshotFormatError::BadHeader(
                format!("checkpoint {id} is of process {}, not {pid}", manifest.pid),
            )));
        }
        let spec = crate::grants::spec_for(manifest.module, &image, grants)?;
        let memory_max = spec
            .memory_bytes_max
            .unwrap_or(self.config().process_memory_bytes_max)
            .min(self.config().engine.memory_bytes_max);
        crate::grants::check_image(&image, memory_max, spec.preopens())?;
        // A recorded checkpoint covers all the output its image holds.
        let mut image = image;
        image.outbox.commit(image.outbox.produced());
        image.log_visible = None;
        // Its kept copy starts as this capture, so its next checkpoint is
        // incremental over this one, reading only what it wrote since.
        let capture = crate::memory_copy::MemoryDelta::next_capture();
        image.delta.capture = capture;
        let monitors = monitors_to_ask_again(&image);
        let callees = callees_to_ask_again(&image);
        let resumed = self
            .restore_with_spec(manifest.module, image, spec, Some(pid))
            .await?;
        self.set_last_snapshot(resumed, Parent::of(id, &manifest, capture));
        self.router().nack_senders(resumed);
        for (reference, target) in monitors {
            self.remonitor(resumed, reference, target);
        }
        for (reference, callee) in callees {
            self.probe_callee(resumed, reference, callee);
        }
        Ok(resumed)
    }

    /// Is `callee`, which `caller` waits on under `reference` (its call or
    /// a request in progress), still there? A monitor under the same
    /// reference, withdrawn at once, asks: if the callee is gone, `caller`
    /// gets the DOWN (`noproc`, or `node_down` from the lane to a dead
    /// node) that answers its call, as a monitor's would. If the callee is
    /// there, it holds the call (queued, served or answered, and an answer
    /// is numbered, so sent again to the resumed copy) and owes its DOWN
    /// when it ends; a DOWN that meets the finished call later is late and
    /// dropped. A full mailbox refuses the probe: the callee is there, so
    /// nothing is sent.
    fn probe_callee(&self, caller: Pid, reference: u64, callee: Pid) {
        if self.send_monitor(caller, reference, callee).is_ok() {
            let withdraw = unnumbered(caller, Tag::Demonitor(reference), Vec::new());
            let _ = self.router().send_message(callee, withdraw);
        }
    }

    /// Ask `target` to be watched by `watcher` under `reference` (a monitor
    /// `watcher` already records). If `target` is gone, `watcher` gets its
    /// DOWN `noproc` at once, as from `monitor`; if the way to it is full,
    /// a DOWN `overloaded` (the monitor could not be set up), so the copy
    /// never waits on a monitor nobody keeps.
    fn remonitor(&self, watcher: Pid, reference: u64, target: Pid) {
        if let Err(PushError::Full) = self.send_monitor(watcher, reference, target) {
            self.send_down(watcher, target, reference, DownReason::Overloaded);
        }
    }

    /// Send `watcher`'s monitor of `target` under `reference`; if `target`
    /// is gone, `watcher` gets its DOWN `noproc` at once. Returns how the
    /// push went.
    fn send_monitor(&self, watcher: Pid, reference: u64, target: Pid) -> Result<(), PushError> {
        let request = unnumbered(watcher, Tag::Monitor(reference), Vec::new());
        let sent = self.router().send_message(target, request);
        if let Err(PushError::Closed) = sent {
            self.send_down(watcher, target, reference, DownReason::NoProc);
        }
        sent
    }

    /// A DOWN from `target` to `watcher` under `reference`.
    fn send_down(&self, watcher: Pid, target: Pid, reference: u64, reason: DownReason) {
        let down = unnumbered(target, Tag::Down(reference), reason.encode());
        let _ = self.router().send_message(watcher, down);
    }
}

/// A message outside the numbered channels (monitors, DOWNs).
fn unnumbered(sender: Pid, tag: Tag, data: Vec<u8>) -> Message {
    Message {
        seq: 0,
        life: 0,
        sender,
        data,
        tag,
    }
}

/// Is a message tagged `tag` queued in `image`?
fn queued(image: &crate::process::CapturedProcess, tag: Tag) -> bool {
    image.mailbox.iter().any(|m| m.tag == tag)
}

/// The monitors of a process resumed or copied from `image` to ask again:
/// every one it holds whose DOWN is not already in its queue.
fn monitors_to_ask_again(image: &crate::process::CapturedProcess) -> Vec<(u64, Pid)> {
    image
        .calls
        .monitors
        .iter()
        .filter(|(reference, _)| !queued(image, Tag::Down(**reference)))
        .map(|(r, p)| (*r, *p))
        .collect()
}

/// The call and the requests in progress of a process resumed from
/// `image` whose answer (a reply or a DOWN) is not already in its queue:
/// (reference, callee).
fn callees_to_ask_again(image: &crate::process::CapturedProcess) -> Vec<(u64, Pid)> {
    let answered = |r: u64| queued(image, Tag::Down(r)) || queued(image, Tag::Reply(r));
    image
        .calls
        .calling
        .iter()
        .map(|c| (c.reference, c.target))
        .chain(image.calls.requests.iter().map(|(r, p)| (*r, *p)))
        .filter(|(r, _)| !answered(*r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{callees_to_ask_again, monitors_to_ask_again};
    use crate::mailbox::{Message, Tag};
    use crate::pid::Pid;

    #[test]
    fn a_monitor_whose_down_is_queued_is_not_asked_again() {
        let mut image = crate::grants::tests::image(65536, &[]);
        image.calls.monitors.insert(1, Pid(10));
        image.calls.monitors.insert(2, Pid(11));
        image.mailbox.push(Message {
            seq: 0,
            life: 0,
            sender: Pid(10),
            data: Vec::new(),
            tag: Tag::Down(1),
        });
        assert_eq!(monitors_to_ask_again(&image), vec![(2, Pid(11))]);
    }

    #[test]
    fn a_call_or_request_whose_answer_is_queued_is_not_asked_again() {
        let mut image = crate::grants::tests::image(65536, &[]);
        assert!(callees_to_ask_again(&image).is_empty());
        image.calls.calling = Some(crate::mailbox::Calling {
            reference: 5,
            target: Pid(20),
        });
        image.calls.requests.insert(6, Pid(21));
        image.calls.requests.insert(7, Pid(22));
        image.calls.requests.insert(8, Pid(23));
        for (r, tag) in [(6, Tag::Reply(6)), (8, Tag::Down(8)), (9, Tag::Down(9))] {
            image.mailbox.push(Message {
                seq: 0,
                life: 0,
                sender: Pid(20 + r - 5),
                data: Vec::new(),
                tag,
            });
        }
        assert_eq!(
            callees_to_ask_again(&image),
            vec![(5, Pid(20)), (7, Pid(22))]
        );
    }
}
