//! An arriving process's instance, made and filled while its move's
//! pre-copy runs, so that the freeze writes only what changed since.
//!
//! A move's target used to write the whole arriving memory into a fresh
//! instance after the freeze: 16,384 page faults and 64 MiB copied for a
//! 64 MiB process, most of a 38 ms freeze. Instead the target
//! instantiates the module as soon as the offer is accepted
//! ([`super::Node::prepare_arrival`]), writes each pre-copy page into the
//! instance as it arrives ([`PreparedInstance::write`]) and, at the freeze,
//! only the pages that changed; the start then takes the instance as it
//! is ([`super::Node::start_arrived`]), its memory already the image's.
//!
//! Until then the store holds a placeholder context: no preopens, no
//! environment, a mailbox nobody can reach. Nothing runs in it but the
//! module's own `start` function, if it has one, at instantiation (as a
//! restore always did). The start swaps in the real context, built from
//! the cluster's record of the process's grants, and keeps the limiter
//! (what the instance's memory is charged to the node's budget).

use super::host::NodeHost;
use super::{NodeError, Shared};
use crate::capture::CaptureSignal;
use crate::limits::ProcessLimiter;
use crate::log::ProcessLog;
use crate::mailbox::Mailbox;
use crate::modules::LoadedModule;
use crate::pid::Pid;
use crate::process::ProcessCtx;
use shoal_registry::Sha256;
use std::sync::Arc;
use wasmtime::{Instance, Memory, Store};

/// Bytes in a Wasm page.
const WASM_PAGE_BYTES: usize = 64 * 1024;

/// An instance made ahead for an arriving process.
pub struct PreparedInstance {
    pub(super) store: Store<ProcessCtx>,
    pub(super) instance: Instance,
    memory: Memory,
    pub(super) module: Sha256,
    pub(super) preemptible: bool,
    /// Where its memory may be non-zero as made: its module's data
    /// segments ([`LoadedModule::fresh_nonzero`]).
    maybe_nonzero: Vec<std::ops::Range<usize>>,
}

impl PreparedInstance {
    /// Its memory's size, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Grow its memory to `bytes` (a whole number of Wasm pages; never
    /// shrinks), charged to the node's budget.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), NodeError> {
        let have = self.memory_bytes();
        if bytes <= have {
            return Ok(());
        }
        if !bytes.is_multiple_of(WASM_PAGE_BYTES) {
            return Err(NodeError::InvalidSpawn(format!(
                "memory of {bytes} bytes is not a whole number of Wasm pages"
            )));
        }
        let pages = ((bytes - have) / WASM_PAGE_BYTES) as u64;
        self.memory
            .grow(&mut self.store, pages)
            .map(drop)
            .map_err(|e| NodeError::Runtime(format!("cannot grow an arriving instance: {e:#}")))
    }

    /// Write `bytes` at `at` in its memory (inside it: checked).
    pub fn write(&mut self, at: usize, bytes: &[u8]) -> Result<(), NodeError> {
        let dest = self.memory.data_mut(&mut self.store);
        let end = at
            .checked_add(bytes.len())
            .filter(|&end| end <= dest.len())
            .ok_or_else(|| {
                NodeError::InvalidSpawn(format!(
                    "{} bytes at {at} are beyond an arriving memory of {} bytes",
                    bytes.len(),
                    dest.len()
                ))
            })?;
        dest[at..end].copy_from_slice(bytes);
        Ok(())
    }

    /// Back `range` of its memory now (one call, not a fault per page):
    /// for pages about to be written.
    pub fn back(&mut self, range: std::ops::Range<usize>) {
        let dest = self.memory.data_mut(&mut self.store);
        if let Some(part) = dest.get_mut(range) {
            crate::dirty::populate_for_write(part);
        }
    }

    /// Zero every page of `page_bytes` that `keep` does not name and that
    /// is not zero already. As made, it can hold non-zero bytes only where
    /// its module's data segments are (or, when those are not known, in
    /// its initial memory): only pages there are read, since reading an
    /// untouched page costs a fault.
    pub fn zero_except(&mut self, page_bytes: usize, keep: impl Fn(usize) -> bool) {
        assert!(page_bytes > 0 && WASM_PAGE_BYTES.is_multiple_of(page_bytes));
        let dest = self.memory.data_mut(&mut self.store);
        shoal_snapshot_format::zero_pages_except(dest, page_bytes, &self.maybe_nonzero, keep);
    }

    /// The limiter its memory is charged to, taken (with `cap` as its
    /// cap) for the process's real context; the placeholder keeps none.
    pub(super) fn take_limiter(&mut self, cap: usize) -> ProcessLimiter {
        let mut limiter =
            std::mem::replace(&mut self.store.data_mut().limiter, ProcessLimiter::new(0));
        limiter.memory_bytes_max = cap;
        limiter
    }
}

impl Shared {
    /// Instantiate `module` (the `preemptible` variant or not) for the
    /// arriving process `pid`, with its memory grown to `memory_bytes`.
    pub(super) async fn prepare_instance(
        self: &Arc<Self>,
        pid: Pid,
        module: Arc<LoadedModule>,
        preemptible: bool,
        memory_bytes: usize,
    ) -> Result<PreparedInstance, NodeError> {
        let memory_max = self.config.engine.memory_bytes_max;
        let mut limiter = ProcessLimiter::with_budget(
            usize::try_from(memory_max).unwrap_or(usize::MAX),
            self.memory_budget.clone(),
        );
        if !limiter.reserve(memory_bytes) {
            return Err(NodeError::MemoryBudget {
                needed_bytes: memory_bytes as u64,
                used_bytes: self.memory_budget.used_bytes(),
                budget_bytes: self.memory_budget.budget_bytes(),
            });
        }
        let log = ProcessLog::new(self.config.log_bytes_max, false);
        let ctx = ProcessCtx {
            pid,
            wasi: wasi_common::WasiCtx::new(
                wasi_common::tokio::random_ctx(),
                crate::clock::clocks_from(std::time::Duration::ZERO),
                wasi_common::tokio::sched::sched_ctx(),
                wasi_common::Table::new(),
            ),
            limiter,
            mailbox: Arc::new(Mailbox::new(self.config.mailbox)),
            log,
            host: Arc::new(NodeHost(self.clone())),
            capture: Arc::new(CaptureSignal::default()),
            capturable: false,
            resume: None,
            pending: None,
            asyncify_buffer: None,
            spec: crate::spec::SpawnSpec::new(module.hash, Vec::new()),
            open_files: Default::default(),
            shared_fds: Default::default(),
            volumes: Default::default(),
            gate: self.gate.gate(),
            memory_copy: Default::default(),
        };
        let mut store = Store::new(module.module.engine(), ctx);
        store.limiter(|c| &mut c.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        if let Some(fuel) = self.config.process_fuel {
            // A `start` function runs under fuel like any guest code.
            store
                .set_fuel(fuel)
                .map_err(|e| NodeError::Runtime(format!("{e:#}")))?;
        }
        let instance = module
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| {
                NodeError::Runtime(format!("cannot instantiate {}: {e:#}", module.hash))
            })?;
        let memory = crate::process::memory_of(&mut store, &instance)
            .map_err(|e| NodeError::InvalidSpawn(format!("{e:#}")))?;
        let initial_bytes = memory.data_size(&store);
        let mut prepared = PreparedInstance {
            store,
            instance,
            memory,
            module: module.hash,
            preemptible,
            maybe_nonzero: module.fresh_nonzero(initial_bytes),
        };
        prepared.grow_to(memory_bytes)?;
        Ok(prepared)
    }
}
