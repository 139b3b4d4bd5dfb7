//! Capturing a live process, and starting one from an image: a restore,
//! a frozen move called off (`unfreeze`), or an arrival from another node.

use super::prepared::PreparedInstance;
use super::{Node, NodeError, SpawnSpec, CONTROL_SENDER};
use crate::capture::CaptureMode;
use crate::mailbox::Mailbox;
use crate::modules::LoadedModule;
use crate::pid::Pid;
use crate::process::{CapturedProcess, RestoreImage};
use shoal_registry::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

impl Node {
    /// Capture a live process at its next blocking call. With `stop` it
    /// then ends ([`ExitReason::Snapshotted`]); otherwise it goes on.
    /// `wait_max` bounds how long to wait for a process busy in guest code.
    pub async fn capture(
        &self,
        pid: Pid,
        stop: bool,
        wait_max: Duration,
    ) -> Result<CapturedProcess, NodeError> {
        let mode = if stop {
            CaptureMode::Stop
        } else {
            CaptureMode::Resume
        };
        self.capture_with(pid, mode, wait_max).await
    }

    /// [`Node::capture`] with any [`CaptureMode`].
    pub async fn capture_with(
        &self,
        pid: Pid,
        mode: CaptureMode,
        wait_max: Duration,
    ) -> Result<CapturedProcess, NodeError> {
        let entry = self.shared.entry(pid).ok_or(NodeError::NoProcess(pid))?;
        if !entry.capturable {
            return Err(NodeError::NotCapturable(pid));
        }
        let (tx, rx) = oneshot::channel();
        entry
            .capture
            .request_capture(mode, tx)
            .map_err(|_| NodeError::CaptureBusy(pid))?;
        let mut status = entry.status.clone();
        let watched = status.clone();
        drop(entry);
        // The image never came: the process ended, or (still running) it
        // called the capture off.
        let exited = || match watched.borrow().is_some() {
            true => NodeError::ExitedBeforeCapture(pid, exited_how(&watched)),
            false => NodeError::CaptureCalledOff(pid),
        };
        tokio::select! {
            // The image is sent before the process ends: check it first.
            biased;
            image = rx => image.map_err(|_| exited()),
            _ = status.wait_for(|s| s.is_some()) => Err(NodeError::ExitedBeforeCapture(pid, exited_how(&watched))),
            _ = tokio::time::sleep(wait_max) => Err(NodeError::CaptureTimeout { pid, waited: wait_max }),
        }
    }

    /// Start a process from a captured image (in this node's engine, which
    /// may be a fresh one). It gets a new pid and continues inside the call
    /// it was captured in.
    ///
    /// The image's spec (directories, environment, limits) is used as it
    /// is: only for an image this program captured itself. A snapshot file
    /// or a peer's image goes through [`Node::restore_snapshot`] or
    /// [`Node::start_arrived`], which take the capabilities from grants.
    pub async fn restore(&self, module: Sha256, image: RestoreImage) -> Result<Pid, NodeError> {
        self.restore_as(module, image, None).await
    }

    /// [`Node::restore`], optionally under a given pid (which must not be live).
    pub async fn restore_as(
        &self,
        module: Sha256,
        image: RestoreImage,
        pid: Option<Pid>,
    ) -> Result<Pid, NodeError> {
        let loaded = self.load_capturable(module, &image).await?;
        let spec = image.spec.clone();
        self.shared
            .start_as(spec, loaded, Some(image), pid, None, None)
    }

    /// Start `image` as `spec` (already checked against the grants),
    /// optionally under a given pid.
    pub(crate) async fn restore_with_spec(
        &self,
        module: Sha256,
        image: RestoreImage,
        spec: SpawnSpec,
        pid: Option<Pid>,
    ) -> Result<Pid, NodeError> {
        let loaded = self.load_capturable(module, &image).await?;
        self.shared
            .start_as(spec, loaded, Some(image), pid, None, None)
    }

    /// Load the module variant `image` runs, refusing one that was not
    /// prepared for capture (it cannot be rewound).
    async fn load_capturable(
        &self,
        module: Sha256,
        image: &RestoreImage,
    ) -> Result<Arc<LoadedModule>, NodeError> {
        let loaded = self.shared.load(module, image.spec.preemptible).await?;
        if loaded.module.get_export("asyncify_start_rewind").is_none() {
            return Err(NodeError::InvalidSpawn(format!(
                "module {module} was not prepared for capture"
            )));
        }
        Ok(loaded)
    }

    /// Freeze a process to move it: capture it at its next blocking call
    /// and end it ([`ExitReason::Moved`]), taking its queued messages into
    /// the image. Its mailbox stays open, held for the move
    /// ([`Node::held_mailbox`]): what arrives meanwhile is kept, to be
    /// forwarded once the move is decided or handed back by
    /// [`Node::unfreeze`]. Returns once the process has stopped.
    pub async fn freeze(&self, pid: Pid, wait_max: Duration) -> Result<CapturedProcess, NodeError> {
        let status = self
            .shared
            .entry(pid)
            .ok_or(NodeError::NoProcess(pid))?
            .status
            .clone();
        let image = self.capture_with(pid, CaptureMode::Move, wait_max).await?;
        let mut status = status;
        let _ = status.wait_for(|s| s.is_some()).await;
        Ok(image)
    }

    /// Call a move off: start the frozen process again here, under its pid,
    /// with the messages taken at the freeze first and those held since
    /// after them, in the same mailbox (so none is lost in the switch).
    pub async fn unfreeze(
        &self,
        pid: Pid,
        module: Sha256,
        image: RestoreImage,
    ) -> Result<Pid, NodeError> {
        let mut image = image;
        // Its output so far goes on in the resumed process's log, at the
        // same positions.
        if image.log.is_empty() && image.log_start == 0 {
            if let Some(log) = self.log(pid) {
                let view = log.view_all();
                image.log = view.chunks;
                image.log_start = view.start;
            }
        }
        let loaded = self.shared.load(module, image.spec.preemptible).await?;
        let held = self.shared.router.held(pid);
        if let Some(mb) = &held {
            mb.retain(|m| m.sender != CONTROL_SENDER);
            let _ = mb.push_front_all(std::mem::take(&mut image.mailbox));
        }
        let spec = image.spec.clone();
        let started = self
            .shared
            .start_as(spec, loaded, Some(image), Some(pid), held, None)?;
        self.shared.router.release_held(pid);
        Ok(started)
    }

    /// Rebuild the volumes of `pid`, arriving here, from the trees of its
    /// pre-copy while it still runs on its source, so that its start only
    /// writes what changed since ([`crate::volume::Volumes::update`]).
    /// Replaces anything staged for it before.
    pub fn stage_volumes(
        &self,
        pid: Pid,
        mounts: &[crate::volume::VolumeMount],
        trees: &[crate::volume::VolumeTree],
    ) -> Result<(), NodeError> {
        let volumes = self.shared.new_volumes(pid, mounts, trees)?;
        self.shared
            .staged_volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, volumes);
        Ok(())
    }

    /// Drop what was staged for `pid` (a move called off).
    pub fn unstage_volumes(&self, pid: Pid) {
        // Its directories go here, outside the lock.
        drop(self.shared.take_staged_volumes(pid));
    }

    /// Make the instance of process `pid`, arriving with module `module`
    /// (its `preemptible` variant or not) and `memory_bytes` of memory,
    /// ahead of its start: the move's target writes the pages into it as
    /// they arrive (see [`PreparedInstance`]).
    pub async fn prepare_arrival(
        &self,
        pid: Pid,
        module: Sha256,
        preemptible: bool,
        memory_bytes: usize,
    ) -> Result<PreparedInstance, NodeError> {
        let loaded = self.shared.load(module, preemptible).await?;
        if loaded.module.get_export("asyncify_start_rewind").is_none() {
            return Err(NodeError::InvalidSpawn(format!(
                "module {module} was not prepared for capture"
            )));
        }
        self.shared
            .prepare_instance(pid, loaded, preemptible, memory_bytes)
            .await
    }

    /// Start a process that arrived from another node, under its pid, its
    /// messages routed through its handoff (installed before). Its
    /// capabilities are `grants` (what the cluster recorded for it), never
    /// what the image carries (see [`crate::grants`]).
    ///
    /// `prepared`: its instance, made ahead and written as the image's
    /// pages arrived ([`Node::prepare_arrival`]); its memory must be the
    /// image's exactly.
    pub async fn start_arrived(
        &self,
        pid: Pid,
        module: Sha256,
        image: RestoreImage,
        grants: &crate::grants::Grants,
        prepared: Option<PreparedInstance>,
    ) -> Result<Pid, NodeError> {
        let spec = crate::grants::spec_for(module, &image, grants)?;
        let loaded = self.load_capturable(module, &image).await?;
        let mailbox = Arc::new(Mailbox::new(self.shared.config.mailbox));
        let started = self.shared.start_as(
            spec,
            loaded,
            Some(image),
            Some(pid),
            Some(mailbox.clone()),
            prepared,
        )?;
        if let Some(h) = self.shared.router.handoff(pid) {
            h.start(mailbox);
        }
        Ok(started)
    }
}

/// What the status channel says about how the process ended.
fn exited_how(
    status: &tokio::sync::watch::Receiver<Option<crate::ExitStatus>>,
) -> super::error::ExitedHow {
    super::error::ExitedHow(status.borrow().as_ref().map(|s| format!("{:?}", s.reason)))
}
