//! Where the store of a process leaving by a move waits until the move is over.
//!
//! Dropping a moved process's store gives its instance's memory back to the kernel
//! (`madvise` over all of its linear memory: about 3 ms of kernel time at 64 MiB, holding this
//! OS process's memory-map lock, which every page fault of every other thread then waits for).
//! Dropped right after the freeze, it ran beside the move's last steps — the delta and final
//! requests, the switch — on the same two cores: the delta request (one page, 10 µs in its
//! handler) took 1.9–3.4 ms instead of 0.2–0.3 ms and the 64 MiB freeze's p50 went from 3.6 to
//! 5.4 ms (`migrate` bench). A move parks the process's store ([`Node::park_store`]) before it
//! freezes it and lets it go once the process runs at the target.

use super::{Node, Shared};
use crate::pid::Pid;
use crate::process::ProcessCtx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmtime::Store;

/// A parking place for one process's store.
type Slot = Arc<Mutex<Option<Store<ProcessCtx>>>>;

/// The parking places of a node, by pid (at most one per pid: the latest wins).
#[derive(Default)]
pub(super) struct Parking {
    slots: Mutex<HashMap<Pid, Slot>>,
}

impl Parking {
    /// Park `store` (of `pid`, which ended moved or snapshotted away) if
    /// its move holds a place for it; else drop it off this thread.
    pub(super) fn park_or_drop(&self, pid: Pid, store: Store<ProcessCtx>) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(&pid) {
            Some(slot) => {
                // Under the map's lock: the place's owner cannot take it
                // out between the lookup and this.
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(store);
            }
            None => drop_off_thread(store),
        }
    }
}

/// Drop a store on a blocking thread when there is a runtime, else here.
fn drop_off_thread(store: Store<ProcessCtx>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(store))),
        Err(_) => drop(store),
    }
}

/// Holds the store of a process that ends moved (or snapshotted away)
/// while it lives; dropping it drops that store off the caller's thread.
#[must_use = "the store is parked only while this lives"]
pub struct ParkedStore {
    shared: Arc<Shared>,
    pid: Pid,
    slot: Slot,
}

impl ParkedStore {
    /// Drop the parked store now, on this thread, giving its memory back
    /// to the node's budget before this returns (for a process about to
    /// be started here again).
    pub fn release_now(mut self) {
        drop(self.take());
    }

    /// True once the process's store is parked here.
    #[cfg(test)]
    pub(crate) fn holds_store(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Leave the parking place and take what it holds.
    fn take(&mut self) -> Option<Store<ProcessCtx>> {
        let mut slots = self
            .shared
            .parking
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slots
            .get(&self.pid)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.pid);
        }
        drop(slots);
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for ParkedStore {
    fn drop(&mut self) {
        if let Some(store) = self.take() {
            drop_off_thread(store);
        }
    }
}

impl Node {
    /// Keep the store of `pid` from being dropped when the process ends
    /// moved or snapshotted away, until the returned guard is dropped (see
    /// the module's doc). For a move's source: taken before its freeze,
    /// dropped once the process runs at the target.
    pub fn park_store(&self, pid: Pid) -> ParkedStore {
        let slot: Slot = Arc::default();
        self.shared
            .parking
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, slot.clone());
        ParkedStore {
            shared: self.shared.clone(),
            pid,
            slot,
        }
    }
}
