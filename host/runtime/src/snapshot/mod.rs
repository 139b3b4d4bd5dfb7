//! Snapshots: a captured process as stored, exported and restored data.
//!
//! [`crate::capture`] suspends a process inside a blocking call and
//! the runner copies it out ([`CapturedProcess`]). This module turns that
//! into a snapshot — a [`format::Manifest`] plus memory pages stored in the
//! registry by sha256, incremental over the process's previous snapshot —
//! and back, and moves snapshots in and out as self-contained files.

/// The format, as its own crate (no wasmtime); kept at this path.
pub use shoal_snapshot_format as format;

pub mod log_blocks;

use crate::capture::PendingCall;
use crate::mailbox::Message;
use crate::pid::Pid;
use crate::process::CapturedProcess;
use format::{GlobalValue, Manifest, SnapshotFormatError};
use serde::{Deserialize, Serialize};
use shoal_registry::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Host-side process state carried in a manifest's `state` field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    /// The blocking call the process is suspended in.
    pub pending: PendingCall,
    /// Address of the Asyncify buffer in linear memory.
    pub asyncify_buffer: u32,
    /// Queued messages, oldest first.
    pub mailbox: Vec<Message>,
    /// Args, env, granted dirs and limits it was started with.
    pub spec: crate::spec::SpawnSpec,
    /// Fuel left, if metered.
    pub fuel_remaining: Option<u64>,
    /// Files the process had open, with their positions.
    #[serde(default)]
    pub open_files: Vec<crate::process::OpenFile>,
    /// Its WASI monotonic clock at capture, ns (format version 2; absent,
    /// so 0, in version 1).
    #[serde(default)]
    pub monotonic_ns: u64,
    /// Its calls and monitors (format version 3; absent, so none, before).
    #[serde(default)]
    pub calls: crate::mailbox::CallState,
    /// Its private volumes' content (chunks in the registry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volume::VolumeTree>,
    /// Its output, in blocks (checkpoints only; see [`log_blocks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<log_blocks::LogRef>,
    /// How far readers could see its output (output commit; `None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_visible: Option<u64>,
    /// Its numbered channels out (issue #16; absent, so none, before).
    #[serde(default)]
    pub outbox: crate::outbox::Outbox,
    /// The last numbers it took from each sender (issue #16).
    #[serde(default)]
    pub inbox: crate::outbox::Inbox,
    /// How its module was prepared ([`shoal_prepare::PREPARE_VERSION`]): the
    /// saved stack in its Asyncify buffer and its Asyncify globals only mean
    /// something to a module instrumented the same way. Absent in snapshots
    /// of builds before `prepare-4`, which instrumented with Binaryen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_version: Option<String>,
}

impl HostState {
    /// The host-side state of a captured process.
    pub fn of(image: &CapturedProcess) -> HostState {
        HostState {
            pending: image.pending.clone(),
            asyncify_buffer: image.asyncify_buffer,
            mailbox: image.mailbox.clone(),
            spec: image.spec.clone(),
            fuel_remaining: image.fuel_remaining,
            open_files: image.open_files.clone(),
            monotonic_ns: image.monotonic_ns,
            calls: image.calls.clone(),
            volumes: image.volumes.clone(),
            log: None,
            log_visible: image.log_visible,
            outbox: image.outbox.clone(),
            inbox: image.inbox.clone(),
            prepare_version: Some(shoal_prepare::PREPARE_VERSION.to_string()),
        }
    }

    /// Refuses a state captured in a module prepared differently from how
    /// this host prepares it (another build's preparation): rewinding its
    /// saved stack would run the guest from a wrong place.
    pub fn check_preparation(&self) -> Result<(), String> {
        match self.prepare_version.as_deref() {
            Some(v) if v == shoal_prepare::PREPARE_VERSION => Ok(()),
            other => Err(format!(
                "it was captured in a module prepared as {} and this host prepares modules as \
                 {}: a process resumes only where its module is instrumented the same way",
                other.unwrap_or("an earlier build did (before prepare-4)"),
                shoal_prepare::PREPARE_VERSION
            )),
        }
    }

    /// A captured process from this state and its memory, globals and log
    /// (what its log held, with its position: see [`crate::log::LogView`]).
    pub fn into_image(
        self,
        memory: crate::image_memory::ImageMemory,
        globals: Vec<(String, crate::process::GlobalBits)>,
        log: crate::log::LogView,
    ) -> CapturedProcess {
        CapturedProcess {
            memory,
            delta: Default::default(),
            globals,
            pending: self.pending,
            asyncify_buffer: self.asyncify_buffer,
            mailbox: self.mailbox,
            spec: self.spec,
            fuel_remaining: self.fuel_remaining,
            open_files: self.open_files,
            monotonic_ns: self.monotonic_ns,
            log: log.chunks,
            log_start: log.start,
            calls: self.calls,
            volumes: self.volumes,
            log_visible: self.log_visible,
            outbox: self.outbox,
            inbox: self.inbox,
        }
    }
}

/// What `snapshot` did, for the CLI and benchmarks.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// The snapshot's id (sha256 of its manifest).
    pub id: Sha256,
    /// The process.
    pub pid: Pid,
    /// Its module.
    pub module: Sha256,
    /// The earlier snapshot of the same process this one is incremental over.
    pub parent: Option<Sha256>,
    /// Linear memory size.
    pub memory_bytes: u64,
    /// Non-zero pages in the snapshot.
    pub pages_total: usize,
    /// Pages that were not already in the registry.
    pub pages_new: usize,
    /// Bytes of those new pages.
    pub bytes_new: u64,
    /// How long the request waited for the process to reach a blocking call
    /// (plus the unwind and copy-out).
    pub waited: Duration,
    /// Time to hash and store pages and manifest after the copy-out.
    pub store_time: Duration,
    /// The call it was captured in, e.g. `shoal_v1.recv`.
    pub pending_call: String,
    /// What a recorded checkpoint of this snapshot covers (output to
    /// release, receipts to acknowledge: [`crate::outbox`]).
    #[serde(skip)]
    pub commit: crate::outbox::CommitPoint,
}

/// The last snapshot stored of a process on this node, as the next one is
/// incremental over it.
#[derive(Debug, Clone)]
pub struct Parent {
    /// Its id.
    pub id: Sha256,
    /// The capture its memory is ([`crate::memory_copy::MemoryDelta`]; 0:
    /// unknown, so the next snapshot hashes every page).
    pub capture: u64,
    /// Its memory size.
    pub memory_bytes: u64,
    /// Its page size.
    pub page_bytes: u32,
    /// Its pages, sorted by index.
    pub pages: std::sync::Arc<Vec<format::PageRef>>,
}

impl Parent {
    /// The parent record of snapshot `id` with `manifest`, taken from
    /// capture `capture`.
    pub fn of(id: Sha256, manifest: &Manifest, capture: u64) -> Parent {
        Parent {
            id,
            capture,
            memory_bytes: manifest.memory_bytes,
            page_bytes: manifest.page_bytes,
            pages: std::sync::Arc::new(manifest.pages.clone()),
        }
    }
}

/// Store a captured process in the registry, incremental over `parent`:
/// when the image says which pages were written since the parent's
/// capture, only those are read and hashed (the rest keep the parent's
/// hashes); otherwise every page is.
pub fn store(
    registry: &shoal_registry::Registry,
    module: Sha256,
    pid: Pid,
    image: &CapturedProcess,
    parent: Option<&Parent>,
) -> Result<(Manifest, Sha256, usize, u64), SnapshotFormatError> {
    let memory = image.memory.bytes();
    let over = parent.and_then(|p| {
        let written = image.delta.since(p.capture)?;
        let split =
            format::split_pages_written(&memory, &p.pages, p.page_bytes, p.memory_bytes, written)?;
        Some((split, &p.pages[..]))
    });
    let (split, parent_pages) = match over {
        Some((split, pages)) => (split, pages),
        None => (format::split_pages(&memory, None), &[][..]),
    };
    let mut state = HostState::of(image);
    // Its output, when the image carries it (a checkpoint).
    let mut blobs = crate::volume::tree::chunk_refs(&image.volumes);
    let have: std::collections::BTreeSet<Sha256> = blobs.iter().map(|b| b.hash).collect();
    blobs.extend(
        crate::open_files::copy_chunk_refs(&image.open_files)
            .into_iter()
            .filter(|b| !have.contains(&b.hash)),
    );
    if !image.log.is_empty() || image.log_start > 0 {
        let view = crate::log::LogView {
            start: image.log_start,
            chunks: image.log.clone(),
        };
        let (log, log_blobs) = log_blocks::store(registry, &view)?;
        state.log = Some(log);
        blobs.extend(log_blobs);
    }
    let manifest = Manifest {
        format_version: format::FORMAT_VERSION,
        module,
        pid: pid.0,
        parent: parent.map(|p| p.id),
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        memory_bytes: image.memory.len() as u64,
        page_bytes: split.page_bytes,
        pages: split.pages,
        globals: image
            .globals
            .iter()
            .map(|(export, bits)| GlobalValue {
                export: export.clone(),
                value: *bits,
            })
            .collect(),
        state: serde_json::to_value(&state)
            .map_err(|e| SnapshotFormatError::BadHeader(e.to_string()))?,
        // Its volumes' chunks (already in the registry: the capture put
        // them there), so its file form carries them too.
        blobs,
    };
    // Only pages the registry lacks are new: everything else is shared with
    // earlier snapshots (of this process or any other).
    let new: Vec<(Sha256, std::ops::Range<usize>)> = split
        .new_pages
        .into_iter()
        .filter(|(h, _)| !registry.contains(h))
        .collect();
    let bytes_new = new.iter().map(|(_, r)| r.len() as u64).sum();
    let pages_new = new.len();
    let id = format::store_snapshot_over(registry, &manifest, &memory, &new, parent_pages)?;
    Ok((manifest, id, pages_new, bytes_new))
}

/// Rebuild a captured process from a stored snapshot, verifying every page.
/// A memory larger than `memory_bytes_max` is refused before it is
/// allocated.
pub fn load(
    registry: &shoal_registry::Registry,
    id: &Sha256,
    memory_bytes_max: u64,
) -> Result<(std::sync::Arc<Manifest>, CapturedProcess), SnapshotFormatError> {
    let manifest = format::load_manifest(registry, id)?;
    if manifest.memory_bytes > memory_bytes_max {
        return Err(SnapshotFormatError::TooLarge {
            what: "memory",
            bytes: manifest.memory_bytes,
            max: memory_bytes_max,
        });
    }
    let state: HostState = serde_json::from_value(manifest.state.clone())
        .map_err(|e| SnapshotFormatError::BadHeader(format!("host state: {e}")))?;
    state
        .check_preparation()
        .map_err(|e| SnapshotFormatError::BadHeader(format!("host state: {e}")))?;
    if !manifest
        .memory_bytes
        .is_multiple_of(crate::grants::WASM_PAGE_BYTES)
    {
        return Err(SnapshotFormatError::BadHeader(format!(
            "memory size {} is not a multiple of 64 KiB",
            manifest.memory_bytes
        )));
    }
    // Its pages, not yet written anywhere: a restore writes them straight
    // into the new instance (see crate::image_memory). Fetching checks
    // that the memory's size fits this host.
    let pages = format::fetch_pages_from_registry(&manifest, registry)?;
    let memory = crate::image_memory::ImageMemory::Paged(std::sync::Arc::new(
        crate::image_memory::PagedMemory::new(pages),
    ));
    let globals = manifest
        .globals
        .iter()
        .map(|g| (g.export.clone(), g.value))
        .collect();
    let log = match &state.log {
        Some(log) => log_blocks::load(registry, log)?,
        None => Default::default(),
    };
    let image = state.into_image(memory, globals, log);
    Ok((manifest, image))
}
