//! The node-wide gate every host call passes through: open while the node
//! may act for its processes, closed while it is suspended (its lease on
//! the cluster ran out: it has not heard from a quorum for too long, so
//! the cluster may be about to resume its processes elsewhere; see the
//! daemon's `lease` task).
//!
//! While it is closed a process runs on in guest code but every Shoal
//! import and every write to its stdout or stderr waits at the gate: it can
//! send nothing, write nothing a user sees, change nothing in the cluster.
//! So an old copy's last observable act precedes the suspension, and the
//! cluster declares the node dead only after the suspension (its
//! `--dead-after` is at least twice the lease).

use tokio::sync::watch;

/// One node's gate (the sender side).
#[derive(Debug)]
pub struct GateKeeper {
    open: watch::Sender<bool>,
}

impl Default for GateKeeper {
    fn default() -> Self {
        GateKeeper {
            open: watch::Sender::new(true),
        }
    }
}

impl GateKeeper {
    /// Open (`true`) or close the gate; `true` if that changed it.
    pub fn set_open(&self, open: bool) -> bool {
        self.open.send_if_modified(|cur| {
            let changed = *cur != open;
            *cur = open;
            changed
        })
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// A gate for a process to pass.
    pub fn gate(&self) -> Gate {
        Gate(self.open.subscribe())
    }
}

/// A process's view of its node's gate.
#[derive(Debug, Clone)]
pub struct Gate(watch::Receiver<bool>);

impl Gate {
    /// Wait until the gate is open (at once if it is).
    pub async fn pass(&self) {
        if *self.0.borrow() {
            return;
        }
        let mut rx = self.0.clone();
        // The sender lives as long as the node: an error means the node is
        // gone, and then nothing waits.
        let _ = rx.wait_for(|open| *open).await;
    }

    /// A gate that is always open (processes outside a node, tests).
    pub fn always_open() -> Gate {
        Gate(watch::Sender::new(true).subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened() {
        let keeper = GateKeeper::default();
        let gate = keeper.gate();
        gate.pass().await;
        assert!(keeper.set_open(false));
        assert!(!keeper.set_open(false));
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(keeper.set_open(true));
        waiter.await.unwrap();
    }
}
