//! Live migration: moving a running process to another node, keeping its
//! pid, its memory, its blocked call, its mailbox and its files, losing,
//! duplicating and reordering no message.
//!
//! - [`source`]: [`source::migrate`], the protocol run by the node the
//!   process leaves (pre-copy, freeze, delta, switch through Raft, go).
//! - [`target`]: arrivals on the node it moves to (pages by hash, the
//!   decision, the start).
//! - [`wire`]: the requests and lane control messages between the two.
//! - [`fence`]: what every node does when it applies a switch, so that the
//!   target can keep each sender's messages in order
//!   ([`crate::runtime::handoff`]).
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

pub mod fence;
pub mod source;
pub mod target;
pub mod wire;

use crate::pid::Pid;
use serde::{Deserialize, Serialize};

/// Faults a test can inject into migrations (all off by default).
#[derive(Debug, Clone, Default)]
pub struct MigrationFaults {
    /// The source stops right after the switch is committed: it sends no
    /// `Go` and forwards nothing, as if it died at that instant (the target
    /// must take the process from the directory).
    pub halt_after_switch: bool,
}

/// What a migration did, for `shoal migrate` and benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateReport {
    /// The process (same pid on the target).
    pub pid: Pid,
    /// The node it left.
    pub from: String,
    /// The node it runs on now.
    pub to: String,
    /// Its new directory epoch.
    pub epoch: u64,
    /// Its linear memory at the freeze.
    pub memory_bytes: u64,
    /// Non-zero pages at the pre-copy.
    pub pages_total: usize,
    /// Pages the target lacked and was sent in the pre-copy.
    pub pages_sent: usize,
    /// Pages the target already held (not sent).
    pub pages_known: usize,
    /// Pages that changed between the pre-copy and the freeze (sent then).
    pub delta_pages: usize,
    /// Bytes sent in migration requests (pages, headers, state).
    pub bytes_sent: u64,
    /// From the freeze request on the source to the first instruction on
    /// the target, µs (the two nodes' clocks; exact on one machine).
    pub freeze_us: u64,
    /// False if the target did not confirm the start in time (the move
    /// still happened: the directory names the target).
    pub resumed: bool,
    /// The whole migration, µs.
    pub total_us: u64,
    /// Time per phase, µs, in order.
    pub phases_us: Vec<(String, u64)>,
}

/// Text for people: `moved pid 42 a → b in 12.3 ms (frozen 2.1 ms), ...`.
impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "moved process {} from {} to {} in {:.1} ms, frozen {:.2} ms; memory {:.1} MiB, {} of {} pages sent ({} already there, {} changed during the copy), {:.1} KiB on the wire",
            self.pid,
            self.from,
            self.to,
            ms(self.total_us),
            ms(self.freeze_us),
            self.memory_bytes as f64 / (1 << 20) as f64,
            self.pages_sent,
            self.pages_total,
            self.pages_known,
            self.delta_pages,
            self.bytes_sent as f64 / 1024.0,
        )
    }
}

/// A control message arrived on a lane for `pid` (see [`wire::Control`]).
pub async fn on_control(inner: &std::sync::Arc<crate::daemon::Inner>, pid: Pid, data: &[u8]) {
    match wire::Control::decode(data) {
        Some(wire::Control::Go { .. }) => target::start(inner, pid).await,
        Some(wire::Control::Fence { origin, .. }) => {
            // At the source: queue it behind what the origin sent before,
            // to be passed on in order. (Nowhere to go once the source has
            // finished forwarding: then the target no longer waits for it.)
            if let Some(held) = inner.node.held_mailbox(pid) {
                let mut fence = crate::runtime::mailbox::Message {
                    sender: crate::node::CONTROL_SENDER,
                    data: data.to_vec(),
                };
                // If the process arrived here recently and its hold still
                // keeps messages from `origin`, the fence goes behind them.
                if let Some(h) = inner.node.handoff(pid) {
                    match h.push_marker(origin, fence) {
                        crate::runtime::handoff::Routed::Accepted => return,
                        crate::runtime::handoff::Routed::Finished(m) => fence = m,
                    }
                }
                let _ = held.append_all(vec![fence]);
            }
        }
        Some(wire::Control::Fenced { origin, epoch }) => target::fence(inner, pid, origin, epoch),
        None => eprintln!("shoal node: ignored a malformed control message for pid {pid}"),
    }
}
