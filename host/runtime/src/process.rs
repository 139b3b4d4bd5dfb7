//! A process: the data its store carries and the task that runs it.
//!
//! Everything host-side a process owns is reachable from [`ProcessCtx`] —
//! its WASI context, limits, mailbox and log — so a snapshot can find it all
//! in one place.

use super::capture::{CaptureMode, CaptureSignal, PendingCall};
use super::limits::ProcessLimiter;
use super::log::ProcessLog;
use super::mailbox::Mailbox;
use crate::host::ProcessHost;
use crate::image_memory::ImageMemory;
use crate::pid::Pid;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wasi_common::{I32Exit, WasiCtx};
use wasmtime::{Global, Instance, Memory, Mutability, Store, Trap, Val};

/// The data of a process's wasmtime store.
pub struct ProcessCtx {
    /// This process's pid.
    pub pid: Pid,
    /// Its WASI context (args, env, preopened dirs, stdio).
    pub wasi: WasiCtx,
    /// Its memory cap.
    pub limiter: ProcessLimiter,
    /// Its mailbox.
    pub mailbox: Arc<Mailbox>,
    /// Its captured output.
    pub log: Arc<ProcessLog>,
    /// What it may ask of the rest of the system (send, spawn): never the
    /// node itself.
    pub host: Arc<dyn ProcessHost>,
    /// Capture requests for this process.
    pub capture: Arc<CaptureSignal>,
    /// True when the module was prepared for capture (has Asyncify exports).
    pub capturable: bool,
    /// Set by the runner before a rewind: the call the process resumes in.
    pub resume: Option<PendingCall>,
    /// Set by a blocking call that started an unwind.
    pub pending: Option<PendingCall>,
    /// Address of the host-owned Asyncify buffer, once reserved.
    pub asyncify_buffer: Option<u32>,
    /// What this process was started with (args, env, grants), so a
    /// snapshot can rebuild the same WASI context.
    pub spec: crate::spec::SpawnSpec,
    /// Files the guest opened with `path_open`, by fd.
    pub open_files: std::collections::BTreeMap<u32, OpenFile>,
    /// Which fds are in a shared volume, and their copies
    /// ([`crate::abi::wasi_shared`]).
    pub shared_fds: std::collections::BTreeMap<u32, crate::volume::shared::SharedHandle>,
    /// Its private volumes on this node (their directories go with it).
    pub volumes: crate::volume::Volumes,
    /// Its node's gate: every Shoal import waits here while the node is
    /// suspended ([`crate::gate`]).
    pub gate: crate::gate::Gate,
    /// Its memory as of its last capture ([`crate::memory_copy`]). Dropped
    /// with the store's data, before wasmtime hands its memory slot back
    /// to the pool (`Drop for Store`), so its write tracking never
    /// outlives the memory it watches; its drop gives the tracked pages
    /// back first.
    pub memory_copy: crate::memory_copy::MemoryCopy,
}

pub use crate::open_files::OpenFile;
pub use shoal_abi::process::{ExitReason, ExitStatus};

/// Turn the error a guest call ended with into an exit reason.
pub fn classify(error: &wasmtime::Error, ctx: &ProcessCtx, fuel: Option<u64>) -> ExitReason {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return ExitReason::Exited { code: exit.0 };
    }
    if let Some(Trap::OutOfFuel) = error.downcast_ref::<Trap>() {
        return ExitReason::FuelExhausted {
            fuel: fuel.unwrap_or(0),
        };
    }
    if let Some(requested) = ctx.limiter.memory_refused_bytes {
        return ExitReason::MemoryLimit {
            limit_bytes: ctx.limiter.memory_bytes_max as u64,
            requested_bytes: requested as u64,
        };
    }
    ExitReason::Trapped {
        message: format!("{error:?}"),
    }
}

/// A mutable global's value: the snapshot format's own type, so a capture
/// needs no conversion to be stored.
pub use shoal_snapshot_format::GlobalVal as GlobalBits;

/// A process captured at a blocking call: everything needed to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapturedProcess {
    /// Linear memory at capture, shared with the process's kept copy
    /// ([`crate::memory_copy`]) until its next capture.
    pub memory: crate::image_memory::ImageMemory,
    /// What changed in `memory` since the process's previous capture (a
    /// restore image: the capture number its copy starts from).
    #[serde(skip)]
    pub delta: crate::memory_copy::MemoryDelta,
    /// Every exported mutable global (preparation exports them all).
    pub globals: Vec<(String, GlobalBits)>,
    /// The call it was blocked in.
    pub pending: PendingCall,
    /// Where the Asyncify buffer lives in memory.
    pub asyncify_buffer: u32,
    /// Messages waiting in its mailbox, oldest first.
    pub mailbox: Vec<super::mailbox::Message>,
    /// What it was started with.
    pub spec: crate::spec::SpawnSpec,
    /// Fuel left, when fuel is metered.
    pub fuel_remaining: Option<u64>,
    /// Files it had open, with their positions.
    #[serde(default)]
    pub open_files: Vec<OpenFile>,
    /// Its WASI monotonic clock at capture, ns: a restored process's clock
    /// goes on from here, never back (see [`crate::clock`]). 0 in images
    /// from before the clock was carried.
    #[serde(default)]
    pub monotonic_ns: u64,
    /// Output it had written, carried when it moves to another node so its
    /// log there is whole (snapshots leave it empty).
    #[serde(default)]
    pub log: Vec<super::log::Chunk>,
    /// The position of the first chunk of `log`: the bytes its log had
    /// dropped (see [`crate::log::LogView`]), so positions go on unchanged
    /// on the new node. 0 in images from before it was carried.
    #[serde(default)]
    pub log_start: u64,
    /// How far readers could see its output (output commit, see
    /// [`crate::log::ProcessLog::hold_output`]); `None`: all of it.
    #[serde(default)]
    pub log_visible: Option<u64>,
    /// Its calls and monitors ([`crate::calls`]); empty in images from
    /// before calls.
    #[serde(default)]
    pub calls: super::mailbox::CallState,
    /// Its private volumes' content, in the order of `spec.volumes`.
    #[serde(default)]
    pub volumes: Vec<crate::volume::VolumeTree>,
    /// Its numbered channels out ([`crate::outbox`]); empty in images from
    /// before issue #16.
    #[serde(default)]
    pub outbox: crate::outbox::Outbox,
    /// The last numbers it took from each sender, read with `mailbox` at
    /// one instant.
    #[serde(default)]
    pub inbox: crate::outbox::Inbox,
}

/// What a restored process starts from.
pub type RestoreImage = CapturedProcess;

async fn call_export(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
    name: &str,
) -> wasmtime::Result<()> {
    let f = instance.get_typed_func::<(), ()>(&mut *store, name)?;
    f.call_async(&mut *store, ()).await
}

/// The instance's linear memory (its `memory` export).
pub(crate) fn memory_of(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
) -> wasmtime::Result<Memory> {
    instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory named `memory`"))
}

fn read_globals(store: &mut Store<ProcessCtx>, instance: &Instance) -> Vec<(String, GlobalBits)> {
    let exports: Vec<(String, Global)> = instance
        .exports(&mut *store)
        .filter_map(|e| {
            let name = e.name().to_string();
            e.into_global().map(|g| (name, g))
        })
        .collect();
    let mut out = Vec::new();
    for (name, g) in exports {
        if g.ty(&*store).mutability() != Mutability::Var {
            continue;
        }
        let bits = match g.get(&mut *store) {
            Val::I32(v) => GlobalBits::I32(v),
            Val::I64(v) => GlobalBits::I64(v),
            Val::F32(v) => GlobalBits::F32(v),
            Val::F64(v) => GlobalBits::F64(v),
            _ => continue,
        };
        out.push((name, bits));
    }
    out
}

fn write_globals(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
    globals: &[(String, GlobalBits)],
) -> wasmtime::Result<()> {
    for (name, bits) in globals {
        let g = instance.get_global(&mut *store, name).ok_or_else(|| {
            wasmtime::Error::msg(format!(
                "snapshot global `{name}` is not exported by the module"
            ))
        })?;
        let v = match *bits {
            GlobalBits::I32(v) => Val::I32(v),
            GlobalBits::I64(v) => Val::I64(v),
            GlobalBits::F32(v) => Val::F32(v),
            GlobalBits::F64(v) => Val::F64(v),
        };
        g.set(&mut *store, v)?;
    }
    Ok(())
}

/// Stop the unwind, copy the process out, hand it to the requester.
/// Returns why the process ends, or `None` when it should resume.
async fn finish_capture(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
    pending: PendingCall,
) -> wasmtime::Result<Option<ExitReason>> {
    call_export(store, instance, "asyncify_stop_unwind").await?;
    let memory = memory_of(store, instance)?;
    let globals = read_globals(store, instance);
    let (data, delta) = {
        let (bytes, ctx) = memory.data_and_store_mut(&mut *store);
        ctx.memory_copy.capture(bytes)
    };
    let Some((mode, reply)) = store.data().capture.take_reply() else {
        return Ok(None);
    };
    // Files written in shared volumes are published first, so what
    // others see agrees with the image; under output commit nothing is
    // published, and their copies travel in the image instead. If that
    // fails, the capture is called off and the process goes on (the
    // requester sees it fail).
    let output_commit = store.data().mailbox.output_commit();
    let published = match output_commit {
        true => Ok(()),
        false => store.data().volumes.publish_shared().await,
    };
    let open_files = match published {
        Ok(()) => crate::open_files::positions(store.data_mut()).await,
        Err(e) => Err(e),
    };
    let open_files = match open_files {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!("capture called off: a written shared-volume file: {e}");
            drop(reply);
            return Ok(None);
        }
    };
    let ctx = store.data();
    // Paused at a capture point: nothing writes its volumes meanwhile.
    let volumes = ctx
        .volumes
        .capture()
        .map_err(|e| wasmtime::Error::msg(format!("cannot capture its volumes: {e}")))?;
    let monotonic_ns =
        u64::try_from(crate::clock::monotonic_now(&ctx.wasi).as_nanos()).unwrap_or(u64::MAX);
    let (queued, outbox, inbox) = ctx.mailbox.capture(mode == CaptureMode::Move);
    // Its output at this instant (a move carries it separately).
    let log = match mode {
        CaptureMode::Move => crate::log::LogView::default(),
        CaptureMode::Resume | CaptureMode::Stop => ctx.log.view_all(),
    };
    let image = CapturedProcess {
        memory: ImageMemory::Bytes(data),
        delta,
        globals,
        pending,
        asyncify_buffer: ctx.asyncify_buffer.unwrap_or(0),
        mailbox: queued,
        spec: ctx.spec.clone(),
        fuel_remaining: store.get_fuel().ok(),
        open_files,
        monotonic_ns,
        log: log.chunks,
        log_start: log.start,
        log_visible: ctx.log.visible_end(),
        calls: ctx.mailbox.calls(),
        volumes,
        outbox,
        inbox,
    };
    // The requester may have given up; then the process simply resumes
    // (a move hands the taken messages back first).
    if let Err(image) = reply.send(image) {
        if mode == CaptureMode::Move {
            let _ = store.data().mailbox.push_front_all(image.mailbox);
            store.data().mailbox.thaw();
        }
        return Ok(None);
    }
    Ok(match mode {
        CaptureMode::Resume => None,
        CaptureMode::Stop => Some(ExitReason::Snapshotted),
        CaptureMode::Move => Some(ExitReason::Moved),
    })
}

/// Write a captured image into an instance and start the rewind: a fresh
/// instance of `fresh`, or (`None`) one made ahead whose memory is the
/// image's already.
async fn apply_image(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
    image: RestoreImage,
    fresh: Option<&crate::modules::LoadedModule>,
    running: &tokio::sync::watch::Sender<bool>,
) -> wasmtime::Result<()> {
    let memory = memory_of(store, instance)?;
    let have = memory.data_size(&*store);
    let want = image.memory.len();
    let in_place = fresh.is_none();
    if in_place && have != want {
        return Err(wasmtime::Error::msg(format!(
            "the instance made ahead has {have} bytes of memory, the image {want}"
        )));
    }
    if want < have {
        return Err(wasmtime::Error::msg(format!(
            "snapshot memory ({want} bytes) is smaller than the module's initial memory ({have} bytes)"
        )));
    }
    let extra_pages = ((want - have) / 65536) as u64;
    if extra_pages > 0 {
        memory.grow(&mut *store, extra_pages)?;
    }
    let dest = memory.data_mut(&mut *store);
    if dest.len() != want {
        return Err(wasmtime::Error::msg(format!(
            "snapshot memory ({want} bytes) is not a whole number of 64 KiB pages"
        )));
    }
    match &image.memory {
        // Written as its pages arrived.
        _ if in_place => {}
        ImageMemory::Bytes(bytes) => {
            crate::dirty::populate_for_write(dest);
            dest.copy_from_slice(bytes);
        }
        ImageMemory::Paged(paged) => {
            // Past `have`, the memory was grown just now: zero, so only
            // the snapshot's pages are written there, each backed first
            // (one call per run of pages instead of a fault per page).
            for run in paged.pages().listed_runs() {
                crate::dirty::populate_for_write(&mut dest[run]);
            }
            // Below `have`, only where its data segments are can the
            // fresh instance hold bytes the snapshot does not.
            let maybe_nonzero = fresh.map_or_else(Vec::new, |m| m.fresh_nonzero(have));
            paged.pages().write_into(dest, &maybe_nonzero)?;
            // The kept copy's bytes, built off this path: ready by the
            // next capture, which otherwise builds them itself.
            let paged = paged.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn_blocking(move || drop(paged.bytes())));
            }
        }
    }
    {
        // What it now holds is the image: the kept copy starts from it.
        let (bytes, ctx) = memory.data_and_store_mut(&mut *store);
        ctx.memory_copy
            .seed(bytes, image.memory.clone(), image.delta.capture);
    }
    write_globals(store, instance, &image.globals)?;
    crate::open_files::reopen(store.data_mut(), &image.open_files).await?;
    store.data_mut().asyncify_buffer = Some(image.asyncify_buffer);
    // It runs from here: the rewind goes back into the call it was
    // captured in, and on.
    running.send_replace(true);
    rewind(store, instance, image.pending).await
}

async fn rewind(
    store: &mut Store<ProcessCtx>,
    instance: &Instance,
    pending: PendingCall,
) -> wasmtime::Result<()> {
    let base = store
        .data()
        .asyncify_buffer
        .ok_or_else(|| wasmtime::Error::msg("no capture buffer to rewind from"))?;
    store.data_mut().resume = Some(pending);
    let f = instance.get_typed_func::<i32, ()>(&mut *store, "asyncify_start_rewind")?;
    f.call_async(&mut *store, base as i32).await
}

/// How a process gets its instance.
pub enum Instantiate {
    /// Made now, from the module.
    Pre(Arc<crate::modules::LoadedModule>),
    /// Made ahead, its memory already the image's (an arrival's:
    /// `crate::node` prepares it during the move's pre-copy).
    Ready(Instance),
}

/// Instantiate and run a process to its end, optionally starting from a
/// captured image; captures requested meanwhile are served on the way.
/// `running` is set once it is instantiated and its image applied.
/// Returns why it ended, and its store (for the caller to drop).
pub async fn run(
    mut store: Store<ProcessCtx>,
    pre: Instantiate,
    fuel: Option<u64>,
    restore: Option<RestoreImage>,
    running: tokio::sync::watch::Sender<bool>,
) -> (ExitReason, Store<ProcessCtx>) {
    let reason = run_in(&mut store, pre, fuel, restore, running).await;
    if !matches!(
        reason,
        ExitReason::Moved | ExitReason::Snapshotted | ExitReason::StartFailed { .. }
    ) {
        // It ended on its own: its end is final, so are the files it left
        // open (published as the store drops them).
        store.data().volumes.ended_on_its_own();
    }
    (reason, store)
}

/// [`run`], on a store it lends.
async fn run_in(
    store: &mut Store<ProcessCtx>,
    pre: Instantiate,
    fuel: Option<u64>,
    restore: Option<RestoreImage>,
    running: tokio::sync::watch::Sender<bool>,
) -> ExitReason {
    let (instance, fresh) = match pre {
        Instantiate::Ready(i) => (i, None),
        Instantiate::Pre(module) => match module.pre.instantiate_async(&mut *store).await {
            Ok(i) => (i, Some(module)),
            Err(e) => {
                return ExitReason::StartFailed {
                    message: format!("{e:#}"),
                }
            }
        },
    };
    let start =
        match instance.get_typed_func::<(), ()>(&mut *store, "_start") {
            Ok(f) => f,
            Err(_) => return ExitReason::StartFailed {
                message:
                    "the module exports no `_start() -> ()` function, so it is not a WASI command"
                        .into(),
            },
        };
    if let Some(image) = restore {
        if let Err(e) = apply_image(store, &instance, image, fresh.as_deref(), &running).await {
            return ExitReason::StartFailed {
                message: format!("cannot restore the snapshot: {e:#}"),
            };
        }
    } else {
        running.send_replace(true);
    }
    loop {
        match start.call_async(&mut *store, ()).await {
            Ok(()) => {
                let Some(pending) = store.data_mut().pending.take() else {
                    return ExitReason::Exited { code: 0 };
                };
                let resumed = async {
                    if let Some(reason) = finish_capture(store, &instance, pending.clone()).await? {
                        return Ok(Some(reason));
                    }
                    rewind(store, &instance, pending).await?;
                    Ok::<Option<ExitReason>, wasmtime::Error>(None)
                }
                .await;
                match resumed {
                    Ok(None) => continue,
                    Ok(Some(reason)) => return reason,
                    Err(e) => {
                        return ExitReason::Trapped {
                            message: format!("capture failed: {e:#}"),
                        }
                    }
                }
            }
            Err(e) => return classify(&e, store.data(), fuel),
        }
    }
}
