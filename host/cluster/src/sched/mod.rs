//! Scheduling: where a new process should run.
//!
//! [`placement`] chooses a node for a spawn from what every node reports in
//! its heartbeats (free memory, CPU load, process count), honouring a
//! placement target (a node name or label constraints) and skipping nodes
//! that are cordoned, removed or silent. It is a pure function of its inputs
//! so it is tested without a cluster; the cluster layer feeds it the
//! replicated node table.

pub mod placement;

pub use placement::{place, place_many, Candidate, PlacementError, Target};
