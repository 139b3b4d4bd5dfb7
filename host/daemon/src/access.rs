//! Who may act on a process: the check every route that names a pid runs
//! before it touches it. The rule is [`shoal_pki::may_act`]; this finds the
//! owner to apply it to, from this node's link (processes that just
//! started here), the replicated records and this node's memory of
//! processes that ended here.

use crate::records::owners::{forbidden, OWNER_WAIT};
use crate::Inner;
use shoal_net::RemoteError;
use shoal_pki::{may_act, Owner, Role};
use shoal_runtime::pid::Pid;

/// Refuse unless `who` may act on process `pid`. Its owner is this node's
/// claim (a process that just started here), else the record in Raft,
/// else this node's memory of one that ended here. A non-admin asking
/// about a live process whose record is not applied yet waits for it (at
/// most [`OWNER_WAIT`]). A pid nobody here knows of is let through: the
/// route answers that there is no such process.
pub async fn authorize_pid(inner: &Inner, who: &Owner, pid: Pid) -> Result<(), RemoteError> {
    if who.role == Role::Admin {
        return Ok(());
    }
    let link: &crate::link::Link = &inner.link;
    let raft = &inner.raft;
    let known = |link: &crate::link::Link| {
        let owner = link.owner_of(pid);
        if owner.is_cluster() {
            link.owners.exited_owner(pid)
        } else {
            Some(owner)
        }
    };
    let live = raft.state().directory.contains_key(&pid.0) || inner.node.router().is_local(pid);
    let mut owner = known(link);
    if owner.is_none() && live {
        let mut applied = raft.subscribe();
        let deadline = tokio::time::Instant::now() + OWNER_WAIT;
        while owner.is_none() {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => owner = known(link),
                _ => break,
            }
        }
    }
    let owner = match owner {
        Some(o) => o,
        // Live or remembered here, with no record: the cluster's.
        None if live || inner.node.log(pid).is_some() => Owner::cluster(),
        None => return Ok(()),
    };
    may_act(who, &owner, &format!("process {pid}")).map_err(forbidden)
}
