//! A graceful stop (issue #16): `shoal node stop`, SIGTERM or Ctrl-C drain
//! the node by live migration before it exits, within a deadline; `shoal
//! node stop --kill` (or a second signal) keeps the old behaviour: its
//! processes are killed at once.
//!
//! The request reaches the daemon on `POST /v1/node/stop` (admin only:
//! the local socket's operator is one) and is kept in [`StopSignal`],
//! which the binary waits on beside the signals. [`drain_before_stop`]
//! then runs the node's drain job ([`crate::migrate::drain`]) on itself
//! and waits for it to end.

use crate::Inner;
use shoal_cluster::NodeStatus;
use std::time::Duration;

/// Longest a stop's drain may take when neither the request nor the
/// node's `--stop-deadline` says.
pub const STOP_DEADLINE_DEFAULT: Duration = Duration::from_secs(60);
/// How often the end of the drain is looked for.
const DRAIN_POLL: Duration = Duration::from_millis(100);

pub use shoal_api::cluster::{StopAccepted, StopRequest};

/// The stop asked over the API, if any (first one wins).
#[derive(Debug)]
pub struct StopSignal {
    tx: tokio::sync::watch::Sender<Option<StopRequest>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal {
            tx: tokio::sync::watch::channel(None).0,
        }
    }
}

impl StopSignal {
    /// Ask the node to stop; `false` if a stop was asked already.
    pub fn request(&self, req: StopRequest) -> bool {
        self.tx.send_if_modified(|cur| {
            if cur.is_some() {
                return false;
            }
            *cur = Some(req);
            true
        })
    }

    /// Wait for a stop request.
    pub async fn requested(&self) -> StopRequest {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(req) = rx.borrow_and_update().clone() {
                return req;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// What [`drain_before_stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopDrain {
    /// Nothing ran here.
    Empty,
    /// No other live member could take the processes.
    Alone,
    /// The drain ran: moved, and left here (to be killed).
    Drained {
        /// Moved away.
        moved: usize,
        /// Still here.
        left: usize,
    },
    /// The drain could not start.
    Failed(String),
}

/// Move this node's processes to other nodes before it stops, within
/// `deadline` (the drain job's own deadline: migrations in flight then
/// finish, none starts after it).
pub async fn drain_before_stop(inner: &Inner, deadline: Duration) -> StopDrain {
    use crate::migrate::drain::{self, DrainState};
    if inner.node.processes().is_empty() {
        return StopDrain::Empty;
    }
    let state = inner.raft.state();
    let others = state.nodes.values().any(|n| {
        n.id != inner.me && n.status == NodeStatus::Active && state.node_dead(n.id).is_none()
    });
    drop(state);
    if !others {
        return StopDrain::Alone;
    }
    match drain::start(&inner.migration, Some(deadline)).await {
        Ok(_) | Err(drain::DrainError::Running { .. }) => {}
        Err(e) => return StopDrain::Failed(e.to_string()),
    }
    loop {
        match drain::status(&inner.migration) {
            Ok(s) if s.state != DrainState::Running => {
                return StopDrain::Drained {
                    moved: s.moved,
                    left: inner.node.processes().len(),
                }
            }
            Ok(_) => {}
            Err(e) => return StopDrain::Failed(e.to_string()),
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
