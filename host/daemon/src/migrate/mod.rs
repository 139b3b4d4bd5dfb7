//! Live migration: moving a running process to another node, keeping its
//! pid, its memory, its blocked call, its mailbox and its files, losing,
//! duplicating and reordering no message.
//!
//! - [`source`]: [`source::migrate`], the protocol run by the node the
//!   process leaves (pre-copy, freeze, delta, switch through Raft, go).
//! - [`target`]: arrivals on the node it moves to (pages by hash, the
//!   decision, the start).
//! - [`volumes`]: the chunks of private volumes, fetched by the target.
//! - [`keep`]: both ends keep the pages, written behind the move.
//! - [`wire`]: the requests and lane control messages between the two.
//! - [`fence`]: what every node does when it applies a switch, so that the
//!   target can keep each sender's messages in order
//!   ([`shoal_runtime::handoff`]).
//!
//! # Safety: never two live copies, never none
//!
//! The process stops on the source before the target has a complete image,
//! and the target starts it only once the directory entry (a
//! compare-and-set on the pid's epoch, through Raft) names the target. If
//! the switch cannot be written the source fences the attempt with a
//! same-node move at the same epoch — after that the stale switch can
//! never commit — and resumes the process itself. If the target dies
//! before the switch, the source resumes it; if the source dies after the
//! switch, the target starts it on seeing the directory.

pub mod drain;
pub mod fence;
pub mod keep;
pub mod rebalance;
pub mod source;
pub mod target;
pub mod volumes;
pub mod wire;

pub use shoal_api::cluster::MigrateReport;

/// What migration needs from the node daemon, and nothing else: built once
/// by the daemon at start (see `Daemon::migration`). Migrations, drains,
/// rebalancing and fences run on it; none of them can reach the daemon's
/// credentials, its CA or its control API.
pub struct Ctx {
    /// This node's id.
    pub me: shoal_cluster::NodeId,
    /// Its name (in logs and reports).
    pub name: String,
    /// The process host.
    pub node: shoal_runtime::Node,
    /// Raft: the directory's switch and the cluster's members.
    pub raft: shoal_cluster::Raft,
    /// Connections to peers (requests and lanes).
    pub peers: shoal_net::Peers,
    /// Message routing to other nodes (fences, forwarding).
    pub link: std::sync::Arc<crate::link::Link>,
    /// Processes migrating to this node.
    pub arrivals: target::Arrivals,
    /// Faults injected into migrations (tests).
    pub faults: MigrationFaults,
    /// This node's drain job.
    pub drains: drain::Drains,
    /// Rebalancing settings.
    pub rebalance: rebalance::RebalanceConfig,
    /// Pages of moved processes still being written to the registry.
    pub keeper: std::sync::Arc<keep::Keeper>,
    /// How long an arrival may wait for the rest of its move
    /// ([`target::ARRIVAL_TTL`] unless configured).
    pub arrival_ttl: std::time::Duration,
}

use shoal_runtime::pid::Pid;

/// Threads for work on a move's path that splits over cores (hashing,
/// reading held pages): every core, at most 4.
pub(crate) fn path_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

/// Faults a test can inject into migrations (all off by default; settable
/// only with the `fault-injection` feature, so production builds cannot
/// turn them on).
#[derive(Debug, Clone, Default)]
pub struct MigrationFaults {
    /// The source stops right after the switch is committed: it sends no
    /// `Go` and forwards nothing, as if it died at that instant (the target
    /// must take the process from the directory).
    #[cfg(feature = "fault-injection")]
    pub halt_after_switch: bool,
    /// The source withholds this many of its next switches: after the
    /// freeze and the final state it fences the attempt instead, as if the
    /// switch had been refused, and resumes the process itself (a move
    /// called off after the freeze). Shared, so a test can arm it on a
    /// running node.
    #[cfg(feature = "fault-injection")]
    pub withhold_switches: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl MigrationFaults {
    /// Should the source halt right after the switch?
    pub(crate) fn halts_after_switch(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.halt_after_switch
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }

    /// Should the source withhold this switch (and count it)?
    pub(crate) fn withholds_switch(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            use std::sync::atomic::Ordering;
            self.withhold_switches
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }
}

/// A control message arrived on a lane for `pid` (see [`wire::Control`]).
pub async fn on_control(ctx: &std::sync::Arc<Ctx>, pid: Pid, data: &[u8]) {
    match wire::Control::decode(data) {
        Some(wire::Control::Go { .. }) => target::start(ctx, pid).await,
        Some(wire::Control::Fence { origin, .. }) => {
            // At the source: queue it behind what the origin sent before,
            // to be passed on in order. (Nowhere to go once the source has
            // finished forwarding: then the target no longer waits for it.)
            if let Some(held) = ctx.node.router().held(pid) {
                let mut fence = shoal_runtime::mailbox::Message {
                    seq: 0,
                    life: 0,
                    sender: shoal_runtime::node::CONTROL_SENDER,
                    data: data.to_vec(),
                    tag: shoal_runtime::mailbox::Tag::Plain,
                };
                // If the process arrived here recently and its hold still
                // keeps messages from `origin`, the fence goes behind them.
                if let Some(h) = ctx.node.router().handoff(pid) {
                    match h.push_marker(origin, fence) {
                        shoal_runtime::handoff::Routed::Accepted => return,
                        shoal_runtime::handoff::Routed::Finished(m) => fence = m,
                    }
                }
                let _ = held.append_all(vec![fence]);
            }
        }
        Some(wire::Control::Fenced { origin, epoch }) => target::fence(ctx, pid, origin, epoch),
        None => tracing::warn!("ignored a malformed control message for pid {pid}"),
    }
}
