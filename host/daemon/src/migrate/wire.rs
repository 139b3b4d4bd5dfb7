//! What source and target say to each other during a migration: the
//! requests, page batches and lane control messages are
//! [`shoal_api::migrate`] (no runtime types, so they are fuzzed on their
//! own); the frozen process's remaining state ([`Final`]) is here, as it
//! carries the runtime's host state.

use serde::{Deserialize, Serialize};
use shoal_runtime::process::GlobalBits;
use shoal_runtime::snapshot::HostState;

pub use shoal_api::migrate::*;

/// The frozen process's remaining state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Final {
    /// The migration.
    pub id: String,
    /// Linear memory size at the freeze (never smaller than offered).
    pub memory_bytes: u64,
    /// Pages that were non-zero at the offer and are zero now.
    pub zeroed: Vec<u32>,
    /// Every exported mutable global.
    pub globals: Vec<(String, GlobalBits)>,
    /// The blocking call it is in, its mailbox, spawn spec, fuel, files.
    pub state: HostState,
    /// Its captured output so far (stdout and stderr), so `shoal logs`
    /// on the target shows the whole history.
    #[serde(default)]
    pub log: Vec<shoal_runtime::log::Chunk>,
    /// The position of the first chunk of `log` (the bytes its log had
    /// dropped; see [`shoal_runtime::log::LogView`]): readers go on at the
    /// same positions on the target.
    #[serde(default)]
    pub log_start: u64,
}
