//! Ownership on this node's side: who is asking, whose a process or a
//! snapshot is, and the owner records this node writes to Raft.
//!
//! The rule itself is one function, [`shoal_pki::may_act`]; the replicated
//! records are `shoal_cluster::state::owners`. This module:
//!
//! - names the identity acting for a request ([`acting`]): the verified
//!   certificate's role and id; for a request another node relays
//!   (forwarded logs, snapshots, migrations of a process that runs
//!   elsewhere) the identity that node names in [`RELAY_HEADER`], which is
//!   honoured only from a node certificate. (Members are trusted relays, as
//!   they are for `/v1/peer/kill`; item 2 of issue #11 — signed requests —
//!   is what would remove that trust.)
//! - keeps [`OwnerBook`]: the owners of processes started here until Raft
//!   shows them (so a child spawned a moment after its parent started
//!   inherits the right owner), the batch of `SetOwners` records to write,
//!   and who stored each snapshot in this node's registry (snapshots live
//!   in one node's registry, so this record is node-local; it is not kept
//!   across a restart: after one, only an admin exports or restores a
//!   snapshot by id).
//! - answers refusals typed: 403 with the [`Forbidden`] value as the
//!   error's `detail`.

use hyper::header::HeaderMap;
use shoal_cluster::{Command, CommandResult, NodeId, Raft};
use shoal_net::{Caller, RemoteError};
use shoal_pki::{Forbidden, Owner, Role};
use shoal_registry::Sha256;
use shoal_runtime::pid::Pid;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The header a node relaying a caller's request names that caller in:
/// its certificate URI, `shoal://<role>/<id>`.
pub const RELAY_HEADER: &str = "shoal-on-behalf-of";
/// Most processes whose owners this node holds before Raft shows them.
pub const CLAIMS_MAX: usize = 1 << 20;
/// Most owner records waiting to be written.
pub const PENDING_MAX: usize = 1 << 20;
/// Most snapshots whose owners this node remembers (beyond it the oldest
/// entries are forgotten: an admin can still use those snapshots).
pub const SNAPSHOT_OWNERS_MAX: usize = 1 << 16;
/// Most ended processes whose owners this node remembers (so their logs
/// and exit reports stay their owner's).
pub const EXITED_OWNERS_MAX: usize = 1 << 16;
/// How long a check waits for Raft to show a fresh process's owner (its
/// record is written in a batch after the start).
pub const OWNER_WAIT: Duration = Duration::from_secs(3);

/// The identity acting for a request from `caller` (refused earlier if it
/// has no certificate).
pub fn acting(caller: &Caller, headers: &HeaderMap) -> Owner {
    let Some(cert) = &caller.cert else {
        // The dispatcher lets no anonymous caller reach the control API;
        // were one to, it would own nothing and act on nothing.
        return Owner {
            role: Role::Client,
            id: String::new(),
        };
    };
    if cert.role == Role::Node {
        let relayed = headers
            .get(RELAY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Role::parse_uri);
        if let Some((role, id)) = relayed {
            return Owner { role, id };
        }
    }
    Owner::of(cert)
}

/// The header value naming `who` for a relayed request.
pub fn relay_value(who: &Owner) -> String {
    who.role.uri(&who.id)
}

/// A typed 403.
pub fn forbidden(f: Forbidden) -> RemoteError {
    tracing::info!("refused: {f}");
    RemoteError::typed(403, &f)
}

/// Write owner records for pids started on `node`.
pub async fn record(
    raft: &Raft,
    node: NodeId,
    owners: Vec<(u64, Owner)>,
) -> Result<(), RemoteError> {
    if owners.is_empty() {
        return Ok(());
    }
    let r = raft
        .write(Command::SetOwners { node, owners })
        .await
        .map_err(|e| RemoteError::new(503, e.to_string()))?;
    match r {
        CommandResult::Refused(why) => Err(RemoteError::typed(why.http_status(), &why)),
        _ => Ok(()),
    }
}

/// Wait (at most [`OWNER_WAIT`]) until this node's applied state shows an
/// owner for every pid in `pids` or the pid is gone, so that an answer
/// sent after this is followed by requests that find the records.
pub async fn wait_applied(raft: &Raft, pids: &[Pid]) {
    let done = |s: &shoal_cluster::ClusterState| {
        pids.iter()
            .all(|p| s.owners.contains_key(&p.0) || s.is_gone(p.0))
    };
    let mut applied = raft.subscribe();
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    while !done(raft.state().as_ref()) {
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// This node's owner records: claims for processes started here, the batch
/// of records to write, and snapshot owners.
#[derive(Default)]
pub struct OwnerBook {
    claims: Mutex<HashMap<u64, Owner>>,
    pending: Mutex<Vec<(u64, Owner)>>,
    snapshots: Mutex<SnapshotOwners>,
    exited: Mutex<ExitedOwners>,
}

#[derive(Default)]
struct SnapshotOwners {
    by_id: HashMap<Sha256, BTreeSet<Owner>>,
    order: std::collections::VecDeque<Sha256>,
}

#[derive(Default)]
struct ExitedOwners {
    by_pid: HashMap<u64, Owner>,
    order: std::collections::VecDeque<u64>,
}

impl OwnerBook {
    /// Note that process `pid`, about to start (or just started) here,
    /// belongs to `owner`, and queue its record. The cluster's own
    /// processes need no record.
    pub fn claim(&self, pid: Pid, owner: Owner) {
        if owner.is_cluster() {
            return;
        }
        {
            let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            if claims.len() >= CLAIMS_MAX && !claims.contains_key(&pid.0) {
                tracing::warn!("{CLAIMS_MAX} owner claims held; pid {pid} relies on Raft alone");
            } else {
                claims.insert(pid.0, owner.clone());
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < PENDING_MAX {
            pending.push((pid.0, owner));
        }
    }

    /// Drop the claim on `pid` and its unwritten record (it ended, or
    /// never started).
    pub fn unclaim(&self, pid: Pid) {
        let claimed = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid.0);
        if claimed.is_some() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(p, _)| *p != pid.0);
        }
    }

    /// The claimed owner of `pid`, if this node holds one.
    pub fn claimed(&self, pid: Pid) -> Option<Owner> {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid.0)
            .cloned()
    }

    /// Take the records waiting to be written.
    pub fn take_pending(&self) -> Vec<(u64, Owner)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put back records whose write failed.
    pub fn requeue(&self, records: &[(u64, Owner)]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + records.len() <= PENDING_MAX {
            pending.extend_from_slice(records);
        }
    }

    /// Whether records wait to be written.
    pub fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Drop the claims Raft now shows (as this node applied it).
    pub fn settle(&self, state: &shoal_cluster::ClusterState, written: &[(u64, Owner)]) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        for (pid, owner) in written {
            if state.owners.get(pid) == Some(owner) {
                claims.remove(pid);
            }
        }
    }

    /// Remember the owner of a process that ended here (the oldest
    /// memories go first, beyond [`EXITED_OWNERS_MAX`]).
    pub fn remember_exited(&self, pid: Pid, owner: Owner) {
        let mut e = self.exited.lock().unwrap_or_else(|p| p.into_inner());
        if e.by_pid.insert(pid.0, owner).is_none() {
            e.order.push_back(pid.0);
            while e.order.len() > EXITED_OWNERS_MAX {
                if let Some(old) = e.order.pop_front() {
                    e.by_pid.remove(&old);
                }
            }
        }
    }

    /// The owner of a process that ended here, if remembered.
    pub fn exited_owner(&self, pid: Pid) -> Option<Owner> {
        self.exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_pid
            .get(&pid.0)
            .cloned()
    }

    /// Note that `owner` stored snapshot `id` in this node's registry
    /// (took it, or imported it).
    pub fn own_snapshot(&self, id: Sha256, owner: Owner) {
        let mut s = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if !s.by_id.contains_key(&id) {
            while s.by_id.len() >= SNAPSHOT_OWNERS_MAX {
                match s.order.pop_front() {
                    Some(old) => {
                        s.by_id.remove(&old);
                    }
                    None => break,
                }
            }
            s.order.push_back(id);
        }
        s.by_id.entry(id).or_default().insert(owner);
    }

    /// Refuse unless `who` may use snapshot `id` (export or restore it):
    /// an admin, or one who stored it here.
    pub fn may_use_snapshot(&self, who: &Owner, id: &Sha256) -> Result<(), RemoteError> {
        if who.role == Role::Admin {
            return Ok(());
        }
        let s = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let owners = s.by_id.get(id);
        if owners.is_some_and(|o| o.contains(who)) {
            return Ok(());
        }
        let owner = owners
            .and_then(|o| o.iter().next().cloned())
            .unwrap_or_else(Owner::cluster);
        Err(forbidden(Forbidden::NotOwner {
            who: who.clone(),
            owner,
            what: format!("snapshot {id}"),
        }))
    }
}
