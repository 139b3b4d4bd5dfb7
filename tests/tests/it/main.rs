//! Shoal's integration tests, one binary: real guests on real nodes.
//!
//! Each module was once its own test binary. Linked separately, every one of
//! them carried its own copy of the daemon's monomorphized code, and an edit
//! to the daemon re-linked seven ~600 MB binaries in release; as modules of
//! one binary they are compiled and linked once. Tests still run two at a
//! time (cargo's default on two cores); filter by module as before, e.g.
//! `cargo test --release --test it calls::`.

mod common;

mod abi;
mod calls;
mod cluster;
mod demo;
mod drain;
mod failover;
mod foundation;
mod kvcli;
mod kvlocks;
mod langs;
mod layering;
mod logs;
mod migrate;
mod netns;
mod owners;
mod preempt;
mod prepare_ahead;
mod revoke;
mod shared_volumes;
mod snapshot;
mod tiers;
mod trust;
mod volumes;
mod wasi;
